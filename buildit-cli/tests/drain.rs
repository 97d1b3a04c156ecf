//! SIGTERM to a real `buildit daemon` with a run going and streams open (one read, one never read): the streams
//! end with `UNAVAILABLE` and where to resume, the run is cancelled after the drain window, and the process exits
//! within the drain window plus one second; the next daemon tells the rest of the run from where the stream ended.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or client cannot be set up"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use buildit_core::events::{RunEventKind, RunOutcome};
use buildit_grpc::event_from_wire;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

mod support;

use support::{Daemon, create_token};

const DRAIN: Duration = Duration::from_secs(2);

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
    let mut first = Daemon::on_free_port(&data, &["--drain", "2s"]);
    let token = create_token(dir.path(), &data, "acme", "test");

    let mut client = BuildItClient::connect(first.url()).await.expect("connect");
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
    let second = Daemon::on_free_port(&data, &["--drain", "2s"]);
    let mut client = BuildItClient::connect(second.url()).await.expect("connect");
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
