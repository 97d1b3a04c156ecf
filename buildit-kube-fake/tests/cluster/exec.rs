//! `pods/exec` as kube-rs and a bare WebSocket client use it: stdin in, stdout and stderr out as they come,
//! the exit status on the error channel, tar archives both ways, a client that goes away, and the errors
//! answered before the upgrade.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{FakeProcess, Harness, IMAGE, eventually, pod_running};

/// How long one exec may take before the test fails instead of hanging.
const EXEC_LIMIT: Duration = Duration::from_secs(60);
/// Bytes of output that the fake must pass on without holding them.
const LARGE_OUTPUT: u64 = 64 * 1024 * 1024;

/// A pod `name` whose one container `main` uses `image` and sleeps.
fn holder_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"buildit.run": "test"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}],
        },
    }))
    .expect("a pod")
}

/// Creates the pod `name` of `holder_pod`.
async fn holder_with(harness: &Harness, name: &str, image: &str) {
    harness
        .pods()
        .create(&PostParams::default(), &holder_pod(name, image))
        .await
        .expect("create the pod");
}

/// A running pod `name` to exec into.
async fn holder(harness: &Harness, name: &str) {
    holder_with(harness, name, IMAGE).await;
    pod_running(harness, name).await;
}

/// What a finished exec gave: stdout, stderr and the status.
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Status,
}

async fn read_all(reader: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut reader) = reader {
        reader.read_to_end(&mut bytes).await.expect("read output");
    }
    bytes
}

/// Runs `command` in the pod with kube-rs, feeding it `stdin` (then closing it) when given, reading stdout
/// and stderr while it runs.
async fn run(harness: &Harness, pod: &str, command: &[&str], stdin: Option<Vec<u8>>) -> Ran {
    let params = AttachParams::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true);
    let running = async {
        let mut process = harness
            .pods()
            .exec(pod, command.to_vec(), &params)
            .await
            .expect("exec");
        let writer = match (process.stdin(), stdin) {
            (Some(mut writer), Some(input)) => Some(tokio::spawn(async move {
                writer.write_all(&input).await.expect("write stdin");
                // Closing the writer is what makes kube-rs send the v5 close of stdin.
                writer.shutdown().await.expect("close stdin");
            })),
            _ => None,
        };
        let status = process.take_status().expect("a status future");
        let (stdout, stderr) = tokio::join!(read_all(process.stdout()), read_all(process.stderr()));
        let status = status.await.expect("a status on the error channel");
        if let Some(writer) = writer {
            writer.await.expect("the writer");
        }
        process.join().await.expect("the exec ends cleanly");
        Ran {
            stdout,
            stderr,
            status,
        }
    };
    tokio::time::timeout(EXEC_LIMIT, running)
        .await
        .expect("the exec ended in time")
}

/// `len` pseudo-random bytes (xorshift), the same for the same seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_returns_stdin_byte_for_byte_and_ends_when_stdin_closes() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    // kube-rs offers v5 first: the fake takes it, so closing stdin is a frame, not the end of the socket.
    let request = kube::core::Request::new("/api/v1/namespaces/default/pods")
        .exec("holder", ["true"], &AttachParams::default())
        .expect("an exec request");
    let connection = harness.client.connect(request).await.expect("the upgrade");
    assert!(
        connection.supports_stream_close(),
        "v5.channel.k8s.io negotiated"
    );
    drop(connection);
    let input = noise(5 * 1024 * 1024 + 12_345, 7);
    let ran = run(&harness, "holder", &["cat"], Some(input.clone())).await;
    assert_eq!(ran.stdout.len(), input.len());
    assert!(ran.stdout == input, "stdout is stdin, byte for byte");
    assert!(ran.stderr.is_empty());
    assert_eq!(ran.status.status.as_deref(), Some("Success"));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_has_separate_stdout_and_stderr_and_its_exit_code_in_the_status() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let script = "echo out; echo err >&2; exit 3";
    let ran = run(&harness, "holder", &["sh", "-c", script], None).await;
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "err\n");
    let status = ran.status;
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "command terminated with non-zero exit code: error executing command [sh -c echo out; echo err >&2; \
             exit 3], exit code 3"
        )
    );
    let causes = status
        .details
        .and_then(|details| details.causes)
        .unwrap_or_default();
    let cause = causes.first().expect("a cause");
    assert_eq!(
        (cause.reason.as_deref(), cause.message.as_deref()),
        (Some("ExitCode"), Some("3"))
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_is_an_internal_error() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let ran = run(&harness, "holder", &["no-such-command"], None).await;
    assert!(
        ran.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&ran.stdout)
    );
    assert_eq!(ran.status.status.as_deref(), Some("Failure"));
    assert_eq!(ran.status.reason.as_deref(), Some("InternalError"));
    let message = ran.status.message.unwrap_or_default();
    assert!(
        message.starts_with("Internal error occurred: error executing command in container:")
            && message.contains("no-such-command"),
        "{message}"
    );
    harness.stop().await;
}

