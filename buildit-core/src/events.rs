//! The one event stream of a run: owned, serialisable events with a per-run sequence number, fanned out to
//! lossless subscribers (the store) and lossy ones (displays).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How one attempt of a stage, or a stage that never started, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageOutcome {
    /// Every command exited 0.
    Succeeded,
    /// A command failed.
    Failed,
    /// It failed, but `allow-failure` keeps the run green.
    FailedAllowed,
    /// It ran out of time (a failure).
    TimedOut,
    /// It was stopped by cancellation.
    Cancelled,
    /// It did not run.
    Skipped,
}

impl StageOutcome {
    /// Whether this outcome fails the stage (and, unless allowed, the run).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut)
    }

    /// The name used in events and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::FailedAllowed => "failed-allowed",
            Self::TimedOut => "timed-out",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }
}

/// How a whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every stage that ran succeeded (or was allowed to fail).
    Succeeded,
    /// A stage failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RunEventKind {
    /// The run began.
    RunStarted {
        /// Pipeline name.
        pipeline: String,
        /// Stage instances in the plan.
        stages: usize,
    },
    /// A stage is waiting for its needs or a slot.
    StageQueued {
        /// Instance name.
        stage: String,
    },
    /// An attempt started.
    StageStarted {
        /// Instance name.
        stage: String,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// One line of output.
    LogLine {
        /// Instance name.
        stage: String,
        /// Attempt the line belongs to.
        attempt: u32,
        /// stdout or stderr.
        stream: LogStreamKind,
        /// The text, without its line ending, secrets masked.
        text: String,
    },
    /// An attempt (or a stage that never ran) finished.
    StageFinished {
        /// Instance name.
        stage: String,
        /// Attempt number; 0 for a stage that never started.
        attempt: u32,
        /// How it ended.
        outcome: StageOutcome,
        /// Exit code of the shell, when it exited.
        exit_code: Option<i32>,
        /// Wall time of the attempt in milliseconds.
        duration_ms: u64,
        /// Why (skip reasons, timeouts, infrastructure errors).
        reason: Option<String>,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEvent {
    /// Gapless, starting at 1, per run.
    pub seq: u64,
    /// The run.
    pub run_id: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: RunEventKind,
}

/// Consecutive events of a run, handed to subscribers as one message: a stage's output arrives a read at a
/// time (often thousands of lines), and one message per read instead of per line is what keeps a log pipeline
/// fast. Shared, not copied, between subscribers.
pub type EventBatch = Arc<Vec<RunEvent>>;

/// Capacity of the display channel; a display that falls this far behind skips lines (and is told how many).
const DISPLAY_CAPACITY: usize = 4096;

/// Fans events out. Lossless subscribers (the store) get every event and slow the run down when they fall
/// behind (bounded back-pressure); display subscribers never slow it down and may skip, with a count of what
/// they missed ([`broadcast::error::RecvError::Lagged`]).
#[derive(Debug, Clone)]
pub struct EventBus {
    run_id: Arc<str>,
    /// The last sequence number; held while an event is handed out, so every subscriber sees them in order.
    seq: Arc<tokio::sync::Mutex<u64>>,
    lossless: Arc<[mpsc::Sender<EventBatch>]>,
    display: broadcast::Sender<EventBatch>,
}

impl EventBus {
    /// A bus for one run.
    pub fn new(run_id: impl Into<String>) -> Self {
        let (display, _) = broadcast::channel(DISPLAY_CAPACITY);
        Self {
            run_id: Arc::from(run_id.into()),
            seq: Arc::new(tokio::sync::Mutex::new(0)),
            lossless: Arc::from(Vec::new()),
            display,
        }
    }

    /// A subscriber that receives every event; it must keep reading, or the run waits for it. Subscribe before
    /// the bus is cloned for the run: clones made earlier do not send to later subscribers.
    pub fn subscribe_lossless(&mut self, capacity: usize) -> mpsc::Receiver<EventBatch> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let mut senders = self.lossless.to_vec();
        senders.push(sender);
        self.lossless = Arc::from(senders);
        receiver
    }

    /// A display subscriber: never slows the run; lags are reported to it as skipped counts.
    pub fn subscribe_display(&self) -> broadcast::Receiver<EventBatch> {
        self.display.subscribe()
    }

    /// A display subscriber that starts exactly at the live edge, with the sequence number of the last event
    /// emitted before it (0: none yet): it receives every later event and none before (events are handed out
    /// under the sequence lock that this takes). A late joiner reads the events up to the edge from the store.
    pub async fn subscribe_display_at_edge(&self) -> (u64, broadcast::Receiver<EventBatch>) {
        let seq = self.seq.lock().await;
        (*seq, self.display.subscribe())
    }

    /// A bus whose display subscribers may fall `capacity` batches behind before they skip (the default is
    /// 4,096).
    pub fn with_display_capacity(run_id: impl Into<String>, capacity: usize) -> Self {
        let (display, _) = broadcast::channel(capacity.max(1));
        Self {
            display,
            ..Self::new(run_id)
        }
    }

    /// The run this bus belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Stamps and sends an event to every subscriber.
    pub async fn emit(&self, kind: RunEventKind) {
        let mut seq = self.seq.lock().await;
        let event = self.stamp(&mut seq, now_ms(), kind);
        self.send(Arc::new(vec![event])).await;
    }

    /// Stamps and sends several events as one batch, under one lock (a run's queued stages, the lines of one
    /// read: one message per subscriber instead of one per event); nothing for no events.
    pub async fn emit_all(&self, kinds: impl IntoIterator<Item = RunEventKind>) {
        let at_ms = now_ms();
        let mut seq = self.seq.lock().await;
        let batch: Vec<RunEvent> = kinds
            .into_iter()
            .map(|kind| self.stamp(&mut seq, at_ms, kind))
            .collect();
        // Sent while the sequence is held, so that every subscriber sees batches in order.
        if !batch.is_empty() {
            self.send(Arc::new(batch)).await;
        }
    }

    /// Stamps and sends consecutive log lines of one attempt and stream as one batch, under one lock: what one
    /// read of a stage's output produced.
    pub async fn emit_lines(
        &self,
        stage: &str,
        attempt: u32,
        stream: LogStreamKind,
        lines: Vec<String>,
    ) {
        self.emit_all(lines.into_iter().map(|text| RunEventKind::LogLine {
            stage: stage.to_owned(),
            attempt,
            stream,
            text,
        }))
        .await;
    }

    fn stamp(&self, seq: &mut u64, at_ms: u64, kind: RunEventKind) -> RunEvent {
        *seq += 1;
        RunEvent {
            seq: *seq,
            run_id: Arc::clone(&self.run_id),
            at_ms,
            kind,
        }
    }

    async fn send(&self, batch: EventBatch) {
        for subscriber in self.lossless.iter() {
            // A subscriber that hung up has stopped listening on purpose; the others still get everything.
            let _ = subscriber.send(Arc::clone(&batch)).await;
        }
        if self.display.receiver_count() > 0 {
            let _ = self.display.send(batch);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn several_events_go_out_as_one_batch_in_sequence() {
        let mut bus = EventBus::new("run");
        let mut events = bus.subscribe_lossless(4);
        bus.emit(RunEventKind::StageQueued {
            stage: "first".to_owned(),
        })
        .await;
        bus.emit_all(["a", "b", "c"].map(|stage| RunEventKind::StageQueued {
            stage: stage.to_owned(),
        }))
        .await;
        bus.emit_all(std::iter::empty()).await;
        drop(bus);
        let single = events.recv().await.expect("the first event");
        assert_eq!(single.len(), 1);
        let batch = events.recv().await.expect("the batch");
        let seqs: Vec<u64> = batch.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        // Nothing is sent for no events.
        assert!(events.recv().await.is_none());
    }
}
