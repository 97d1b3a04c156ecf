//! Joining a run at any sequence number: its stored events up to the live edge, then its live events, with no
//! gap and no duplicate, however slow the reader.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::api::Store;
use super::model::{RunRef, RunState, StoreError};
use crate::events::{BusSubscriptions, EventBatch, EventBus, RunEvent, RunEventKind};

/// Most events a follower reads from the store at once. A page costs a read transaction and three queries and
/// decodes whole log chunks (up to 2,000 lines each): a reader behind a busy stage reads the store page after
/// page, and pages of about two chunks keep that near the speed of the live stream (a million lines followed
/// through the daemon from the store: 1.45 s with pages of 1,000 events, 0.95 s with these, 0.9 s with 8,192),
/// while a page is also what a slow reader may have waiting for it (about 1 MB of events for 100-byte lines).
pub const FOLLOW_PAGE: usize = 4096;

/// Most events the bus keeps for a follower beyond what the run keeps anyway. A batch stays on the bus until
/// every receiver has taken it, and the recorder holds each batch until it has stored it: what a follower has
/// not read yet costs memory only once the recorder has stored it. A follower that many events behind the
/// recorder lets go of the live stream and reads on from the store.
pub const MAX_HELD: u64 = 4096;

/// Why a follower cannot go on.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum FollowError {
    /// Reading the store failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] StoreError),
    /// The run's recorder stopped (a write failed for good) before it stored the events the follower needs.
    #[error("the run's record stops before event {0}: its recorder stopped")]
    #[diagnostic(code(buildit::store::record_incomplete))]
    RecorderStopped(u64),
    /// The store does not have an event it should have.
    #[error("event {0} of the run is missing from the store")]
    #[diagnostic(code(buildit::store::event_missing))]
    Missing(u64),
}

/// Follows one run from a sequence number on. [`RunFollower::next`] hands out consecutive events in order: from
/// the store up to the point where the follower joined (waiting until the recorder has stored them), then live
/// batches from the bus. A follower that falls behind the bus's display buffer (it is a display subscriber, so
/// it never slows the run) reads what it missed from the store the same way. One that falls more than
/// [`MAX_HELD`] events behind the recorder (see [`RunFollower::fallen_behind`]), or is told to
/// [`RunFollower::detach`], lets go of the live stream, so that nothing is kept for it: it reads on from the
/// store up to what the recorder has stored, and joins the live stream again once it has caught up. The stream
/// ends after `run-finished`.
#[derive(Debug)]
pub struct RunFollower {
    store: Arc<dyn Store>,
    run_id: String,
    /// The last sequence number handed out.
    delivered: u64,
    /// Events up to here come from the store; `u64::MAX`: all of them (no live stream, or it ended).
    stored_until: u64,
    live: Option<broadcast::Receiver<EventBatch>>,
    /// Where the live stream is joined again after the follower let go of it; `None` for a follower that never
    /// had one.
    bus: Option<BusSubscriptions>,
    /// It let go of the live stream: it reads the store up to what is recorded, then joins the live edge again.
    detached: bool,
    /// How far the recorder has stored the run; `None` for a run that is not being recorded here.
    recorded: Option<watch::Receiver<u64>>,
    /// A live batch received ahead of what the store had to fill in first.
    ahead: Option<EventBatch>,
    /// For a run recorded by another process: the store is read again while the run's record says it runs.
    tail: Option<Tail>,
    finished: bool,
}

/// How a run recorded elsewhere is tailed through the store.
#[derive(Debug, Clone, Copy)]
struct Tail {
    /// Reads of the store so far that found nothing new.
    idle_reads: u32,
}

/// How often a tailed run's store is read again when it had nothing new.
const TAIL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Every this many idle reads, runs whose runner is gone are marked interrupted (so that a tail of one ends).
const TAIL_SWEEP_EVERY: u32 = 20;

impl RunFollower {
    /// Joins the run `bus` carries, after sequence number `after_seq` (0: from its start). `recorded` is the
    /// progress of the recorder writing the run to `store` (see [`crate::store::record_run_reporting`]).
    pub async fn join(
        store: Arc<dyn Store>,
        bus: &EventBus,
        recorded: watch::Receiver<u64>,
        after_seq: u64,
    ) -> Self {
        Self::join_subscribed(store, &bus.subscriptions(), recorded, after_seq).await
    }

