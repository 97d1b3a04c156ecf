//! Running stages on Kubernetes: one `batch/v1` Job per attempt, through kube-rs.

mod abandon;
mod api_uses;
mod executor;
mod logs;
mod manifest;
mod names;
mod options;
mod services;
mod source_fetch;
mod status;
mod sweep;
mod transfer;
mod watch;
mod workspace;
mod workspace_manifest;

pub use api_uses::{ApiUse, KUBERNETES_API_USES};
pub use executor::{KubernetesExecutor, KubernetesHandle};
pub use names::JOB_LABEL;
pub use options::KubernetesOptions;
