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
}
