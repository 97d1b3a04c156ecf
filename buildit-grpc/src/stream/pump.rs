//! Feeding one stream from its follower: a message goes out as soon as the connection takes one, holding what
//! was ready by then; a client that reads slower than the run writes gets a bounded outbox, and once it is
//! behind what the store has, its follower lets go of the live stream and reads on from the store.

use std::collections::VecDeque;

use buildit_core::events::RunEvent;
use buildit_core::store::{FollowError, RunFollower};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{HEARTBEAT, MAX_BATCH_BYTES, Sender, follow_status};

/// What one kind of stream sends of a run's events.
pub(super) trait Feed {
    /// One entry of a message.
    type Item;
    /// One message of the stream.
    type Message;
    /// Most items in one message.
    const MAX_ITEMS: usize;

    /// What an event gives this stream, with its size (the bytes of text it carries); `None`: nothing.
    fn item(&self, event: &RunEvent) -> Option<(Self::Item, usize)>;

    /// A message of `items`; every event up to `last_seq` is covered by it and the messages before it.
    fn message(&self, items: Vec<Self::Item>, last_seq: u64) -> Self::Message;

    /// What is sent after [`HEARTBEAT`] without a message (`seq`: the resume point); `None`: nothing.
    fn heartbeat(&self, _seq: u64) -> Option<Self::Message> {
        None
    }
}

/// Sends what `follower` hands out through `feed` until the run's end, the client going away, or `shutdown`.
///
/// The follower is read while the outbox has room for more than a message; a message is sent whenever the
/// connection's channel has room, with everything that was ready by then (up to a message's caps). So a client
/// that keeps up gets each read of a stage's output at once, and one that falls behind gets full messages.
/// While the outbox is full the follower is not read; once it has fallen too far behind the recorder
/// ([`RunFollower::fallen_behind`]) it lets go of the live stream ([`RunFollower::detach`]): what a slow client
/// has not read yet is then held by the store, not by the daemon, which keeps for it at most its outbox (a
/// message and a page of the store) and the few messages in the connection's channel.
pub(super) async fn pump<F: Feed>(
    feed: &F,
    follower: RunFollower,
    sender: &Sender<F::Message>,
    shutdown: &CancellationToken,
) {
    let mut outbox: Outbox<F::Item> = Outbox::new(follower.delivered());
    let mut idle = Some(follower);
    // The follower's read in progress: kept across turns of the loop (a message sent meanwhile does not cancel
    // it, so no read of the store is done twice), and it owns the follower until it is done.
    let mut reading = None;
    let mut ended = false;
    let mut quiet_since = Instant::now();
    loop {
        if !ended
            && outbox.has_room(F::MAX_ITEMS)
            && let Some(follower) = idle.take()
        {
            reading = Some(Box::pin(read(follower)));
        }
        if ended && outbox.is_empty() {
            return;
        }
        tokio::select! {
            // Reading comes before sending: what is ready joins the next message.
            biased;
            () = shutdown.cancelled() => {
                // What is in the outbox goes out first: the resume point counts it as sent.
                if flush(feed, &mut outbox, sender).await {
                    let _ = sender
                        .send(Err(Status::unavailable(format!(
                            "the daemon is stopping: resume with after_seq {}",
                            outbox.resume_point()
                        ))))
                        .await;
                }
                return;
            }
            (follower, result) = next_of(&mut reading), if reading.is_some() => {
                reading = None;
                idle = Some(follower);
                match result {
                    Ok(Some(events)) => outbox.take(feed, &events),
                    Ok(None) => ended = true,
                    Err(error) => {
                        if flush(feed, &mut outbox, sender).await {
                            let _ = sender.send(Err(follow_status(&error))).await;
                        }
                        return;
                    }
                }
            }
            // The client is slow and the follower waits: once the store has what it has not read, the bus
            // need not keep it.
            () = fallen_behind(&mut idle), if !ended && idle.as_ref().is_some_and(RunFollower::is_live) => {
                if let Some(follower) = idle.as_mut() {
                    follower.detach();
                }
            }
            permit = sender.reserve(), if !outbox.is_empty() => {
                let Ok(permit) = permit else { return };
                permit.send(Ok(outbox.message(feed)));
                quiet_since = Instant::now();
            }
            () = tokio::time::sleep_until(quiet_since + HEARTBEAT), if outbox.is_empty() => {
                if let Some(beat) = feed.heartbeat(outbox.resume_point())
                    && sender.send(Ok(beat)).await.is_err()
                {
                    return;
                }
                quiet_since = Instant::now();
            }
            () = sender.closed() => return,
        }
    }
}

