//! Turning a run's events into the rows one store transaction writes: attempt changes and chunks of log lines.

use std::collections::HashMap;

use crate::events::{LogStreamKind, RunEvent, RunEventKind, RunOutcome, StageOutcome};

/// Most lines in one stored chunk.
pub(crate) const MAX_CHUNK_LINES: usize = 2000;
/// Most text bytes in one stored chunk.
pub(crate) const MAX_CHUNK_BYTES: usize = 512 * 1024;
/// A chunk's lines have sequence numbers below `first_seq + MAX_CHUNK_SPAN`: a reader looking for the lines
/// after a number then only looks at chunks that begin at most this far before it (migration 0006 says so too).
pub(crate) const MAX_CHUNK_SPAN: u64 = 4096;

/// What one transaction writes, grouped by table so that each group is one multi-row statement. Applying the
/// groups in field order is the same as applying the events in order: an attempt's start precedes its end, and
/// log chunks and attempts are independent rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordBatch {
    /// The run's plan is known: its stage instances.
    pub stage_count: Option<u64>,
    /// Attempts that began, for a writer that has no events to store: the recorder leaves this empty and
    /// stores the stage events in [`RecordBatch::events`], which the store reads attempts back from.
    pub started: Vec<AttemptStart>,
    /// Attempts (or stages that never started, attempt 0) that ended; like [`RecordBatch::started`].
    pub finished: Vec<AttemptEnd>,
    /// Every event that is not a log line, with its sequence number.
    pub events: Vec<StoredEvent>,
    /// Log lines.
    pub logs: Vec<LogChunk>,
    /// The run ended.
    pub run_finished: Option<RunEnd>,
}

impl RecordBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.stage_count.is_none()
            && self.started.is_empty()
            && self.finished.is_empty()
            && self.events.is_empty()
            && self.logs.is_empty()
            && self.run_finished.is_none()
    }
}

/// An event other than a log line, as it is stored: its JSON as the bus emitted it, whatever fields its kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequence number within the run.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// The event's `type` (`stage-finished`, ...).
    pub kind: String,
    /// The stage instance and attempt of a stage's start or end, which the store joins on.
    pub attempt_of: Option<(String, u32)>,
    /// The event kind's JSON, `type` included.
    pub body: String,
}

impl StoredEvent {
    /// `event` encoded for storing.
    pub(crate) fn of(event: &RunEvent) -> Self {
        // Encoding an event cannot fail (its fields are strings, numbers and enums); an empty body would be
        // reported as corrupt when read back, never taken for another event.
        let body = serde_json::to_string(&event.kind).unwrap_or_default();
        let attempt_of = match &event.kind {
            RunEventKind::StageStarted { stage, attempt, .. }
            | RunEventKind::StageOutputs { stage, attempt, .. }
            | RunEventKind::StageTests { stage, attempt, .. }
            | RunEventKind::StageFinished { stage, attempt, .. } => Some((stage.clone(), *attempt)),
            _ => None,
        };
        Self {
            seq: event.seq,
            at_ms: i64::try_from(event.at_ms).unwrap_or(i64::MAX),
            kind: event_type(&body).to_owned(),
            attempt_of,
            body,
        }
    }
}

/// The `type` of an encoded event: serde writes an internally tagged enum's tag first.
fn event_type(body: &str) -> &str {
    body.strip_prefix("{\"type\":\"")
        .and_then(|rest| rest.split_once('"'))
        .map_or("", |(kind, _)| kind)
}

/// An attempt began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptStart {
    /// Instance.
    pub stage: String,
    /// Attempt.
    pub attempt: u32,
    /// When.
    pub at_ms: i64,
}

/// An attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    /// Instance.
    pub stage: String,
    /// Attempt (0: the stage never started).
    pub attempt: u32,
    /// How.
    pub outcome: StageOutcome,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Why.
    pub reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
    /// When.
    pub at_ms: i64,
    /// When it began, if its start is in the same batch: the attempt is then written once, already finished,
    /// instead of inserted as running and updated (a DAG of short stages starts and ends most attempts within
    /// one batch).
    pub started_at_ms: Option<i64>,
}

/// The run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// How.
    pub status: RunOutcome,
    /// Wall time.
    pub duration_ms: u64,
    /// When.
    pub at_ms: i64,
}

