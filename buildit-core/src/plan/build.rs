//! Building a sealed plan: matrix expansion, dependency edges, topological order, levels and skips.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use super::context::RunContext;
use super::groups::PlannedGroup;
use super::triggers::TriggerVerdict;
use crate::config::{ExecutorKind, Pipeline, Stage, Variable, When, WhenStatus};
use crate::suggest::did_you_mean;

/// Why a pipeline cannot be planned. Pipelines from [`crate::parse_pipeline`] are already validated, so these
/// only arise from a selection that names no stage, or from a model changed after parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum PlanError {
    /// `--stage` named a stage that does not exist.
    #[error("no stage named `{name}`")]
    #[diagnostic(code(buildit::plan::unknown_stage))]
    UnknownStage {
        /// The name asked for.
        name: String,
        /// A close name.
        #[help]
        help: Option<String>,
    },
    /// A stage needs a stage that does not exist.
    #[error("stage `{stage}` needs `{need}`, which does not exist")]
    #[diagnostic(code(buildit::plan::unknown_needs))]
    UnknownNeeds {
        /// The stage.
        stage: String,
        /// The missing need.
        need: String,
    },
    /// Two stages share a name.
    #[error("stage `{0}` is defined twice")]
    #[diagnostic(code(buildit::plan::duplicate_stage))]
    DuplicateStage(String),
    /// Stages need each other in a loop.
    #[error("stages need each other in a loop: {}", .stages.join(", "))]
    #[diagnostic(code(buildit::plan::cycle))]
    Cycle {
        /// The stages on the loop.
        stages: Vec<String>,
    },
    /// An instance of a stage that needs another with `matrix="same"` has no instance of it with its values.
    #[error(
        "`{instance}` needs the instance of `{need}` with the same matrix values, and `{need}` has none"
    )]
    #[diagnostic(code(buildit::plan::unpaired))]
    Unpaired {
        /// The instance.
        instance: String,
        /// The stage it needs.
        need: String,
    },
    /// More stages than a plan may hold.
    #[error("the pipeline expands to {count} stages; at most {max} are allowed")]
    #[diagnostic(code(buildit::plan::limit))]
    TooManyStages {
        /// Stages after expansion.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a stage will not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SkipReason {
    /// None of its `when` conditions match the run.
    Condition {
        /// Human explanation.
        detail: String,
    },
    /// A manual stage that was not requested.
    Manual,
    /// Not among the requested stages or their needs.
    NotSelected,
    /// Something it needs will not run.
    DependencySkipped {
        /// The first such need.
        need: String,
    },
    /// The run's event matches none of the pipeline's `on` triggers.
    NotTriggered {
        /// Human explanation.
        detail: String,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Condition { detail } => write!(f, "{detail}"),
            Self::Manual => f.write_str("manual stage: run it with `--stage`"),
            Self::NotSelected => f.write_str("not selected"),
            Self::DependencySkipped { need } => write!(f, "needs `{need}`, which is skipped"),
            // The detail is the plan's, said once for the run (`Plan::not_triggered`).
            Self::NotTriggered { .. } => f.write_str("not triggered"),
        }
    }
}

/// One stage instance in a plan (a matrix stage gives one per combination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    name: String,
    definition: usize,
    matrix: Vec<(String, String)>,
    needs: Vec<usize>,
    level: usize,
    skip: Option<SkipReason>,
    run_on: Vec<WhenStatus>,
    image: Option<String>,
    executor: ExecutorKind,
    reports: Vec<String>,
    group: Option<PlannedGroup>,
}

impl PlannedStage {
    /// The instance name: `build`, or `build (rust=1.80, os=linux)` for a matrix instance.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Matrix values of this instance, in axis order; empty for a plain stage.
    pub fn matrix(&self) -> &[(String, String)] {
        &self.matrix
    }

    /// Positions (in [`Plan::stages`]) of the instances it needs.
    pub fn needs(&self) -> &[usize] {
        &self.needs
    }

