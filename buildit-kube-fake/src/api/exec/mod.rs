//! `pods/{name}/exec`: a command run in a pod's running container, its streams carried over a WebSocket in
//! the `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol.

mod handler;
mod options;
mod protocol;
mod session;
mod target;

pub(crate) use handler::pod_exec;
