//! What every part of a running fake shares: the store, faults, recorded requests, container logs, the
//! Docker connection and the shutdown signal.

use bollard::Docker;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::logbook::LogBook;
use crate::options::FakeOptions;
use crate::requests::RequestLog;
use crate::store::Store;

/// The label on every container and volume a fake creates; its value is the fake's instance id.
pub(crate) const INSTANCE_LABEL: &str = "buildit-kube-fake";
/// The label that names the pod (by uid) a container belongs to.
pub(crate) const POD_UID_LABEL: &str = "buildit-kube-fake.pod-uid";
/// The name of the one node.
pub(crate) const NODE_NAME: &str = "buildit-fake-node";

/// The state of one running fake.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Store,
    pub faults: Faults,
    pub requests: RequestLog,
    pub logs: LogBook,
    pub options: FakeOptions,
    /// Tells this fake's containers from another's.
    pub instance: String,
    pub docker: Docker,
    /// Cancelled when the fake stops: streams end, controllers return.
    pub shutdown: CancellationToken,
    /// The kubelet's pod workers, to stop them with the fake.
    pub pod_workers: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}
