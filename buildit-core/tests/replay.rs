//! Late join: followers that join a 1,000-stage run at random points (and after its end) get, with what came
//! before the point they joined at, exactly the run's full stream, whether they keep up with the live events,
//! fall behind them, or let go of them while their reader is busy.

use std::sync::Arc;

use buildit_core::RunContext;
use buildit_core::events::{RunEvent, RunEventKind};
use buildit_core::exec::{LocalExecutor, RunOptions};
use buildit_core::runner::Runner;
use buildit_core::store::{MemoryStore, RunFollower, SqliteStore, Store};
use tokio::task::JoinHandle;

#[expect(dead_code, reason = "only the plan, collector and temp dir are used")]
mod support;

const RUN: &str = "late";
const STAGES: usize = 1000;

/// A small deterministic generator (xorshift): the join points are random but the same on every run.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// 100 chains of 10 `true` stages.
fn pipeline() -> String {
    let mut text = String::from("pipeline \"wide\"\n");
    for index in 0..STAGES {
        if index % 10 == 0 {
            text.push_str(&format!("stage \"s{index}\" {{ run \"true\" }}\n"));
        } else {
            text.push_str(&format!(
                "stage \"s{index}\" {{ needs \"s{}\"; run \"true\" }}\n",
                index - 1
            ));
        }
    }
    text
}

