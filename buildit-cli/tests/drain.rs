//! SIGTERM to a real `buildit daemon` with a run going and streams open (one read, one never read): the streams
//! end with `UNAVAILABLE` and where to resume, the run is cancelled after the drain window, and the process exits
//! within the drain window plus one second; the next daemon tells the rest of the run from where the stream ended.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or client cannot be set up"
)]

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use buildit_core::events::{RunEventKind, RunOutcome};
use buildit_grpc::event_from_wire;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

const DRAIN: Duration = Duration::from_secs(2);

fn buildit(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildit"));
    command
        .current_dir(dir)
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .env_remove("BUILDIT_SERVER")
        .env_remove("BUILDIT_TOKEN")
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    command
}

/// A daemon with a 2 s drain; killed when dropped if it still runs.
struct Daemon {
    child: Child,
    address: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(data: &Path) -> Daemon {
    let mut child = buildit(data.parent().expect("a parent"))
        .args([
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--drain",
            "2s",
            "--data-dir",
        ])
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let address = first
        .strip_prefix("buildit daemon listening on ")
        .unwrap_or_else(|| panic!("the daemon did not start: {first}"))
        .trim()
        .to_owned();
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Daemon { child, address }
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

async fn watch(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_cancels_the_run_after_the_drain_and_exits_within_a_second_of_it()
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("daemon");
    let mut first = daemon(&data);
    let created = buildit(dir.path())
        .args(["tokens", "create", "--tenant", "acme", "--database-url"])
        .arg(format!("sqlite:{}", data.join("buildit.db").display()))
        .output()
        .expect("tokens create runs");
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();

    let mut client = BuildItClient::connect(format!("http://{}", first.address))
        .await
        .expect("connect");
    let run = client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                pipeline: "pipeline \"long\"\nstage \"wait\" { run \"echo started; sleep 60\" }\n"
                    .to_owned(),
                ..proto::TriggerRunRequest::default()
            },
            &token,
        ))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    // One stream read until the stage has started, one never read.
    let mut stream = watch(&mut client, &token, &run.id, 0).await;
    let _unread = client
        .stream_logs(authorized(
            proto::StreamLogsRequest {
                run: run.id.clone(),
                follow: true,
                ..proto::StreamLogsRequest::default()
            },
            &token,
        ))
        .await
        .expect("logs");
    let mut last_seq = 0;
    let mut started = false;
    while !started {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream went silent")
            .expect("the stream failed")
            .expect("the stream ended early");
        if let Some(Item::Events(batch)) = message.item {
            for event in &batch.events {
                let event = event_from_wire(&run.id, event).expect("a known event");
                last_seq = event.seq;
                started |=
                    matches!(&event.kind, RunEventKind::LogLine { text, .. } if text == "started");
            }
        }
    }

    let signalled = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    // The read stream ends at once with where to resume.
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    if let Some(Item::Events(batch)) = message.item
                        && let Some(last) = batch.events.last()
                    {
                        last_seq = last.seq;
                    }
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream did not end within a second of SIGTERM");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(
        ended
            .message()
            .contains(&format!("resume with after_seq {last_seq}")),
        "{ended:?}"
    );
    let status = loop {
        if let Some(status) = first.child.try_wait().expect("the daemon's status") {
            break status;
        }
        assert!(
            signalled.elapsed() < DRAIN + Duration::from_secs(5),
            "the daemon did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= DRAIN && took < DRAIN + Duration::from_secs(1),
        "the daemon exited {took:?} after SIGTERM (drain {DRAIN:?})"
    );

    // The next daemon tells the rest: the stage cancelled, then the run.
    let second = daemon(&data);
    let mut client = BuildItClient::connect(format!("http://{}", second.address))
        .await
        .expect("connect");
    let mut rest = watch(&mut client, &token, &run.id, last_seq).await;
    let mut events = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), rest.message())
        .await
        .expect("the stream went silent")
        .expect("the stream failed")
    {
        if let Some(Item::Events(batch)) = message.item {
            events.extend(
                batch
                    .events
                    .iter()
                    .map(|event| event_from_wire(&run.id, event).expect("a known event")),
            );
        }
    }
    assert_eq!(
        events.first().map(|event| event.seq),
        Some(last_seq + 1),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last().map(|event| &event.kind),
            Some(RunEventKind::RunFinished {
                status: RunOutcome::Cancelled,
                ..
            })
        ),
        "{events:?}"
    );
    drop(second);
}