/// The regular files of a tar archive, by path.
fn files_of(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(archive);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("an entry");
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().expect("a path").display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("the content");
        files.insert(path, content);
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_archive_goes_in_through_stdin_and_comes_back_out_through_stdout() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let sent = BTreeMap::from([
        ("hello.txt".to_owned(), b"hello\n".to_vec()),
        ("dir/blob.bin".to_owned(), noise(3 * 1024 * 1024 + 7, 11)),
        ("dir/deeper/empty".to_owned(), Vec::new()),
    ]);
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in &sent {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, content.as_slice())
            .expect("append");
    }
    let archive = builder.into_inner().expect("the archive");
    let unpacked = run(
        &harness,
        "holder",
        &["sh", "-c", "mkdir -p /tmp/x && tar xf - -C /tmp/x"],
        Some(archive),
    )
    .await;
    assert_eq!(
        unpacked.status.status.as_deref(),
        Some("Success"),
        "{}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    let packed = run(
        &harness,
        "holder",
        &["tar", "cf", "-", "-C", "/tmp", "x"],
        None,
    )
    .await;
    assert_eq!(packed.status.status.as_deref(), Some("Success"));
    let expected: BTreeMap<String, Vec<u8>> = sent
        .into_iter()
        .map(|(path, content)| (format!("x/{path}"), content))
        .collect();
    assert!(
        files_of(&packed.stdout) == expected,
        "the files came back as they went in: {:?}",
        files_of(&packed.stdout).keys().collect::<Vec<_>>()
    );
    harness.stop().await;
}

/// The `Status` of a refused kube-rs exec.
async fn refused(harness: &Harness, pod: &str, params: &AttachParams) -> kube::core::Status {
    match harness.pods().exec(pod, ["true"], params).await {
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("not an API error: {other:?}"),
        Ok(_) => panic!("the exec into {pod} was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_into_a_missing_pod_an_unknown_or_waiting_container_is_refused_before_the_upgrade() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let missing = refused(&harness, "nowhere", &AttachParams::default()).await;
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "pods \"nowhere\" not found")
    );
    let unknown = refused(
        &harness,
        "holder",
        &AttachParams::default().container("sidecar"),
    )
    .await;
    assert_eq!(
        (unknown.code, unknown.message.as_str()),
        (400, "container sidecar is not valid for pod holder")
    );
    holder_with(&harness, "pulling", "buildit-test/nonexistent:1").await;
    eventually(20, "the pod bound to the node", || async {
        let pod = harness.pods().get("pulling").await.ok()?;
        pod.spec?.node_name.map(drop)
    })
    .await;
    let waiting = refused(&harness, "pulling", &AttachParams::default()).await;
    assert_eq!(
        (waiting.code, waiting.message.as_str()),
        (400, "container not found (\"main\")")
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_records_the_exec_with_its_query() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let ran = run(&harness, "holder", &["echo", "a b"], None).await;
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "a b\n");
    let execs: Vec<_> = harness
        .cluster
        .requests()
        .into_iter()
        .filter(|request| request.path == "/api/v1/namespaces/default/pods/holder/exec")
        .collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    let exec = &execs[0];
    assert_eq!(exec.method, "GET");
    assert_eq!(
        exec.query,
        "&stdout=true&stderr=true&command=echo&command=a+b"
    );
    assert_eq!(exec.body, "");
    harness.stop().await;
}

