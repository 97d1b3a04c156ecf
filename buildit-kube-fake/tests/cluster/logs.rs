//! `pods/log`: follow is live, timestamps have nanoseconds, and the `cut-logs` fault ends a follow early.

use std::time::{Duration, Instant};

use buildit_kube_fake::{Fault, FaultKind};
use futures_util::StreamExt as _;
use futures_util::io::AsyncBufReadExt as _;
use kube::api::LogParams;

use crate::support::{Harness, create_job, eventually, job, job_condition, job_pod, job_pod_name};

/// The pod's name once its main container runs.
async fn running_pod(harness: &Harness, job_name: &str) -> String {
    let name = job_pod(harness, job_name)
        .await
        .metadata
        .name
        .expect("a name");
    eventually(20, "the container running", || async {
        let pod = harness.pods().get(&name).await.ok()?;
        let state = pod.status?.container_statuses?.first()?.state.clone()?;
        (state.running.is_some() || state.terminated.is_some()).then_some(())
    })
    .await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_is_live_and_ends_with_the_container() {
    let harness = Harness::start().await;
    create_job(
        &harness,
        &job("live", "echo early; sleep 2; echo late; echo err >&2"),
    )
    .await;
    let name = running_pod(&harness, "live").await;
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = harness
        .pods()
        .log_stream(&name, &follow)
        .await
        .expect("follow")
        .lines();
    let first = lines.next().await.expect("a line").expect("readable");
    let early_at = Instant::now();
    assert_eq!(first, "early");
    let phase = harness
        .pods()
        .get(&name)
        .await
        .expect("the pod")
        .status
        .and_then(|status| status.phase);
    assert_eq!(
        phase.as_deref(),
        Some("Running"),
        "the first line came while the container ran"
    );
    let second = lines.next().await.expect("a line").expect("readable");
    assert!(
        early_at.elapsed() >= Duration::from_millis(1000),
        "the next line came after the sleep"
    );
    let third = lines.next().await.expect("a line").expect("readable");
    // stdout and stderr are separate pipes: lines written at the same moment may come in either order.
    let mut rest = [second, third];
    rest.sort();
    assert_eq!(rest, ["err", "late"]);
    assert!(
        lines.next().await.is_none(),
        "the stream ends when the container does"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_rfc3339_with_nanoseconds_and_tail_lines_work() {
    let harness = Harness::start().await;
    create_job(&harness, &job("stamped", "echo one; echo two; echo three")).await;
    job_condition(&harness, "stamped", "Complete", 30).await;
    let name = job_pod_name(&harness, "stamped").await;
    let params = LogParams {
        timestamps: true,
        ..LogParams::default()
    };
    let log = harness.pods().logs(&name, &params).await.expect("the log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, text) in lines.iter().zip(["one", "two", "three"]) {
        let (stamp, rest) = line.split_once(' ').expect("a timestamp");
        assert_eq!(rest, text);
        assert_eq!(
            stamp.len(),
            "2026-12-07T13:05:40.123456789Z".len(),
            "{stamp}"
        );
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
            "{stamp}"
        );
    }
    let tail = LogParams {
        tail_lines: Some(1),
        ..LogParams::default()
    };
    assert_eq!(
        harness.pods().logs(&name, &tail).await.expect("the log"),
        "three\n"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_log_stream_ends_early_and_the_next_follow_is_whole() {
    let harness = Harness::start().await;
    let fault = Fault::new(FaultKind::CutLogs, "buildit.stage=cut").after_lines(2);
    harness.cluster.faults().inject(fault).expect("inject");
    create_job(
        &harness,
        &job(
            "cut",
            "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done",
        ),
    )
    .await;
    let name = running_pod(&harness, "cut").await;
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = harness
        .pods()
        .log_stream(&name, &follow)
        .await
        .expect("follow")
        .lines();
    let mut received = Vec::new();
    let mut ended_with_error = false;
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => received.push(line),
            Err(_) => {
                ended_with_error = true;
                break;
            }
        }
    }
    assert_eq!(received, ["line 1", "line 2"]);
    assert!(
        ended_with_error,
        "the connection ends without its final chunk"
    );
    job_condition(&harness, "cut", "Complete", 30).await;
    let whole = harness
        .pods()
        .log_stream(&name, &follow)
        .await
        .expect("follow");
    let whole: Vec<String> = whole
        .lines()
        .map(|line| line.expect("readable"))
        .collect()
        .await;
    assert_eq!(whole.len(), 5, "{whole:?}");
    harness.stop().await;
}
