//! `WatchRun`: every event of a run after a sequence number, with heartbeats, to `run-finished`.

use buildit_core::events::RunEvent;

use super::pump::{Feed, pump};
use super::{HEARTBEAT, MAX_BATCH_EVENTS, Sender};
use crate::convert;
use crate::proto;
use crate::service::BuildItService;

impl BuildItService {
    /// Feeds one watch stream: waits for a queued run to start, follows it (live, or from the store once it is
    /// over) in batches of what is ready, with heartbeats, until `run-finished`, the client going away, or the
    /// daemon stopping.
    pub(crate) async fn watch_stream(
        &self,
        tenant: &str,
        run_id: &str,
        after_seq: u64,
        sender: Sender<proto::WatchRunResponse>,
    ) {
        // A queued run is waited for with heartbeats too: a client can tell a long queue from a dead connection.
        let joining = self.follower(tenant, run_id, after_seq, true);
        tokio::pin!(joining);
        let follower = loop {
            tokio::select! {
                joined = &mut joining => match joined {
                    Ok(follower) => break follower,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                },
                () = tokio::time::sleep(HEARTBEAT) => {
                    if sender.send(Ok(heartbeat(after_seq))).await.is_err() {
                        return;
                    }
                }
                () = sender.closed() => return,
            }
        };
        pump(&Watch, follower, &sender, &self.shutdown).await;
    }
}

/// Every event, as it goes on the wire.
struct Watch;

impl Feed for Watch {
    type Item = proto::Event;
    type Message = proto::WatchRunResponse;
    const MAX_ITEMS: usize = MAX_BATCH_EVENTS;

    fn item(&self, event: &RunEvent) -> Option<(proto::Event, usize)> {
        let event = convert::event(event);
        let size = match &event.kind {
            Some(proto::event::Kind::LogLine(line)) => line.text.len(),
            Some(proto::event::Kind::Json(json)) => json.len(),
            None => 0,
        };
        Some((event, size))
    }

    fn message(&self, events: Vec<proto::Event>, _last_seq: u64) -> proto::WatchRunResponse {
        proto::WatchRunResponse {
            item: Some(proto::watch_run_response::Item::Events(proto::Events {
                events,
            })),
        }
    }

    fn heartbeat(&self, seq: u64) -> Option<proto::WatchRunResponse> {
        Some(heartbeat(seq))
    }
}

/// A heartbeat: nothing happened for [`HEARTBEAT`]; `seq` is the last sequence number sent.
fn heartbeat(seq: u64) -> proto::WatchRunResponse {
    proto::WatchRunResponse {
        item: Some(proto::watch_run_response::Item::Heartbeat(
            proto::Heartbeat { seq },
        )),
    }
}
