//! Rendering run events for people (prefixed lines, a summary) and for tools (JSON lines).

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use buildit_core::Plan;
use buildit_core::events::{LogStreamKind, RunEvent, RunEventKind, RunStatus, StageOutcome};
use buildit_core::exec::RunReport;

/// ANSI colors given to stages in turn, so that interleaved logs stay readable.
const STAGE_COLORS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

/// Prints events as prefixed lines: `[stage] text`, plus start and end lines.
#[derive(Debug)]
pub(crate) struct LineReporter {
    colors: bool,
    /// The rendered prefix of each stage seen so far (its color is given in order of appearance).
    prefixes: HashMap<String, String>,
    /// The stage of the last line and its prefix.
    last: (String, String),
    width: usize,
}

impl LineReporter {
    pub(crate) fn new(plan: &Plan, colors: bool) -> Self {
        let width = plan
            .stages()
            .iter()
            .map(|s| s.name().len())
            .max()
            .unwrap_or(0)
            .min(40);
        Self {
            colors,
            prefixes: HashMap::new(),
            last: (String::new(), String::new()),
            width,
        }
    }

    fn prefix(&mut self, stage: &str) -> &str {
        // Lines come in runs of one stage's: the last stage's prefix is at hand without a lookup.
        if self.last.0 == stage {
            return &self.last.1;
        }
        if !self.prefixes.contains_key(stage) {
            let color = STAGE_COLORS[self.prefixes.len() % STAGE_COLORS.len()];
            let padded = format!("{stage:<width$}", width = self.width);
            let prefix = if self.colors {
                format!("\u{1b}[{color}m{padded}\u{1b}[0m |")
            } else {
                format!("{padded} |")
            };
            self.prefixes.insert(stage.to_owned(), prefix);
        }
        let prefix = self.prefixes.get(stage).cloned().unwrap_or_default();
        self.last = (stage.to_owned(), prefix);
        &self.last.1
    }

    /// Writes the line for an event, if it has one; log lines, the bulk of any run, are written without
    /// building a string first.
    pub(crate) fn write(
        &mut self,
        event: &RunEvent,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        if let RunEventKind::LogLine {
            stage,
            text,
            stream,
            ..
        } = &event.kind
        {
            let marker = if *stream == LogStreamKind::Stderr && !self.colors {
                "! "
            } else {
                ""
            };
            let prefix = self.prefix(stage);
            return writeln!(out, "{prefix} {marker}{text}");
        }
        match self.line(event) {
            Some(line) => writeln!(out, "{line}"),
            None => Ok(()),
        }
    }

    /// The line to print for an event, if any.
    pub(crate) fn line(&mut self, event: &RunEvent) -> Option<String> {
        match &event.kind {
            RunEventKind::LogLine {
                stage,
                text,
                stream,
                ..
            } => {
                let prefix = self.prefix(stage).to_owned();
                let marker = if *stream == LogStreamKind::Stderr && !self.colors {
                    "! "
                } else {
                    ""
                };
                Some(format!("{prefix} {marker}{text}"))
            }
            RunEventKind::StageStarted { stage, attempt } => {
                let prefix = self.prefix(stage).to_owned();
                Some(if *attempt > 1 {
                    format!("{prefix} ▶ attempt {attempt}")
                } else {
                    format!("{prefix} ▶ started")
                })
            }
            RunEventKind::StageFinished {
                stage,
                outcome,
                duration_ms,
                reason,
                attempt,
                ..
            } => {
                let prefix = self.prefix(stage).to_owned();
                let symbol = match outcome {
                    StageOutcome::Succeeded => "✓",
                    StageOutcome::Skipped => "○",
                    StageOutcome::FailedAllowed => "!",
                    _ => "✗",
                };
                let mut line = format!("{prefix} {symbol} {}", outcome.as_str());
                if *attempt > 0 {
                    line.push_str(&format!(
                        " in {}",
                        human(Duration::from_millis(*duration_ms))
                    ));
                }
                if let Some(reason) = reason {
                    line.push_str(&format!(" ({reason})"));
                }
                Some(line)
            }
            RunEventKind::RunStarted { pipeline, stages } => {
                Some(format!("running pipeline `{pipeline}`: {stages} stages"))
            }
            RunEventKind::StageQueued { .. } | RunEventKind::RunFinished { .. } => None,
        }
    }
}

/// Writes one event as a JSON line.
pub(crate) fn json_line(event: &RunEvent) -> String {
    serde_json::to_string(event)
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot encode event: {error}\"}}"))
}

/// `1.2s`, `3m04s`.
pub(crate) fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{}m{:02}s", millis / 60_000, (millis / 1000) % 60)
    }
}

/// The summary table: every stage with outcome, attempts and duration, the total, and the critical path.
pub(crate) fn summary(plan: &Plan, report: &RunReport) -> String {
    let mut out = String::new();
    let width = report
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "\n{:<width$}  {:<14}  {:>8}  {:>9}\n",
        "stage", "outcome", "attempts", "duration"
    ));
    for &position in plan.order_positions() {
        let stage = &report.stages[position];
        let duration = match stage.started {
            Some(started) => human(stage.finished.saturating_sub(started)),
            None => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<width$}  {:<14}  {:>8}  {:>9}\n",
            stage.name,
            stage.outcome.as_str(),
            stage.attempts,
            duration
        ));
    }
    let status = match report.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    };
    out.push_str(&format!("\nrun {status} in {}\n", human(report.duration)));
    let path = report.critical_path(plan);
    if !path.is_empty() {
        let names: Vec<&str> = path
            .iter()
            .map(|&p| report.stages[p].name.as_str())
            .collect();
        out.push_str(&format!("critical path: {}\n", names.join(" -> ")));
    }
    out
}

/// Writes a line to stdout, ignoring a closed pipe (`buildit plan | head`): the reader has what it wanted.
pub(crate) fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

/// Writes text to stdout as it is, ignoring a closed pipe.
pub(crate) fn print_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
