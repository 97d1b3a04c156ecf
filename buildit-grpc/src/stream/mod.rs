//! Streams to clients: a run's events (`WatchRun`) and its log lines (`StreamLogs`), joined live while this
//! daemon runs the run or read from the store, batched by count, size and time, ended by the daemon's stop.

use std::time::Duration;

use buildit_core::events::RunEventKind;
use buildit_core::store::{FollowError, RunFollower, RunRef, RunRequestState};
use tonic::Status;

use crate::convert;
use crate::proto;
use crate::registry::Phase;
use crate::service::BuildItService;

/// How long a watch stream may be silent before it sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Most events in one streamed message.
const MAX_BATCH_EVENTS: usize = 1000;
/// Most log text in one streamed message (bytes).
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Longest a log line waits for more to share its message.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);

type Sender<T> = tokio::sync::mpsc::Sender<Result<T, Status>>;

impl BuildItService {
    /// Feeds one watch stream: waits for a queued run to start, follows it (live, or from the store once it is
    /// over) in batches capped by count and size, with heartbeats, until `run-finished`, the client going away,
    /// or the daemon stopping.
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
        let mut follower = loop {
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
        let mut pending: Vec<proto::Event> = Vec::new();
        loop {
            let next = tokio::select! {
                next = follower.next() => next,
                () = tokio::time::sleep(HEARTBEAT) => {
                    if sender.send(Ok(heartbeat(follower.delivered()))).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = self.shutdown.cancelled() => {
                    let _ = sender
                        .send(Err(Status::unavailable(format!(
                            "the daemon is stopping: resume with after_seq {}",
                            follower.delivered()
                        ))))
                        .await;
                    return;
                }
                () = sender.closed() => return,
            };
            match next {
                Ok(Some(events)) => {
                    pending.extend(events.iter().map(convert::event));
                    for batch in batches(std::mem::take(&mut pending)) {
                        let message = proto::WatchRunResponse {
                            item: Some(proto::watch_run_response::Item::Events(proto::Events {
                                events: batch,
                            })),
                        };
                        if sender.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    let _ = sender.send(Err(follow_status(&error))).await;
                    return;
                }
            }
        }
    }

    /// A follower of the run from `after_seq`: joined live while this daemon runs it, else read from the store.
    async fn follower(
        &self,
        tenant: &str,
        run_id: &str,
        after_seq: u64,
        live: bool,
    ) -> Result<RunFollower, Status> {
        let store = self.store.for_tenant(tenant);
        if live {
            // Joined live while a worker of this daemon runs it; a run queued here may be claimed by another
            // daemon of the store, and a run queued elsewhere is only in the store: both are polled there until
            // the run has a record (or will never get one), then read from the store.
            loop {
                let mut phase = self.registry.watch(tenant, run_id);
                let current = phase
                    .as_mut()
                    .map(|phase| phase.borrow_and_update().clone());
                match current {
                    Some(Phase::Running(joiner)) => return Ok(joiner.join(after_seq).await),
                    Some(Phase::Ended) => break,
                    Some(Phase::Queued) | None => {}
                }
                if store.find_run(&RunRef::Id(run_id.to_owned())).await.is_ok() {
                    break;
                }
                // Started comes just before the run's first record: waited for as well.
                match store.run_request(run_id).await {
                    Ok(Some(request))
                        if matches!(
                            request.state,
                            RunRequestState::Queued | RunRequestState::Started
                        ) => {}
                    _ => break,
                }
                let changed = async {
                    match phase.as_mut() {
                        Some(phase) => {
                            let _ = phase.changed().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = self.shutdown.cancelled() => {
                        return Err(Status::unavailable("the daemon is stopping: resume with after_seq 0"));
                    }
                }
            }
        }
        Ok(if live {
            // Run by another daemon of the store (or over): its store is read until it ends.
            RunFollower::tailing(store, run_id, after_seq)
        } else {
            RunFollower::stored(store, run_id, after_seq)
        })
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

fn follow_status(error: &FollowError) -> Status {
    match error {
        // A run that never got a record (it failed before it started, or was forgotten): not found.
        FollowError::Store(buildit_core::store::StoreError::NoSuchRun(run)) => {
            Status::not_found(format!("no run `{run}`"))
        }
        other => Status::unavailable(format!("cannot follow the run: {other}")),
    }
}

/// Events cut into messages of at most [`MAX_BATCH_EVENTS`] events and about [`MAX_BATCH_BYTES`] of text.
fn batches(events: Vec<proto::Event>) -> Vec<Vec<proto::Event>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = match &event.kind {
            Some(proto::event::Kind::LogLine(line)) => line.text.len(),
            Some(proto::event::Kind::Json(json)) => json.len(),
            None => 0,
        };
        if !current.is_empty()
            && (current.len() >= MAX_BATCH_EVENTS || bytes + size > MAX_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

impl BuildItService {
    /// Feeds one log stream: the run's log lines (of one stage and attempt, or all) after `after_seq`, stored
    /// ones and, with `follow`, live ones until the run ends; a message holds at most [`MAX_BATCH_BYTES`] of text
    /// and waits at most [`MAX_BATCH_WAIT`] for more lines.
    pub(crate) async fn logs_stream(
        &self,
        tenant: &str,
        request: proto::StreamLogsRequest,
        sender: Sender<proto::StreamLogsResponse>,
    ) {
        let mut follower = match self
            .follower(tenant, &request.run, request.after_seq, request.follow)
            .await
        {
            Ok(follower) => follower,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return;
            }
        };
        // Each buffered line with its sequence number: a message's `last_seq` is its own last line's, so a
        // client that resumes after any message misses nothing and gets nothing twice.
        let mut lines: Vec<(u64, proto::LogLine)> = Vec::new();
        let mut bytes = 0;
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let flush_at =
                due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let next = tokio::select! {
                next = follower.next() => Some(next),
                () = tokio::time::sleep_until(flush_at), if due.is_some() => None,
                () = self.shutdown.cancelled() => {
                    // What was buffered goes out first: the resume point counts it as sent.
                    if send_lines(&sender, std::mem::take(&mut lines), follower.delivered()).await {
                        let _ = sender
                            .send(Err(Status::unavailable(format!(
                                "the daemon is stopping: resume with after_seq {}",
                                follower.delivered()
                            ))))
                            .await;
                    }
                    return;
                }
                () = sender.closed() => return,
            };
            let ended = match next {
                // The time cap: what waited a second goes out.
                None => false,
                Some(Ok(Some(events))) => {
                    for event in &events {
                        let RunEventKind::LogLine { stage, attempt, .. } = &event.kind else {
                            continue;
                        };
                        let wanted = (request.stage.is_empty() || *stage == request.stage)
                            && (request.attempt == 0 || *attempt == request.attempt);
                        if let (true, Some(proto::event::Kind::LogLine(line))) =
                            (wanted, convert::event(event).kind)
                        {
                            bytes += line.text.len();
                            lines.push((event.seq, line));
                            due.get_or_insert_with(|| tokio::time::Instant::now() + MAX_BATCH_WAIT);
                        }
                    }
                    false
                }
                Some(Ok(None)) => true,
                Some(Err(error)) => {
                    let _ = sender.send(Err(follow_status(&error))).await;
                    return;
                }
            };
            let time_is_up = due.is_some_and(|due| tokio::time::Instant::now() >= due);
            if !lines.is_empty() && (ended || time_is_up || bytes >= MAX_BATCH_BYTES) {
                if !send_lines(&sender, std::mem::take(&mut lines), follower.delivered()).await {
                    return;
                }
                bytes = 0;
                due = None;
            }
            if ended {
                return;
            }
        }
    }
}

/// Sends buffered lines in messages of at most [`MAX_BATCH_BYTES`] of text (a longer line goes alone); the last
/// message's `last_seq` is `covered` (every event up to it was looked at), the others' their own last line's.
/// Whether the client still listens.
async fn send_lines(
    sender: &Sender<proto::StreamLogsResponse>,
    lines: Vec<(u64, proto::LogLine)>,
    covered: u64,
) -> bool {
    let batches = cut_lines(lines);
    let count = batches.len();
    for (index, batch) in batches.into_iter().enumerate() {
        let last_seq = if index + 1 == count {
            covered
        } else {
            batch.last().map_or(covered, |(seq, _)| *seq)
        };
        let message = proto::StreamLogsResponse {
            lines: batch.into_iter().map(|(_, line)| line).collect(),
            last_seq,
        };
        if sender.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}

/// Lines cut into messages of at most [`MAX_BATCH_BYTES`] of text (a longer line goes alone).
fn cut_lines(lines: Vec<(u64, proto::LogLine)>) -> Vec<Vec<(u64, proto::LogLine)>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (seq, line) in lines {
        if !current.is_empty() && bytes + line.text.len() > MAX_BATCH_BYTES {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += line.text.len();
        current.push((seq, line));
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
