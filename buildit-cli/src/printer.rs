//! Printing a run's events as they come, as prefixed lines or JSON lines, buffered but never for long.

use std::io::Write as _;
use std::time::Duration;

use buildit_core::events::RunView;

use crate::cli::RunOutput;
use crate::reporter::{LineReporter, json_line};

/// Longest a printed line waits in the output buffer. Flushing whenever the printer caught up cost a write per
/// event (three per stage on a DAG of short stages); a reader cannot tell 20 ms apart.
const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// Writes every event as a line to `out`, buffered: the buffer is flushed [`FLUSH_AFTER`] after its oldest line
/// was written, and at once when the run ends.
/// Returns the run as its events described it, for the summary.
pub(crate) async fn print_events(
    mut events: tokio::sync::mpsc::Receiver<buildit_core::events::EventBatch>,
    mut reporter: LineReporter,
    format: RunOutput,
    out: impl std::io::Write,
) -> RunView {
    let mut view = RunView::new();
    let mut out = std::io::BufWriter::new(out);
    // One timer, armed when the buffer gets its first line since the last flush (not one per event).
    let flush_due = tokio::time::sleep(FLUSH_AFTER);
    tokio::pin!(flush_due);
    let mut unflushed = false;
    loop {
        tokio::select! {
            received = events.recv() => {
                let Some(batch) = received else { break };
                for event in batch.iter() {
                    view.apply(event);
                    // A closed pipe (`buildit run | head`) is the reader's choice, not a failure of the run.
                    let _ = match format {
                        RunOutput::Json => writeln!(out, "{}", json_line(event)),
                        RunOutput::Text => reporter.write(event, &mut out),
                    };
                }
                if !unflushed {
                    unflushed = true;
                    flush_due.as_mut().reset(tokio::time::Instant::now() + FLUSH_AFTER);
                }
            }
            () = &mut flush_due, if unflushed => {
                let _ = out.flush();
                unflushed = false;
            }
        }
    }
    let _ = out.flush();
    view
}

/// Follows every event into a view of the run, printing nothing: the summary's source when the display may
/// skip events.
pub(crate) async fn follow(
    mut events: tokio::sync::mpsc::Receiver<buildit_core::events::EventBatch>,
) -> RunView {
    let mut view = RunView::new();
    while let Some(batch) = events.recv().await {
        for event in batch.iter() {
            view.apply(event);
        }
    }
    view
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use std::sync::Mutex;

    use std::sync::Arc;
    use std::time::Duration;

    use buildit_core::events::{EventBus, RunEventKind};

    use super::*;

    /// Output that the test reads while the printer still owns its writer.
    #[derive(Clone, Default)]
    struct SharedOutput(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedOutput {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("output lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedOutput {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("output lock")).into_owned()
        }
    }

    #[tokio::test]
    async fn printed_lines_are_flushed_while_the_run_goes_on_and_all_at_its_end() {
        let output = SharedOutput::default();
        let mut bus = EventBus::new("run-1");
        let events = bus.subscribe_lossless(16);
        let printer = tokio::spawn(print_events(
            events,
            LineReporter::new(false),
            RunOutput::Text,
            output.clone(),
        ));
        bus.emit(RunEventKind::StageStarted {
            stage: "build".to_owned(),
            attempt: 1,
        })
        .await;
        // The run goes on (the bus is open), and no other event comes: the line still shows up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !output.text().contains("build") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the line was never flushed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bus.emit(RunEventKind::LogLine {
            stage: "build".to_owned(),
            attempt: 1,
            stream: buildit_core::events::LogStreamKind::Stdout,
            text: "last words".to_owned(),
        })
        .await;
        drop(bus);
        printer.await.expect("printer ends with the run");
        let text = output.text();
        assert!(text.contains("started"), "{text}");
        assert!(text.contains("last words"), "{text}");
    }

    /// The summary drawn from a run's events read back from the store is the one the live run printed: the
    /// events carry everything the summary shows (plan order, attempts, retries, failures, durations, the
    /// critical path), and the store keeps every one of them.
    #[tokio::test]
    async fn a_run_read_back_from_the_store_gives_the_summary_the_live_run_printed() {
        use buildit_core::events::{RunEvent, RunView};
        use buildit_core::exec::LocalExecutor;
        use buildit_core::runner::Runner;
        use buildit_core::store::{SqliteStore, Store};

        use crate::reporter::summary;

        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("buildit.db"))
                .await
                .expect("store"),
        );
        let pipeline = buildit_core::parse_pipeline(
            r#"
pipeline "p"
stage "build" { run "echo built"; run "sleep 0.2" }
stage "flaky" {
    needs "build"
    retry 1
    run "test -e marker || { touch marker; exit 1; }"
}
stage "test" {
    needs "build"
    matrix { shard "1" "2" }
    run "echo shard {matrix.shard}"
}
stage "lint" { run "exit 2"; allow-failure }
stage "broken" { needs "flaky"; run "exit 3" }
stage "deploy" { needs "broken"; run "true" }
"#,
            "buildit.kdl",
        )
        .expect("valid pipeline");
        let plan = buildit_core::Plan::build(&pipeline, &buildit_core::RunContext::new())
            .expect("valid plan");
        let mut runner = Runner::new(
            "summary-run",
            plan,
            LocalExecutor::new(),
            Arc::clone(&store),
        )
        .workspace(dir.path());
        let output = SharedOutput::default();
        let printer = tokio::spawn(print_events(
            runner.subscribe(64),
            LineReporter::new(false),
            RunOutput::Text,
            output.clone(),
        ));
        let handle = runner.start().await.expect("the run starts");
        let mut executed = handle.wait().await.expect("the run executes");
        executed.recorded().await.expect("every event is stored");
        let live = summary(&printer.await.expect("the printer ends with the run"));

        let mut stored: Vec<RunEvent> = Vec::new();
        loop {
            let after = stored.last().map_or(0, |event| event.seq);
            let page = store
                .events_after("summary-run", after, 7)
                .await
                .expect("stored events");
            if page.is_empty() {
                break;
            }
            stored.extend(page);
        }
        let replayed = summary(&RunView::from_events(&stored));
        assert_eq!(replayed, live);
        // And the summary says what happened, in the plan's order.
        let rows: Vec<(&str, &str, &str)> = live
            .lines()
            .skip(2)
            .take(7)
            .filter_map(|line| {
                let mut words = line.split("  ").map(str::trim).filter(|w| !w.is_empty());
                Some((words.next()?, words.next()?, words.next()?))
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("build", "succeeded", "1"),
                ("lint", "failed-allowed", "1"),
                ("flaky", "succeeded", "2"),
                ("test (shard=1)", "succeeded", "1"),
                ("test (shard=2)", "succeeded", "1"),
                ("broken", "failed", "1"),
                ("deploy", "skipped", "0"),
            ],
            "{live}"
        );
        assert!(live.contains("\nrun failed in "), "{live}");
        assert!(
            live.contains("critical path: build -> flaky -> broken\n"),
            "{live}"
        );
        let printed = output.text();
        assert!(
            printed
                .lines()
                .any(|line| line.starts_with("broken ") && line.contains("| ✗ failed")),
            "{printed}"
        );
    }
}
