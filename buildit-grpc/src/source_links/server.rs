//! The source links' listener: plain HTTP/1.1, one connection task per downloader, every one of them owned and
//! ended when the server stops.

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
use crate::server::DaemonError;

/// How long a client may take to send its request's head: a connection that sends nothing is closed rather
/// than kept open.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once; more wait in the listen backlog until one ends.
const MAX_CONNECTIONS: usize = 512;

/// The source links' registry and the listener that serves its links: bound, not serving yet.
#[derive(Debug)]
pub struct SourceServer {
    listener: TcpListener,
    address: SocketAddr,
    links: Arc<SourceLinks>,
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
    /// going is cut short: its client sees fewer bytes than the `Content-Length`), and returns.
    pub async fn serve(self, stop: CancellationToken) {
        let Self {
            listener, links, ..
        } = self;
        let routes = router(links);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => {
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
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_TIMEOUT)
                            // One archive per pod: nothing to keep a connection open for.
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            served = connection => {
                                if let Err(error) = served {
                                    tracing::debug!(%peer, %error, "source links: a connection failed");
                                }
                            }
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
