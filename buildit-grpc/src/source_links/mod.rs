//! One-time download links to uploaded sources, for the pods of a cluster: the registry that issues them, and
//! the plain-HTTP listener that serves each link once.

mod config;
mod registry;
mod route;
mod server;
mod stall;

pub use config::SourceLinksConfig;
pub use registry::{LINK_LIFETIME, MAX_LIVE_LINKS, SourceLinks};
pub use server::{CONNECTION_LIMIT, MAX_CONNECTIONS, STALL_LIMIT, SourceServer};