/// Consecutive lines of one attempt, numbered from `first_line`, already encoded the way they are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Instance.
    pub stage: String,
    /// Attempt.
    pub attempt: u32,
    /// Number of the first line within the attempt (from 1).
    pub first_line: u64,
    /// Event sequence number of the first line.
    pub first_seq: u64,
    /// Event sequence number of the last line.
    pub last_seq: u64,
    /// `None` when the lines have consecutive sequence numbers; else each line's minus `first_seq`,
    /// comma-separated.
    pub seqs: Option<String>,
    /// When the first line was read.
    pub first_at_ms: i64,
    /// Lines in the chunk.
    pub line_count: u64,
    /// One character per line: `o` stdout, `e` stderr.
    pub streams: String,
    /// Per line, ms after `first_at_ms`, comma-separated.
    pub offsets: String,
    /// The lines as a JSON array of strings.
    pub texts: String,
    text_bytes: usize,
}

impl LogChunk {
    fn new(stage: &str, attempt: u32, first_line: u64, first_seq: u64, first_at_ms: i64) -> Self {
        Self {
            stage: stage.to_owned(),
            attempt,
            first_line,
            first_seq,
            last_seq: first_seq,
            seqs: None,
            first_at_ms,
            line_count: 0,
            streams: String::new(),
            offsets: String::new(),
            texts: String::from("["),
            text_bytes: 0,
        }
    }

    fn push(&mut self, seq: u64, stream: LogStreamKind, at_ms: i64, text: &str) {
        if self.line_count > 0 {
            self.offsets.push(',');
            self.texts.push(',');
            if self.seqs.is_none() && seq != self.last_seq + 1 {
                // The first gap: from here on every line's number is written out.
                let mut seqs = String::from("0");
                for step in 1..self.line_count {
                    let _ = std::fmt::Write::write_fmt(&mut seqs, format_args!(",{step}"));
                }
                self.seqs = Some(seqs);
            }
            if let Some(seqs) = self.seqs.as_mut() {
                let _ = std::fmt::Write::write_fmt(
                    seqs,
                    format_args!(",{}", seq.saturating_sub(self.first_seq)),
                );
            }
        }
        self.last_seq = seq;
        self.streams.push(match stream {
            LogStreamKind::Stdout => 'o',
            LogStreamKind::Stderr => 'e',
        });
        let offset = at_ms.saturating_sub(self.first_at_ms);
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut self.offsets, format_args!("{offset}"));
        push_json_string(&mut self.texts, text);
        self.text_bytes += text.len();
        self.line_count += 1;
    }

    fn finish(&mut self) {
        self.texts.push(']');
    }

    fn has_room_for(&self, seq: u64, text: &str) -> bool {
        (self.line_count as usize) < MAX_CHUNK_LINES
            && self.text_bytes + text.len() <= MAX_CHUNK_BYTES
            && seq < self.first_seq + MAX_CHUNK_SPAN
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..index]);
        if escape.is_empty() {
            let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{byte:04x}"));
        } else {
            out.push_str(escape);
        }
        start = index + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Builds batches from events, numbering each attempt's lines without gaps across batches.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    next_line: HashMap<(String, u32), u64>,
    /// Leave [`RecordBatch::started`] and [`RecordBatch::finished`] empty: the stage events say it all, and
    /// storing both would keep two copies of every attempt.
    events_only: bool,
}

impl BatchBuilder {
    /// A builder for the recorder: events and log chunks, no separate attempt rows.
    pub(crate) fn events_only() -> Self {
        Self {
            events_only: true,
            ..Self::default()
        }
    }

