//! The store recorder: a lossless event subscriber that writes a run's events in batches, with back-pressure.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::api::Store;
use super::batch::BatchBuilder;
use super::model::StoreError;
use crate::events::EventBatch;

/// Most events written in one transaction.
pub const MAX_BATCH_EVENTS: usize = 8192;
/// How often a recording run tells the store its runner is alive.
pub const RUN_HEARTBEAT: Duration = Duration::from_secs(10);
/// A running run whose heartbeat is older than this is taken for interrupted.
pub const RUN_STALE_AFTER: Duration = Duration::from_secs(60);
/// Batches smaller than this wait [`BATCH_LINGER`] for more events.
const TRICKLE: usize = 1024;
/// How long a small batch waits for more events before it is written. Each transaction costs the run more than
/// its rows (round trips to the database's thread, a commit): a run of short stages is written in a few
/// transactions a second.
const BATCH_LINGER: Duration = Duration::from_millis(100);
/// Writes of one batch before the recorder gives up.
const WRITE_TRIES: u32 = 5;

/// What the recorder did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Events written.
    pub events: u64,
    /// Transactions.
    pub batches: u64,
}

/// Writes every event of `events` (subscribe it with [`crate::events::EventBus::subscribe_lossless`]) for run
/// `run_id`, batching what has piled up while the previous write ran, until the bus is dropped. The channel's
/// bound is the back-pressure: while the store is slow, the run waits rather than dropping lines.
///
/// A write that keeps failing ends the recording with the error; the remaining events are still drained so the
/// run is not blocked, and the caller must report the record as incomplete.
pub async fn record_run(
    store: Arc<dyn Store>,
    run_id: String,
    events: mpsc::Receiver<EventBatch>,
) -> Result<RecordSummary, StoreError> {
    record_run_reporting(store, run_id, events, watch::channel(0).0).await
}

/// [`record_run`], telling `recorded` how far the run is stored: after each committed transaction, the sequence
/// number of its last event. A late joiner ([`crate::store::RunFollower`]) waits on it before it reads the store.
/// `recorded` is dropped when the recording ends, or as soon as a write has failed for good (the events after
/// the last value will never be stored).
pub async fn record_run_reporting(
    store: Arc<dyn Store>,
    run_id: String,
    mut events: mpsc::Receiver<EventBatch>,
    recorded: watch::Sender<u64>,
) -> Result<RecordSummary, StoreError> {
    let mut recorded = Some(recorded);
    let mut builder = BatchBuilder::events_only();
    let mut summary = RecordSummary::default();
    let mut heartbeat = tokio::time::interval(RUN_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut pending = Pending::default();
    let mut failure: Option<StoreError> = None;
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Some(batch) => pending.push(batch),
                None => break,
            },
            _ = heartbeat.tick() => {
                if failure.is_none() {
                    // A missed heartbeat is not lost data; the next one (or the run's end) catches up.
                    let _ = store.heartbeat_run(&run_id).await;
                }
                continue;
            }
        }
        // Whatever else is waiting joins this write.
        while pending.events < MAX_BATCH_EVENTS {
            match events.try_recv() {
                Ok(batch) => pending.push(batch),
                Err(_) => break,
            }
        }
        if failure.is_some() {
            pending.clear();
            continue;
        }
        // A trickle of events (stages starting and ending, a few lines) waits a moment for company: a run of a
        // thousand short stages then costs a handful of transactions, not thousands. A busy stream fills batches by
        // itself and never waits, so the run is never held up by the pause.
        if pending.events < TRICKLE {
            // One timer for the whole pause, not one per event received during it.
            let linger = tokio::time::sleep(BATCH_LINGER);
            tokio::pin!(linger);
            while pending.events < TRICKLE {
                tokio::select! {
                    received = events.recv() => match received {
                        Some(batch) => pending.push(batch),
                        // The run is over: write what there is now.
                        None => break,
                    },
                    () = &mut linger => break,
                }
            }
        }
        let last_seq = pending
            .batches
            .last()
            .and_then(|batch| batch.last())
            .map(|event| event.seq);
        let (returned, written) = write_off_thread(
            &store,
            &run_id,
            builder,
            std::mem::take(&mut pending.batches),
        )
        .await;
        builder = returned;
        match written {
            Ok(()) => {
                summary.events += pending.events as u64;
                summary.batches += 1;
                if let (Some(recorded), Some(seq)) = (recorded.as_ref(), last_seq) {
                    recorded.send_replace(seq);
                }
            }
            Err(error) => {
                failure = Some(error);
                recorded = None;
            }
        }
        pending.clear();
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(summary),
    }
}

/// Event batches received and not yet written.
#[derive(Debug, Default)]
struct Pending {
    batches: Vec<EventBatch>,
    events: usize,
}

impl Pending {
    fn push(&mut self, batch: EventBatch) {
        self.events += batch.len();
        self.batches.push(batch);
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.events = 0;
    }
}

/// Turns `events` into a batch and writes it from a thread of the blocking pool: building a batch, its
/// statements and their values is most of the store's work on the caller's side, and the caller is the runtime
/// that starts the stages, which would otherwise stop for a few milliseconds per batch. The write's futures
/// still run on this runtime's timers and the database's own threads. The builder comes back for the next batch.
async fn write_off_thread(
    store: &Arc<dyn Store>,
    run_id: &str,
    mut builder: BatchBuilder,
    events: Vec<EventBatch>,
) -> (BatchBuilder, Result<(), StoreError>) {
    let store = Arc::clone(store);
    let run_id = run_id.to_owned();
    let runtime = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || {
        let batch = builder.build(events.iter().flat_map(|batch| batch.iter()));
        let written = runtime.block_on(write_with_retries(store.as_ref(), &run_id, &batch));
        (builder, written)
    })
    .await;
    match written {
        Ok(done) => done,
        // The builder went down with the thread; the recording ends with the error, so it is not used again.
        Err(error) => (
            BatchBuilder::events_only(),
            Err(StoreError::Query(format!(
                "the batch writer failed: {error}"
            ))),
        ),
    }
}

async fn write_with_retries(
    store: &dyn Store,
    run_id: &str,
    batch: &super::batch::RecordBatch,
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        tries += 1;
        match store.write_batch(run_id, batch).await {
            Ok(()) => return Ok(()),
            // A busy or briefly unreachable database gets a few chances; the batch is one transaction, so a
            // failed try wrote nothing and is safe to repeat.
            Err(_) if tries < WRITE_TRIES => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => return Err(error),
        }
    }
}
