//! The one event stream of a run: owned, serialisable events with a per-run sequence number, fanned out to
//! lossless subscribers (the store) and lossy ones (displays).

mod view;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
pub use view::{InstanceView, RunEnding, RunView};

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

/// Why an attempt failed, for machines: a daemon retries a job lost to infrastructure, and reports a stage's own
/// failure as it is. The human reason travels beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// A command exited non-zero, or was killed by a signal it did not get from BuildIt.
    ExitCode,
    /// The stage ran out of time.
    Timeout,
    /// The stage was killed for using too much memory.
    OutOfMemory,
    /// Its image could not be pulled or is missing.
    ImagePull,
    /// The machine evicted it (a Kubernetes pod disruption).
    Evicted,
    /// It disappeared: its container or pod was removed by someone else.
    Lost,
    /// It was stopped by cancellation.
    Cancelled,
    /// BuildIt or its backends failed (a workspace, a transfer, an executor error).
    Infrastructure,
    /// The stage's definition could not be used (a value that cannot be rendered, a refused secret, artifacts
    /// that match nothing).
    Config,
}

impl FailureKind {
    /// The name used in events and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExitCode => "exit-code",
            Self::Timeout => "timeout",
            Self::OutOfMemory => "out-of-memory",
            Self::ImagePull => "image-pull",
            Self::Evicted => "evicted",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
            Self::Infrastructure => "infrastructure",
            Self::Config => "config",
        }
    }

    /// Whether the failure is the infrastructure's, not the stage's: running the same stage again elsewhere may
    /// succeed.
    pub fn is_infrastructure(self) -> bool {
        matches!(self, Self::ImagePull | Self::Lost | Self::Infrastructure)
    }
}

/// One stage instance of a run's plan, as a display needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedInstance {
    /// Instance name.
    pub name: String,
    /// The instances it needs, as indexes into the plan's list.
    pub needs: Vec<u32>,
    /// Its level: 0 without needs, else one more than its deepest need.
    pub level: u32,
}

/// How many stages ended which way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounts {
    /// Succeeded.
    pub succeeded: u32,
    /// Failed (not allowed to).
    pub failed: u32,
    /// Failed, allowed to.
    pub failed_allowed: u32,
    /// Timed out.
    pub timed_out: u32,
    /// Cancelled.
    pub cancelled: u32,
    /// Did not run.
    pub skipped: u32,
}

impl StageCounts {
    /// Counts one stage's final outcome.
    pub fn add(&mut self, outcome: StageOutcome) {
        let count = match outcome {
            StageOutcome::Succeeded => &mut self.succeeded,
            StageOutcome::Failed => &mut self.failed,
            StageOutcome::FailedAllowed => &mut self.failed_allowed,
            StageOutcome::TimedOut => &mut self.timed_out,
            StageOutcome::Cancelled => &mut self.cancelled,
            StageOutcome::Skipped => &mut self.skipped,
        };
        *count = count.saturating_add(1);
    }
}

/// What the JUnit reports of one attempt of a stage counted, as a `stage-tests` event carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSummary {
    /// Report files read.
    pub files: u32,
    /// Test cases.
    pub tests: u64,
    /// Those that failed (an assertion).
    pub failures: u64,
    /// Those that ended in an error (the test could not run as written).
    pub errors: u64,
    /// Those that were skipped.
    pub skipped: u64,
    /// The first failed or errored tests, `classname::name` (secrets masked, each name cut at a length);
    /// `failures + errors` counts them all.
    pub failed: Vec<String>,
    /// Report files that could not be read or parsed (each said in the stage's log).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: u32,
}

