//! BuildIt's daemon: a gRPC server that queues runs, executes them through the core's `Runner`, and streams
//! their events; one-time download links to uploaded sources for a cluster's pods; and the generated client.

mod convert;
mod jobs;
mod registry;
mod routed_store;
mod server;
mod service;
mod source_links;
mod stream;

pub mod proto {
    //! The generated `buildit.v1` messages, server and client.
    #![expect(
        clippy::allow_attributes,
        reason = "generated code allows what it needs"
    )]
    tonic::include_proto!("buildit.v1");

    /// The descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("buildit_descriptor");
}

pub use convert::{diagnostics_of, event_from_wire};
pub use routed_store::RoutedStore;
pub use server::{Daemon, DaemonConfig, DaemonError, Serving, TlsFiles};
pub use service::BuildItService;
pub use source_links::{
    CONNECTION_LIMIT, LINK_LIFETIME, MAX_CONNECTIONS, MAX_LIVE_LINKS, STALL_LIMIT, SourceLinks,
    SourceLinksConfig, SourceServer,
};
