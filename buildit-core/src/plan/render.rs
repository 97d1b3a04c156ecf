//! Plans for people and tools: text, JSON, Graphviz DOT and Mermaid.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::build::Plan;
use super::groups::PlannedGroup;
use super::triggers::TriggerVerdict;
use crate::config::ExecutorKind;

/// Output formats of `buildit plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    /// Levels and stages for people.
    Text,
    /// One JSON object for tools.
    Json,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// The JSON shape of a plan (`buildit plan --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct PlanJson<'p> {
    /// Pipeline name.
    pub pipeline: &'p str,
    /// Stage names in a valid execution order.
    pub order: Vec<&'p str>,
    /// Every stage, in execution order.
    pub stages: Vec<PlanStageJson<'p>>,
    /// Whether the run happens (false only when its `on` triggers decide and none matches).
    pub triggered: bool,
    /// Each `on` trigger and whether it matches, when the triggers decide (an event was given).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<&'p TriggerVerdict>,
    /// The run's concurrency group, when the pipeline has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'p PlannedGroup>,
    /// The changed files `changes` conditions were evaluated against, when they are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<PlanChangesJson<'p>>,
}

/// The changed files of [`PlanJson`].
#[derive(Debug, Clone, Serialize)]
pub struct PlanChangesJson<'p> {
    /// What they changed since.
    pub base: &'p str,
    /// The changed paths.
    pub paths: &'p [String],
}

/// One stage of [`PlanJson`].
#[derive(Debug, Clone, Serialize)]
pub struct PlanStageJson<'p> {
    /// Instance name.
    pub name: &'p str,
    /// Names of the instances it needs.
    pub needs: Vec<&'p str>,
    /// 0 for roots.
    pub level: usize,
    /// Whether it will be skipped.
    pub skipped: bool,
    /// Why, if skipped.
    pub skip_reason: Option<String>,
    /// Matrix values, or null.
    pub matrix: Option<BTreeMap<&'p str, &'p str>>,
    /// Image, or null for the host.
    pub image: Option<&'p str>,
    /// Where it runs.
    pub executor: ExecutorKind,
    /// Globs of the JUnit reports it writes, read after each attempt (left out when it has none).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub reports: &'p [String],
    /// Names of the outputs it declares (left out when it has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<&'p str>,
    /// Its concurrency group, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'p PlannedGroup>,
}