    /// 0 for stages that need nothing, else one more than the deepest need.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Why it will not run, if it will not.
    pub fn skip_reason(&self) -> Option<&SkipReason> {
        self.skip.as_ref()
    }

    /// Whether it will be skipped.
    pub fn is_skipped(&self) -> bool {
        self.skip.is_some()
    }

    /// On which outcomes of its needs it runs (from its matching `when` nodes; `success` by default).
    pub fn run_on(&self) -> &[WhenStatus] {
        &self.run_on
    }

    /// The image with the variables known at planning time filled in.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// The globs of the JUnit reports it writes, with the variables known at planning time filled in.
    pub fn reports(&self) -> &[String] {
        &self.reports
    }

    /// Where it runs.
    pub fn executor(&self) -> ExecutorKind {
        self.executor
    }

    /// Its concurrency group (`concurrency group="..."` on the stage), rendered for the run.
    pub fn group(&self) -> Option<&PlannedGroup> {
        self.group.as_ref()
    }

    /// Position of its definition in [`Pipeline::stages`].
    pub fn definition_index(&self) -> usize {
        self.definition
    }
}

/// A sealed, validated execution plan: stage instances, their dependency DAG, and an order that respects it.
/// Only [`Plan::build`] and [`Plan::from_pipeline`] make one. A plan never changes once built, so its clones
/// share it: cloning one is a reference count, whatever the number of stages.
#[derive(Debug, Clone)]
pub struct Plan {
    sealed: Arc<Sealed>,
}

/// What a plan is, shared by its clones.
#[derive(Debug)]
struct Sealed {
    pipeline: Arc<Pipeline>,
    context: RunContext,
    stages: Vec<PlannedStage>,
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
    triggers: Vec<TriggerVerdict>,
    group: Option<PlannedGroup>,
}

impl Plan {
    /// Expands matrices, links needs, orders the DAG and evaluates `when`, manual stages and the selection
    /// against `context`. The plan keeps a copy of `pipeline`; [`Plan::from_pipeline`] takes it instead.
    pub fn build(pipeline: &Pipeline, context: &RunContext) -> Result<Self, PlanError> {
        Self::from_pipeline(pipeline.clone(), context)
    }

