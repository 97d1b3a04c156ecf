//! The daemon: the gRPC server (the BuildIt service, health, reflection) on one listener, the source links'
//! HTTP server on another (when configured), and the in-process workers; stopped by a token, draining first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::store::Store;
use buildit_core::system::SystemConfig;
use tokio_util::sync::CancellationToken;

use crate::jobs::{Workers, release_gone_workers, worker_name};
use crate::proto::build_it_server::BuildItServer;
use crate::registry::Registry;
use crate::routed_store::RoutedStore;
use crate::service::BuildItService;
use crate::source_links::{SourceLinks, SourceLinksConfig, SourceServer};

/// How long cancelled runs' stages get to stop gracefully once a stopping daemon's drain ran out.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum DaemonError {
    /// A listen address (the gRPC one, or the source links') could not be bound.
    #[error("cannot listen on {address}: {source}")]
    #[diagnostic(code(buildit::daemon::listen))]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The source links would name an address that listens on every interface (`0.0.0.0`, `[::]`), which no
    /// pod can reach: the URL pods reach the listener at must be given.
    #[error(
        "source links on {listen} would name an address that listens everywhere and that no pod can reach"
    )]
    #[diagnostic(
        code(buildit::daemon::source_url_needed),
        help("give the URL pods reach the listener at (`http://buildit-daemon.buildit.svc:7778`)")
    )]
    SourceUrlNeeded {
        /// The listen address, as given.
        listen: String,
    },
    /// Reflection could not be set up from the descriptors.
    #[error("cannot serve reflection: {0}")]
    #[diagnostic(code(buildit::daemon::reflection))]
    Reflection(String),
    /// The TLS certificate or key cannot be used.
    #[error("cannot use the TLS certificate and key: {0}")]
    #[diagnostic(code(buildit::daemon::tls))]
    Tls(String),
    /// The server failed.
    #[error("the server failed: {0}")]
    #[diagnostic(code(buildit::daemon::serve))]
    Serve(String),
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Where runs get their workspaces.
    pub data_dir: PathBuf,
    /// In-process workers (runs at once); 0 queues runs for other daemons of the same store.
    pub workers: usize,
    /// How long running runs may go on after a stop before they are cancelled.
    pub drain: Duration,
    /// The store: runs, events, the job queue, tokens.
    pub store: Arc<dyn Store>,
    /// The system configuration runs are checked against and run with.
    pub system: SystemConfig,
    /// A certificate chain and its private key (PEM): with them the daemon speaks TLS only.
    pub tls: Option<TlsFiles>,
    /// Whether a run left interrupted by a daemon that died starts again, as a new run, when its job is claimed
    /// again (at most as often as the job may be claimed).
    pub restart_interrupted: bool,
    /// Where the API and its streams are served when not on the runtime `serve` runs on (where the runs run):
    /// a runtime whose threads have a lower priority, so that on a busy machine watchers give way to runs.
    pub serving: Option<Serving>,
    /// Where to serve one-time download links to uploaded sources, for the pods of a cluster (plain HTTP);
    /// `None`: no links are issued, and executors copy a run's source in themselves.
    pub source_links: Option<SourceLinksConfig>,
}

/// A runtime of lower priority for the API and its streams, and a store of their own for what they read (its
/// connections are that runtime's); what they write goes through the runs' store, on the runs' runtime.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The runtime.
    pub runtime: tokio::runtime::Handle,
    /// The store it reads through: the same store as the runs', opened on that runtime.
    pub store: Arc<dyn Store>,
}

/// The daemon's TLS identity, as PEM text.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
}

/// A daemon bound to its address, not serving yet.
#[derive(Debug)]
pub struct Daemon {
    config: DaemonConfig,
    listener: tokio::net::TcpListener,
    sources: Option<SourceServer>,
}