    /// The batch for `events` (in sequence order).
    pub(crate) fn build<'e>(&mut self, events: impl Iterator<Item = &'e RunEvent>) -> RecordBatch {
        let mut batch = RecordBatch::default();
        // Starts in this batch, by attempt; an end in the same batch takes its start along.
        let mut starts: Vec<Option<AttemptStart>> = Vec::new();
        let mut start_of: HashMap<(String, u32), usize> = HashMap::new();
        // Lines join the open chunk only when they are the same attempt's and nothing else happened in between:
        // chunks then keep the exact order of lines across stages.
        let mut open: Option<LogChunk> = None;
        for event in events {
            let at_ms = i64::try_from(event.at_ms).unwrap_or(i64::MAX);
            if let RunEventKind::LogLine {
                stage,
                attempt,
                stream,
                text,
            } = &event.kind
            {
                let joins = open.as_ref().is_some_and(|chunk| {
                    chunk.attempt == *attempt
                        && chunk.stage == *stage
                        && chunk.has_room_for(event.seq, text)
                });
                if !joins {
                    if let Some(chunk) = open.take() {
                        self.close(chunk, &mut batch);
                    }
                    let first_line = self
                        .next_line
                        .get(&(stage.clone(), *attempt))
                        .copied()
                        .unwrap_or(1);
                    open = Some(LogChunk::new(stage, *attempt, first_line, event.seq, at_ms));
                }
                if let Some(chunk) = open.as_mut() {
                    chunk.push(event.seq, *stream, at_ms, text);
                }
                continue;
            }
            if let Some(chunk) = open.take() {
                self.close(chunk, &mut batch);
            }
            batch.events.push(StoredEvent::of(event));
            if self.events_only
                && matches!(
                    event.kind,
                    RunEventKind::StageStarted { .. } | RunEventKind::StageFinished { .. }
                )
            {
                continue;
            }
            match &event.kind {
                RunEventKind::RunStarted { stages, .. } => {
                    batch.stage_count = Some(u64::from(*stages));
                }
                RunEventKind::StageStarted { stage, attempt } => {
                    start_of.insert((stage.clone(), *attempt), starts.len());
                    starts.push(Some(AttemptStart {
                        stage: stage.clone(),
                        attempt: *attempt,
                        at_ms,
                    }));
                }
                RunEventKind::StageFinished {
                    stage,
                    attempt,
                    outcome,
                    exit_code,
                    duration_ms,
                    reason,
                    ..
                } => {
                    let started_at_ms = start_of
                        .remove(&(stage.clone(), *attempt))
                        .and_then(|index| starts.get_mut(index))
                        .and_then(Option::take)
                        .map(|start| start.at_ms);
                    batch.finished.push(AttemptEnd {
                        stage: stage.clone(),
                        attempt: *attempt,
                        outcome: *outcome,
                        exit_code: *exit_code,
                        reason: reason.clone(),
                        duration_ms: *duration_ms,
                        at_ms,
                        started_at_ms,
                    });
                }
                RunEventKind::RunFinished {
                    status,
                    duration_ms,
                    ..
                } => {
                    batch.run_finished = Some(RunEnd {
                        status: *status,
                        duration_ms: *duration_ms,
                        at_ms,
                    });
                }
                RunEventKind::StageQueued { .. }
                | RunEventKind::WaitingForGroup { .. }
                | RunEventKind::LogLine { .. }
                | RunEventKind::StageOutputs { .. }
                | RunEventKind::StageTests { .. } => {}
            }
        }
        if let Some(chunk) = open.take() {
            self.close(chunk, &mut batch);
        }
        batch.started = starts.into_iter().flatten().collect();
        batch
    }

    /// Seals a chunk into the batch and records where its attempt's lines continue.
    fn close(&mut self, mut chunk: LogChunk, batch: &mut RecordBatch) {
        chunk.finish();
        self.next_line.insert(
            (chunk.stage.clone(), chunk.attempt),
            chunk.first_line + chunk.line_count,
        );
        batch.logs.push(chunk);
    }
}

/// A stored chunk's columns.
pub(crate) struct ChunkColumns<'c> {
    pub(crate) stage: &'c str,
    pub(crate) attempt: u32,
    pub(crate) first_line: u64,
    pub(crate) first_seq: u64,
    pub(crate) first_at_ms: i64,
    pub(crate) streams: &'c str,
    pub(crate) offsets: &'c str,
    pub(crate) texts: &'c str,
    pub(crate) seqs: Option<&'c str>,
}

impl<'c> From<&'c LogChunk> for ChunkColumns<'c> {
    fn from(chunk: &'c LogChunk) -> Self {
        Self {
            stage: &chunk.stage,
            attempt: chunk.attempt,
            first_line: chunk.first_line,
            first_seq: chunk.first_seq,
            first_at_ms: chunk.first_at_ms,
            streams: &chunk.streams,
            offsets: &chunk.offsets,
            texts: &chunk.texts,
            seqs: chunk.seqs.as_deref(),
        }
    }
}