    /// [`Plan::build`] for a pipeline the caller no longer needs (or already shares): no copy of it is made.
    pub fn from_pipeline(
        pipeline: impl Into<Arc<Pipeline>>,
        context: &RunContext,
    ) -> Result<Self, PlanError> {
        let shared: Arc<Pipeline> = pipeline.into();
        let pipeline = &shared;
        let (stages, instances_of) = expand(pipeline, context)?;
        let mut stages = stages;
        let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(stages.len(), stages.len());
        let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
        let by_name: HashMap<&str, usize> = pipeline
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| (stage.name.value.as_str(), i))
            .collect();
        // Each instance's matrix values in one order, to pair instances by (`needs ... matrix="same"`), and, per
        // stage paired with, its instances by those values (made when first needed).
        let keys: Vec<Vec<(String, String)>> = stages
            .iter()
            .map(|stage| {
                let mut key = stage.matrix.clone();
                key.sort();
                key
            })
            .collect();
        let mut partners: HashMap<usize, InstancesByValues<'_>> = HashMap::new();
        for (position, stage) in stages.iter_mut().enumerate() {
            let definition = &pipeline.stages[stage.definition];
            // Distinct definitions first: their instances are distinct by construction, so no per-instance
            // search is needed (a matrix needing a matrix has 256 x 256 edges).
            let mut targets: Vec<(usize, bool)> = Vec::with_capacity(definition.needs.len());
            for need in &definition.needs {
                let Some(&target) = by_name.get(need.value.as_str()) else {
                    return Err(PlanError::UnknownNeeds {
                        stage: definition.name.value.clone(),
                        need: need.value.clone(),
                    });
                };
                let paired = definition
                    .paired_needs
                    .iter()
                    .any(|paired| paired.value == need.value);
                if let Some(seen) = targets.iter_mut().find(|(seen, _)| *seen == target) {
                    // Needed both ways, every instance wins.
                    seen.1 &= paired;
                } else {
                    targets.push((target, paired));
                }
            }
            for (target, paired) in targets {
                if !paired {
                    stage.needs.extend_from_slice(&instances_of[target]);
                    continue;
                }
                let by_values = partners.entry(target).or_insert_with(|| {
                    instances_of[target]
                        .iter()
                        .map(|&instance| (keys[instance].as_slice(), instance))
                        .collect()
                });
                match by_values.get(keys[position].as_slice()) {
                    Some(&partner) => stage.needs.push(partner),
                    None => {
                        return Err(PlanError::Unpaired {
                            instance: stage.name.clone(),
                            need: pipeline.stages[target].name.value.clone(),
                        });
                    }
                }
            }
        }
        for (position, stage) in stages.iter().enumerate() {
            for &need in &stage.needs {
                graph.add_edge(nodes[need], nodes[position], ());
            }
        }
        let topological = toposort(&graph, None).map_err(|cycle| {
            let definition = stages[graph[cycle.node_id()]].definition;
            PlanError::Cycle {
                stages: cycle_names(pipeline, definition),
            }
        })?;
        for node in &topological {
            let position = graph[*node];
            let level = stages[position]
                .needs
                .iter()
                .map(|&need| stages[need].level + 1)
                .max()
                .unwrap_or(0);
            stages[position].level = level;
        }
        let mut order: Vec<usize> = (0..stages.len()).collect();
        // Level first, then the order written: a valid topological order that reads like the file.
        order.sort_by_key(|&position| (stages[position].level, position));
        apply_selection(pipeline, context, &mut stages, &order)?;
        let triggers = super::triggers::verdicts(pipeline, context);
        if let Some(detail) = super::triggers::not_triggered(&triggers, context) {
            for stage in &mut stages {
                stage.skip = Some(SkipReason::NotTriggered {
                    detail: detail.clone(),
                });
            }
        }
        for &position in &order {
            if stages[position].skip.is_some()
                || stages[position].run_on.contains(&WhenStatus::Always)
            {
                continue;
            }
            let skipped_need = stages[position]
                .needs
                .iter()
                .find(|&&need| stages[need].skip.is_some())
                .map(|&need| stages[need].name.clone());
            if let Some(need) = skipped_need {
                stages[position].skip = Some(SkipReason::DependencySkipped { need });
            }
        }
        let group = pipeline.group.as_ref().map(|group| {
            PlannedGroup::new(
                render_known(&group.name.value, pipeline, None, &[], context),
                group.cancel_in_progress,
            )
        });
        Ok(Self {
            sealed: Arc::new(Sealed {
                pipeline: Arc::clone(pipeline),
                context: context.clone(),
                stages,
                graph,
                order,
                triggers,
                group,
            }),
        })
    }

    /// The pipeline this plan was built from.
    pub fn pipeline(&self) -> &Pipeline {
        &self.sealed.pipeline
    }

    /// The context it was evaluated against.
    pub fn context(&self) -> &RunContext {
        &self.sealed.context
    }

    /// How each of the pipeline's `on` triggers compares with the run, in the order written.
    pub fn triggers(&self) -> &[TriggerVerdict] {
        &self.sealed.triggers
    }

    /// Whether the run happens: its triggers decide (see [`RunContext::match_triggers`]) and none matches,
    /// or not. A run that is not triggered skips every stage.
    pub fn is_triggered(&self) -> bool {
        self.not_triggered().is_none()
    }

    /// Whether the run is not triggered only because it has no branch while a trigger of its event filters
    /// branches: a front end should ask for `--branch` rather than start nothing.
    pub fn trigger_wants_branch(&self) -> bool {
        super::triggers::wants_branch(self.pipeline(), &self.sealed.triggers, &self.sealed.context)
    }

    /// Why the run is not triggered (every `on` and why it does not match), if it is not.
    pub fn not_triggered(&self) -> Option<String> {
        super::triggers::not_triggered(&self.sealed.triggers, &self.sealed.context)
    }

    /// Every stage instance, in expansion order (the order written, matrix instances in axis order).
    pub fn stages(&self) -> &[PlannedStage] {
        &self.sealed.stages
    }

    /// Stage instances in a valid execution order (by level, then as written).
    pub fn order(&self) -> impl ExactSizeIterator<Item = &PlannedStage> + '_ {
        self.sealed
            .order
            .iter()
            .map(|&position| &self.sealed.stages[position])
    }

    /// Positions of the stages in execution order.
    pub fn order_positions(&self) -> &[usize] {
        &self.sealed.order
    }

    /// The definition a stage instance was expanded from.
    pub fn definition(&self, stage: &PlannedStage) -> &Stage {
        &self.sealed.pipeline.stages[stage.definition]
    }

    /// Positions of the instances that need `position`.
    pub fn dependents(&self, position: usize) -> impl Iterator<Item = usize> + '_ {
        self.sealed
            .graph
            .neighbors(NodeIndex::new(position))
            .map(|node| self.sealed.graph[node])
    }

    /// The dependency graph: one node per instance (weight = position), edges from a need to its dependent.
    pub fn graph(&self) -> &DiGraph<usize, ()> {
        &self.sealed.graph
    }

    /// Number of levels (longest chain of needs).
    pub fn level_count(&self) -> usize {
        self.sealed
            .stages
            .iter()
            .map(|stage| stage.level + 1)
            .max()
            .unwrap_or(0)
    }

    /// The run's concurrency group (`concurrency group="..."` of the pipeline), rendered for the run.
    pub fn group(&self) -> Option<&PlannedGroup> {
        self.sealed.group.as_ref()
    }

    /// The most stages that should run at once, from the pipeline.
    pub fn concurrency(&self) -> Option<u32> {
        self.sealed.pipeline.concurrency.as_ref().map(|c| c.value)
    }
}