    /// As [`RunFollower::join`], through subscriptions that do not keep the bus open: when the run is over (its
    /// bus dropped), the follower reads the rest from the store and ends.
    pub async fn join_subscribed(
        store: Arc<dyn Store>,
        bus: &BusSubscriptions,
        recorded: watch::Receiver<u64>,
        after_seq: u64,
    ) -> Self {
        let (edge, live) = bus.subscribe_display_at_edge().await;
        Self {
            store,
            run_id: bus.run_id().to_owned(),
            delivered: after_seq,
            // Without a live stream, everything comes from the store.
            stored_until: if live.is_some() { edge } else { u64::MAX },
            live,
            bus: Some(bus.clone()),
            detached: false,
            recorded: Some(recorded),
            ahead: None,
            tail: None,
            finished: false,
        }
    }

    /// Reads a run from the store only, after `after_seq`: a run that has ended, or one recorded elsewhere (then
    /// the stream ends at what is stored so far).
    pub fn stored(store: Arc<dyn Store>, run_id: &str, after_seq: u64) -> Self {
        Self {
            store,
            run_id: run_id.to_owned(),
            delivered: after_seq,
            stored_until: u64::MAX,
            live: None,
            bus: None,
            detached: false,
            recorded: None,
            ahead: None,
            tail: None,
            finished: false,
        }
    }

    /// Reads a run recorded by another process (another daemon of the store) from the store only, after
    /// `after_seq`, and goes on reading while its record says it runs: the stream ends after `run-finished`,
    /// or with what is stored once the run ended without one (interrupted). A run whose runner is gone without
    /// a word is marked interrupted by the follower's own sweeps (as [`Store::mark_interrupted`] does).
    pub fn tailing(store: Arc<dyn Store>, run_id: &str, after_seq: u64) -> Self {
        Self {
            tail: Some(Tail { idle_reads: 0 }),
            ..Self::stored(store, run_id, after_seq)
        }
    }

    /// The sequence number of the last event handed out.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Lets go of the live stream, if it follows one: what the bus sends from now on is not kept for this
    /// follower. The next [`RunFollower::next`] reads from the store what the recorder has stored, and the live
    /// stream is joined again at its edge once the follower has caught up with the recorder. For a reader that
    /// cannot take more for a while (its client is slow): it then holds nothing on the bus.
    pub fn detach(&mut self) {
        if self.live.take().is_some() {
            // A batch received ahead is in the store too, or will be by the time it is needed.
            self.ahead = None;
            self.detached = true;
        }
    }

    /// Whether it follows the live stream now (it does not after [`RunFollower::detach`], until it catches up).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Waits until the follower's live receiver is more than [`MAX_HELD`] events behind the recorder: the bus
    /// then keeps, for it alone, events the run no longer needs. For a reader that stopped calling
    /// [`RunFollower::next`] for a while (its client is slow): it should then [`RunFollower::detach`]. Never, off
    /// the live stream; at once, if the recorder stopped.
    pub async fn fallen_behind(&mut self) {
        let position = self.live_position();
        match self.recorded.as_mut() {
            Some(recorded) if self.live.is_some() => {
                let _ = recorded
                    .wait_for(|seq| *seq > position.saturating_add(MAX_HELD))
                    .await;
            }
            _ => std::future::pending().await,
        }
    }

    /// Where the live receiver is: the bus keeps for it the batches after this. While the store fills in up to
    /// the edge it joined at, that edge; then what it handed out.
    fn live_position(&self) -> u64 {
        if self.stored_until == u64::MAX {
            self.delivered
        } else {
            self.delivered.max(self.stored_until)
        }
    }

    /// Whether the recorder has stored more than [`MAX_HELD`] events that the live receiver still waits to give
    /// this follower (the bus keeps them for it alone).
    fn behind_the_recorder(&self) -> bool {
        self.recorded.as_ref().is_some_and(|recorded| {
            *recorded.borrow() > self.live_position().saturating_add(MAX_HELD)
        })
    }

