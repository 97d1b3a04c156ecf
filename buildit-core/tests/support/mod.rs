//! What the execution tests share: a plan from pipeline text, and a subscriber that keeps every event.

use buildit_core::events::{EventBus, RunEvent};
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

/// Collects every event of `bus` until it is dropped; [`events`] returns them.
pub fn collect(bus: &mut EventBus) -> JoinHandle<Vec<RunEvent>> {
    let mut receiver = bus.subscribe_lossless(1024);
    tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(batch) = receiver.recv().await {
            events.extend(batch.iter().cloned());
        }
        events
    })
}

/// The events a [`collect`] gathered (drop the bus first).
pub async fn events(collector: JoinHandle<Vec<RunEvent>>) -> Vec<RunEvent> {
    match collector.await {
        Ok(events) => events,
        Err(error) => panic!("collector failed: {error}"),
    }
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
