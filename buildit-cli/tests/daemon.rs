//! `buildit daemon` seen from outside: the real binary on loopback, a token from `buildit tokens create`, and
//! grpcurl as the client (what docs/daemon.md shows a user doing).

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon, token or client cannot be set up"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long a grpcurl call may take before it fails (a hung stream fails the test instead of blocking it).
const CALL_SECONDS: &str = "60";

/// The grpcurl to use: `BUILDIT_TEST_GRPCURL`, else `grpcurl` on the PATH. Without one, the test is skipped, but
/// CI must provide it (`scripts/install-grpcurl.sh`).
fn grpcurl_ready() -> Option<PathBuf> {
    let candidate = std::env::var_os("BUILDIT_TEST_GRPCURL")
        .map_or_else(|| PathBuf::from("grpcurl"), PathBuf::from);
    let runs = Command::new(&candidate)
        .arg("-version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide grpcurl (scripts/install-grpcurl.sh; BUILDIT_TEST_GRPCURL={})",
            candidate.display()
        );
        eprintln!("skipped: no grpcurl (scripts/install-grpcurl.sh installs it)");
        return None;
    }
    Some(candidate)
}

/// `buildit` in `dir`, with a clean environment for the variables it reads.
fn buildit_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildit"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    command
}

/// A `buildit daemon` process; killed if the test ends before it stopped it.
struct DaemonProcess {
    child: Child,
    address: String,
    /// The rest of its stderr, line by line, read by a thread so that the pipe never fills.
    stderr: mpsc::Receiver<String>,
}

impl DaemonProcess {
    /// Starts `buildit daemon --listen 127.0.0.1:0 --data-dir DATA` in `dir` and reads its address from stderr.
    fn start(dir: &Path, data_dir: &Path) -> Self {
        Self::start_with(dir, data_dir, &[])
    }

