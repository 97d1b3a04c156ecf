//! Turning a run's events into the rows one store transaction writes: attempt changes and chunks of log lines.

use std::collections::HashMap;

use crate::events::{LogStreamKind, RunEvent, RunEventKind, RunStatus, StageOutcome};

/// Most lines in one stored chunk.
pub(crate) const MAX_CHUNK_LINES: usize = 2000;
/// Most text bytes in one stored chunk.
pub(crate) const MAX_CHUNK_BYTES: usize = 512 * 1024;

/// What one transaction writes, in event order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordBatch {
    /// The changes.
    pub changes: Vec<Change>,
}

/// One change to a run's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The run's plan is known.
    RunStarted {
        /// Stage instances.
        stages: u64,
    },
    /// An attempt began.
    AttemptStarted {
        /// Instance.
        stage: String,
        /// Attempt.
        attempt: u32,
        /// When.
        at_ms: i64,
    },
    /// An attempt (or a stage that never started, attempt 0) ended.
    AttemptFinished {
        /// Instance.
        stage: String,
        /// Attempt.
        attempt: u32,
        /// How.
        outcome: StageOutcome,
        /// Exit code.
        exit_code: Option<i32>,
        /// Why.
        reason: Option<String>,
        /// Wall time.
        duration_ms: u64,
        /// When.
        at_ms: i64,
    },
    /// Consecutive log lines of one attempt.
    Logs(LogChunk),
    /// The run ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// Wall time.
        duration_ms: u64,
        /// When.
        at_ms: i64,
    },
}

/// Consecutive lines of one attempt, numbered from `first_line`.
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
    /// When the first line was read.
    pub first_at_ms: i64,
    /// Per line: stream, ms after `first_at_ms`, text.
    pub lines: Vec<(LogStreamKind, i64, String)>,
    bytes: usize,
}

impl LogChunk {
    /// One character per line: `o` stdout, `e` stderr.
    pub(crate) fn streams(&self) -> String {
        self.lines
            .iter()
            .map(|(stream, _, _)| match stream {
                LogStreamKind::Stdout => 'o',
                LogStreamKind::Stderr => 'e',
            })
            .collect()
    }

    /// Per line, ms after the first line, comma-separated.
    pub(crate) fn offsets(&self) -> String {
        let mut text = String::with_capacity(self.lines.len() * 2);
        for (index, (_, offset, _)) in self.lines.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(&offset.to_string());
        }
        text
    }

    /// The lines as a JSON array.
    pub(crate) fn texts(&self) -> String {
        let texts: Vec<&str> = self
            .lines
            .iter()
            .map(|(_, _, text)| text.as_str())
            .collect();
        serde_json::to_string(&texts).unwrap_or_else(|_| "[]".to_owned())
    }

    pub(crate) fn line_count(&self) -> u64 {
        self.lines.len() as u64
    }
}

/// Builds batches from events, numbering each attempt's lines without gaps across batches.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    next_line: HashMap<(String, u32), u64>,
}

impl BatchBuilder {
    /// The batch for `events` (in sequence order).
    pub(crate) fn build(&mut self, events: &[std::sync::Arc<RunEvent>]) -> RecordBatch {
        let mut changes: Vec<Change> = Vec::new();
        for event in events {
            let at_ms = i64::try_from(event.at_ms).unwrap_or(i64::MAX);
            if !matches!(event.kind, RunEventKind::LogLine { .. })
                && let Some(Change::Logs(previous)) = changes.last()
            {
                self.close(previous);
            }
            match &event.kind {
                RunEventKind::RunStarted { stages, .. } => changes.push(Change::RunStarted {
                    stages: *stages as u64,
                }),
                RunEventKind::StageQueued { .. } => {}
                RunEventKind::StageStarted { stage, attempt } => {
                    changes.push(Change::AttemptStarted {
                        stage: stage.clone(),
                        attempt: *attempt,
                        at_ms,
                    });
                }
                RunEventKind::LogLine {
                    stage,
                    attempt,
                    stream,
                    text,
                } => {
                    // Lines join the previous chunk only when it is the same attempt's, right before: chunks
                    // then keep the exact order of lines across stages.
                    if let Some(Change::Logs(chunk)) = changes.last_mut()
                        && chunk.attempt == *attempt
                        && chunk.stage == *stage
                        && chunk.lines.len() < MAX_CHUNK_LINES
                        && chunk.bytes + text.len() <= MAX_CHUNK_BYTES
                    {
                        chunk.bytes += text.len();
                        chunk
                            .lines
                            .push((*stream, at_ms - chunk.first_at_ms, text.clone()));
                        continue;
                    }
                    if let Some(Change::Logs(previous)) = changes.last() {
                        self.close(previous);
                    }
                    let first_line = self
                        .next_line
                        .get(&(stage.clone(), *attempt))
                        .copied()
                        .unwrap_or(1);
                    changes.push(Change::Logs(LogChunk {
                        stage: stage.clone(),
                        attempt: *attempt,
                        first_line,
                        first_seq: event.seq,
                        first_at_ms: at_ms,
                        lines: vec![(*stream, 0, text.clone())],
                        bytes: text.len(),
                    }));
                    continue;
                }
                RunEventKind::StageFinished {
                    stage,
                    attempt,
                    outcome,
                    exit_code,
                    duration_ms,
                    reason,
                } => changes.push(Change::AttemptFinished {
                    stage: stage.clone(),
                    attempt: *attempt,
                    outcome: *outcome,
                    exit_code: *exit_code,
                    reason: reason.clone(),
                    duration_ms: *duration_ms,
                    at_ms,
                }),
                RunEventKind::RunFinished {
                    status,
                    duration_ms,
                } => changes.push(Change::RunFinished {
                    status: *status,
                    duration_ms: *duration_ms,
                    at_ms,
                }),
            }
        }
        if let Some(Change::Logs(previous)) = changes.last() {
            self.close(previous);
        }
        RecordBatch { changes }
    }

    /// Records where the attempt of a finished chunk continues. Called once per chunk, after its last line,
    /// or again after more lines joined it (the last call wins).
    fn close(&mut self, chunk: &LogChunk) {
        self.next_line.insert(
            (chunk.stage.clone(), chunk.attempt),
            chunk.first_line + chunk.line_count(),
        );
    }
}

/// Reads a stored chunk back into lines.
pub(crate) fn decode_chunk(
    stage: &str,
    attempt: u32,
    first_line: u64,
    first_at_ms: i64,
    streams: &str,
    offsets: &str,
    texts: &str,
) -> Result<Vec<crate::store::LogLineRecord>, String> {
    let texts: Vec<String> =
        serde_json::from_str(texts).map_err(|error| format!("corrupt log chunk: {error}"))?;
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
        lines.push(crate::store::LogLineRecord {
            stage: stage.to_owned(),
            attempt,
            line: first_line + index as u64,
            stream,
            at_ms: first_at_ms + offset,
            text,
        });
    }
    Ok(lines)
}
