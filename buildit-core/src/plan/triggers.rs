//! Which of a pipeline's `on` triggers match a run's event, branch, tag and changed paths.

use serde::Serialize;

use super::context::RunContext;
use crate::config::{EventKind, Glob, Pipeline, Spanned, Trigger};

/// How one `on` node compares with the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerVerdict {
    /// The node, as it reads: `push branches=main paths=src/**`.
    pub trigger: String,
    /// Whether it matches.
    pub matched: bool,
    /// Why it does not, or a note on how it does (`changes unknown`).
    pub detail: Option<String>,
}

/// Every trigger's verdict, in the order written.
pub(crate) fn verdicts(pipeline: &Pipeline, context: &RunContext) -> Vec<TriggerVerdict> {
    pipeline
        .triggers
        .iter()
        .map(|trigger| {
            let (matched, detail) = match miss(trigger, context) {
                Some(miss) => (false, Some(miss)),
                None => (true, note(trigger, context)),
            };
            TriggerVerdict {
                trigger: describe(trigger),
                matched,
                detail,
            }
        })
        .collect()
}

/// Why a run is not triggered when triggers decide and none matches; `None` when it is.
pub(crate) fn not_triggered(verdicts: &[TriggerVerdict], context: &RunContext) -> Option<String> {
    if !context.match_triggers || verdicts.is_empty() || verdicts.iter().any(|v| v.matched) {
        return None;
    }
    let event = context.event.map_or("no event", EventKind::as_str);
    let misses: Vec<String> = verdicts
        .iter()
        .map(|verdict| match &verdict.detail {
            Some(detail) => format!("`on {}`: {detail}", verdict.trigger),
            None => format!("`on {}`", verdict.trigger),
        })
        .collect();
    Some(format!(
        "not triggered: no `on` matches this {event} ({})",
        misses.join("; ")
    ))
}

/// Whether the run is not triggered only for want of a branch: a trigger of its event filters branches and the
/// run has none (a detached HEAD). A deploy on `main` must neither run nor be skipped on a guess.
pub(crate) fn wants_branch(
    pipeline: &Pipeline,
    verdicts: &[TriggerVerdict],
    context: &RunContext,
) -> bool {
    not_triggered(verdicts, context).is_some()
        && context.branch.is_none()
        && pipeline.triggers.iter().any(|trigger| {
            Some(trigger.kind) == context.event
                && matches!(trigger.kind, EventKind::Push | EventKind::PullRequest)
                && !trigger.branches.is_empty()
        })
}

/// Why `trigger` does not match the run, if it does not.
fn miss(trigger: &Trigger, context: &RunContext) -> Option<String> {
    let Some(event) = context.event else {
        return Some("the run has no event".to_owned());
    };
    if event != trigger.kind {
        return Some(format!("the event is {event}"));
    }
    match trigger.kind {
        EventKind::Push | EventKind::PullRequest => {
            if !trigger.branches.is_empty() {
                match &context.branch {
                    Some(branch) if any_match(&trigger.branches, branch) => {}
                    Some(branch) => {
                        return Some(format!(
                            "branch `{branch}` is not {}",
                            listed(&trigger.branches)
                        ));
                    }
                    // Neither matched nor dropped silently: the front end asks for the branch (`wants_branch`).
                    None => return Some("the run has no branch: give `--branch`".to_owned()),
                }
            }
            if !trigger.paths.is_empty()
                && let Some(changes) = &context.changes
                && !changes.any_match(&trigger.paths)
            {
                return Some(format!(
                    "no file changed since {} matches {}",
                    changes.base,
                    listed(&trigger.paths)
                ));
            }
            None
        }
        EventKind::Tag => {
            let Some(tag) = &context.tag else {
                return Some("the run has no tag".to_owned());
            };
            if trigger.patterns.is_empty() || any_match(&trigger.patterns, tag) {
                None
            } else {
                Some(format!("tag `{tag}` is not {}", listed(&trigger.patterns)))
            }
        }
        // A schedule's time is the scheduler's business; a run said to be scheduled is one.
        EventKind::Schedule | EventKind::Manual => None,
    }
}

/// What a matching trigger took on trust.
fn note(trigger: &Trigger, context: &RunContext) -> Option<String> {
    let mut notes = Vec::new();
    if !trigger.paths.is_empty() && context.changes.is_none() {
        notes.push("changed files unknown: `paths` is taken to match");
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn any_match(globs: &[Spanned<Glob>], text: &str) -> bool {
    globs.iter().any(|glob| glob.value.is_match(text))
}

/// `` `a` `` or `` one of `a`, `b` ``.
pub(crate) fn listed(globs: &[Spanned<Glob>]) -> String {
    let names: Vec<String> = globs
        .iter()
        .map(|glob| format!("`{}`", glob.value.as_str()))
        .collect();
    match names.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// `push branches=main,release/* paths=src/**`.
fn describe(trigger: &Trigger) -> String {
    let mut out = trigger.kind.as_str().to_owned();
    for (key, globs) in [
        ("branches", &trigger.branches),
        ("paths", &trigger.paths),
        ("pattern", &trigger.patterns),
    ] {
        if !globs.is_empty() {
            let texts: Vec<&str> = globs.iter().map(|glob| glob.value.as_str()).collect();
            out.push_str(&format!(" {key}={}", texts.join(",")));
        }
    }
    if let Some(cron) = &trigger.cron {
        out.push_str(&format!(" cron=\"{}\"", cron.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ChangedFiles;
    use crate::{Plan, parse_pipeline};

    fn plan(text: &str, context: &RunContext) -> Plan {
        let pipeline =
            parse_pipeline(text, "buildit.kdl").unwrap_or_else(|error| panic!("{error:?}"));
        Plan::build(&pipeline, context).unwrap_or_else(|error| panic!("{error}"))
    }

    const PIPELINE: &str = "pipeline \"p\"\non \"push\" branches=\"main\" paths=\"src/**\"\nstage \"a\" { run \"true\"; }\n";

    #[test]
    fn triggers_decide_only_when_asked_and_unknown_changes_match() {
        let feature = RunContext::new()
            .with_event(EventKind::Push)
            .with_branch("feature");
        assert!(plan(PIPELINE, &feature).is_triggered());
        let asked = feature.matching_triggers();
        let not = plan(PIPELINE, &asked);
        assert!(!not.is_triggered());
        assert!(not.stages().iter().all(|stage| stage.is_skipped()));
        let main = RunContext::new()
            .with_event(EventKind::Push)
            .with_branch("main")
            .matching_triggers();
        let unknown = plan(PIPELINE, &main);
        assert!(unknown.is_triggered());
        assert_eq!(
            unknown.triggers()[0].detail.as_deref(),
            Some("changed files unknown: `paths` is taken to match")
        );
        let docs = main
            .clone()
            .with_changes(ChangedFiles::new("base", vec!["docs/a.md".to_owned()]));
        assert!(!plan(PIPELINE, &docs).is_triggered());
        let code = main.with_changes(ChangedFiles::new("base", vec!["src/a/b.rs".to_owned()]));
        assert!(plan(PIPELINE, &code).is_triggered());
        // A pipeline with no `on` runs on every event.
        let untriggered = "pipeline \"p\"\nstage \"a\" { run \"true\"; }\n";
        assert!(plan(untriggered, &asked).is_triggered());
    }
}
