//! What the daemon's tests share: a daemon on a data directory's SQLite store, authorized calls, a watch read
//! to its end, and uploads of workspace archives.

#![allow(dead_code, reason = "each test file uses a part of it")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::events::RunEvent;
use buildit_core::store::{SqliteStore, Store};
use buildit_core::system::SystemConfig;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use buildit_grpc::{Daemon, DaemonConfig, SourceLinks, SourceLinksConfig, event_from_wire};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A daemon serving `dir`'s store (`dir/buildit.db`) on a free loopback port with `workers` workers: its
/// address, what stops it, and its task.
pub async fn daemon_on(
    dir: &std::path::Path,
    workers: usize,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let started = start_daemon(dir, workers, None).await;
    (started.address, started.stop, started.served)
}

/// A daemon that serves, as `daemon_on` starts it.
pub struct StartedDaemon {
    /// Its gRPC address (`http://127.0.0.1:PORT`).
    pub address: String,
    /// Where its source links are served, and the registry that issues them, when it serves them.
    pub sources: Option<(SocketAddr, Arc<SourceLinks>)>,
    pub stop: CancellationToken,
    pub served: tokio::task::JoinHandle<()>,
}

/// A daemon as `daemon_on` starts it, serving source links as `source_links` says.
pub async fn start_daemon(
    dir: &std::path::Path,
    workers: usize,
    source_links: Option<SourceLinksConfig>,
) -> StartedDaemon {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.join("buildit.db"))
            .await
            .expect("store"),
    );
    let daemon = Daemon::bind(DaemonConfig {
        listen: "127.0.0.1:0".to_owned(),
        data_dir: dir.to_path_buf(),
        workers,
        drain: Duration::from_secs(2),
        store,
        system: SystemConfig::defaults(dir),
        tls: None,
        restart_interrupted: true,
        serving: None,
        source_links,
    })
    .await
    .expect("bind");
    let address = format!("http://{}", daemon.local_addr().expect("address"));
    let sources = daemon.source_addr().zip(daemon.source_links());
    let stop = CancellationToken::new();
    let served = {
        let stop = stop.clone();
        tokio::spawn(async move { daemon.serve(stop).await.expect("serve") })
    };
    StartedDaemon {
        address,
        sources,
        stop,
        served,
    }
}

/// A new token of `tenant` in `dir`'s store (`dir/buildit.db`, created if missing).
pub async fn token_in(dir: &std::path::Path, tenant: &str) -> String {
    let store = SqliteStore::open(&dir.join("buildit.db"))
        .await
        .expect("store");
    let token = buildit_core::store::new_token();
    store
        .create_token(tenant, "test", &buildit_core::store::hash_token(&token))
        .await
        .expect("token");
    store.close().await;
    token
}

/// `message` with `authorization: Bearer token`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

/// A trigger of `pipeline`'s text on branch `main`.
pub fn trigger(pipeline: &str) -> proto::TriggerRunRequest {
    proto::TriggerRunRequest {
        pipeline: pipeline.to_owned(),
        branch: "main".to_owned(),
        ..proto::TriggerRunRequest::default()
    }
}

/// What a watch stream sends, heartbeats apart.
pub enum Watched {
    Events(Vec<RunEvent>),
    Heartbeat(u64),
}

/// Opens a watch of `run` after `after_seq`.
pub async fn open_watch(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run: &str,
    after_seq: u64,
) -> tonic::Streaming<proto::WatchRunResponse> {
    client
        .watch_run(authorized(
            proto::WatchRunRequest {
                run: run.to_owned(),
                after_seq,
            },
            token,
        ))
        .await
        .expect("watch")
        .into_inner()
}

/// The next message of a watch stream (`None` at its end), within `limit`.
pub async fn next_watched(
    stream: &mut tonic::Streaming<proto::WatchRunResponse>,
    run: &str,
    limit: Duration,
) -> Option<Watched> {
    let message = tokio::time::timeout(limit, stream.message())
        .await
        .expect("the stream went silent")
        .expect("the stream failed")?;
    Some(match message.item.expect("an item") {
        Item::Events(batch) => Watched::Events(
            batch
                .events
                .iter()
                .map(|event| event_from_wire(run, event).expect("a known event"))
                .collect(),
        ),
        Item::Heartbeat(beat) => Watched::Heartbeat(beat.seq),
    })
}

/// Every event of a watch from `after_seq`, until the stream ends; heartbeats are left out.
pub async fn watch(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run: &str,
    after_seq: u64,
) -> Vec<RunEvent> {
    let mut stream = open_watch(client, token, run, after_seq).await;
    let mut events = Vec::new();
    while let Some(watched) = next_watched(&mut stream, run, Duration::from_secs(60)).await {
        if let Watched::Events(batch) = watched {
            events.extend(batch);
        }
    }
    events
}

/// Uploads `archive` in 64 KiB chunks.
pub async fn upload(
    client: &mut BuildItClient<Channel>,
    token: &str,
    archive: Vec<u8>,
) -> Result<proto::UploadSourceResponse, tonic::Status> {
    let chunks: Vec<proto::UploadSourceRequest> = archive
        .chunks(64 * 1024)
        .map(|chunk| proto::UploadSourceRequest {
            chunk: chunk.to_vec(),
        })
        .collect();
    let mut request = tonic::Request::new(tokio_stream::iter(chunks));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    client
        .upload_source(request)
        .await
        .map(tonic::Response::into_inner)
}

/// A tar of one file, `greeting.txt`, plus `filler` bytes of padding in a second file.
pub fn archive(greeting: &str, filler: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("greeting.txt"), greeting).expect("file");
    std::fs::write(dir.path().join("filler.bin"), vec![b'x'; filler]).expect("file");
    let output = std::process::Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(dir.path())
        .args(["greeting.txt", "filler.bin"])
        .output()
        .expect("tar runs");
    assert!(output.status.success());
    output.stdout
}