type Expansion = (Vec<PlannedStage>, Vec<Vec<usize>>);

/// A stage's instances by their matrix values (sorted by axis).
type InstancesByValues<'k> = HashMap<&'k [(String, String)], usize>;

/// One planned instance per matrix combination; also returns, per definition, the positions of its instances.
fn expand(pipeline: &Pipeline, context: &RunContext) -> Result<Expansion, PlanError> {
    let count: usize = pipeline
        .stages
        .iter()
        .map(|stage| stage.matrix.as_ref().map_or(1, |m| m.instance_count()))
        .fold(0, usize::saturating_add);
    if count > crate::config::MAX_STAGES {
        return Err(PlanError::TooManyStages {
            count,
            max: crate::config::MAX_STAGES,
        });
    }
    let mut stages = Vec::with_capacity(count);
    let mut instances_of = Vec::with_capacity(pipeline.stages.len());
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(pipeline.stages.len());
    for (definition, stage) in pipeline.stages.iter().enumerate() {
        if seen.insert(stage.name.value.as_str(), ()).is_some() {
            return Err(PlanError::DuplicateStage(stage.name.value.clone()));
        }
        let combinations = crate::config::combinations(stage);
        let mut instances = Vec::with_capacity(combinations.len());
        for matrix in combinations {
            let name = if matrix.is_empty() {
                stage.name.value.clone()
            } else {
                let values: Vec<String> = matrix
                    .iter()
                    .map(|(axis, value)| format!("{axis}={value}"))
                    .collect();
                format!("{} ({})", stage.name.value, values.join(", "))
            };
            let image_template = stage.image.as_ref().or(pipeline.defaults.image.as_ref());
            let executor =
                stage
                    .executor
                    .as_ref()
                    .map(|e| e.value)
                    .unwrap_or(if image_template.is_some() {
                        context
                            .default_image_executor
                            .unwrap_or(ExecutorKind::Docker)
                    } else {
                        ExecutorKind::Local
                    });
            // A stage sent to the host by `executor "local"` does not use the default image.
            let image = image_template
                .filter(|_| executor != ExecutorKind::Local)
                .map(|image| render_known(&image.value, pipeline, Some(stage), &matrix, context));
            let reports = stage
                .reports
                .iter()
                .map(|report| {
                    render_known(&report.junit.value, pipeline, Some(stage), &matrix, context)
                })
                .collect();
            let group = stage.group.as_ref().map(|group| {
                PlannedGroup::new(
                    render_known(&group.name.value, pipeline, Some(stage), &matrix, context),
                    group.cancel_in_progress,
                )
            });
            let (skip, run_on) = evaluate_when(&stage.when, context);
            instances.push(stages.len());
            stages.push(PlannedStage {
                name,
                definition,
                matrix,
                needs: Vec::new(),
                level: 0,
                skip,
                run_on,
                image,
                executor,
                reports,
                group,
            });
        }
        instances_of.push(instances);
    }
    Ok((stages, instances_of))
}

