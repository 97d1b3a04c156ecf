//! A running fake cluster: the HTTP server on loopback, the controllers and the kubelet, and how it stops.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::options::FakeOptions;
use crate::requests::RecordedRequest;
use crate::shared::Shared;
use crate::store::meta::random_suffix;
use crate::{api, controller, kubeconfig, kubelet};

/// Why a fake cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The Docker Engine did not answer.
    #[error("cannot reach Docker: {0}")]
    Docker(String),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A fake Kubernetes API server on loopback whose pods run in the local Docker Engine.
#[derive(Debug)]
pub struct FakeCluster {
    shared: Arc<Shared>,
    url: String,
    tasks: JoinSet<()>,
    /// Whether `stop` ran; otherwise dropping the fake removes its containers.
    stopped: bool,
}

async fn connect_docker(host: Option<&str>) -> Result<Docker, FakeError> {
    let host = host
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let docker =
        Docker::connect_with_host(&host).map_err(|error| FakeError::Docker(error.to_string()))?;
    // Older engines answer only to their own API version.
    let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| FakeError::Docker(format!("no answer from `{host}` within 10 s")))?
        .map_err(|error| FakeError::Docker(error.to_string()))?;
    Ok(docker)
}

impl FakeCluster {
    /// Connects to Docker, listens on the options' address (loopback, any port by default) and starts serving.
    pub async fn start(options: FakeOptions) -> Result<FakeCluster, FakeError> {
        let docker = connect_docker(options.docker_host.as_deref()).await?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| FakeError::Listen {
                address: options.listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| FakeError::Listen {
            address: options.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            store: crate::store::Store::default(),
            faults: Faults::default(),
            requests: crate::requests::RequestLog::default(),
            logs: crate::logbook::LogBook::default(),
            options,
            instance: random_suffix(10),
            docker,
            shutdown: CancellationToken::new(),
            pod_workers: std::sync::Mutex::default(),
        });
        let mut tasks = JoinSet::new();
        let router = api::router(Arc::clone(&shared));
        let shutdown = shared.shutdown.clone();
        tasks.spawn(async move {
            let serving = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await });
            // An error here means the listener failed; the fake then just stops answering.
            let _ = serving.await;
        });
        tasks.spawn(controller::run_scheduler(Arc::clone(&shared)));
        tasks.spawn(controller::run_job_controller(Arc::clone(&shared)));
        tasks.spawn(controller::run_garbage_collector(Arc::clone(&shared)));
        tasks.spawn(kubelet::run_kubelet(Arc::clone(&shared)));
        Ok(FakeCluster {
            shared,
            url: format!("http://{address}"),
            tasks,
            stopped: false,
        })
    }

    /// Where it serves: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Writes a kubeconfig pointing at it, with `namespace` as the context's namespace.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        kubeconfig::write_kubeconfig(path, &self.url, namespace)
    }

    /// The faults to inject (the same as `POST /fake/faults`).
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Every Kubernetes request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.all()
    }

    /// The label value on every container and volume this fake creates (`buildit-kube-fake=<id>`).
    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// Stops serving (open watches and log streams end) and removes every container and volume it created.
    pub async fn stop(mut self) {
        self.shared.shutdown.cancel();
        let stopping = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), stopping)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        kubelet::abort_workers(&self.shared);
        kubelet::remove_everything(&self.shared.docker, &self.shared.instance).await;
        self.stopped = true;
    }
}

impl Drop for FakeCluster {
    /// A fake dropped without `stop` (a test that panicked) still removes its containers: on a thread of its
    /// own with its own runtime and Docker connection, since the caller's runtime may be going away.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.shared.shutdown.cancel();
        self.tasks.abort_all();
        kubelet::abort_workers(&self.shared);
        let host = self.shared.options.docker_host.clone();
        let instance = self.shared.instance.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(docker) = connect_docker(host.as_deref()).await {
                    kubelet::remove_everything(&docker, &instance).await;
                }
            });
        });
        // Nothing more can be done about a cleanup that panicked.
        let _ = cleanup.join();
    }
}
