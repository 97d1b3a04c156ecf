//! What the execution tests share: a plan from pipeline text, and a subscriber that keeps every event.

use buildit_core::events::RunEvent;
use buildit_core::{Plan, RunContext, parse_pipeline};
use tokio::task::JoinHandle;

/// The plan of `text`, which must be valid.
pub fn plan(text: &str, context: &RunContext) -> Plan {
    let pipeline = match parse_pipeline(text, "buildit.kdl") {
        Ok(pipeline) => pipeline,
        Err(error) => panic!("{error}: {:#?}", error.diagnostics),
    };
    match Plan::build(&pipeline, context) {
        Ok(plan) => plan,
        Err(error) => panic!("{error}"),
    }
}

/// The events a [`collect`] gathered (drop the bus first).
pub async fn events(collector: JoinHandle<Vec<RunEvent>>) -> Vec<RunEvent> {
    match collector.await {
        Ok(events) => events,
        Err(error) => panic!("collector failed: {error}"),
    }
}

/// Collects every event a runner's lossless subscription receives, until the run ends.
pub fn collect_from(
    mut receiver: tokio::sync::mpsc::Receiver<buildit_core::events::EventBatch>,
) -> JoinHandle<Vec<RunEvent>> {
    tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(batch) = receiver.recv().await {
            events.extend(batch.iter().cloned());
        }
        events
    })
}

/// Runs `runner` to its end, its every event recorded; returns the report and the events it emitted.
pub async fn run_to_end<E: buildit_core::exec::Executor>(
    mut runner: buildit_core::runner::Runner<E>,
) -> (buildit_core::exec::RunReport, Vec<RunEvent>) {
    let collector = collect_from(runner.subscribe(1024));
    let handle = match runner.start().await {
        Ok(handle) => handle,
        Err(error) => panic!("the run did not start: {error}"),
    };
    let mut executed = match handle.wait().await {
        Ok(executed) => executed,
        Err(error) => panic!("the run did not execute: {error}"),
    };
    if let Err(error) = executed.recorded().await {
        panic!("the run was not recorded: {error}");
    }
    (executed.report, events(collector).await)
}

/// Fails unless some line starts with `prefix`, showing every line.
pub fn assert_line_starting(lines: &[impl AsRef<str> + std::fmt::Debug], prefix: &str) {
    assert!(
        lines.iter().any(|line| line.as_ref().starts_with(prefix)),
        "no line starts with {prefix:?}: {lines:?}"
    );
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("temporary directory: {error}"),
    }
}