    /// The next events, in order and consecutive with the previous ones; `None` once `run-finished` was handed
    /// out (or, for a stored run without one, once the store has nothing more).
    pub async fn next(&mut self) -> Result<Option<Vec<RunEvent>>, FollowError> {
        loop {
            if self.detached && !self.finished {
                let recorded = self
                    .recorded
                    .as_ref()
                    .map_or(self.delivered, |recorded| *recorded.borrow());
                if self.delivered < recorded {
                    // What is stored is read without waiting; the live edge is joined once it is all read.
                    self.stored_until = recorded;
                } else {
                    self.rejoin().await;
                }
            }
            if self.live.is_some() && self.behind_the_recorder() {
                // Too slow: the store has what the bus would keep for it.
                self.detach();
                continue;
            }
            if self.finished {
                // A live `run-finished` can reach the follower before the store has it: the stream ends once it
                // is stored, so that a client that watched a run to its end reads it finished from the store.
                let delivered = self.delivered;
                if let Some(recorded) = self.recorded.as_mut() {
                    let _ = recorded.wait_for(|seq| *seq >= delivered).await;
                }
                return Ok(None);
            }
            if self.delivered < self.stored_until {
                if let Some(events) = self.read_stored().await? {
                    if let Some(tail) = self.tail.as_mut() {
                        tail.idle_reads = 0;
                    }
                    return Ok(Some(self.hand_out(events)));
                }
                if self.tail.is_some() {
                    if self.still_runs().await? {
                        tokio::time::sleep(TAIL_EVERY).await;
                    } else {
                        // Over: one more read takes what it stored before its record said so.
                        self.tail = None;
                    }
                    continue;
                }
                // The store has all there is and no live stream follows.
                self.finished = true;
                return Ok(None);
            }
            let received = match self.ahead.take() {
                Some(batch) => Ok(batch),
                None => match self.live.as_mut() {
                    Some(live) => live.recv().await,
                    None => Err(broadcast::error::RecvError::Closed),
                },
            };
            match received {
                Ok(batch) => {
                    let events: Vec<RunEvent> = batch
                        .iter()
                        .filter(|event| event.seq > self.delivered)
                        .cloned()
                        .collect();
                    let Some(first) = events.first().map(|event| event.seq) else {
                        continue;
                    };
                    if first > self.delivered + 1 {
                        // Events went by while this follower lagged: the store fills them in first.
                        self.stored_until = first - 1;
                        self.ahead = Some(batch);
                        continue;
                    }
                    return Ok(Some(self.hand_out(events)));
                }
                // Skipped batches show up as a gap before the next one received.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    // The run is over: whatever is left is in the store once the recorder is done.
                    self.live = None;
                    self.stored_until = u64::MAX;
                }
            }
        }
    }

    /// Joins the live stream again at its edge after [`RunFollower::detach`]: the store fills in up to the edge;
    /// a run that is over (its bus gone) is read from the store to its end. (What the new receiver gets while the
    /// store fills in, the recorder holds too until it has stored it.)
    async fn rejoin(&mut self) {
        self.detached = false;
        let (edge, live) = match self.bus.as_ref() {
            Some(bus) => bus.subscribe_display_at_edge().await,
            None => (0, None),
        };
        match live {
            Some(live) => {
                self.live = Some(live);
                self.stored_until = edge.max(self.delivered);
            }
            None => self.stored_until = u64::MAX,
        }
    }

    /// The next page of stored events up to `stored_until`, as far as the recorder has stored them (once it has
    /// stored the next one); `None` when the store has none and none are to come.
    async fn read_stored(&mut self) -> Result<Option<Vec<RunEvent>>, FollowError> {
        let mut wanted = self.stored_until;
        if let Some(recorded) = self.recorded.as_mut() {
            if wanted == u64::MAX {
                // No live stream: the recorder's end means everything is stored.
                while recorded.changed().await.is_ok() {}
            } else {
                // What is stored goes out without waiting for the rest: a recorder far behind the live edge
                // does not hold a reader back until it reaches the edge.
                let delivered = self.delivered;
                match recorded.wait_for(|seq| *seq > delivered).await {
                    Ok(seq) => wanted = wanted.min(*seq),
                    Err(_) => return Err(FollowError::RecorderStopped(delivered + 1)),
                }
            }
        }
        let page = self
            .store
            .events_after(&self.run_id, self.delivered, FOLLOW_PAGE)
            .await?;
        let events: Vec<RunEvent> = page
            .into_iter()
            .take_while(|event| event.seq <= wanted)
            .collect();
        for (expected, event) in (self.delivered + 1..).zip(&events) {
            if event.seq != expected {
                return Err(FollowError::Missing(expected));
            }
        }
        match events.first() {
            Some(_) => Ok(Some(events)),
            // A run followed live ends with `run-finished`: a store without it after the recorder is done lost
            // the end of the run, unless the follower joined after the end.
            None if wanted == u64::MAX && self.recorded.is_some() => {
                let run = self
                    .store
                    .find_run(&RunRef::Id(self.run_id.clone()))
                    .await?;
                if run.state == RunState::Running {
                    Err(FollowError::RecorderStopped(self.delivered + 1))
                } else {
                    Ok(None)
                }
            }
            None if wanted == u64::MAX => Ok(None),
            // The recorder says it stored these: the store must have them.
            None => Err(FollowError::Missing(self.delivered + 1)),
        }
    }

    /// Whether a tailed run's record says it runs; now and then, runs whose runner is gone are marked first.
    async fn still_runs(&mut self) -> Result<bool, FollowError> {
        if let Some(tail) = self.tail.as_mut() {
            tail.idle_reads += 1;
            if tail.idle_reads % TAIL_SWEEP_EVERY == 0 {
                // A sweep that cannot write (the store busy or read-only for this reader) is tried again at
                // the next one: reading goes on.
                let _ = self
                    .store
                    .mark_interrupted(
                        &crate::owner::RunOwner::this_process(),
                        super::RUN_STALE_AFTER,
                    )
                    .await;
            }
        }
        let run = self
            .store
            .find_run(&RunRef::Id(self.run_id.clone()))
            .await?;
        Ok(run.state == RunState::Running)
    }

    fn hand_out(&mut self, events: Vec<RunEvent>) -> Vec<RunEvent> {
        if let Some(last) = events.last() {
            self.delivered = last.seq;
        }
        if events
            .iter()
            .any(|event| matches!(event.kind, RunEventKind::RunFinished { .. }))
        {
            self.finished = true;
        }
        events
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::events::{LogStreamKind, RunOutcome, StageCounts};
    use crate::owner::RunOwner;
    use crate::store::{MemoryStore, NewRun, RecordSummary, record_run_reporting};

    /// A run of the memory store with a bus whose recorder gets a batch only when the test hands it on.
    struct HeldRun {
        store: Arc<dyn Store>,
        bus: EventBus,
        /// What the bus sent to the recorder, not handed on yet.
        sent: mpsc::Receiver<EventBatch>,
        to_recorder: mpsc::Sender<EventBatch>,
        recorded: watch::Receiver<u64>,
        recorder: JoinHandle<Result<RecordSummary, StoreError>>,
    }

    impl HeldRun {
        async fn new() -> Self {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            store
                .create_run(&NewRun {
                    id: "run".to_owned(),
                    pipeline: "loud".to_owned(),
                    owner: RunOwner::this_process(),
                    sha: None,
                    branch: None,
                    event: None,
                    inputs: None,
                    retry_of: None,
                })
                .await
                .expect("a run");
            let mut bus = EventBus::new("run");
            let sent = bus.subscribe_lossless(4096);
            let (to_recorder, recorder_events) = mpsc::channel(4096);
            let (progress, recorded) = watch::channel(0);
            let recorder = tokio::spawn(record_run_reporting(
                Arc::clone(&store),
                "run".to_owned(),
                recorder_events,
                progress,
            ));
            Self {
                store,
                bus,
                sent,
                to_recorder,
                recorded,
                recorder,
            }
        }

        /// `batches` batches of 10 lines, `line N` from `from` on.
        async fn emit_lines(&self, from: usize, batches: usize, pause: Option<Duration>) {
            for batch in 0..batches {
                let lines = (0..10)
                    .map(|line| format!("line {}", from + batch * 10 + line))
                    .collect();
                self.bus
                    .emit_lines("print", 1, LogStreamKind::Stdout, lines)
                    .await;
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
        }

        /// Hands `batches` sent batches on to the recorder and waits until it has stored them.
        async fn record(&mut self, batches: usize) {
            let mut last = 0;
            for _ in 0..batches {
                let batch = self.sent.recv().await.expect("a sent batch");
                last = batch.last().map_or(last, |event| event.seq);
                self.to_recorder.send(batch).await.expect("the recorder");
            }
            let _ = self.recorded.wait_for(|seq| *seq >= last).await;
        }

        async fn follow(&self, after_seq: u64) -> RunFollower {
            RunFollower::join(
                Arc::clone(&self.store),
                &self.bus,
                self.recorded.clone(),
                after_seq,
            )
            .await
        }

        /// Ends the run: `run-finished`, the bus dropped; from now on every batch is handed to the recorder,
        /// `pause` after each of the first `slowly`; then waits for the recorder to finish.
        async fn finish(self, slowly: usize, pause: Duration) {
            self.bus
                .emit(RunEventKind::RunFinished {
                    status: RunOutcome::Succeeded,
                    duration_ms: 1,
                    counts: StageCounts::default(),
                    failures: std::collections::BTreeMap::new(),
                    critical_path: Vec::new(),
                })
                .await;
            drop(self.bus);
            let mut sent = self.sent;
            let mut handed = 0;
            while let Some(batch) = sent.recv().await {
                self.to_recorder.send(batch).await.expect("the recorder");
                handed += 1;
                if handed <= slowly {
                    tokio::time::sleep(pause).await;
                }
            }
            drop(self.to_recorder);
            self.recorder
                .await
                .expect("the recorder")
                .expect("recorded");
        }
    }

    /// Reads a follower to its end; every event, and whether it was on the live stream after each batch.
    fn read_all(mut follower: RunFollower) -> JoinHandle<(Vec<RunEvent>, Vec<bool>)> {
        tokio::spawn(async move {
            let mut events = Vec::new();
            let mut live = Vec::new();
            while let Some(batch) = follower.next().await.expect("the follower goes on") {
                events.extend(batch);
                live.push(follower.is_live());
            }
            (events, live)
        })
    }

    fn assert_whole(events: &[RunEvent], lines: usize) {
        assert_eq!(events.len(), lines + 1, "every line and run-finished");
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.seq, index as u64 + 1);
            if let RunEventKind::LogLine { text, .. } = &event.kind {
                assert_eq!(text, &format!("line {index}"));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_ahead_of_the_recorder_stays_on_the_live_stream() {
        let run = HeldRun::new().await;
        // 10,000 lines out, none stored: what the follower has not read, the recorder holds anyway.
        run.emit_lines(0, 1000, None).await;
        let follower = run.follow(0).await;
        assert!(follower.is_live());
        let reader = read_all(follower);
        // The recorder catches up slowly; the follower reads what it stores as it goes.
        run.finish(1001, Duration::from_micros(500)).await;
        let (events, live) = reader.await.expect("the reader");
        assert_whole(&events, 10_000);
        assert!(
            live.iter().all(|live| *live),
            "the follower never let go of the live stream"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_whose_receiver_falls_behind_the_recorder_reads_the_store_then_joins_again()
    {
        let mut run = HeldRun::new().await;
        run.emit_lines(0, 1000, None).await;
        run.record(1000).await;
        // Joined at the start of 10,000 stored events: the history comes from the store, and the bus keeps only
        // what comes after them, which the recorder holds too.
        let mut follower = run.follow(0).await;
        assert!(follower.is_live());
        // 5,000 more, stored, before it reads anything: the bus would keep them for it alone.
        run.emit_lines(10_000, 500, None).await;
        run.record(500).await;
        let first = follower
            .next()
            .await
            .expect("the follower")
            .expect("events");
        assert!(
            !follower.is_live(),
            "behind the recorder, it let go of the live stream"
        );
        let reader = tokio::spawn(async move {
            let mut events = first;
            let mut went_live = false;
            while let Some(batch) = follower.next().await.expect("the follower goes on") {
                events.extend(batch);
                went_live |= follower.is_live();
            }
            (events, went_live)
        });
        // 10,000 more lines, stored as they come (1,000 at a time: the recorder writes a trickle only after a
        // pause): once caught up, the follower joins the live stream again.
        for step in 0..10 {
            run.emit_lines(15_000 + step * 1000, 100, Some(Duration::from_micros(200)))
                .await;
            run.record(100).await;
        }
        run.finish(0, Duration::ZERO).await;
        let (events, went_live) = reader.await.expect("the reader");
        assert_whole(&events, 25_000);
        assert!(
            went_live,
            "once caught up, the follower joined the live stream"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_follower_not_read_falls_behind_once_the_recorder_is_past_it() {
        let mut run = HeldRun::new().await;
        let mut follower = run.follow(0).await;
        run.emit_lines(0, 600, None).await;
        // 3,000 stored: the bus keeps nothing the run does not.
        run.record(300).await;
        let waited =
            tokio::time::timeout(Duration::from_millis(100), follower.fallen_behind()).await;
        assert!(waited.is_err(), "not behind yet");
        // 6,000 stored, none read: more than MAX_HELD on the bus for this follower alone.
        run.record(300).await;
        tokio::time::timeout(Duration::from_secs(10), follower.fallen_behind())
            .await
            .expect("it has fallen behind");
        follower.detach();
        assert!(!follower.is_live());
        let reader = read_all(follower);
        run.finish(0, Duration::ZERO).await;
        let (events, _) = reader.await.expect("the reader");
        assert_whole(&events, 6_000);
    }
}
