//! Reading stored events back: event rows and log chunks merged into the run's one stream (every backend), and
//! attempts read from the stage events (the memory store; the SQL backends' `stage_results` view does the same).

use std::collections::HashMap;
use std::sync::Arc;

use crate::events::{RunEvent, RunEventKind};

use super::batch::MAX_CHUNK_SPAN;
use super::model::{AttemptRecord, AttemptState, LogLineRecord, RunState, StoreError};

/// The stored event row `seq`, `at_ms`, `body` of run `run_id`, as the bus emitted it.
pub(crate) fn decode_event(
    run_id: &Arc<str>,
    seq: u64,
    at_ms: i64,
    body: &str,
) -> Result<RunEvent, StoreError> {
    let kind: RunEventKind = serde_json::from_str(body)
        .map_err(|error| StoreError::Query(format!("corrupt event {seq}: {error}")))?;
    Ok(RunEvent {
        seq,
        run_id: Arc::clone(run_id),
        at_ms: u64::try_from(at_ms).unwrap_or(0),
        kind,
    })
}

/// A stored log line as the event the bus emitted.
pub(crate) fn line_event(run_id: &Arc<str>, seq: u64, line: LogLineRecord) -> RunEvent {
    RunEvent {
        seq,
        run_id: Arc::clone(run_id),
        at_ms: u64::try_from(line.at_ms).unwrap_or(0),
        kind: RunEventKind::LogLine {
            stage: line.stage,
            attempt: line.attempt,
            stream: line.stream,
            text: line.text,
        },
    }
}

/// The lowest `first_seq` a chunk holding a line after `after` can have.
pub(crate) fn chunks_from(after: u64) -> u64 {
    after.saturating_sub(MAX_CHUNK_SPAN)
}

/// What a backend read for one page of [`crate::store::Store::events_after`]: the first `limit` event rows after
/// `after`, the chunks that begin at or before `after` and hold lines after it, and the first `limit` chunks
/// that begin after it (each chunk's lines with their sequence numbers).
#[derive(Debug, Default)]
pub(crate) struct PageParts {
    pub(crate) rows: Vec<RunEvent>,
    pub(crate) straddling: Vec<Vec<(u64, LogLineRecord)>>,
    pub(crate) starting: Vec<Vec<(u64, LogLineRecord)>>,
}

/// The events after `after`, in order, at most `limit`, from what was read. Every one of the first `limit` events
/// was read: a row not read has `limit` read rows before it, and a line of a chunk not read has before it the
/// first lines of `limit` chunks that were read. What was read beyond them is cut off.
pub(crate) fn merge_page(
    run_id: &Arc<str>,
    after: u64,
    limit: usize,
    parts: PageParts,
) -> Vec<RunEvent> {
    let mut events = parts.rows;
    // Sequence numbers are gapless: the page's events are those up to `after + limit`; a line past that is not
    // made into an event only to be cut off.
    let last = after.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
    for (seq, line) in parts.straddling.into_iter().chain(parts.starting).flatten() {
        if seq > after && seq <= last {
            events.push(line_event(run_id, seq, line));
        }
    }
    events.sort_by_key(|event| event.seq);
    events.truncate(limit);
    events
}

/// A run's attempts, read from its stage events (stage-started, stage-finished, in sequence order). An attempt
/// still running when its run has ended (or was marked interrupted) is interrupted, as of the run's end.
pub(crate) fn attempts_from_events(
    events: impl IntoIterator<Item = RunEvent>,
    run_state: RunState,
    run_finished_at_ms: Option<i64>,
) -> Vec<AttemptRecord> {
    let mut attempts: Vec<AttemptRecord> = Vec::new();
    let mut index: HashMap<(String, u32), usize> = HashMap::new();
    for event in events {
        let at_ms = i64::try_from(event.at_ms).unwrap_or(i64::MAX);
        let (stage, attempt) = match &event.kind {
            RunEventKind::StageStarted { stage, attempt, .. }
            | RunEventKind::StageFinished { stage, attempt, .. } => (stage.clone(), *attempt),
            _ => continue,
        };
        let position = *index.entry((stage.clone(), attempt)).or_insert_with(|| {
            attempts.push(AttemptRecord {
                stage,
                attempt,
                state: AttemptState::Running,
                exit_code: None,
                reason: None,
                started_at_ms: None,
                finished_at_ms: None,
                duration_ms: None,
            });
            attempts.len() - 1
        });
        let Some(record) = attempts.get_mut(position) else {
            continue;
        };
        match event.kind {
            RunEventKind::StageStarted { .. } => record.started_at_ms = Some(at_ms),
            RunEventKind::StageFinished {
                outcome,
                exit_code,
                duration_ms,
                reason,
                ..
            } => {
                record.state = AttemptState::Finished(outcome);
                record.exit_code = exit_code;
                record.reason = reason;
                record.finished_at_ms = Some(at_ms);
                record.duration_ms = Some(duration_ms);
            }
            _ => {}
        }
    }
    if run_state != RunState::Running {
        for record in &mut attempts {
            if record.state == AttemptState::Running {
                record.state = AttemptState::Interrupted;
                record.finished_at_ms = run_finished_at_ms;
            }
        }
    }
    attempts
}

/// Attempts in the order they started (a stage that never started: when it was skipped), then by stage and
/// attempt, as the SQL backends order them; `from_events` win over attempt rows of the same stage and attempt.
pub(crate) fn merge_attempts(
    from_events: Vec<AttemptRecord>,
    rows: Vec<AttemptRecord>,
) -> Vec<AttemptRecord> {
    let mut attempts = from_events;
    for row in rows {
        if !attempts
            .iter()
            .any(|known| known.stage == row.stage && known.attempt == row.attempt)
        {
            attempts.push(row);
        }
    }
    attempts.sort_by(|a, b| {
        (a.started_at_ms.or(a.finished_at_ms), &a.stage, a.attempt).cmp(&(
            b.started_at_ms.or(b.finished_at_ms),
            &b.stage,
            b.attempt,
        ))
    });
    attempts
}
