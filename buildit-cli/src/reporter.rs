//! Rendering run events for people (prefixed lines, a summary) and for tools (JSON lines).

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use buildit_core::events::{
    LogStreamKind, RunEvent, RunEventKind, RunOutcome, RunView, StageOutcome, TestSummary,
};

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
    /// The prefix column's width: the longest stage name of the plan that `run-started` carries.
    width: usize,
}

impl LineReporter {
    pub(crate) fn new(colors: bool) -> Self {
        Self {
            colors,
            prefixes: Vec::new(),
            index: HashMap::new(),
            last: None,
            width: 0,
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
            RunEventKind::RunStarted {
                pipeline,
                stages,
                plan,
            } => {
                self.width = plan
                    .iter()
                    .map(|instance| instance.name.len())
                    .max()
                    .unwrap_or(0)
                    .min(MAX_PREFIX_WIDTH);
                write!(out, "running pipeline `{pipeline}`: {stages} stages")?;
            }
            RunEventKind::StageOutputs { stage, outputs, .. } => {
                if outputs.is_empty() {
                    return Ok(false);
                }
                write!(
                    out,
                    "{} outputs: {}",
                    self.prefix(stage),
                    outputs_line(outputs)
                )?;
            }
            RunEventKind::StageTests { stage, tests, .. } => {
                write!(
                    out,
                    "{} tests: {}",
                    self.prefix(stage),
                    tests_line(tests, SHOWN_FAILED_NAMES)
                )?;
            }
            RunEventKind::WaitingForGroup {
                stage,
                group,
                holder_run,
                holder_number,
                holder_stage,
                cancelling,
            } => {
                if let Some(stage) = stage {
                    write!(out, "{} ", self.prefix(stage))?;
                }
                let holder = match holder_number {
                    Some(number) => format!("run #{number}"),
                    None => format!("run {holder_run}"),
                };
                write!(out, "waiting for group {group} (held by {holder}")?;
                if let Some(holder_stage) = holder_stage {
                    write!(out, ", stage {holder_stage}")?;
                }
                write!(out, ")")?;
                if *cancelling {
                    write!(out, ": cancelling it")?;
                }
            }
            RunEventKind::StageQueued { .. } | RunEventKind::RunFinished { .. } => {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// How many failed tests a line names; `runs show` lists every one the event kept.
pub(crate) const SHOWN_FAILED_NAMES: usize = 10;

/// What a stage's test reports counted, on one line: `3 failed of 120 tests (1 error, 2 skipped): a::x, b::y`,
/// naming at most `names` failed tests.
pub(crate) fn tests_line(tests: &TestSummary, names: usize) -> String {
    if tests.files == 0 {
        return match tests.unreadable {
            0 => "no report file found".to_owned(),
            1 => "the report file could not be read".to_owned(),
            many => format!("none of the {many} report files could be read"),
        };
    }
    let not_passed = tests.not_passed();
    let mut line = if not_passed == 0 {
        format!(
            "{} passed of {} test{}",
            tests.tests.saturating_sub(tests.skipped),
            tests.tests,
            plural(tests.tests)
        )
    } else {
        format!(
            "{not_passed} failed of {} test{}",
            tests.tests,
            plural(tests.tests)
        )
    };
    let mut notes = Vec::new();
    if tests.errors > 0 {
        notes.push(format!("{} error{}", tests.errors, plural(tests.errors)));
    }
    if tests.skipped > 0 {
        notes.push(format!("{} skipped", tests.skipped));
    }
    if tests.unreadable > 0 {
        notes.push(format!(
            "{} report{} unreadable",
            tests.unreadable,
            plural(u64::from(tests.unreadable))
        ));
    }
    if !notes.is_empty() {
        line.push_str(&format!(" ({})", notes.join(", ")));
    }
    if !tests.failed.is_empty() && names > 0 {
        let shown: Vec<&str> = tests
            .failed
            .iter()
            .take(names)
            .map(String::as_str)
            .collect();
        line.push_str(": ");
        line.push_str(&shown.join(", "));
        let more = not_passed.saturating_sub(shown.len() as u64);
        if more > 0 {
            line.push_str(&format!(" and {more} more"));
        }
    }
    line
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// Outputs on one line: `name=value`, each value on one line and at most 60 characters.
pub(crate) fn outputs_line(outputs: &std::collections::BTreeMap<String, String>) -> String {
    outputs
        .iter()
        .map(|(name, value)| {
            let flat = value.replace('\n', "⏎");
            let shown = if flat.chars().count() > 60 {
                format!("{}…", flat.chars().take(60).collect::<String>())
            } else {
                flat
            };
            format!("{name}={shown}")
        })
        .collect::<Vec<_>>()
        .join(", ")
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

/// The summary table, drawn from a run's events alone: every stage with outcome, attempts and duration, the
/// total, and the critical path. The same events, live or read back from the store, give the same table.
pub(crate) fn summary(view: &RunView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let width = view
        .instances
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
    for stage in &view.instances {
        let duration = match stage.duration_ms() {
            Some(ms) => human(Duration::from_millis(ms)),
            None => "-".to_owned(),
        };
        // A stage the events never finished did not run.
        let outcome = stage.outcome.unwrap_or(StageOutcome::Skipped);
        pad(&mut out, &stage.name, width);
        let _ = writeln!(
            out,
            "  {:<14}  {:>8}  {:>9}",
            outcome.as_str(),
            stage.attempts,
            duration
        );
    }
    // What the stages' test reports counted: a failed test's name is what one looks for first.
    let mut tested = view
        .instances
        .iter()
        .filter_map(|stage| Some((&stage.name, stage.tests.as_ref()?)))
        .peekable();
    if tested.peek().is_some() {
        out.push('\n');
    }
    for (name, tests) in tested {
        let _ = writeln!(out, "{name}: {}", tests_line(tests, SHOWN_FAILED_NAMES));
    }
    let Some(ending) = &view.ending else {
        let _ = writeln!(out, "\nrun did not finish");
        return out;
    };
    let status = match ending.status {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed => "failed",
        RunOutcome::Cancelled => "cancelled",
    };
    let _ = writeln!(
        out,
        "\nrun {status} in {}",
        human(Duration::from_millis(ending.duration_ms))
    );
    if ending.failed_by_infrastructure_only() {
        let _ = writeln!(
            out,
            "every failure was the infrastructure's ({}): running it again may succeed",
            ending
                .failures
                .keys()
                .map(|kind| kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !ending.critical_path.is_empty() {
        let _ = writeln!(out, "critical path: {}", ending.critical_path.join(" -> "));
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

    use buildit_core::events::{
        PlannedInstance, RunEvent, RunEventKind, RunOutcome, RunView, StageCounts, StageOutcome,
    };

    use super::{LineReporter, summary};

    fn event(seq: u64, at_ms: u64, kind: RunEventKind) -> RunEvent {
        RunEvent {
            seq,
            run_id: "r".into(),
            at_ms,
            kind,
        }
    }

    /// A stage name far over the 65,535 characters `format!` can pad to: validation refuses such a name now, but
    /// one recorded before (or built by an embedder) must still render.
    #[test]
    fn names_longer_than_format_widths_render() {
        let name = "n".repeat(70_000);
        let events = [
            event(
                1,
                1_000,
                RunEventKind::RunStarted {
                    pipeline: "p".to_owned(),
                    stages: 1,
                    plan: vec![PlannedInstance {
                        name: name.clone(),
                        needs: Vec::new(),
                        level: 0,
                    }],
                },
            ),
            event(
                2,
                1_000,
                RunEventKind::StageStarted {
                    stage: name.clone(),
                    attempt: 1,
                },
            ),
            event(
                3,
                1_005,
                RunEventKind::StageFinished {
                    stage: name.clone(),
                    attempt: 1,
                    outcome: StageOutcome::Succeeded,
                    exit_code: Some(0),
                    duration_ms: 5,
                    reason: None,
                    failure: None,
                    retrying: false,
                },
            ),
            event(
                4,
                1_005,
                RunEventKind::RunFinished {
                    status: RunOutcome::Succeeded,
                    duration_ms: 5,
                    counts: StageCounts {
                        succeeded: 1,
                        ..StageCounts::default()
                    },
                    failures: std::collections::BTreeMap::new(),
                    critical_path: vec![name.clone()],
                },
            ),
        ];
        let text = summary(&RunView::from_events(&events));
        assert!(
            text.contains(&format!("\n{name}  succeeded ")),
            "{text:.200}"
        );
        let mut reporter = LineReporter::new(false);
        assert!(reporter.line(&events[0]).is_some());
        assert_eq!(
            reporter.line(&events[1]),
            Some(format!("{name} | ▶ started"))
        );
    }

    #[test]
    fn test_counts_read_as_a_sentence_naming_the_first_failed_tests() {
        use buildit_core::events::TestSummary;
        let tests = |files, tests, failures, errors, skipped, failed: &[&str]| TestSummary {
            files,
            tests,
            failures,
            errors,
            skipped,
            failed: failed.iter().map(|name| (*name).to_owned()).collect(),
            unreadable: 0,
        };
        let line = super::tests_line;
        assert_eq!(line(&tests(1, 1, 0, 0, 0, &[]), 10), "1 passed of 1 test");
        assert_eq!(
            line(&tests(2, 120, 0, 0, 2, &[]), 10),
            "118 passed of 120 tests (2 skipped)"
        );
        assert_eq!(
            line(&tests(1, 120, 2, 1, 0, &["a", "b", "c"]), 2),
            "3 failed of 120 tests (1 error): a, b and 1 more"
        );
        // The names kept can be fewer than the tests that failed.
        assert_eq!(
            line(&tests(1, 900, 80, 0, 0, &["a"]), 10),
            "80 failed of 900 tests: a and 79 more"
        );
        assert_eq!(
            line(&tests(1, 9, 1, 0, 0, &["a"]), 0),
            "1 failed of 9 tests"
        );
        assert_eq!(line(&tests(0, 0, 0, 0, 0, &[]), 10), "no report file found");
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
