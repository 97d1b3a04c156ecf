//! How the daemon serves one-time source links: where it listens, the URL pods reach it at, how long a link and a
//! connection live.

use std::net::SocketAddr;
use std::time::Duration;

use super::registry::LINK_LIFETIME;
use super::server::{CONNECTION_LIMIT, MAX_CONNECTIONS, STALL_LIMIT};
use crate::server::DaemonError;

/// The source links' listener (plain HTTP, meant for the cluster's network: each link is single-use and
/// expires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLinksConfig {
    /// Where to listen (`0.0.0.0:7778`; `127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The base URL pods reach the listener at (`http://buildit.buildit.svc:7778`); `None`: `http://` and the
    /// bound address, which must then be a specific one (not `0.0.0.0` or `[::]`).
    pub url: Option<String>,
    /// How long a link stays usable once issued.
    pub lifetime: Duration,
    /// The longest a connection is served, download included.
    pub connection_limit: Duration,
    /// How long a download may wait for its client to take a single byte before its connection is closed.
    pub stall_limit: Duration,
    /// The most connections served at once; more wait in the listen backlog until one ends.
    pub max_connections: usize,
}

impl SourceLinksConfig {
    /// A listener on `listen`, linked to as `http://` and its bound address, with links that live
    /// [`LINK_LIFETIME`], connections bounded by [`CONNECTION_LIMIT`] and [`STALL_LIMIT`], at most
    /// [`MAX_CONNECTIONS`] at once.
    pub fn new(listen: impl Into<String>) -> Self {
        Self {
            listen: listen.into(),
            url: None,
            lifetime: LINK_LIFETIME,
            connection_limit: CONNECTION_LIMIT,
            stall_limit: STALL_LIMIT,
            max_connections: MAX_CONNECTIONS,
        }
    }

    /// Refuses what would give links no pod can follow: no `url` while `listen` is an address that listens on
    /// every interface (`0.0.0.0`, `[::]`), which links would name as it is. A `listen` that is a host name is
    /// checked once bound ([`SourceLinksConfig::check_bound`]).
    pub fn check(&self) -> Result<(), DaemonError> {
        match self.listen.parse::<SocketAddr>() {
            Ok(address) => self.check_bound(address),
            Err(_) => Ok(()),
        }
    }

    /// [`SourceLinksConfig::check`] for the address `listen` was bound to.
    pub fn check_bound(&self, bound: SocketAddr) -> Result<(), DaemonError> {
        if self.url.is_none() && bound.ip().is_unspecified() {
            return Err(DaemonError::SourceUrlNeeded {
                listen: self.listen.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_listens_everywhere_needs_a_url() {
        for listen in ["0.0.0.0:7778", "[::]:7778", "0.0.0.0:0", "[::0]:80"] {
            let config = SourceLinksConfig::new(listen);
            assert!(
                matches!(config.check(), Err(DaemonError::SourceUrlNeeded { listen: refused }) if refused == listen),
                "{listen}"
            );
            let with_url = SourceLinksConfig {
                url: Some("http://buildit.buildit.svc:7778".to_owned()),
                ..config
            };
            assert!(with_url.check().is_ok(), "{listen} with a URL");
        }
        for listen in [
            "127.0.0.1:0",
            "10.0.0.7:7778",
            "[::1]:7778",
            "localhost:7778",
        ] {
            assert!(SourceLinksConfig::new(listen).check().is_ok(), "{listen}");
        }
    }

    #[test]
    fn a_host_name_bound_to_every_address_needs_a_url_too() {
        let config = SourceLinksConfig::new("anywhere:7778");
        let bound = SocketAddr::from(([0, 0, 0, 0], 7778));
        assert!(matches!(
            config.check_bound(bound),
            Err(DaemonError::SourceUrlNeeded { .. })
        ));
    }
}
