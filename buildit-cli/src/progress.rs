//! The terminal display of `buildit run`: one progress bar listing the running stages with their elapsed time,
//! live log lines printed above it. It is a lossy subscriber: when it falls behind, it says how much it skipped.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use buildit_core::events::{EventBatch, RunEventKind};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::reporter::LineReporter;

/// Draws the run until its `run-finished` event (or the bus closes), from the events alone: the number of stages
/// comes with `run-started`.
pub(crate) async fn show(mut events: broadcast::Receiver<EventBatch>) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    let style =
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    let mut reporter = LineReporter::new(true);
    let mut running: BTreeMap<String, Instant> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut done = false;
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(batch) => {
                    for event in batch.iter() {
                    match &event.kind {
                        RunEventKind::RunStarted { stages, .. } => bar.set_length(u64::from(*stages)),
                        RunEventKind::StageStarted { stage, .. } => {
                            // A retry starts the stage again: it is not done until its last attempt.
                            finished.remove(stage);
                            running.insert(stage.clone(), Instant::now());
                        }
                        // An attempt that is retried does not finish its stage.
                        RunEventKind::StageFinished { retrying: true, stage, .. } => {
                            running.remove(stage);
                        }
                        RunEventKind::StageFinished { stage, .. } => {
                            running.remove(stage);
                            finished.insert(stage.clone());
                            bar.set_position(finished.len() as u64);
                        }
                        RunEventKind::RunFinished { .. } => done = true,
                        _ => {}
                    }
                    if let Some(line) = reporter.line(event) {
                        bar.println(line);
                    }
                    }
                    bar.set_message(describe(&running));
                    if done {
                        break;
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    bar.println(format!("… output skipped ({skipped} batches of lines): the display could not keep up (`--format json` or `--plain` show every line)"));
                }
                Err(RecvError::Closed) => break,
            },
            _ = ticker.tick() => bar.set_message(describe(&running)),
        }
    }
    bar.finish_and_clear();
}

fn describe(running: &BTreeMap<String, Instant>) -> String {
    let parts: Vec<String> = running
        .iter()
        .map(|(stage, started)| format!("{stage} {}s", started.elapsed().as_secs()))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("running: {}", parts.join(", "))
    }
}