/// Reads a stored chunk back into lines, each with its event sequence number.
pub(crate) fn decode_chunk(
    chunk: &ChunkColumns<'_>,
) -> Result<Vec<(u64, crate::store::LogLineRecord)>, String> {
    let ChunkColumns {
        stage,
        attempt,
        first_line,
        first_seq,
        first_at_ms,
        streams,
        offsets,
        texts,
        seqs,
    } = *chunk;
    let texts: Vec<String> =
        serde_json::from_str(texts).map_err(|error| format!("corrupt log chunk: {error}"))?;
    let mut steps = seqs.map(|seqs| seqs.split(','));
    let mut offsets = offsets.split(',');
    let mut streams = streams.chars();
    let mut lines = Vec::with_capacity(texts.len());
    for (index, text) in texts.into_iter().enumerate() {
        let stream = match streams.next() {
            Some('e') => LogStreamKind::Stderr,
            _ => LogStreamKind::Stdout,
        };
        let offset = offsets
            .next()
            .and_then(|offset| offset.parse::<i64>().ok())
            .unwrap_or(0);
        let seq = match steps.as_mut() {
            None => first_seq + index as u64,
            Some(steps) => {
                let step = steps
                    .next()
                    .and_then(|step| step.parse::<u64>().ok())
                    .ok_or_else(|| {
                        "corrupt log chunk: a line without its sequence number".to_owned()
                    })?;
                first_seq + step
            }
        };
        lines.push((
            seq,
            crate::store::LogLineRecord {
                stage: stage.to_owned(),
                attempt,
                line: first_line + index as u64,
                stream,
                at_ms: first_at_ms + offset,
                text,
            },
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn event(seq: u64, kind: RunEventKind) -> RunEvent {
        RunEvent {
            seq,
            run_id: Arc::from("run"),
            at_ms: 1000 + seq,
            kind,
        }
    }

    fn started(seq: u64, stage: &str, attempt: u32) -> RunEvent {
        event(
            seq,
            RunEventKind::StageStarted {
                stage: stage.to_owned(),
                attempt,
            },
        )
    }

    fn finished(seq: u64, stage: &str, attempt: u32) -> RunEvent {
        event(
            seq,
            RunEventKind::StageFinished {
                stage: stage.to_owned(),
                attempt,
                outcome: StageOutcome::Succeeded,
                exit_code: Some(0),
                duration_ms: 1,
                reason: None,
                failure: None,
                retrying: false,
            },
        )
    }

    #[test]
    fn an_attempt_that_starts_and_ends_in_one_batch_is_written_once() {
        let mut builder = BatchBuilder::default();
        let events = [
            started(1, "a", 1),
            started(2, "b", 1),
            finished(3, "a", 1),
            started(4, "a", 2),
        ];
        let batch = builder.build(events.iter());
        let starts: Vec<(&str, u32)> = batch
            .started
            .iter()
            .map(|start| (start.stage.as_str(), start.attempt))
            .collect();
        // `a` attempt 1 ended here; `b` and `a` attempt 2 are still running.
        assert_eq!(starts, [("b", 1), ("a", 2)]);
        assert_eq!(batch.finished.len(), 1);
        assert_eq!(batch.finished[0].started_at_ms, Some(1001));

        // `b` ends in a later batch: its start was written already.
        let later = builder.build([finished(5, "b", 1)].iter());
        assert!(later.started.is_empty());
        assert_eq!(later.finished[0].started_at_ms, None);
    }

    #[test]
    fn a_chunk_gives_each_line_back_its_own_sequence_number_with_or_without_gaps() {
        let mut chunk = LogChunk::new("a", 1, 1, 10, 1000);
        chunk.push(10, LogStreamKind::Stdout, 1000, "one");
        chunk.push(11, LogStreamKind::Stdout, 1001, "two");
        assert_eq!(chunk.seqs, None, "consecutive numbers are not written out");
        // Another stage's events came in between.
        chunk.push(15, LogStreamKind::Stderr, 1002, "three");
        chunk.push(16, LogStreamKind::Stdout, 1003, "four");
        chunk.finish();
        assert_eq!(chunk.seqs.as_deref(), Some("0,1,5,6"));
        assert_eq!(chunk.last_seq, 16);
        assert!(!chunk.has_room_for(10 + MAX_CHUNK_SPAN, "x"));
        let lines = decode_chunk(&ChunkColumns::from(&chunk)).unwrap_or_default();
        let numbered: Vec<(u64, u64, &str)> = lines
            .iter()
            .map(|(seq, line)| (*seq, line.line, line.text.as_str()))
            .collect();
        assert_eq!(
            numbered,
            [
                (10, 1, "one"),
                (11, 2, "two"),
                (15, 3, "three"),
                (16, 4, "four")
            ]
        );
    }
}
