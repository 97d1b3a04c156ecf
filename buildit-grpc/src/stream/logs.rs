//! `StreamLogs`: a run's log lines (of one stage and attempt, or all), stored and, with `follow`, live.

use buildit_core::events::{RunEvent, RunEventKind};

use super::pump::{Feed, pump};
use super::{MAX_BATCH_LINES, Sender};
use crate::convert;
use crate::proto;
use crate::service::BuildItService;

impl BuildItService {
    /// Feeds one log stream: the run's log lines (of one stage and attempt, or all) after `after_seq`, stored
    /// ones and, with `follow`, live ones until the run ends, in batches of what is ready.
    pub(crate) async fn logs_stream(
        &self,
        tenant: &str,
        request: proto::StreamLogsRequest,
        sender: Sender<proto::StreamLogsResponse>,
    ) {
        // A client that goes away while its queued run waits stops the waiting.
        let joined = tokio::select! {
            joined = self.follower(tenant, &request.run, request.after_seq, request.follow) => joined,
            () = sender.closed() => return,
        };
        let follower = match joined {
            Ok(follower) => follower,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return;
            }
        };
        let feed = Logs {
            stage: request.stage,
            attempt: request.attempt,
        };
        pump(&feed, follower, &sender, &self.shutdown).await;
    }
}

/// The log lines a `StreamLogs` call asked for.
struct Logs {
    /// Only this stage's (empty: every stage's).
    stage: String,
    /// Only this attempt's (0: every attempt's).
    attempt: u32,
}

impl Feed for Logs {
    type Item = proto::LogLine;
    type Message = proto::StreamLogsResponse;
    const MAX_ITEMS: usize = MAX_BATCH_LINES;

    fn item(&self, event: &RunEvent) -> Option<(proto::LogLine, usize)> {
        let RunEventKind::LogLine { stage, attempt, .. } = &event.kind else {
            return None;
        };
        let wanted = (self.stage.is_empty() || *stage == self.stage)
            && (self.attempt == 0 || *attempt == self.attempt);
        match (wanted, convert::event(event).kind) {
            (true, Some(proto::event::Kind::LogLine(line))) => {
                let size = line.text.len();
                Some((line, size))
            }
            _ => None,
        }
    }

    fn message(&self, lines: Vec<proto::LogLine>, last_seq: u64) -> proto::StreamLogsResponse {
        proto::StreamLogsResponse { lines, last_seq }
    }
}