impl Daemon {
    /// Binds the listen address, and the source links' when there is one.
    pub async fn bind(config: DaemonConfig) -> Result<Self, DaemonError> {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                address: config.listen.clone(),
                source,
            })?;
        let sources = match &config.source_links {
            Some(links) => Some(SourceServer::bind(links).await?),
            None => None,
        };
        Ok(Self {
            config,
            listener,
            sources,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The address the source links' server listens on, when there is one.
    pub fn source_addr(&self) -> Option<SocketAddr> {
        self.sources.as_ref().map(SourceServer::local_addr)
    }

    /// The registry that issues the runs' source links, when the daemon serves them.
    pub fn source_links(&self) -> Option<Arc<SourceLinks>> {
        self.sources.as_ref().map(SourceServer::links)
    }

    /// Serves until `stop` is cancelled. Then health turns `NOT_SERVING`, workers claim nothing new, open
    /// streams end with UNAVAILABLE (and the sequence number to resume from), running runs get the drain window
    /// and are then cancelled, and this returns.
    pub async fn serve(self, stop: CancellationToken) -> Result<(), DaemonError> {
        let Self {
            config,
            listener,
            sources,
        } = self;
        // Runs a daemon that died left `running` are marked interrupted before anything else starts, and the
        // jobs of its workers are claimed again at once (elsewhere, when their leases run out).
        let here = buildit_core::owner::RunOwner::this_process();
        if let Ok(tenants) = config.store.list_tenants().await {
            for tenant in tenants {
                let _ = config
                    .store
                    .for_tenant(&tenant)
                    .mark_interrupted(&here, buildit_core::store::RUN_STALE_AFTER)
                    .await;
            }
        }
        release_gone_workers(&config.store, &here).await;
        let registry = Arc::new(Registry::default());
        let system = Arc::new(config.system);
        let streams = CancellationToken::new();
        let service_store: Arc<dyn Store> = match &config.serving {
            Some(serving) => Arc::new(RoutedStore::new(
                Arc::clone(&serving.store),
                Arc::clone(&config.store),
                tokio::runtime::Handle::current(),
            )),
            None => Arc::clone(&config.store),
        };
        let service = BuildItService {
            store: service_store,
            system: Arc::clone(&system),
            registry: Arc::clone(&registry),
            data_dir: config.data_dir.clone(),
            shutdown: streams.clone(),
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<BuildItServer<BuildItService>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let reflection = |builder: tonic_reflection::server::Builder<'static>| {
            builder
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
            .build_v1()
            .map_err(|error| DaemonError::Reflection(error.to_string()))?;
        let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .map_err(|error| DaemonError::Reflection(error.to_string()))?;
        let stop_claiming = CancellationToken::new();
        let kill = CancellationToken::new();
        let workers = Workers {
            store: Arc::clone(&config.store),
            system,
            registry: Arc::clone(&registry),
            data_dir: config.data_dir.clone(),
            stop_claiming: stop_claiming.clone(),
            restart_interrupted: config.restart_interrupted,
            kill: kill.clone(),
            source_links: sources.as_ref().map(SourceServer::links),
        };
        let mut running = tokio::task::JoinSet::new();
        for index in 0..config.workers {
            let worker = worker_name(&here, index);
            running.spawn(workers.clone().work(worker));
        }
        let server_stop = CancellationToken::new();
        // Pods of running runs may still fetch their sources during the drain: the links are served until the
        // gRPC server stops, on this runtime (the runs'), not the serving one. Stopped too if this future is
        // dropped half-way.
        let sources_stop = server_stop.child_token();
        let _sources_stop_on_drop = sources_stop.clone().drop_guard();
        let sources = sources.map(|sources| tokio::spawn(sources.serve(sources_stop)));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                    tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
                ))
                .map_err(|error| DaemonError::Tls(error.to_string()))?;
        }
        let server = {
            let server_stop = server_stop.clone();
            builder
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(BuildItServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move { server_stop.cancelled().await },
                )
        };
        // Served on the serving runtime when there is one: the connections' tasks are spawned where the server
        // runs. The stop sequence below stays here, with the runs.
        let server = {
            let serving = config
                .serving
                .as_ref()
                .map(|serving| serving.runtime.clone());
            async move {
                match serving {
                    Some(runtime) => match runtime.spawn(server).await {
                        Ok(served) => served.map_err(|error| error.to_string()),
                        Err(error) => Err(format!("the server's task failed: {error}")),
                    },
                    None => server.await.map_err(|error| error.to_string()),
                }
            }
        };
        let drain = config.drain;
        // Once asked to stop, the daemon is gone within the drain window and one second.
        let deadline = std::sync::OnceLock::new();
        let stopping = {
            let deadline = &deadline;
            async {
                stop.cancelled().await;
                let gone_by = tokio::time::Instant::now() + drain + Duration::from_secs(1);
                let _ = deadline.set(gone_by);
                health
                    .set_not_serving::<BuildItServer<BuildItService>>()
                    .await;
                // The whole server's status too: what probes and `grpcurl Health/Check` without a service ask.
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                stop_claiming.cancel();
                // Streams end themselves (the server waits for every open connection before it returns), and
                // new triggers are refused; the server still answers (health says NOT_SERVING, runs can be read)
                // while running runs get the drain window. Then they are cancelled (and recorded as such): half
                // a second for their stages to stop gracefully, then the rest of their grace is cut short.
                streams.cancel();
                let all_ended = async { while running.join_next().await.is_some() {} };
                tokio::pin!(all_ended);
                if tokio::time::timeout(drain, &mut all_ended).await.is_err() {
                    registry.cancel_all();
                    if tokio::time::timeout(STOP_GRACE, &mut all_ended)
                        .await
                        .is_err()
                    {
                        kill.cancel();
                        // A run still recording (or removing a large workspace) then is left: the guard
                        // process of its executor stops what is left of its stages, and the next daemon marks
                        // it interrupted.
                        if tokio::time::timeout_at(gone_by, &mut all_ended)
                            .await
                            .is_err()
                        {
                            tracing::warn!(
                                "runs did not end within the drain window and a second: exiting"
                            );
                        }
                    }
                }
                server_stop.cancel();
            }
        };
        // The server waits for every open connection to close; one a client keeps open (a health watch, a
        // stream it stopped reading) has until the deadline, then the daemon exits regardless.
        let stopped = server_stop.clone();
        let grace = async {
            stopped.cancelled().await;
            let until = deadline
                .get()
                .copied()
                .unwrap_or_else(tokio::time::Instant::now)
                .max(tokio::time::Instant::now() + Duration::from_millis(100));
            tokio::time::sleep_until(until).await;
        };
        tokio::pin!(server, stopping, grace);
        let mut drained = false;
        let ended = loop {
            tokio::select! {
                served = &mut server => {
                    // A server that failed stops the workers too (their runs are cancelled at once).
                    if served.is_err() {
                        stop.cancel();
                        registry.cancel_all();
                    }
                    if !drained {
                        (&mut stopping).await;
                    }
                    break served.map_err(DaemonError::Serve);
                }
                () = &mut stopping, if !drained => drained = true,
                () = &mut grace => break Ok(()),
            }
        };
        // The source links' server ends its connections at once when told to: waiting for it is short.
        server_stop.cancel();
        if let Some(sources) = sources {
            let _ = sources.await;
        }
        ended
    }
}
