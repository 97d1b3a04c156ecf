//! One-time source links for real: a source links' server on loopback, archives stored as uploads are, and
//! HTTP/1.1 requests written over plain TCP (what `wget` in a pod sends); then the same through a daemon.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its server, store or request cannot be set up"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::events::{RunOutcome, RunView};
use buildit_core::source::{ArchiveDigest, ArchiveLinks as _, SourceStore};
use buildit_core::system::SourceLimits;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::{
    Daemon, DaemonConfig, DaemonError, SourceLinks, SourceLinksConfig, SourceServer,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

mod support;

use support::{archive, authorized, start_daemon, token_in, trigger, upload, watch};

/// How long any one request may take before the test fails rather than hangs.
const PATIENCE: Duration = Duration::from_secs(30);

/// A source links' server on a free loopback port, serving until `stop`.
struct Serving {
    address: SocketAddr,
    links: Arc<SourceLinks>,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

async fn serve(config: SourceLinksConfig) -> Serving {
    let server = SourceServer::bind(&config).await.expect("bind");
    let address = server.local_addr();
    let links = server.links();
    let stop = CancellationToken::new();
    let served = tokio::spawn(server.serve(stop.clone()));
    Serving {
        address,
        links,
        stop,
        served,
    }
}

/// A store in `dir` whose archives `links` links to, holding `bytes` as one archive.
async fn stored(
    dir: &std::path::Path,
    links: &Arc<SourceLinks>,
    bytes: &[u8],
) -> (SourceStore, ArchiveDigest) {
    let store = SourceStore::new(dir.join("sources"), SourceLimits::default())
        .with_links(Arc::clone(links) as Arc<dyn buildit_core::source::ArchiveLinks>);
    let digest = store.put(bytes).await.expect("stored");
    (store, digest)
}

/// `size` bytes that do not repeat in any short period (so no layer can shortcut them).
fn noise(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// The path of `url` (`/sources/TOKEN`).
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").expect("an http URL");
    &rest[rest.find('/').expect("a path")..]
}

/// An HTTP answer, read to its end.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request whose answer's head has been read; the body is still coming.
struct Opened {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    /// Body bytes read along with the head.
    started: Vec<u8>,
}

impl Opened {
    /// Reads the rest of the body until the server closes the connection.
    async fn finish(mut self) -> Answer {
        let mut body = self.started;
        tokio::time::timeout(PATIENCE, self.stream.read_to_end(&mut body))
            .await
            .expect("the body ended in time")
            .expect("the body reads");
        Answer {
            status: self.status,
            headers: self.headers,
            body,
        }
    }
}

/// Sends `METHOD path` as HTTP/1.1 and reads the answer's status line and headers.
async fn open(address: SocketAddr, method: &str, path: &str) -> Opened {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut read = Vec::new();
    let head_end = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                return end;
            }
            let mut chunk = [0u8; 4096];
            let count = stream.read(&mut chunk).await.expect("read the answer");
            assert!(count > 0, "the connection closed before the answer's head");
            read.extend_from_slice(&chunk[..count]);
        }
    })
    .await
    .expect("the answer's head came in time");
    let head = String::from_utf8(read[..head_end].to_vec()).expect("a text head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Opened {
        stream,
        status,
        headers,
        started: read[head_end + 4..].to_vec(),
    }
}

async fn request(address: SocketAddr, method: &str, path: &str) -> Answer {
    open(address, method, path).await.finish().await
}

async fn get(address: SocketAddr, path: &str) -> Answer {
    request(address, "GET", path).await
}