    /// Starts the daemon as `start` does, with `more` arguments.
    fn start_with(dir: &Path, data_dir: &Path, more: &[&str]) -> Self {
        let data_dir = data_dir.display().to_string();
        let mut args = vec![
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
            "--drain",
            "5s",
        ];
        args.extend_from_slice(more);
        let mut child = buildit_command(dir, &args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start buildit daemon");
        let pipe = child.stderr.take().expect("the daemon's stderr");
        let (lines, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut daemon = Self {
            child,
            address: String::new(),
            stderr,
        };
        daemon.address = daemon.line_after("buildit daemon listening on ");
        daemon
    }

    /// The rest of the next line of its stderr that starts with `prefix` (the lines before it are skipped).
    fn line_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(error) => panic!("the daemon never printed `{prefix}` ({error})"),
            }
        }
    }

    /// Sends SIGTERM and waits for the exit code, at most `within`.
    fn terminate(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(matches!(sent, Ok(status) if status.success()), "{sent:?}");
        loop {
            if let Some(status) = self.child.try_wait().expect("the daemon's status") {
                return (status.code(), started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "the daemon did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it printed on stderr since its address.
    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One grpcurl call against `address` (plaintext): `headers`, the request's JSON if any, then what to do (`list`,
/// `describe SYMBOL` or a method).
fn grpcurl(
    binary: &Path,
    address: &str,
    headers: &[String],
    data: Option<&str>,
    what: &[&str],
) -> Output {
    let mut command = Command::new(binary);
    command.args(["-plaintext", "-max-time", CALL_SECONDS]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(data) = data {
        command.args(["-d", data]);
    }
    command.arg(address).args(what);
    command.output().expect("run grpcurl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON documents grpcurl prints one after the other (a stream prints one per message).
fn documents(output: &Output) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| {
            panic!(
                "grpcurl printed no JSON ({error}): {}",
                text(&output.stdout)
            )
        })
}

/// What grpcurl says of a failed call: its exit code is 64 plus the status code, its stderr names the code.
fn assert_status(output: &Output, code: &str, number: i32) {
    assert_eq!(
        output.status.code(),
        Some(64 + number),
        "{code}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stderr).contains(&format!("Code: {code}")),
        "{}",
        text(&output.stderr)
    );
}

/// A token made with `buildit tokens create` in the daemon's store.
fn create_token(dir: &Path, data_dir: &Path, tenant: &str) -> String {
    let url = format!("sqlite:{}", data_dir.join("buildit.db").display());
    let output = buildit_command(
        dir,
        &[
            "tokens",
            "create",
            "--tenant",
            tenant,
            "--database-url",
            &url,
        ],
    )
    .output()
    .expect("run buildit tokens create");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let token = text(&output.stdout).trim().to_owned();
    assert!(!token.is_empty(), "no token printed");
    token
}

/// Every event of a `WatchRun` stream as grpcurl printed it: (seq, the event's JSON object).
fn watched_events(output: &Output) -> Vec<(u64, serde_json::Value)> {
    documents(output)
        .iter()
        .filter_map(|message| message["events"]["events"].as_array())
        .flatten()
        .map(|event| {
            let seq = event["seq"]
                .as_str()
                .and_then(|seq| seq.parse().ok())
                .unwrap_or_else(|| panic!("an event without a seq: {event}"));
            (seq, event.clone())
        })
        .collect()
}

/// A log line's text (grpcurl prints `bytes` as base64).
fn log_text(event: &serde_json::Value) -> Option<String> {
    let encoded = event["logLine"]["text"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|error| panic!("log text is not base64 ({error}): {encoded}"));
    Some(text(&decoded))
}

const PIPELINE: &str = "pipeline \"hello\"
stage \"greet\" { run \"echo hello from the daemon\" }
stage \"after\" { needs \"greet\"; run \"echo done\" }
";

#[test]
fn grpcurl_lists_checks_triggers_and_watches_the_daemon_which_stops_on_sigterm() {
    let Some(grpcurl_binary) = grpcurl_ready() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let mut daemon = DaemonProcess::start(dir.path(), &data_dir);
    let address = daemon.address.clone();
    let call = |headers: &[String], data: Option<&str>, what: &[&str]| {
        grpcurl(&grpcurl_binary, &address, headers, data, what)
    };

    // Reflection: the service and health are listed and described without a token.
    let listed = call(&[], None, &["list"]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let services: Vec<String> = text(&listed.stdout).lines().map(str::to_owned).collect();
    for service in ["buildit.v1.BuildIt", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|line| line == service), "{services:?}");
    }
    let described = call(&[], None, &["describe", "buildit.v1.BuildIt"]);
    assert_eq!(
        described.status.code(),
        Some(0),
        "{}",
        text(&described.stderr)
    );
    let description = text(&described.stdout);
    assert!(
        description.contains("rpc TriggerRun ( .buildit.v1.TriggerRunRequest )")
            && description.contains("returns ( stream .buildit.v1.WatchRunResponse )"),
        "{description}"
    );

    // Health, for the server and for the service.
    for request in ["{}", r#"{"service": "buildit.v1.BuildIt"}"#] {
        let health = call(&[], Some(request), &["grpc.health.v1.Health/Check"]);
        assert_eq!(health.status.code(), Some(0), "{}", text(&health.stderr));
        assert_eq!(documents(&health)[0]["status"], "SERVING", "{request}");
    }

    // Without a token, or with one the store does not know: UNAUTHENTICATED (16).
    assert_status(
        &call(&[], None, &["buildit.v1.BuildIt/ListRuns"]),
        "Unauthenticated",
        16,
    );
    let wrong = vec!["authorization: Bearer bit_not-a-token".to_owned()];
    assert_status(
        &call(&wrong, None, &["buildit.v1.BuildIt/ListRuns"]),
        "Unauthenticated",
        16,
    );

    let token = create_token(dir.path(), &data_dir, "acme");
    let acme = vec![format!("authorization: Bearer {token}")];

    // A trigger queues a run and answers with its id.
    let request = serde_json::json!({ "pipeline": PIPELINE }).to_string();
    let triggered = call(&acme, Some(&request), &["buildit.v1.BuildIt/TriggerRun"]);
    assert_eq!(
        triggered.status.code(),
        Some(0),
        "{}",
        text(&triggered.stderr)
    );
    let run = documents(&triggered)[0]["run"].clone();
    assert_eq!(run["pipeline"], "hello", "{run}");
    let run_id = run["id"].as_str().expect("a run id").to_owned();
    assert!(!run_id.is_empty());

    // Watching it prints every event from seq 1 with no gap, the lines the stages printed, and ends with
    // `run-finished`.
    let watch = serde_json::json!({ "run": run_id }).to_string();
    let watched = call(&acme, Some(&watch), &["buildit.v1.BuildIt/WatchRun"]);
    assert_eq!(watched.status.code(), Some(0), "{}", text(&watched.stderr));
    let events = watched_events(&watched);
    let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "events out of order or with a gap");
    let lines: Vec<String> = events
        .iter()
        .filter_map(|(_, event)| log_text(event))
        .collect();
    for line in ["hello from the daemon", "done"] {
        assert!(lines.iter().any(|printed| printed == line), "{lines:?}");
    }
    let (_, last) = events.last().expect("at least one event");
    let finished: serde_json::Value = serde_json::from_str(
        last["json"]
            .as_str()
            .expect("the last event is a json event"),
    )
    .expect("the json event is JSON");
    assert_eq!(finished["type"], "run-finished", "{finished}");
    assert_eq!(finished["status"], "succeeded", "{finished}");

    // Resuming after a seq gives exactly the events after it.
    let resume = serde_json::json!({ "run": run_id, "after_seq": 3 }).to_string();
    let resumed = call(&acme, Some(&resume), &["buildit.v1.BuildIt/WatchRun"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let resumed_seqs: Vec<u64> = watched_events(&resumed)
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(resumed_seqs, seqs[3..].to_vec());

    // The run, as GetRun sees it once it is over.
    let fetched = call(&acme, Some(&watch), &["buildit.v1.BuildIt/GetRun"]);
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched.stderr));
    assert_eq!(documents(&fetched)[0]["state"], "succeeded");

    // Another tenant's token does not find it.
    let other = vec![format!(
        "authorization: Bearer {}",
        create_token(dir.path(), &data_dir, "other")
    )];
    assert_status(
        &call(&other, Some(&watch), &["buildit.v1.BuildIt/GetRun"]),
        "NotFound",
        5,
    );

    // An invalid pipeline: INVALID_ARGUMENT (3) with every diagnostic in the details, which grpcurl decodes.
    let invalid = serde_json::json!({
        "pipeline": "pipeline \"p\"\nstage \"a\" { run \"true\"; needs \"biuld\" }\nstage \"build\" { rnu \"x\" }\n"
    })
    .to_string();
    let refused = call(&acme, Some(&invalid), &["buildit.v1.BuildIt/TriggerRun"]);
    assert_status(&refused, "InvalidArgument", 3);
    let details = text(&refused.stderr);
    for expected in [
        "type.googleapis.com/buildit.v1.Diagnostics",
        r#""code":"buildit::config::unknown_needs""#,
        r#""line":2"#,
        "did you mean `build`?",
        r#""code":"buildit::config::unknown_node""#,
    ] {
        assert!(details.contains(expected), "{expected} not in {details}");
    }

    // SIGTERM: the daemon stops and exits 0 within a few seconds.
    let (code, took) = daemon.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{:?}", daemon.stderr_lines());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        daemon
            .stderr_lines()
            .iter()
            .any(|line| line.starts_with("stopping: no new runs")),
        "no stop message"
    );
}

/// Sends `GET path` to `address` and returns the status code and the body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn source_links_are_served_where_asked_and_their_flags_are_checked() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let data = data_dir.display().to_string();
    // `buildit daemon` with `args` after its listen address and data directory, which must not start.
    let refused = |args: &[&str]| {
        let mut all = vec!["daemon", "--listen", "127.0.0.1:0", "--data-dir", &data];
        all.extend(args);
        let output = buildit_command(dir.path(), &all)
            .output()
            .expect("run buildit daemon");
        (output.status.code(), text(&output.stderr))
    };
    // A URL without a listener to reach, or a URL that is not one, is a usage error.
    for args in [
        &["--source-url", "http://buildit.example:7778"][..],
        &[
            "--source-listen",
            "127.0.0.1:0",
            "--source-url",
            "buildit.example:7778",
        ],
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
    // An address that listens everywhere, without the URL pods reach it at: links would name `0.0.0.0`.
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (code, stderr) = refused(&["--source-listen", listen]);
        assert_eq!(code, Some(2), "{listen}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "`--source-listen {listen}` listens on every address: give `--source-url`"
            )),
            "{stderr}"
        );
    }
    // An address that is taken: the daemon does not start (exit 4).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_address = taken.local_addr().expect("address").to_string();
    let (code, stderr) = refused(&["--source-listen", &taken_address]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {taken_address}")),
        "{stderr}"
    );
    // Served: it says where, and links name that address unless told otherwise.
    let mut daemon =
        DaemonProcess::start_with(dir.path(), &data_dir, &["--source-listen", "127.0.0.1:0"]);
    let serving = daemon.line_after("buildit daemon serving sources on ");
    let (address, links) = serving
        .split_once(" (links: ")
        .unwrap_or_else(|| panic!("no links named: {serving}"));
    assert_eq!(links, format!("http://{address}/sources/...)"));
    let (status, body) = http_get(address, &format!("/sources/{}", "0".repeat(64)));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no such source link"), "{body}");
    let (code, _) = daemon.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{:?}", daemon.stderr_lines());
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the source links' listener stopped with the daemon"
    );
    // A URL of its own names the links.
    let mut daemon = DaemonProcess::start_with(
        dir.path(),
        &data_dir,
        &[
            "--source-listen",
            "127.0.0.1:0",
            "--source-url",
            "http://buildit-daemon.buildit.svc:7778/",
        ],
    );
    let serving = daemon.line_after("buildit daemon serving sources on ");
    assert!(
        serving.ends_with("(links: http://buildit-daemon.buildit.svc:7778/sources/...)"),
        "{serving}"
    );
    let (code, _) = daemon.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{:?}", daemon.stderr_lines());
}
