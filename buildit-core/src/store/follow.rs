//! Joining a run at any sequence number: its stored events up to the live edge, then its live events, with no
//! gap and no duplicate, however slow the reader.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::api::Store;
use super::model::{RunRef, RunState, StoreError};
use crate::events::{BusSubscriptions, EventBatch, EventBus, RunEvent, RunEventKind};

/// Most events a follower reads from the store at once.
pub const FOLLOW_PAGE: usize = 1000;

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
/// it never slows the run) reads what it missed from the store the same way. The stream ends after
/// `run-finished`.
#[derive(Debug)]
pub struct RunFollower {
    store: Arc<dyn Store>,
    run_id: String,
    /// The last sequence number handed out.
    delivered: u64,
    /// Events up to here come from the store; `u64::MAX`: all of them (no live stream, or it ended).
    stored_until: u64,
    live: Option<broadcast::Receiver<EventBatch>>,
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

    /// The next events, in order and consecutive with the previous ones; `None` once `run-finished` was handed
    /// out (or, for a stored run without one, once the store has nothing more).
    pub async fn next(&mut self) -> Result<Option<Vec<RunEvent>>, FollowError> {
        loop {
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

    /// The next page of stored events up to `stored_until`, once the recorder has stored them; `None` when the
    /// store has none and none are to come.
    async fn read_stored(&mut self) -> Result<Option<Vec<RunEvent>>, FollowError> {
        let wanted = self.stored_until;
        if let Some(recorded) = self.recorded.as_mut() {
            if wanted == u64::MAX {
                // No live stream: the recorder's end means everything is stored.
                while recorded.changed().await.is_ok() {}
            } else if recorded.wait_for(|seq| *seq >= wanted).await.is_err() {
                return Err(FollowError::RecorderStopped(self.delivered + 1));
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
                self.store
                    .mark_interrupted(
                        &crate::owner::RunOwner::this_process(),
                        super::RUN_STALE_AFTER,
                    )
                    .await?;
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