/// Renders what is known before the run starts; run ids and unknown values stay as written.
fn render_known(
    template: &crate::config::Template,
    pipeline: &Pipeline,
    stage: Option<&Stage>,
    matrix: &[(String, String)],
    context: &RunContext,
) -> String {
    template.render(|variable| match variable {
        Variable::Matrix(axis) => matrix
            .iter()
            .find(|(a, _)| a == axis)
            .map(|(_, v)| Cow::Owned(v.clone())),
        Variable::PipelineName => Some(Cow::Owned(pipeline.name.value.clone())),
        Variable::StageName => stage.map(|stage| Cow::Owned(stage.name.value.clone())),
        Variable::GitBranch => context.branch.clone().map(Cow::Owned),
        Variable::GitTag => context.tag.clone().map(Cow::Owned),
        Variable::GitSha => context.sha.clone().map(Cow::Owned),
        Variable::GitShortSha => context
            .sha
            .as_ref()
            .map(|sha| Cow::Owned(sha.chars().take(8).collect())),
        Variable::GitRef => context.git_ref().map(Cow::Owned),
        Variable::Event => context.event.map(|event| Cow::Borrowed(event.as_str())),
        Variable::Env(name) => context.env.get(name).cloned().map(Cow::Owned),
        Variable::RunId | Variable::RunNumber | Variable::Hash(_) | Variable::Output { .. } => None,
    })
}

/// Whether any `when` node's branch/tag/event conditions hold; the statuses of those that do.
fn evaluate_when(when: &[When], context: &RunContext) -> (Option<SkipReason>, Vec<WhenStatus>) {
    if when.is_empty() {
        return (None, vec![WhenStatus::Success]);
    }
    let mut statuses = Vec::new();
    let mut first_miss: Option<String> = None;
    for condition in when {
        match condition_miss(condition, context) {
            None => {
                if !statuses.contains(&condition.status) {
                    statuses.push(condition.status);
                }
            }
            Some(miss) => {
                first_miss.get_or_insert(miss);
            }
        }
    }
    if statuses.is_empty() {
        let detail = match (when.len(), first_miss) {
            (1, Some(miss)) => miss,
            (_, Some(miss)) => format!("no `when` matches ({miss}, ...)"),
            (_, None) => "no `when` matches".to_owned(),
        };
        return (Some(SkipReason::Condition { detail }), Vec::new());
    }
    (None, statuses)
}

