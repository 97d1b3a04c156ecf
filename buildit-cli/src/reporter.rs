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
    /// Each stage seen so far with its rendered prefix (its color is given in order of appearance).
    prefixes: Vec<(String, String)>,
    /// Where each stage's prefix is in `prefixes`.
    index: HashMap<String, usize>,
    /// The stage of the last line.
    last: Option<usize>,
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
            prefixes: Vec::new(),
            index: HashMap::new(),
            last: None,
            width,
        }
    }

    fn prefix(&mut self, stage: &str) -> &str {
        // Lines come in runs of one stage's: the last stage's prefix is at hand without a lookup.
        if let Some(last) = self.last
            && self.prefixes[last].0 == stage
        {
            return &self.prefixes[last].1;
        }
        let at = match self.index.get(stage) {
            Some(&at) => at,
            None => {
                let color = STAGE_COLORS[self.prefixes.len() % STAGE_COLORS.len()];
                let padded = format!("{stage:<width$}", width = self.width);
                let prefix = if self.colors {
                    format!("\u{1b}[{color}m{padded}\u{1b}[0m |")
                } else {
                    format!("{padded} |")
                };
                self.prefixes.push((stage.to_owned(), prefix));
                self.index.insert(stage.to_owned(), self.prefixes.len() - 1);
                self.prefixes.len() - 1
            }
        };
        self.last = Some(at);
        &self.prefixes[at].1
    }

    /// Writes the line for an event, if it has one, straight into `out` (no string is built per line).
    pub(crate) fn write(
        &mut self,
        event: &RunEvent,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        if self.render(event, out)? {
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The line to print for an event, if any.
    pub(crate) fn line(&mut self, event: &RunEvent) -> Option<String> {
        let mut line = Vec::new();
        match self.render(event, &mut line) {
            Ok(true) => Some(String::from_utf8_lossy(&line).into_owned()),
            _ => None,
        }
    }

    /// Writes the event's line without its newline; whether it has one.
    fn render(&mut self, event: &RunEvent, out: &mut impl std::io::Write) -> std::io::Result<bool> {
        let colors = self.colors;
        match &event.kind {
            RunEventKind::LogLine {
                stage,
                text,
                stream,
                ..
            } => {
                let marker = if *stream == LogStreamKind::Stderr && !colors {
                    "! "
                } else {
                    ""
                };
                write!(out, "{} {marker}{text}", self.prefix(stage))?;
            }
            RunEventKind::StageStarted { stage, attempt } => {
                let prefix = self.prefix(stage);
                if *attempt > 1 {
                    write!(out, "{prefix} ▶ attempt {attempt}")?;
                } else {
                    write!(out, "{prefix} ▶ started")?;
                }
            }
            RunEventKind::StageFinished {
                stage,
                outcome,
                duration_ms,
                reason,
                attempt,
                ..
            } => {
                let symbol = match outcome {
                    StageOutcome::Succeeded => "✓",
                    StageOutcome::Skipped => "○",
                    StageOutcome::FailedAllowed => "!",
                    _ => "✗",
                };
                write!(out, "{} {symbol} {}", self.prefix(stage), outcome.as_str())?;
                if *attempt > 0 {
                    write!(out, " in {}", human(Duration::from_millis(*duration_ms)))?;
                }
                if let Some(reason) = reason {
                    write!(out, " ({reason})")?;
                }
            }
            RunEventKind::RunStarted { pipeline, stages } => {
                write!(out, "running pipeline `{pipeline}`: {stages} stages")?;
            }
            RunEventKind::StageQueued { .. } | RunEventKind::RunFinished { .. } => {
                return Ok(false);
            }
        }
        Ok(true)
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
    use std::fmt::Write as _;
    let mut out = String::new();
    let width = report
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    // Writing into a `String` cannot fail.
    let _ = write!(
        out,
        "\n{:<width$}  {:<14}  {:>8}  {:>9}\n",
        "stage", "outcome", "attempts", "duration"
    );
    for &position in plan.order_positions() {
        let stage = &report.stages[position];
        let duration = match stage.started {
            Some(started) => human(stage.finished.saturating_sub(started)),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<14}  {:>8}  {:>9}",
            stage.name,
            stage.outcome.as_str(),
            stage.attempts,
            duration
        );
    }
    let status = match report.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    };
    let _ = writeln!(out, "\nrun {status} in {}", human(report.duration));
    let path = report.critical_path(plan);
    if !path.is_empty() {
        let names: Vec<&str> = path
            .iter()
            .map(|&p| report.stages[p].name.as_str())
            .collect();
        let _ = writeln!(out, "critical path: {}", names.join(" -> "));
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
