//! Running stages on Kubernetes: one `batch/v1` Job per attempt, through kube-rs.

mod api_uses;

pub use api_uses::{ApiUse, KUBERNETES_API_USES};