/// Reads a follower to its end; `slow` followers pause on every batch, so that they fall behind the bus's small
/// display buffer and must refill what they missed from the store. With `detaching`, every third batch the
/// follower is told to let go of the live stream, as a daemon's stream does when its client reads slowly: it
/// reads on from the store and joins the live stream again once it has caught up.
fn read_all(mut follower: RunFollower, slow: bool, detaching: bool) -> JoinHandle<Vec<RunEvent>> {
    tokio::spawn(async move {
        let mut events = Vec::new();
        let mut batches = 0_u64;
        loop {
            match follower.next().await {
                Ok(Some(batch)) => events.extend(batch),
                Ok(None) => return events,
                Err(error) => panic!("follower after {}: {error}", follower.delivered()),
            }
            batches += 1;
            if detaching && batches.is_multiple_of(3) {
                follower.detach();
                assert!(
                    !follower.is_live(),
                    "a detached follower is off the live stream"
                );
            }
            if slow {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    })
}

/// A joined follower: where it joined (its `after`) and what it received.
struct Joined {
    after: u64,
    events: JoinHandle<Vec<RunEvent>>,
}

/// How the followers of a run read it.
#[derive(Debug, Clone, Copy)]
enum Readers {
    /// On a bus with a display buffer of 8 batches: slow followers are skipped past and refill from the store.
    SmallBuffer,
    /// On a bus with the default display buffer: followers are told to let go of the live stream every few
    /// batches.
    Detaching,
}

async fn late_joins_see_the_whole_stream(store: Arc<dyn Store>, readers: Readers) {
    let workspace = support::temp_dir();
    let plan = support::plan(&pipeline(), &RunContext::new());
    let detaching = matches!(readers, Readers::Detaching);
    let drain = move |follower: RunFollower, slow: bool| read_all(follower, slow, detaching);
    let runner = Runner::new(
        RUN,
        plan,
        LocalExecutor::new(),
        Arc::clone(&store) as Arc<dyn Store>,
    )
    .workspace(workspace.path())
    .options(RunOptions {
        concurrency: Some(16),
        ..RunOptions::default()
    });
    let mut runner = match readers {
        // Slow followers lag past the buffer for sure.
        Readers::SmallBuffer => runner.display_capacity(8),
        Readers::Detaching => runner,
    };
    let everything = support::collect_from(runner.subscribe(64));
    let mut live = runner.subscribe_display();
    let handle = match runner.start().await {
        Ok(handle) => handle,
        Err(error) => panic!("start: {error}"),
    };
    let joiner = handle.joiner();
    let mut random = Random(0x5eed_1234_abcd_0042);
    let mut joined = Vec::new();
    // Joined as the run starts, from the beginning: a fast and a slow one.
    for slow in [false, true] {
        let follower = handle.follow(0).await;
        joined.push(Joined {
            after: 0,
            events: drain(follower, slow),
        });
    }
    // Mid-run: a watcher joins followers when the live stream passes seeded random points, each after a random
    // sequence number at, before or past the live edge.
    let triggers: Vec<u64> = {
        let mut points: Vec<u64> = (0..8).map(|_| 1 + random.below(2900)).collect();
        points.sort_unstable();
        points
    };
    let afters: Vec<(u64, bool)> = (0..triggers.len())
        .map(|index| (random.below(200), index % 2 == 1))
        .collect();
    let watcher = {
        let joiner = joiner.clone();
        tokio::spawn(async move {
            let mut joined = Vec::new();
            let mut next = 0;
            loop {
                let seq = match live.recv().await {
                    Ok(batch) => {
                        let finished = batch
                            .iter()
                            .any(|event| matches!(event.kind, RunEventKind::RunFinished { .. }));
                        if finished {
                            break;
                        }
                        batch.last().map_or(0, |event| event.seq)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                while next < triggers.len() && seq >= triggers[next] {
                    let (back, slow) = afters[next];
                    // Behind the edge, at it, or a little past it.
                    let after = (seq + 20).saturating_sub(back);
                    let follower = joiner.join(after).await;
                    joined.push(Joined {
                        after,
                        events: drain(follower, slow),
                    });
                    next += 1;
                }
            }
            joined
        })
    };
    let mut executed = match handle.wait().await {
        Ok(executed) => executed,
        Err(error) => panic!("run: {error}"),
    };
    assert_eq!(executed.report.stages.len(), STAGES);
    // Joined after the end: at its start and at its end.
    for after in [0, 1500] {
        let follower = joiner.join(after).await;
        joined.push(Joined {
            after,
            events: drain(follower, false),
        });
    }
    match watcher.await {
        Ok(mid_run) => {
            assert!(mid_run.len() >= 4, "{} mid-run joins", mid_run.len());
            joined.extend(mid_run);
        }
        Err(error) => panic!("watcher: {error}"),
    }
    if let Err(error) = executed.recorded().await {
        panic!("recorder: {error}");
    }
    let full = support::events(everything).await;
    let last = full.last().map_or(0, |event| event.seq);
    assert!(full.len() > 3 * STAGES, "{} events", full.len());
    assert!(matches!(
        full.last().map(|event| &event.kind),
        Some(RunEventKind::RunFinished { .. })
    ));
    // After the end, through the run's joiner (still held, as a daemon holds it): at the very end, just before
    // it, and past it. Each ends instead of waiting for live events that will never come.
    for after in [last, last - 1, last + 5] {
        let follower = joiner.join(after).await;
        let events =
            tokio::time::timeout(std::time::Duration::from_secs(10), drain(follower, false))
                .await
                .unwrap_or_else(|_| {
                    panic!("a follower joined after {after} of a finished run never ended")
                });
        joined.push(Joined {
            after: after.min(last),
            events: tokio::spawn(async move { events.unwrap_or_default() }),
        });
    }
    // After the end, from the store alone: random points and the very end.
    for after in [random.below(last), random.below(last), last] {
        joined.push(Joined {
            after,
            events: drain(RunFollower::stored(Arc::clone(&store), RUN, after), false),
        });
    }
    for join in joined {
        let events = match join.events.await {
            Ok(events) => events,
            Err(error) => panic!("follower task: {error}"),
        };
        let before = usize::try_from(join.after)
            .unwrap_or(usize::MAX)
            .min(full.len());
        let mut stream: Vec<RunEvent> = full[..before].to_vec();
        stream.extend(events);
        assert!(
            stream == full,
            "joined after {}: {} events put together, {} in the run",
            join.after,
            stream.len(),
            full.len()
        );
    }
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = support::temp_dir();
    let store = match SqliteStore::open(&dir.path().join("buildit.db")).await {
        Ok(store) => store,
        Err(error) => panic!("open: {error}"),
    };
    (dir, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joins_to_a_sqlite_recorded_run_see_the_whole_stream() {
    let (_dir, store) = sqlite().await;
    late_joins_see_the_whole_stream(store, Readers::SmallBuffer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joins_to_a_memory_recorded_run_see_the_whole_stream() {
    late_joins_see_the_whole_stream(Arc::new(MemoryStore::new()), Readers::SmallBuffer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_that_let_go_of_a_sqlite_recorded_run_see_the_whole_stream() {
    let (_dir, store) = sqlite().await;
    late_joins_see_the_whole_stream(store, Readers::Detaching).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_that_let_go_of_a_memory_recorded_run_see_the_whole_stream() {
    late_joins_see_the_whole_stream(Arc::new(MemoryStore::new()), Readers::Detaching).await;
}