type Next = Result<Option<Vec<RunEvent>>, FollowError>;

/// One read of the follower, which it hands back with what it read.
async fn read(mut follower: RunFollower) -> (RunFollower, Next) {
    let next = follower.next().await;
    (follower, next)
}

/// The read in progress to its end (never, without one).
async fn next_of<R: Future<Output = (RunFollower, Next)> + Unpin>(
    reading: &mut Option<R>,
) -> (RunFollower, Next) {
    match reading {
        Some(reading) => reading.await,
        None => std::future::pending().await,
    }
}

/// Until the idle follower has fallen behind the recorder (never, without one).
async fn fallen_behind(idle: &mut Option<RunFollower>) {
    match idle {
        Some(follower) => follower.fallen_behind().await,
        None => std::future::pending().await,
    }
}

/// Sends everything in the outbox; whether the client still listens.
async fn flush<F: Feed>(
    feed: &F,
    outbox: &mut Outbox<F::Item>,
    sender: &Sender<F::Message>,
) -> bool {
    while !outbox.is_empty() {
        if sender.send(Ok(outbox.message(feed))).await.is_err() {
            return false;
        }
    }
    true
}

/// What a stream has taken from its follower and not sent yet.
#[derive(Debug)]
struct Outbox<T> {
    /// Each item with the sequence number of its event and its size.
    items: VecDeque<(u64, T, usize)>,
    /// The items' text, in bytes.
    bytes: usize,
    /// Every event up to here has been looked at (taken, or not for this stream).
    covered: u64,
    /// The resume point of the last message sent.
    sent: u64,
}

impl<T> Outbox<T> {
    fn new(after_seq: u64) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            covered: after_seq,
            sent: after_seq,
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether there is less than a full message waiting.
    fn has_room(&self, max_items: usize) -> bool {
        self.items.len() < max_items && self.bytes < MAX_BATCH_BYTES
    }

    /// Where a client resumes after what was sent: past the events looked at, once every item is out.
    fn resume_point(&self) -> u64 {
        if self.items.is_empty() {
            self.covered
        } else {
            self.sent
        }
    }

    fn take<F: Feed<Item = T>>(&mut self, feed: &F, events: &[RunEvent]) {
        for event in events {
            if let Some((item, size)) = feed.item(event) {
                self.bytes += size;
                self.items.push_back((event.seq, item, size));
            }
        }
        if let Some(last) = events.last() {
            self.covered = last.seq;
        }
    }

    /// The next message: the oldest items, at most `MAX_ITEMS` and about [`MAX_BATCH_BYTES`] of text (a longer
    /// item goes alone). Its `last_seq` is its own last item's, or, when it empties the outbox, the last event
    /// looked at: a client that resumes after any message misses nothing and gets nothing twice.
    fn message<F: Feed<Item = T>>(&mut self, feed: &F) -> F::Message {
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut last = self.sent;
        while let Some((_, _, size)) = self.items.front() {
            if !items.is_empty() && (items.len() >= F::MAX_ITEMS || bytes + size > MAX_BATCH_BYTES)
            {
                break;
            }
            let Some((seq, item, size)) = self.items.pop_front() else {
                break;
            };
            bytes += size;
            self.bytes -= size;
            last = seq;
            items.push(item);
        }
        self.sent = if self.items.is_empty() {
            self.covered
        } else {
            last
        };
        feed.message(items, self.sent)
    }
}
