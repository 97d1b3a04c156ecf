//! Several daemons on one store: a run queued through one daemon and run by another is watched through the
//! first (with heartbeats while it waits, then its events as they are stored) and cancelled through it.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or client cannot be set up"
)]

mod support;

use std::time::{Duration, Instant};

use buildit_core::events::{RunEventKind, RunOutcome, RunView};
use buildit_grpc::proto;
use buildit_grpc::proto::build_it_client::BuildItClient;
use support::{Watched, authorized, daemon_on, next_watched, open_watch, token_in, trigger};

const PIPELINE: &str = r#"
pipeline "shared"
stage "first" { run "echo one"; run "echo two" }
stage "slow" { needs "first"; run "echo waiting; sleep 60" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_of_another_daemon_is_watched_and_cancelled_through_this_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let token = token_in(dir.path(), "acme").await;
    // The front daemon has no workers: it queues runs for the other one.
    let (front, front_stop, front_served) = daemon_on(dir.path(), 0).await;
    let mut client = BuildItClient::connect(front).await.expect("connect");
    let run = client
        .trigger_run(authorized(trigger(PIPELINE), &token))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    assert_eq!(run.state, "queued");
    let mut stream = open_watch(&mut client, &token, &run.id, 0).await;
    // Nothing runs it yet: the stream says it is alive.
    match next_watched(&mut stream, &run.id, Duration::from_secs(8)).await {
        Some(Watched::Heartbeat(0)) => {}
        Some(Watched::Heartbeat(seq)) => panic!("a heartbeat at {seq} before any event"),
        Some(Watched::Events(events)) => panic!("events of a queued run: {events:?}"),
        None => panic!("the watch of a queued run ended"),
    }

    // The worker daemon runs it; the front one streams it from the store as it is recorded.
    let (_worker, worker_stop, worker_served) = daemon_on(dir.path(), 1).await;
    let mut events = Vec::new();
    let waiting = |events: &[buildit_core::events::RunEvent]| {
        events.iter().any(
            |event| matches!(&event.kind, RunEventKind::LogLine { text, .. } if text == "waiting"),
        )
    };
    while !waiting(&events) {
        match next_watched(&mut stream, &run.id, Duration::from_secs(20)).await {
            Some(Watched::Events(batch)) => events.extend(batch),
            Some(Watched::Heartbeat(_)) => {}
            None => panic!("the watch ended before the slow stage printed: {events:?}"),
        }
    }
    let running = client
        .get_run(authorized(
            proto::GetRunRequest {
                run: run.id.clone(),
            },
            &token,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(running.state, "running");

    // A cancel through the front daemon reaches the worker daemon's run.
    let asked = Instant::now();
    client
        .cancel_run(authorized(
            proto::CancelRunRequest {
                run: run.id.clone(),
            },
            &token,
        ))
        .await
        .expect("cancel");
    while let Some(watched) = next_watched(&mut stream, &run.id, Duration::from_secs(20)).await {
        if let Watched::Events(batch) = watched {
            events.extend(batch);
        }
    }
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the cancel took {took:?} to end the run"
    );
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let view = RunView::from_events(&events);
    assert_eq!(
        view.ending.map(|ending| ending.status),
        Some(RunOutcome::Cancelled)
    );
    let ended = client
        .get_run(authorized(
            proto::GetRunRequest {
                run: run.id.clone(),
            },
            &token,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(ended.state, "cancelled");

    worker_stop.cancel();
    front_stop.cancel();
    worker_served.await.expect("the worker daemon stops");
    front_served.await.expect("the front daemon stops");
}