/// Why one `when` node does not hold, if it does not.
fn condition_miss(condition: &When, context: &RunContext) -> Option<String> {
    if let Some(branch) = &condition.branch {
        match &context.branch {
            Some(actual) if branch.value.is_match(actual) => {}
            Some(actual) => {
                return Some(format!(
                    "branch `{actual}` does not match `{}`",
                    branch.value.as_str()
                ));
            }
            None => {
                return Some(format!(
                    "no branch, and `when` needs branch `{}`",
                    branch.value.as_str()
                ));
            }
        }
    }
    if let Some(tag) = &condition.tag {
        match &context.tag {
            Some(actual) if tag.value.is_match(actual) => {}
            Some(actual) => {
                return Some(format!(
                    "tag `{actual}` does not match `{}`",
                    tag.value.as_str()
                ));
            }
            None => {
                return Some(format!(
                    "no tag, and `when` needs tag `{}`",
                    tag.value.as_str()
                ));
            }
        }
    }
    if !condition.changes.is_empty()
        && let Some(changes) = &context.changes
        && !changes.any_match(&condition.changes)
    {
        return Some(format!(
            "no file changed since {} matches {}",
            changes.base,
            super::triggers::listed(&condition.changes)
        ));
    }
    if let Some(event) = &condition.event {
        match context.event {
            Some(actual) if actual == event.value => {}
            Some(actual) => return Some(format!("event `{actual}` is not `{}`", event.value)),
            None => {
                return Some(format!(
                    "no event, and `when` needs event `{}`",
                    event.value
                ));
            }
        }
    }
    None
}

/// Marks stages outside the selection (and unrequested manual stages) as skipped.
fn apply_selection(
    pipeline: &Pipeline,
    context: &RunContext,
    stages: &mut [PlannedStage],
    order: &[usize],
) -> Result<(), PlanError> {
    let mut named = vec![false; stages.len()];
    for wanted in &context.selected {
        let mut found = false;
        for (position, stage) in stages.iter().enumerate() {
            if stage.name == *wanted || pipeline.stages[stage.definition].name.value == *wanted {
                named[position] = true;
                found = true;
            }
        }
        if !found {
            return Err(PlanError::UnknownStage {
                name: wanted.clone(),
                help: did_you_mean(
                    wanted,
                    pipeline.stages.iter().map(|s| s.name.value.as_str()),
                ),
            });
        }
    }
    let mut included = named.clone();
    if !context.selected.is_empty() {
        // Walk from dependents to needs: everything a selected stage needs is included.
        for &position in order.iter().rev() {
            if included[position] {
                for need in stages[position].needs.clone() {
                    included[need] = true;
                }
            }
        }
    }
    for (position, stage) in stages.iter_mut().enumerate() {
        if stage.skip.is_some() {
            continue;
        }
        let manual = pipeline.stages[stage.definition].manual;
        // A manual stage runs when it is requested: named, or needed by a named stage.
        let requested = if context.selected.is_empty() {
            false
        } else {
            included[position]
        };
        if manual && !requested {
            stage.skip = Some(SkipReason::Manual);
        } else if !context.selected.is_empty() && !included[position] {
            stage.skip = Some(SkipReason::NotSelected);
        }
    }
    Ok(())
}

/// Names of the stages on a loop through `start`, for the rare model changed after validation.
fn cycle_names(pipeline: &Pipeline, start: usize) -> Vec<String> {
    let by_name: HashMap<&str, usize> = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(i, stage)| (stage.name.value.as_str(), i))
        .collect();
    let mut path = vec![start];
    let mut current = start;
    // Follow needs that lead back to `start`; a depth-first walk keeps it simple for this error path.
    let mut visited = vec![false; pipeline.stages.len()];
    fn walk(
        pipeline: &Pipeline,
        by_name: &HashMap<&str, usize>,
        current: usize,
        start: usize,
        path: &mut Vec<usize>,
        visited: &mut [bool],
    ) -> bool {
        visited[current] = true;
        for need in &pipeline.stages[current].needs {
            let Some(&next) = by_name.get(need.value.as_str()) else {
                continue;
            };
            if next == start {
                return true;
            }
            if !visited[next] {
                path.push(next);
                if walk(pipeline, by_name, next, start, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    if !walk(pipeline, &by_name, current, start, &mut path, &mut visited) {
        current = start;
        path = vec![current];
    }
    path.into_iter()
        .map(|i| pipeline.stages[i].name.value.clone())
        .collect()
}