/// A bare WebSocket exec offering `protocols`, for what kube-rs does not show.
async fn raw_exec(
    harness: &Harness,
    pod: &str,
    query: &str,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        String,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let url = format!(
        "{}/api/v1/namespaces/default/pods/{pod}/exec?{query}",
        harness.cluster.url().replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocols.parse().expect("a header value"),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((socket, protocol))
}

/// The binary frames the server sends until it closes, which it must do as a normal closure (client-go
/// takes anything else as an error).
async fn frames_until_close(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let reading = async {
        while let Some(message) = socket.next().await {
            match message.expect("a message") {
                Message::Binary(data) => frames.push(data.to_vec()),
                Message::Close(frame) => {
                    let code = frame.map(|frame| frame.code);
                    assert_eq!(code, Some(CloseCode::Normal));
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(EXEC_LIMIT, reading)
        .await
        .expect("the server closed in time");
    frames
}

fn status_of(frame: &[u8]) -> Value {
    serde_json::from_slice(&frame[1..]).expect("a JSON status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_client_gets_v4_or_v5_frames_and_a_refusal_for_other_protocols() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let script = "command=sh&command=-c&command=echo+four%3B+exit+2&stdout=true&stderr=true";
    let (mut socket, protocol) = raw_exec(&harness, "holder", script, "v4.channel.k8s.io")
        .await
        .expect("a v4 upgrade");
    assert_eq!(protocol, "v4.channel.k8s.io");
    let frames = frames_until_close(&mut socket).await;
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0], [1], "the stream is announced on stdout");
    assert_eq!(frames[1], b"\x01four\n");
    assert_eq!(frames[2][0], 3);
    assert_eq!(
        status_of(&frames[2]),
        json!({
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command [sh -c echo four; exit 2], exit code 2",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
        })
    );

    let (mut socket, protocol) = raw_exec(
        &harness,
        "holder",
        "command=cat&stdin=true&stdout=true",
        "v4.channel.k8s.io, v5.channel.k8s.io",
    )
    .await
    .expect("a v5 upgrade");
    assert_eq!(protocol, "v5.channel.k8s.io", "v5 is preferred");
    for frame in [&b"\x00abc"[..], b"\x00def", &[255, 0]] {
        socket
            .send(Message::binary(frame.to_vec()))
            .await
            .expect("send");
    }
    let frames = frames_until_close(&mut socket).await;
    let stdout: Vec<u8> = frames
        .iter()
        .filter(|frame| frame.first() == Some(&1))
        .flat_map(|frame| frame[1..].to_vec())
        .collect();
    assert_eq!(stdout, b"abcdef");
    let last = frames.last().expect("a status frame");
    assert_eq!(
        status_of(last),
        json!({"metadata": {}, "status": "Success"})
    );

    let refusal = raw_exec(
        &harness,
        "holder",
        "command=true&stdout=true",
        "channel.k8s.io",
    )
    .await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refusal else {
        panic!("an old protocol was accepted: {refusal:?}");
    };
    assert_eq!(response.status(), 400);
    let status: Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("a status");
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("requested protocol(s) are not supported: [channel.k8s.io]"),
        "{status}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_the_pod_running_and_its_command_without_stdin() {
    let harness = Harness::start().await;
    holder(&harness, "holder").await;
    let (mut socket, _) = raw_exec(
        &harness,
        "holder",
        "command=cat&stdin=true&stdout=true",
        "v5.channel.k8s.io",
    )
    .await
    .expect("an upgrade");
    socket
        .send(Message::binary(b"\x00partial".to_vec()))
        .await
        .expect("send");
    // The echo of the input shows that `cat` runs before the client goes.
    let echoed = tokio::time::timeout(EXEC_LIMIT, async {
        loop {
            if let Some(Ok(Message::Binary(data))) = socket.next().await
                && data.len() > 1
            {
                return data.to_vec();
            }
        }
    })
    .await
    .expect("the echo");
    assert_eq!(echoed, b"\x01partial");
    drop(socket);
    // `pidof` exits 1 once no `cat` is left.
    eventually(20, "cat ended", || async {
        let ran = run(&harness, "holder", &["pidof", "cat"], None).await;
        (ran.status.status.as_deref() == Some("Failure")).then_some(())
    })
    .await;
    let pod = harness.pods().get("holder").await.expect("the pod");
    assert_eq!(
        pod.status.and_then(|status| status.phase).as_deref(),
        Some("Running")
    );
    harness.stop().await;
}

/// The peak resident memory of process `pid`, in KiB (Linux).
fn peak_memory_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_flows_through_a_slow_reader_with_bounded_memory_in_the_fake() {
    // The fake in a process of its own, so that its memory is not the test's.
    let fake = FakeProcess::start("default").await;
    let pods: Api<Pod> = Api::default_namespaced(fake.client.clone());
    pods.create(&PostParams::default(), &holder_pod("holder", IMAGE))
        .await
        .expect("create the pod");
    eventually(20, "the pod running", || async {
        let pod = pods.get("holder").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let before = peak_memory_kib(fake.pid());
    let params = AttachParams::default().stderr(false);
    let command = ["head", "-c", &LARGE_OUTPUT.to_string(), "/dev/zero"];
    let mut process = pods.exec("holder", command, &params).await.expect("exec");
    let mut stdout = process.stdout().expect("stdout");
    let status = process.take_status().expect("a status future");
    let mut received = 0_u64;
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut paused = false;
    let reading = async {
        loop {
            let read = stdout.read(&mut buffer).await.expect("read");
            if read == 0 {
                break;
            }
            assert!(buffer[..read].iter().all(|byte| *byte == 0));
            received += read as u64;
            // A reader that stops for a while: the fake must wait for it rather than buffer what comes.
            if !paused && received > 1024 * 1024 {
                paused = true;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    tokio::time::timeout(EXEC_LIMIT, reading)
        .await
        .expect("the output in time");
    assert_eq!(received, LARGE_OUTPUT);
    let status = status.await.expect("a status");
    assert_eq!(status.status.as_deref(), Some("Success"));
    let after = peak_memory_kib(fake.pid());
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "the fake's peak memory grew from {before} KiB to {after} KiB for {LARGE_OUTPUT} bytes of output"
    );
    let exit = fake.terminate().await;
    assert!(exit.success(), "{exit}");
}