impl Plan {
    /// The plan as the JSON object documented for `buildit plan --format json`.
    pub fn to_json(&self) -> PlanJson<'_> {
        let stages = self.stages();
        PlanJson {
            pipeline: &self.pipeline().name.value,
            order: self.order().map(|stage| stage.name()).collect(),
            stages: self
                .order()
                .map(|stage| PlanStageJson {
                    name: stage.name(),
                    needs: stage
                        .needs()
                        .iter()
                        .map(|&need| stages[need].name())
                        .collect(),
                    level: stage.level(),
                    skipped: stage.is_skipped(),
                    skip_reason: stage.skip_reason().map(ToString::to_string),
                    matrix: (!stage.matrix().is_empty()).then(|| {
                        stage
                            .matrix()
                            .iter()
                            .map(|(axis, value)| (axis.as_str(), value.as_str()))
                            .collect()
                    }),
                    image: stage.image(),
                    executor: stage.executor(),
                    reports: stage.reports(),
                    outputs: self
                        .definition(stage)
                        .outputs
                        .iter()
                        .map(|output| output.value.as_str())
                        .collect(),
                    group: stage.group(),
                })
                .collect(),
            group: self.group(),
            triggered: self.is_triggered(),
            triggers: if self.context().match_triggers {
                self.triggers().iter().collect()
            } else {
                Vec::new()
            },
            changes: self
                .context()
                .changes
                .as_ref()
                .map(|changes| PlanChangesJson {
                    base: &changes.base,
                    paths: &changes.paths,
                }),
        }
    }

    /// Renders the plan in `format`.
    pub fn render(&self, format: PlanFormat) -> String {
        match format {
            PlanFormat::Text => self.to_text(),
            PlanFormat::Json => {
                let mut out = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
                out.push('\n');
                out
            }
            PlanFormat::Dot => self.to_dot(),
            PlanFormat::Mermaid => self.to_mermaid(),
        }
    }

    fn to_text(&self) -> String {
        let stages = self.stages();
        let skipped = stages.iter().filter(|stage| stage.is_skipped()).count();
        let mut out = String::new();
        let _ = write!(
            out,
            "pipeline `{}`: {} stage{}, {} level{}",
            self.pipeline().name.value,
            stages.len(),
            plural(stages.len()),
            self.level_count(),
            plural(self.level_count()),
        );
        if skipped > 0 {
            let _ = write!(out, ", {skipped} skipped");
        }
        out.push('\n');
        if self.context().match_triggers {
            for verdict in self.triggers() {
                let answer = if verdict.matched {
                    "matches"
                } else {
                    "does not match"
                };
                let _ = write!(out, "on {}: {answer}", verdict.trigger);
                if let Some(detail) = &verdict.detail {
                    let _ = write!(out, " ({detail})");
                }
                out.push('\n');
            }
            if !self.is_triggered() {
                out.push_str("not triggered: no stage runs\n");
            }
        }
        if let Some(group) = self.group() {
            let _ = writeln!(
                out,
                "concurrency group `{}`: {}",
                group.name,
                group_rule(group)
            );
        }
        if let Some(changes) = &self.context().changes {
            let count = changes.paths.len();
            let _ = writeln!(
                out,
                "changes: {count} file{} since {}",
                plural(count),
                changes.base
            );
        }
        let mut current_level = usize::MAX;
        for stage in self.order() {
            if stage.level() != current_level {
                current_level = stage.level();
                let _ = writeln!(out, "level {current_level}");
            }
            let _ = write!(out, "  {}", stage.name());
            let where_ = match (stage.executor(), stage.image()) {
                (executor, Some(image)) => format!("{executor}: {image}"),
                (executor, None) => executor.to_string(),
            };
            let _ = write!(out, "  [{where_}]");
            if !stage.needs().is_empty() {
                let needs: Vec<&str> = stage
                    .needs()
                    .iter()
                    .map(|&need| stages[need].name())
                    .collect();
                let _ = write!(out, "  needs {}", needs.join(", "));
            }
            let outputs = &self.definition(stage).outputs;
            if !outputs.is_empty() {
                let names: Vec<&str> = outputs.iter().map(|output| output.value.as_str()).collect();
                let _ = write!(out, "  outputs {}", names.join(", "));
            }
            if !stage.reports().is_empty() {
                let _ = write!(out, "  reports junit {}", stage.reports().join(", "));
            }
            if let Some(group) = stage.group() {
                let _ = write!(out, "  group {} ({})", group.name, group_rule(group));
            }
            if let Some(reason) = stage.skip_reason() {
                let _ = write!(out, "  skipped: {reason}");
            }
            out.push('\n');
        }
        out
    }

    fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_quote(&self.pipeline().name.value));
        out.push_str("  rankdir=LR;\n  node [shape=box];\n");
        for (position, stage) in self.stages().iter().enumerate() {
            let style = if stage.is_skipped() {
                ", style=dashed, color=gray"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  s{position} [label={}{style}];",
                dot_quote(stage.name())
            );
        }
        for (position, stage) in self.stages().iter().enumerate() {
            for need in stage.needs() {
                let _ = writeln!(out, "  s{need} -> s{position};");
            }
        }
        out.push_str("}\n");
        out
    }

    fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (position, stage) in self.stages().iter().enumerate() {
            let _ = writeln!(out, "  s{position}[\"{}\"]", mermaid_escape(stage.name()));
            if stage.is_skipped() {
                let _ = writeln!(out, "  class s{position} skipped");
            }
        }
        for (position, stage) in self.stages().iter().enumerate() {
            for need in stage.needs() {
                let _ = writeln!(out, "  s{need} --> s{position}");
            }
        }
        if self.stages().iter().any(|stage| stage.is_skipped()) {
            out.push_str("  classDef skipped stroke-dasharray: 5 5,color:#888\n");
        }
        out
    }
}

/// What a holder of `group` does when it finds the group held.
fn group_rule(group: &PlannedGroup) -> &'static str {
    if group.cancel_in_progress {
        "cancels the one in progress"
    } else {
        "waits for the one in progress"
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn mermaid_escape(text: &str) -> String {
    text.replace('"', "#quot;")
}
