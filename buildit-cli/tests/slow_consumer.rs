//! Slow consumers against a real `buildit daemon` on loopback: clients that read a 100,000-line stage's stream
//! far slower than the stage prints it get every line, once and in order, and the daemon's memory stays bounded
//! (it does not keep the run's log for them).

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon, token or client cannot be set up"
)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

/// Lines the stage prints, each 100 bytes: a 10 MB log.
const LINES: u64 = 100_000;
/// Slow `WatchRun` streams of the run (and one slow `StreamLogs` with `follow`).
const WATCHERS: usize = 4;
/// How long a slow client waits after each message while the stage prints.
const SLOW_READ: Duration = Duration::from_millis(50);
/// How much the daemon's resident memory may grow while it runs the stage and feeds the slow clients.
///
/// The log is 10 MB of text, about 21 MB as events (the event, its text, its stage's name). The run alone grows
/// the daemon by 18-24 MB (its recorder's queue holds much of the log while the store catches up with a stage
/// this fast); with the five slow clients, by 38-44 MB (40-43 MB in a release build; docs/daemon.md, "Slow
/// clients"). A daemon that kept the unread stream for each slow client grew by 104-109 MB here.
const MAX_GROWTH_KB: u64 = 64 * 1024;

/// `buildit` in `dir`, with a clean environment for the variables it reads.
fn buildit_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildit"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .env_remove("BUILDIT_SERVER")
        .env_remove("BUILDIT_TOKEN")
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    command
}

/// A `buildit daemon` on a free loopback port, stopped (SIGTERM, then waited for) when dropped.
struct Daemon {
    child: Child,
    address: String,
}

impl Daemon {
    fn start(dir: &Path, data: &Path) -> Self {
        let data = data.display().to_string();
        let mut child = buildit_command(
            dir,
            &[
                "daemon",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &data,
                "--workers",
                "1",
                "--drain",
                "5s",
            ],
        )
        // mimalloc returns freed pages to the system after a delay; without it, the daemon's resident memory
        // follows what it holds, not how fast it allocates and frees.
        .env("MIMALLOC_PURGE_DELAY", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let address = lines
            .next()
            .and_then(Result::ok)
            .and_then(|line| {
                line.strip_prefix("buildit daemon listening on ")
                    .map(str::to_owned)
            })
            .expect("the daemon says where it listens");
        // The rest of its log is read so that the pipe never fills.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self { child, address }
    }

    /// Its resident memory now, in kB.
    fn rss_kb(&self) -> u64 {
        rss_kb(self.child.id()).expect("the daemon's /proc status")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of a process, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's resident memory every few milliseconds until stopped; the peak.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kb(pid).unwrap_or(0))
        });
        Self { stop, thread }
    }

    fn peak_kb(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler")
    }
}

/// A pipeline whose one stage prints `lines` lines of 100 bytes: `line NNNNNN ` and 88 `x`.
fn pipeline(lines: u64) -> String {
    let command = format!(
        "awk 'BEGIN {{ pad = sprintf(\"%88s\", \"\"); gsub(/ /, \"x\", pad); \
         for (i = 1; i <= {lines}; i++) print \"line \" sprintf(\"%06d\", i) \" \" pad }}'"
    );
    let quoted = command.replace('\\', "\\\\").replace('"', "\\\"");
    format!("pipeline \"slow-consumer\"\nstage \"print\" {{\n    run \"{quoted}\"\n}}\n")
}

/// The number of a line the stage printed; `None` for any other line (the echo of the command).
fn line_number(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_prefix("line ")?;
    let (number, pad) = text.split_once(' ')?;
    (pad.len() == 88).then_some(())?;
    number.parse().ok()
}

async fn client(address: &str) -> BuildItClient<Channel> {
    // A connection per client, as separate watchers have: one slow stream never holds up another's window.
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("an address")
        .connect()
        .await
        .expect("the daemon answers");
    BuildItClient::new(channel)
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    request
}

async fn trigger(client: &mut BuildItClient<Channel>, token: &str, lines: u64) -> String {
    client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                pipeline: pipeline(lines),
                ..proto::TriggerRunRequest::default()
            },
            token,
        ))
        .await
        .expect("the run is queued")
        .into_inner()
        .run
        .expect("a run")
        .id
}

