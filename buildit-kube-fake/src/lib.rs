//! A fake Kubernetes API server for tests and for trying BuildIt's Kubernetes executor: real HTTP on
//! loopback, Kubernetes JSON, watches and logs, and a job controller and kubelet that run each pod's
//! containers in the local Docker Engine, with scripted faults.

mod api;
mod cluster;
mod controller;
mod events;
mod faults;
mod host;
mod kubeconfig;
mod kubelet;
mod logbook;
mod options;
mod quantity;
mod requests;
mod selector;
mod shared;
mod store;

pub use cluster::{FakeCluster, FakeError};
pub use faults::{Fault, FaultKind, Faults};
pub use host::host_seen_from_pods;
pub use kubeconfig::{CONTEXT_NAME, kubeconfig_text};
pub use options::FakeOptions;
pub use requests::RecordedRequest;
pub use selector::{FieldSelector, LabelSelector, SelectorError};