fn assert_not_found(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 404, "{what}: {answer:?}");
    assert!(
        answer.text().contains("no such source link"),
        "{what}: {}",
        answer.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_serves_its_archive_once_with_its_length() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig::new("127.0.0.1:0")).await;
    // Several megabytes: more than any buffer on the way, so the body is streamed.
    let bytes = noise(6 * 1024 * 1024 + 123);
    let (store, digest) = stored(dir.path(), &serving.links, &bytes).await;
    let url = store.link(&digest).expect("a link");
    assert!(
        url.starts_with(&format!("http://{}/sources/", serving.address)),
        "{url}"
    );
    let answer = get(serving.address, path_of(&url)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.header("content-type"), Some("application/x-tar"));
    assert_eq!(
        answer.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert!(answer.body == bytes, "the archive's exact bytes");
    assert_eq!(serving.links.live(), 0, "the link is used up");
    assert_not_found(
        &get(serving.address, path_of(&url)).await,
        "the same link again",
    );
    // Each link is its own: another link to the same archive still serves it.
    let another = store.link(&digest).expect("another link");
    assert_ne!(another, url);
    assert!(get(serving.address, path_of(&another)).await.body == bytes);
    serving.stop.cancel();
    tokio::time::timeout(PATIENCE, serving.served)
        .await
        .expect("the server stops")
        .expect("the server's task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_used_up_as_soon_as_its_download_starts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig::new("127.0.0.1:0")).await;
    let bytes = noise(8 * 1024 * 1024);
    let (store, digest) = stored(dir.path(), &serving.links, &bytes).await;
    let url = store.link(&digest).expect("a link");
    // The first download has begun and is not read further: the server waits on the socket.
    let first = open(serving.address, "GET", path_of(&url)).await;
    assert_eq!(first.status, 200);
    assert_not_found(
        &get(serving.address, path_of(&url)).await,
        "the link again while its first download runs",
    );
    let first = first.finish().await;
    assert!(first.body == bytes, "the first download completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_tokens_and_other_requests_are_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig::new("127.0.0.1:0")).await;
    let (store, digest) = stored(dir.path(), &serving.links, b"an archive").await;
    let url = store.link(&digest).expect("a link");
    let path = path_of(&url).to_owned();
    let token = path.trim_start_matches("/sources/").to_owned();
    let address = serving.address;
    let archive_name = format!("{digest}.tar");
    for refused in [
        "/sources/0000000000000000000000000000000000000000000000000000000000000000".to_owned(),
        "/sources/".to_owned(),
        "/sources/..".to_owned(),
        "/sources/%2e%2e".to_owned(),
        format!("/sources/..%2Fsources%2F{archive_name}"),
        format!("/sources/../sources/{archive_name}"),
        format!("/sources/{token}/"),
        format!("/sources/{token}/.."),
        format!("/sources/{token}%2F.."),
        format!("/sources/%2F{token}"),
        format!("/sources/{}", token.to_ascii_uppercase()),
        format!("/sources/{}", &token[..63]),
        "/sources/%ff".to_owned(),
        format!("/{archive_name}"),
        "/".to_owned(),
    ] {
        assert_not_found(&get(address, &refused).await, &refused);
    }
    // Another method than GET on a link is not allowed, and does not use it up: HEAD least of all.
    for method in ["HEAD", "POST", "DELETE"] {
        let answer = request(address, method, &path).await;
        assert_eq!(answer.status, 405, "{method}: {answer:?}");
    }
    assert_eq!(serving.links.live(), 1, "no refused request used the link");
    let answer = get(address, &path).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "an archive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig {
        lifetime: Duration::from_millis(200),
        ..SourceLinksConfig::new("127.0.0.1:0")
    })
    .await;
    let (store, digest) = stored(dir.path(), &serving.links, b"an archive").await;
    let in_time = store.link(&digest).expect("a link");
    let late = store.link(&digest).expect("a link");
    assert_eq!(get(serving.address, path_of(&in_time)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_not_found(
        &get(serving.address, path_of(&late)).await,
        "an expired link",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_archive_gets_no_link_and_one_removed_since_is_not_found() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig::new("127.0.0.1:0")).await;
    let (store, digest) = stored(dir.path(), &serving.links, b"an archive").await;
    let absent = ArchiveDigest::parse(&"ab".repeat(32)).expect("a digest");
    assert_eq!(store.link(&absent), None, "a digest that is not stored");
    assert_eq!(
        serving.links.link(&dir.path().join("nothing.tar"), &absent),
        None,
        "a file that does not exist"
    );
    let url = store.link(&digest).expect("a link");
    std::fs::remove_file(store.path(&digest)).expect("remove the archive");
    assert_not_found(
        &get(serving.address, path_of(&url)).await,
        "a removed archive",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_url_is_the_base_of_links() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig {
        url: Some("http://buildit-daemon.buildit.svc:7778/".to_owned()),
        ..SourceLinksConfig::new("127.0.0.1:0")
    })
    .await;
    let (store, digest) = stored(dir.path(), &serving.links, b"an archive").await;
    let url = store.link(&digest).expect("a link");
    assert!(
        url.starts_with("http://buildit-daemon.buildit.svc:7778/sources/"),
        "{url}"
    );
    assert_eq!(get(serving.address, path_of(&url)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_cuts_a_download_short_and_does_not_wait_for_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig::new("127.0.0.1:0")).await;
    // More than loopback's socket buffers hold while nothing is read.
    let bytes = noise(16 * 1024 * 1024);
    let (store, digest) = stored(dir.path(), &serving.links, &bytes).await;
    let url = store.link(&digest).expect("a link");
    let download = open(serving.address, "GET", path_of(&url)).await;
    assert_eq!(download.status, 200);
    // A connection that never sends a request is no reason to wait either.
    let _silent = TcpStream::connect(serving.address).await.expect("connect");
    serving.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), serving.served)
        .await
        .expect("the server stops at once")
        .expect("the server's task");
    let mut rest = download.started;
    let mut stream = download.stream;
    // The connection is closed (or reset): fewer bytes than announced, never a whole archive.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the connection ends");
    assert!(rest.len() < bytes.len(), "{} bytes", rest.len());
    assert!(
        TcpStream::connect(serving.address).await.is_err(),
        "nothing listens any more"
    );
}

/// Opens a download of `url` and reads nothing of it past the head for `quiet`; then reads what is left. The
/// bytes it got in all, and whether the connection ended within [`PATIENCE`] of reading again.
async fn stop_reading(address: SocketAddr, url: &str, quiet: Duration) -> Vec<u8> {
    let download = open(address, "GET", path_of(url)).await;
    assert_eq!(download.status, 200);
    tokio::time::sleep(quiet).await;
    let mut got = download.started;
    let mut stream = download.stream;
    // The server closed the connection (or reset it): what it had sent comes, then the end; a server still
    // serving it would send every byte now that they are read.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("the connection ends");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection_and_its_slot() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // One connection at a time: a stalled one that kept its slot would keep the next request waiting for ever.
    let serving = serve(SourceLinksConfig {
        stall_limit: Duration::from_millis(500),
        max_connections: 1,
        ..SourceLinksConfig::new("127.0.0.1:0")
    })
    .await;
    // More than loopback's socket buffers hold while nothing is read.
    let bytes = noise(16 * 1024 * 1024);
    let (store, digest) = stored(dir.path(), &serving.links, &bytes).await;
    let stalled = store.link(&digest).expect("a link");
    let next = store.link(&digest).expect("another link");
    let address = serving.address;
    let started = std::time::Instant::now();
    let stalled =
        tokio::spawn(async move { stop_reading(address, &stalled, Duration::from_secs(3)).await });
    // Asked while the stalled download holds the only slot: it waits in the backlog until the slot is free.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = tokio::time::timeout(PATIENCE, get(address, path_of(&next)))
        .await
        .expect("the next request is served once the stalled connection is closed");
    let waited = started.elapsed();
    assert_eq!(answer.status, 200);
    assert!(answer.body == bytes, "the next download is whole");
    assert!(
        waited < Duration::from_secs(3),
        "served {waited:?} after the stall began: before the stalled client read again"
    );
    let got = stalled.await.expect("the stalled client");
    assert!(
        got.len() < bytes.len(),
        "the stalled download was cut short: {} bytes",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_its_time_limit() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = serve(SourceLinksConfig {
        connection_limit: Duration::from_millis(500),
        max_connections: 1,
        ..SourceLinksConfig::new("127.0.0.1:0")
    })
    .await;
    let bytes = noise(16 * 1024 * 1024);
    let (store, digest) = stored(dir.path(), &serving.links, &bytes).await;
    let slow = store.link(&digest).expect("a link");
    // The stall limit (a minute) is far off: only the connection's time ends it.
    let got = stop_reading(serving.address, &slow, Duration::from_secs(2)).await;
    assert!(
        got.len() < bytes.len(),
        "the download was cut short: {} bytes",
        got.len()
    );
    // Its slot is free again, and a download that fits in the time is whole.
    let (store, digest) = stored(dir.path(), &serving.links, b"a small archive").await;
    let next = store.link(&digest).expect("a link");
    let answer = tokio::time::timeout(PATIENCE, get(serving.address, path_of(&next)))
        .await
        .expect("served");
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "a small archive")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_an_address_that_listens_everywhere_need_a_url() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        match SourceServer::bind(&SourceLinksConfig::new(listen)).await {
            Err(DaemonError::SourceUrlNeeded { listen: refused }) => assert_eq!(refused, listen),
            other => panic!("{listen}: expected a refusal, got {other:?}"),
        }
    }
    let server = SourceServer::bind(&SourceLinksConfig {
        url: Some("http://buildit-daemon.buildit.svc:7778".to_owned()),
        ..SourceLinksConfig::new("0.0.0.0:0")
    })
    .await
    .expect("bound with a URL");
    assert_eq!(
        server.links().base_url(),
        "http://buildit-daemon.buildit.svc:7778"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_links_to_its_tenants_uploads_and_runs_as_before() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let token = token_in(dir.path(), "acme").await;
    let daemon = start_daemon(dir.path(), 1, Some(SourceLinksConfig::new("127.0.0.1:0"))).await;
    let (source_address, links) = daemon.sources.clone().expect("source links are served");
    let mut client = BuildItClient::connect(daemon.address.clone())
        .await
        .expect("connect");
    let tar = archive("hello from the upload\n", 3 * 1024 * 1024);
    let uploaded = upload(&mut client, &token, tar.clone())
        .await
        .expect("upload");
    // The store a run of this upload gets: the tenant's, with the daemon's links.
    let digest = ArchiveDigest::parse(&uploaded.sha256).expect("a digest");
    let store = SourceStore::new(
        dir.path().join("sources").join("acme"),
        SourceLimits::default(),
    )
    .with_links(links as Arc<dyn buildit_core::source::ArchiveLinks>);
    let url = store.link(&digest).expect("a link");
    assert!(
        url.starts_with(&format!("http://{source_address}/sources/")),
        "{url}"
    );
    let answer = get(source_address, path_of(&url)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body == tar, "the uploaded archive");
    assert_not_found(
        &get(source_address, path_of(&url)).await,
        "the same link again",
    );
    // A run of the upload goes as it does without links: prepared here, stages on the host.
    let run = client
        .trigger_run(authorized(
            buildit_grpc::proto::TriggerRunRequest {
                source_sha256: uploaded.sha256.clone(),
                ..trigger("pipeline \"sourced\"\nstage \"read\" { run \"cat greeting.txt\" }\n")
            },
            &token,
        ))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    let events = watch(&mut client, &token, &run.id, 0).await;
    assert_eq!(
        RunView::from_events(&events)
            .ending
            .map(|ending| ending.status),
        Some(RunOutcome::Succeeded)
    );
    daemon.stop.cancel();
    tokio::time::timeout(PATIENCE, daemon.served)
        .await
        .expect("the daemon stops")
        .expect("the daemon's task");
    assert!(
        TcpStream::connect(source_address).await.is_err(),
        "the source links' listener stopped with the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_address_that_cannot_be_bound_stops_the_daemon_from_starting() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let store = buildit_core::store::SqliteStore::open(&dir.path().join("buildit.db"))
        .await
        .expect("store");
    let bound = Daemon::bind(DaemonConfig {
        listen: "127.0.0.1:0".to_owned(),
        data_dir: dir.path().to_path_buf(),
        workers: 1,
        drain: Duration::from_secs(2),
        store: Arc::new(store),
        system: buildit_core::system::SystemConfig::defaults(dir.path()),
        tls: None,
        restart_interrupted: true,
        serving: None,
        source_links: Some(SourceLinksConfig::new(address.clone())),
    })
    .await;
    match bound {
        Err(DaemonError::Listen {
            address: refused, ..
        }) => assert_eq!(refused, address),
        other => panic!("expected a listen error, got {other:?}"),
    }
}