/// Reads a whole `WatchRun` stream, pausing after each message while `slow` is set; the numbers of the lines
/// the stage printed, in the order received. Events must come with consecutive sequence numbers from 1 and end
/// with `run-finished`.
async fn watch(address: String, token: String, run: String, slow: Arc<AtomicBool>) -> Vec<u64> {
    let mut client = client(&address).await;
    let mut stream = client
        .watch_run(authorized(
            proto::WatchRunRequest { run, after_seq: 0 },
            &token,
        ))
        .await
        .expect("the watch opens")
        .into_inner();
    let mut numbers = Vec::new();
    let mut seq = 0;
    let mut finished = false;
    while let Some(message) = stream.message().await.expect("the watch goes on") {
        if let Some(Item::Events(batch)) = message.item {
            for event in batch.events {
                assert_eq!(event.seq, seq + 1, "events come in order, without gaps");
                seq = event.seq;
                match event.kind {
                    Some(proto::event::Kind::LogLine(line)) => {
                        numbers.extend(line_number(&line.text));
                    }
                    Some(proto::event::Kind::Json(json)) => {
                        finished = json.contains("\"type\":\"run-finished\"");
                    }
                    None => {}
                }
            }
        }
        if slow.load(Ordering::Relaxed) {
            tokio::time::sleep(SLOW_READ).await;
        }
    }
    assert!(finished, "the watch ends with run-finished");
    numbers
}

/// Reads a whole `StreamLogs` stream with `follow`, pausing after each message while `slow` is set; the numbers
/// of the lines the stage printed, in the order received.
async fn logs(address: String, token: String, run: String, slow: Arc<AtomicBool>) -> Vec<u64> {
    let mut client = client(&address).await;
    let mut stream = client
        .stream_logs(authorized(
            proto::StreamLogsRequest {
                run,
                follow: true,
                ..proto::StreamLogsRequest::default()
            },
            &token,
        ))
        .await
        .expect("the log stream opens")
        .into_inner();
    let mut numbers = Vec::new();
    while let Some(message) = stream.message().await.expect("the log stream goes on") {
        numbers.extend(
            message
                .lines
                .iter()
                .filter_map(|line| line_number(&line.text)),
        );
        if slow.load(Ordering::Relaxed) {
            tokio::time::sleep(SLOW_READ).await;
        }
    }
    numbers
}

/// Polls the run until it has ended; its state.
async fn wait_for_end(client: &mut BuildItClient<Channel>, token: &str, run: &str) -> String {
    loop {
        let state = client
            .get_run(authorized(
                proto::GetRunRequest {
                    run: run.to_owned(),
                },
                token,
            ))
            .await
            .expect("the run is known")
            .into_inner()
            .state;
        if !matches!(state.as_str(), "queued" | "started" | "running") {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_of_a_100000_line_stage_get_every_line_and_the_daemon_memory_stays_bounded()
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("daemon");
    let daemon = Daemon::start(dir.path(), &data);
    let created = buildit_command(
        dir.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--database-url",
            &format!("sqlite:{}", data.join("buildit.db").display()),
        ],
    )
    .output()
    .expect("buildit tokens create runs");
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let mut control = client(&daemon.address).await;

    // A small run first, watched to its end: the daemon's connections, store readers and threads exist before
    // the memory it starts from is read.
    let warm_up = trigger(&mut control, &token, 1000).await;
    let numbers = watch(
        daemon.address.clone(),
        token.clone(),
        warm_up,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!(numbers, (1..=1000).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kb = daemon.rss_kb();

    let sampler = PeakSampler::start(daemon.child.id());
    let run = trigger(&mut control, &token, LINES).await;
    let slow = Arc::new(AtomicBool::new(true));
    let mut consumers = Vec::new();
    for _ in 0..WATCHERS {
        consumers.push(tokio::spawn(watch(
            daemon.address.clone(),
            token.clone(),
            run.clone(),
            Arc::clone(&slow),
        )));
    }
    consumers.push(tokio::spawn(logs(
        daemon.address.clone(),
        token.clone(),
        run.clone(),
        Arc::clone(&slow),
    )));
    // The clients stay slow until the stage has printed everything and the run has ended: the daemon had the
    // whole log while they were tens of thousands of lines behind. Then they read the rest as fast as they can.
    let started = Instant::now();
    let state = wait_for_end(&mut control, &token, &run).await;
    let run_took = started.elapsed();
    assert_eq!(state, "succeeded");
    slow.store(false, Ordering::Relaxed);
    let expected: Vec<u64> = (1..=LINES).collect();
    for (index, consumer) in consumers.into_iter().enumerate() {
        let numbers = consumer.await.expect("the client reads its stream");
        assert!(
            numbers == expected,
            "client {index}: {} lines, first out of place at {:?}",
            numbers.len(),
            numbers
                .iter()
                .zip(&expected)
                .position(|(got, wanted)| got != wanted)
        );
    }
    let peak_kb = sampler.peak_kb();
    let growth_kb = peak_kb.saturating_sub(before_kb);
    eprintln!(
        "daemon RSS {before_kb} kB before, peak {peak_kb} kB: grew {growth_kb} kB (run took {run_took:?})"
    );
    assert!(
        growth_kb < MAX_GROWTH_KB,
        "the daemon grew by {growth_kb} kB feeding {} slow clients of a {} MB log (bound {MAX_GROWTH_KB} kB)",
        WATCHERS + 1,
        LINES * 100 / 1_000_000
    );
}
