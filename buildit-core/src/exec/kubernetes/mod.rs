//! Running stages on Kubernetes: one `batch/v1` Job per attempt, through kube-rs.

mod api_uses;
mod executor;
mod logs;
mod manifest;
mod names;
mod options;
mod status;
mod sweep;
mod watch;

pub use api_uses::{ApiUse, KUBERNETES_API_USES};
pub use executor::{KubernetesExecutor, KubernetesHandle};
pub use names::JOB_LABEL;
pub use options::KubernetesOptions;
