//! How the daemon serves one-time source links: where it listens, the URL pods reach it at, how long a link lives.

use std::time::Duration;

use super::registry::LINK_LIFETIME;

/// The source links' listener (plain HTTP, meant for the cluster's network: each link is single-use and
/// expires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLinksConfig {
    /// Where to listen (`0.0.0.0:7778`; `127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The base URL pods reach the listener at (`http://buildit.buildit.svc:7778`); `None`: `http://` and the
    /// bound address.
    pub url: Option<String>,
    /// How long a link stays usable once issued.
    pub lifetime: Duration,
}

impl SourceLinksConfig {
    /// A listener on `listen`, linked to as `http://` and its bound address, with links that live
    /// [`LINK_LIFETIME`].
    pub fn new(listen: impl Into<String>) -> Self {
        Self {
            listen: listen.into(),
            url: None,
            lifetime: LINK_LIFETIME,
        }
    }
}