impl TestSummary {
    /// Failed and errored tests together.
    pub fn not_passed(&self) -> u64 {
        self.failures.saturating_add(self.errors)
    }
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// How a whole run ended (as [`StageOutcome`] says how a stage ended). The store's
/// [`crate::store::RunState`] is how a recorded run stands: running, one of these, or interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
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
        stages: u32,
        /// The instances in the plan's order, with their needs and levels: all a display needs to draw the
        /// run without the plan.
        plan: Vec<PlannedInstance>,
    },
    /// The run (or one of its stages, when `stage` is set) waits for its concurrency group, which another run
    /// holds; emitted again when the holder changes. It goes on once it holds the group.
    WaitingForGroup {
        /// The instance that waits; none when the run itself does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        /// The group's name.
        group: String,
        /// The run that holds it.
        holder_run: String,
        /// That run's number, when the store still has it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder_number: Option<i64>,
        /// The holder's instance, when a stage of it holds the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder_stage: Option<String>,
        /// Whether the holder was asked to cancel (`cancel-in-progress=#true`).
        #[serde(default)]
        cancelling: bool,
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
    /// The outputs a successful attempt wrote to `$BUILDIT_OUTPUT`, secrets masked; just before its
    /// `stage-finished`.
    StageOutputs {
        /// Instance name.
        stage: String,
        /// The attempt.
        attempt: u32,
        /// The values by name.
        outputs: std::collections::BTreeMap<String, String>,
    },
    /// What the JUnit reports of an attempt counted (read after it ended, whether it failed or not); just before
    /// its `stage-finished`. Only for stages with `reports` (`files` is 0 when none was found).
    StageTests {
        /// Instance name.
        stage: String,
        /// The attempt.
        attempt: u32,
        /// The counts and the first failed tests.
        tests: TestSummary,
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
        /// Why it failed, for machines; set for every failed, timed-out or cancelled attempt (and for
        /// `failed-allowed`), never for a success or a skip.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<FailureKind>,
        /// Whether another attempt of the stage follows.
        #[serde(default)]
        retrying: bool,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: RunOutcome,
        /// Wall time in milliseconds.
        duration_ms: u64,
        /// How many stages ended which way.
        counts: StageCounts,
        /// Stages that failed (not allowed to), by why: a run that failed only through the infrastructure's
        /// kinds can be told from one whose stages failed.
        failures: std::collections::BTreeMap<FailureKind, u32>,
        /// The chain of needs that ended last, first to last: the stages that decided the run's duration.
        critical_path: Vec<String>,
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

    /// A bus whose display subscribers may fall `capacity` batches behind before they skip (the default is
    /// 4,096).
    pub fn with_display_capacity(run_id: impl Into<String>, capacity: usize) -> Self {
        let (display, _) = broadcast::channel(capacity.max(1));
        Self {
            display,
            ..Self::new(run_id)
        }
    }

    /// What subscribes displays and late joiners to this bus without keeping it open: once the run's own clones
    /// are dropped, their receivers see the stream closed.
    pub fn subscriptions(&self) -> BusSubscriptions {
        BusSubscriptions {
            run_id: Arc::clone(&self.run_id),
            seq: Arc::clone(&self.seq),
            display: self.display.downgrade(),
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

/// Subscribes to a run's bus from outside the run (a handle, a daemon's streams) without keeping the bus open:
/// it holds no sender, so the run's end closes every display receiver, as a dropped bus does.
#[derive(Debug, Clone)]
pub struct BusSubscriptions {
    run_id: Arc<str>,
    seq: Arc<tokio::sync::Mutex<u64>>,
    display: broadcast::WeakSender<EventBatch>,
}

impl BusSubscriptions {
    /// The run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A display subscriber from now on; one that is closed at once when the run is over.
    pub fn subscribe_display(&self) -> broadcast::Receiver<EventBatch> {
        match self.display.upgrade() {
            Some(display) => display.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// A display subscriber that starts exactly at the live edge, with the sequence number of the last event
    /// emitted before it (0: none yet): it receives every later event and none before (events are handed out
    /// under the sequence lock that this takes). A late joiner reads the events up to the edge from the store.
    /// No receiver when the run is over (every event was sent).
    pub async fn subscribe_display_at_edge(
        &self,
    ) -> (u64, Option<broadcast::Receiver<EventBatch>>) {
        let seq = self.seq.lock().await;
        (
            *seq,
            self.display.upgrade().map(|display| display.subscribe()),
        )
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
