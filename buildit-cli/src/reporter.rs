//! Rendering run events for people (prefixed lines, a summary) and for tools (JSON lines).

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use buildit_core::Plan;
use buildit_core::events::{LogStreamKind, RunEvent, RunEventKind, RunStatus, StageOutcome};
use buildit_core::exec::RunReport;

/// Widest stage-name column of log prefixes; longer names stick out rather than push every line right.
const MAX_PREFIX_WIDTH: usize = 40;
/// Widest stage-name column of the summary table.
pub(crate) const MAX_COLUMN_WIDTH: usize = 60;

/// Appends `text` left-aligned in `width` characters. Not `format!("{:<width$}")`, which panics on widths above
/// 65,535 (a stage name stored by an older BuildIt, or read from a store, may be that long).
pub(crate) fn pad(out: &mut String, text: &str, width: usize) {
    out.push_str(text);
    let fill = width.saturating_sub(text.chars().count());
    out.extend(std::iter::repeat_n(' ', fill));
}

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
            .min(MAX_PREFIX_WIDTH);
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
        let last = self.last.filter(|&last| {
            self.prefixes
                .get(last)
                .is_some_and(|(name, _)| name == stage)
        });
        let at = match last.or_else(|| self.index.get(stage).copied()) {
            Some(at) => at,
            None => {
                let color = STAGE_COLORS
                    .get(self.prefixes.len() % STAGE_COLORS.len())
                    .unwrap_or(&"0");
                let mut padded = String::new();
                pad(&mut padded, stage, self.width);
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
        self.prefixes
            .get(at)
            .map_or("", |(_, prefix)| prefix.as_str())
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
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, MAX_COLUMN_WIDTH);
    out.push('\n');
    pad(&mut out, "stage", width);
    // Writing into a `String` cannot fail.
    let _ = writeln!(
        out,
        "  {:<14}  {:>8}  {:>9}",
        "outcome", "attempts", "duration"
    );
    for &position in plan.order_positions() {
        let Some(stage) = report.stages.get(position) else {
            continue;
        };
        let duration = match stage.started {
            Some(started) => human(stage.finished.saturating_sub(started)),
            None => "-".to_owned(),
        };
        pad(&mut out, &stage.name, width);
        let _ = writeln!(
            out,
            "  {:<14}  {:>8}  {:>9}",
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
            .filter_map(|&p| report.stages.get(p).map(|stage| stage.name.as_str()))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use buildit_core::events::{RunEvent, RunEventKind, RunStatus, StageOutcome};
    use buildit_core::exec::{RunReport, StageReport};
    use buildit_core::{Plan, RunContext};

    use super::{LineReporter, summary};

    /// A plan whose one stage has a name far over the 65,535 characters `format!` can pad to: validation refuses
    /// such a name now, but one recorded before (or built by an embedder) must still render.
    fn long_plan(name: &str) -> Plan {
        let mut pipeline = match buildit_core::parse_pipeline(
            "pipeline \"p\"\nstage \"a\" {\n    run \"true\"\n}\n",
            "t.kdl",
        ) {
            Ok(pipeline) => pipeline,
            Err(error) => panic!("{error}"),
        };
        if let Some(stage) = pipeline.stages.first_mut() {
            stage.name.value = name.to_owned();
        }
        match Plan::build(&pipeline, &RunContext::default()) {
            Ok(plan) => plan,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn names_longer_than_format_widths_render() {
        let name = "n".repeat(70_000);
        let plan = long_plan(&name);
        let report = RunReport {
            status: RunStatus::Succeeded,
            stages: vec![StageReport {
                name: name.clone(),
                outcome: StageOutcome::Succeeded,
                attempts: 1,
                exit_code: Some(0),
                reason: None,
                started: Some(Duration::ZERO),
                finished: Duration::from_millis(5),
            }],
            duration: Duration::from_millis(5),
            cleanup: None,
        };
        let text = summary(&plan, &report);
        assert!(
            text.contains(&format!("\n{name}  succeeded ")),
            "{text:.200}"
        );
        let mut reporter = LineReporter::new(&plan, false);
        let event = RunEvent {
            seq: 1,
            run_id: "r".into(),
            at_ms: 0,
            kind: RunEventKind::StageStarted {
                stage: name.clone(),
                attempt: 1,
            },
        };
        assert_eq!(reporter.line(&event), Some(format!("{name} | ▶ started")));
    }

    #[test]
    fn short_names_are_padded_to_the_longest() {
        let mut out = String::new();
        super::pad(&mut out, "ab", 5);
        out.push('|');
        super::pad(&mut out, "abcdef", 5);
        assert_eq!(out, "ab   |abcdef");
    }
}
