//! The source links' listener: plain HTTP/1.1, one connection task per downloader, each bounded in time and
//! every one of them owned and ended when the server stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::SourceLinksConfig;
use super::registry::SourceLinks;
use super::route::{Peer, router};
use super::stall::{StallGuard, is_stalled};
use crate::server::DaemonError;

/// How long a client may take to send its request's head: a connection that sends nothing is closed rather
/// than kept open.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once by default; more wait in the listen backlog until one ends.
pub const MAX_CONNECTIONS: usize = 512;

/// The longest a connection is served by default: a download of the largest upload (100 MiB by default) at
/// under 60 KB/s still ends within it, and a client that keeps its slot by taking a byte now and then loses it.
pub const CONNECTION_LIMIT: Duration = Duration::from_secs(30 * 60);

/// How long a download may wait for its client to take a single byte by default: a client that stopped
/// reading (a zero TCP window, a node cut off from the network) would otherwise hold its connection's slot for
/// as long as TCP keeps the connection, which can be hours.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The source links' registry and the listener that serves its links: bound, not serving yet.
#[derive(Debug)]
pub struct SourceServer {
    listener: TcpListener,
    address: SocketAddr,
    links: Arc<SourceLinks>,
    connection_limit: Duration,
    stall_limit: Duration,
    max_connections: usize,
}

impl SourceServer {
    /// Binds `config.listen`; links are `config.url` (else `http://` and the bound address) followed by
    /// `/sources/TOKEN`. Without `config.url`, an address that listens on every interface is refused
    /// ([`DaemonError::SourceUrlNeeded`]): links naming it would reach no pod.
    pub async fn bind(config: &SourceLinksConfig) -> Result<Self, DaemonError> {
        config.check()?;
        let listen_error = |source| DaemonError::Listen {
            address: config.listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        config.check_bound(address)?;
        let base_url = match &config.url {
            Some(url) => url.clone(),
            None => format!("http://{address}"),
        };
        Ok(Self {
            listener,
            address,
            links: Arc::new(SourceLinks::new(&base_url, config.lifetime)),
            connection_limit: config.connection_limit,
            stall_limit: config.stall_limit,
            // No connection at all would never serve anything.
            max_connections: config.max_connections.max(1),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The registry whose links it serves.
    pub fn links(&self) -> Arc<SourceLinks> {
        Arc::clone(&self.links)
    }

    /// Serves until `stop` is cancelled; then it stops listening, ends every connection (a download still
    /// going is cut short: its client sees fewer bytes than the `Content-Length`), and returns. A connection
    /// is also ended once it has been served for the connection limit, or once a download has waited the stall
    /// limit for its client to take a byte.
    pub async fn serve(self, stop: CancellationToken) {
        let Self {
            listener,
            links,
            connection_limit,
            stall_limit,
            max_connections,
            ..
        } = self;
        let routes = router(links);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept(), if connections.len() < max_connections => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // A connection that failed before it was accepted (reset, out of descriptors for
                            // a moment): the next one is tried after a pause rather than in a busy loop.
                            tracing::warn!(%error, "source links: cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let service = TowerToHyperService::new(routes.clone().layer(Extension(Peer(peer))));
                    let stop = stop.clone();
                    connections.spawn(async move {
                        let stream = StallGuard::new(stream, stall_limit);
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_TIMEOUT)
                            // One archive per pod: nothing to keep a connection open for.
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        // Dropping the connection closes its socket, whichever branch ends it.
                        tokio::select! {
                            served = connection => match served {
                                Ok(()) => {}
                                Err(error) if is_stalled(&error) => tracing::warn!(
                                    %peer,
                                    limit_secs = stall_limit.as_secs_f64(),
                                    "source links: a download's client took nothing for too long; its connection is closed"
                                ),
                                Err(error) => {
                                    tracing::debug!(%peer, %error, "source links: a connection failed");
                                }
                            },
                            () = tokio::time::sleep(connection_limit) => tracing::warn!(
                                %peer,
                                limit_secs = connection_limit.as_secs_f64(),
                                "source links: a connection lasted too long and is closed"
                            ),
                            () = stop.cancelled() => {}
                        }
                    });
                }
            }
        }
        drop(listener);
        connections.shutdown().await;
    }
}
