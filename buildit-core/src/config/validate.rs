//! Whole-pipeline checks that need every stage at hand: names, needs, cycles, caches, executors and limits.

use std::collections::HashMap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::ancestors::{ancestors_among, has_bit};
use super::limits::{MAX_MATRIX_INSTANCES, MAX_STAGES};
use super::matrix::combinations;
use super::model::{ExecutorKind, Pipeline, Stage};
use super::reader::Reader;
use super::template::Variable;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};
use crate::paths::{Claim, UNKNOWN, overlapping_pairs};
use crate::suggest::did_you_mean;

pub(crate) fn validate_pipeline(reader: &mut Reader<'_>, pipeline: &Pipeline) {
    let index = stage_index(reader, pipeline);
    check_needs(reader, pipeline, &index);
    super::paired_needs::check_paired_needs(reader, pipeline, &index);
    super::output_refs::check_output_refs(reader, pipeline);
    check_cycles(reader, pipeline, &index);
    for stage in &pipeline.stages {
        check_stage(reader, pipeline, stage);
        for artifact in &stage.artifacts {
            check_rendered_path(reader, artifact, PathUse::Artifact);
        }
        for report in &stage.reports {
            check_rendered_path(reader, &report.junit, PathUse::Report);
        }
    }
    for cache in &pipeline.caches {
        for path in &cache.paths {
            check_rendered_path(reader, path, PathUse::Cache(&cache.name.value));
        }
    }
    check_limits(reader, pipeline);
    check_overlaps(reader, pipeline, &index);
    super::lengths::check_lengths(reader, pipeline);
}

/// As the planner decides: an explicit executor wins, else an image (the stage's or the default) means a
/// container.
fn runs_on_host(pipeline: &Pipeline, stage: &Stage) -> bool {
    match stage.executor.as_ref().map(|executor| executor.value) {
        Some(kind) => kind == ExecutorKind::Local,
        None => stage.image.is_none() && pipeline.defaults.image.is_none(),
    }
}

/// Most pairs of overlapping stages reported (the file's diagnostics are capped anyway).
const MAX_REPORTED_OVERLAPS: usize = 500;
/// Most pairs of overlapping paths examined for one file.
const MAX_COMPARED_OVERLAPS: usize = 1_000_000;

/// A path one stage restores or collects: what it claims, where the stage asks for it, and as written.
struct StageClaim {
    claim: Claim,
    /// The first instance that claims it (0 for a stage without a matrix).
    instance: usize,
    /// Whether several instances claim exactly this path.
    shared: bool,
    span: miette::SourceSpan,
    written: String,
}

/// The paths each instance of `stage` restores (its caches' paths) or collects (its artifacts), with matrix
/// values, the pipeline and stage names filled in; other values stand for anything.
fn stage_claims(pipeline: &Pipeline, stage: &Stage) -> Vec<StageClaim> {
    if stage.caches.is_empty() && stage.artifacts.is_empty() {
        return Vec::new();
    }
    let mut uses: Vec<(
        &super::model::Spanned<super::template::Template>,
        miette::SourceSpan,
    )> = Vec::new();
    for cache in &stage.caches {
        if let Some(definition) = pipeline.cache(&cache.value) {
            uses.extend(definition.paths.iter().map(|path| (path, cache.span)));
        }
    }
    uses.extend(
        stage
            .artifacts
            .iter()
            .map(|artifact| (artifact, artifact.span)),
    );
    let on_host = runs_on_host(pipeline, stage);
    // An oversized matrix is reported as such; expanding it here would take forever.
    if stage
        .matrix
        .as_ref()
        .is_some_and(|matrix| matrix.instance_count() > MAX_MATRIX_INSTANCES)
    {
        return Vec::new();
    }
    let combinations = if stage.matrix.is_some() {
        combinations(stage)
    } else {
        vec![Vec::new()]
    };
    // One entry per distinct path: a stage's 256 instances that share a cache path claim it once, shared.
    let mut claims: Vec<StageClaim> = Vec::new();
    let mut seen: HashMap<Claim, usize> = HashMap::new();
    for (instance, combination) in combinations.iter().enumerate() {
        for (template, span) in &uses {
            let rendered = template.value.render(|variable| {
                Some(std::borrow::Cow::Borrowed(match variable {
                    Variable::Matrix(axis) => combination
                        .iter()
                        .find(|(a, _)| a == axis)
                        .map_or(UNKNOWN, |(_, value)| value.as_str()),
                    Variable::PipelineName => pipeline.name.value.as_str(),
                    Variable::StageName => stage.name.value.as_str(),
                    _ => UNKNOWN,
                }))
            });
            let Some(claim) = Claim::parse(&rendered) else {
                continue;
            };
            // A container stage leaves out cache paths outside the workspace.
            if !on_host && claim.outside_workspace() {
                continue;
            }
            if let Some(&at) = seen.get(&claim) {
                if let Some(earlier) = claims.get_mut(at) {
                    earlier.shared |= earlier.instance != instance;
                }
                continue;
            }
            seen.insert(claim.clone(), claims.len());
            claims.push(StageClaim {
                claim,
                instance,
                shared: false,
                span: *span,
                written: template.value.as_str().to_owned(),
            });
        }
    }
    claims
}

/// Warns about stages (or instances of one matrix stage) that may run at the same time and restore or
/// collect overlapping paths; `buildit run` runs them one after the other.
fn check_overlaps(reader: &mut Reader<'_>, pipeline: &Pipeline, index: &HashMap<&str, usize>) {
    let claims: Vec<Vec<StageClaim>> = pipeline
        .stages
        .iter()
        .map(|stage| stage_claims(pipeline, stage))
        .collect();
    let marked: Vec<usize> = (0..claims.len())
        .filter(|&i| !claims[i].is_empty())
        .collect();
    if marked.is_empty() {
        return;
    }
    // Needs by position; a pipeline whose needs loop is reported as a cycle, not checked here.
    let needs = |position: usize| -> Vec<usize> {
        pipeline.stages[position]
            .needs
            .iter()
            .filter_map(|need| index.get(need.value.as_str()).copied())
            .filter(|&need| need != position)
            .collect()
    };
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(pipeline.stages.len(), 0);
    let nodes: Vec<NodeIndex> = (0..pipeline.stages.len())
        .map(|i| graph.add_node(i))
        .collect();
    for position in 0..pipeline.stages.len() {
        for need in needs(position) {
            graph.update_edge(nodes[need], nodes[position], ());
        }
    }
    let Ok(order) = petgraph::algo::toposort(&graph, None) else {
        return;
    };
    let order: Vec<usize> = order.into_iter().map(|node| graph[node]).collect();
    let ancestors = ancestors_among(pipeline.stages.len(), &order, needs, &marked);
    // Every overlapping pair of claims, by the stages they belong to: the first pair found for each.
    let flat: Vec<(usize, &StageClaim)> = marked
        .iter()
        .flat_map(|&position| claims[position].iter().map(move |claim| (position, claim)))
        .collect();
    let refs: Vec<&Claim> = flat.iter().map(|(_, claim)| &claim.claim).collect();
    let bit_of: HashMap<usize, usize> = marked
        .iter()
        .enumerate()
        .map(|(bit, &p)| (p, bit))
        .collect();
    let independent = |a: usize, b: usize| {
        let (Some(&bit_a), Some(&bit_b)) = (bit_of.get(&a), bit_of.get(&b)) else {
            return false;
        };
        !has_bit(&ancestors[b], bit_a) && !has_bit(&ancestors[a], bit_b)
    };
    let mut reported: std::collections::BTreeMap<(usize, usize), (&StageClaim, &StageClaim)> =
        std::collections::BTreeMap::new();
    // A path that several instances of one stage claim overlaps itself.
    for &(position, claim) in &flat {
        if claim.shared {
            reported
                .entry((position, position))
                .or_insert((claim, claim));
        }
    }
    let mut compared: usize = 0;
    overlapping_pairs(&refs, |a, b| {
        compared += 1;
        let ((first, x), (second, y)) = (flat[a], flat[b]);
        let counts = if first == second {
            x.instance != y.instance
        } else {
            independent(first, second)
        };
        if counts {
            let key = (first.min(second), first.max(second));
            let pair = if first <= second { (x, y) } else { (y, x) };
            reported.entry(key).or_insert(pair);
        }
        // No more than can be listed, and no more work than a file of thousands of stages that all use one
        // path and need each other in a chain would otherwise cost (every pair overlaps, none is reported):
        // a run serialises them whatever the warnings say.
        reported.len() < MAX_REPORTED_OVERLAPS && compared < MAX_COMPARED_OVERLAPS
    });
    for ((first, second), (x, y)) in reported {
        if reader.diagnostics.is_full() {
            return;
        }
        let stage = &pipeline.stages[first];
        if first == second {
            let mut diagnostic = ConfigDiagnostic::warning(
                DiagnosticCode::OverlappingPaths,
                format!(
                    "instances of stage `{}` may run at the same time and all use `{}`",
                    stage.name.value, x.written
                ),
                x.span,
                "used by every instance",
            );
            if let Some(matrix) = &stage.matrix {
                diagnostic = diagnostic.with_label(matrix.span, "instances of this matrix");
            }
            reader.push(diagnostic.with_help(
                "`buildit run` runs them one at a time; put a `{matrix.AXIS}` in the path to give each instance its own",
            ));
            continue;
        }
        let other = &pipeline.stages[second];
        let shown = if x.written == y.written {
            format!("`{}`", x.written)
        } else {
            format!("`{}` and `{}`", x.written, y.written)
        };
        reader.push(
            ConfigDiagnostic::warning(
                DiagnosticCode::OverlappingPaths,
                format!(
                    "stages `{}` and `{}` may run at the same time and use overlapping paths {shown}",
                    stage.name.value, other.name.value
                ),
                x.span,
                format!("used by `{}`", stage.name.value),
            )
            .with_label(y.span, format!("used by `{}`", other.name.value))
            .with_help(format!(
                "`buildit run` runs them one after the other; to say in which order, add `needs \"{}\"` to `{}`",
                stage.name.value, other.name.value
            )),
        );
    }
}

/// What a path template is for.
#[derive(Clone, Copy)]
enum PathUse<'a> {
    Artifact,
    Report,
    Cache(&'a str),
}

/// A variable a run may not have: git values (no tag on a branch build), the event, `{env.NAME}`.
fn may_be_missing(variable: &Variable) -> bool {
    matches!(
        variable,
        Variable::GitSha
            | Variable::GitShortSha
            | Variable::GitBranch
            | Variable::GitTag
            | Variable::GitRef
            | Variable::Event
            | Variable::Env(_)
    )
}

/// A path that is empty, the whole workspace or outside it as written is an error; one that becomes so when
/// the variables a run may not have are empty is a warning (the stage would fail at run time).
fn check_rendered_path(
    reader: &mut Reader<'_>,
    path: &super::model::Spanned<super::template::Template>,
    kind: PathUse<'_>,
) {
    let problem = |rendered: &str| match kind {
        PathUse::Artifact => crate::paths::artifact_path_problem(path.value.as_str(), rendered),
        PathUse::Report => crate::paths::report_path_problem(path.value.as_str(), rendered),
        PathUse::Cache(_) => crate::paths::cache_path_problem(path.value.as_str(), rendered),
    };
    let what = match kind {
        PathUse::Artifact => "artifact path".to_owned(),
        PathUse::Report => "report pattern".to_owned(),
        PathUse::Cache(name) => format!("path of cache `{name}`"),
    };
    // Variables every run has stand for a plain name here; their real values are checked at run time.
    let everything = path.value.render(|_| Some(std::borrow::Cow::Borrowed("x")));
    if let Some(problem) = problem(&everything) {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("{what} `{}` can never be used", path.value.as_str()),
                path.span,
                "the whole workspace, or outside it",
            )
            .with_help(match kind {
                PathUse::Report => format!(
                    "{problem}; name the report files, e.g. `target/nextest/ci/junit.xml` or `reports/*.xml`"
                ),
                _ => format!(
                    "{problem}; name the files or directories to keep, e.g. `dist` or `target/release`"
                ),
            }),
        );
        return;
    }
    let missing: Vec<String> = path
        .value
        .variables()
        .filter(|(variable, _)| may_be_missing(variable))
        .map(|(_, range)| format!("`{}`", path.value.as_str().get(range.clone()).unwrap_or("")))
        .collect();
    if missing.is_empty() {
        return;
    }
    let without = path.value.render(|variable| {
        Some(std::borrow::Cow::Borrowed(if may_be_missing(variable) {
            ""
        } else {
            "x"
        }))
    });
    if let Some(problem) = problem(&without) {
        reader.push(
            ConfigDiagnostic::warning(
                DiagnosticCode::EmptyPath,
                format!(
                    "{what} `{}` is {} in a run where {} has no value",
                    path.value.as_str(),
                    if without.trim().is_empty() {
                        "empty".to_owned()
                    } else {
                        format!("`{without}`")
                    },
                    missing.join(", ")
                ),
                path.span,
                "may be empty",
            )
            .with_help(format!(
                "such a run {} rather than use {}; put the variable under a fixed directory, e.g. `dist/{}`",
                if matches!(kind, PathUse::Report) {
                    "reads no report"
                } else {
                    "fails the stage"
                },
                if problem.contains("leaves") || problem.contains("goes up") {
                    "a place outside the workspace"
                } else {
                    "the whole workspace"
                },
                missing.first().map_or("", |m| m.trim_matches('`'))
            )),
        );
    }
}

/// Stage name -> position of its first declaration; later duplicates are reported.
fn stage_index<'p>(reader: &mut Reader<'_>, pipeline: &'p Pipeline) -> HashMap<&'p str, usize> {
    let mut index: HashMap<&'p str, usize> = HashMap::with_capacity(pipeline.stages.len());
    for (position, stage) in pipeline.stages.iter().enumerate() {
        if let Some(&first) = index.get(stage.name.value.as_str()) {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::DuplicateStage,
                    format!("stage `{}` is defined twice", stage.name.value),
                    stage.name.span,
                    "defined again here",
                )
                .with_label(pipeline.stages[first].name.span, "first defined here")
                .with_help("rename one of the stages"),
            );
            continue;
        }
        index.insert(stage.name.value.as_str(), position);
    }
    index
}

fn check_needs(reader: &mut Reader<'_>, pipeline: &Pipeline, index: &HashMap<&str, usize>) {
    let mut suggestions_left: usize = 100;
    for stage in &pipeline.stages {
        let mut seen: Vec<&str> = Vec::new();
        for need in &stage.needs {
            if need.value == stage.name.value {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::SelfNeeds,
                        format!("stage `{}` needs itself", stage.name.value),
                        need.span,
                        "a stage cannot need itself",
                    )
                    .with_help("remove it from `needs`"),
                );
            } else if !index.contains_key(need.value.as_str()) {
                // Each suggestion compares against every stage; past a budget, a generated file with thousands of
                // bad needs would cost seconds for hints nobody reads.
                suggestions_left = suggestions_left.saturating_sub(1);
                let suggestion = (suggestions_left > 0 && !reader.diagnostics.is_full())
                    .then(|| {
                        did_you_mean(
                            &need.value,
                            pipeline.stages.iter().map(|s| s.name.value.as_str()),
                        )
                    })
                    .flatten();
                let help = suggestion.unwrap_or_else(|| {
                    "`needs` takes names of stages defined in this file".to_owned()
                });
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::UnknownNeeds,
                        format!(
                            "stage `{}` needs `{}`, which does not exist",
                            stage.name.value, need.value
                        ),
                        need.span,
                        "unknown stage",
                    )
                    .with_help(help),
                );
            } else if seen.contains(&need.value.as_str()) {
                reader.push(ConfigDiagnostic::warning(
                    DiagnosticCode::DuplicateNode,
                    format!("stage `{}` needs `{}` twice", stage.name.value, need.value),
                    need.span,
                    "listed again here",
                ));
            }
            seen.push(&need.value);
        }
    }
}

/// Reports every loop of needs, naming it `a -> b -> a` and labelling each stage on it.
fn check_cycles(reader: &mut Reader<'_>, pipeline: &Pipeline, index: &HashMap<&str, usize>) {
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(pipeline.stages.len(), 0);
    let nodes: Vec<NodeIndex> = (0..pipeline.stages.len())
        .map(|i| graph.add_node(i))
        .collect();
    for (position, stage) in pipeline.stages.iter().enumerate() {
        for need in &stage.needs {
            if let Some(&target) = index.get(need.value.as_str())
                && target != position
            {
                graph.update_edge(nodes[position], nodes[target], ());
            }
        }
    }
    let mut cycles: Vec<Vec<usize>> = tarjan_scc(&graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .filter_map(|component| cycle_in(&graph, &component))
        .collect();
    cycles.sort();
    for cycle in cycles {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| pipeline.stages[i].name.value.as_str())
            .collect();
        let mut loop_text = names.join(" -> ");
        loop_text.push_str(" -> ");
        loop_text.push_str(names[0]);
        let mut diagnostic: Option<ConfigDiagnostic> = None;
        for (step, &position) in cycle.iter().enumerate() {
            let stage = &pipeline.stages[position];
            let next = names[(step + 1) % names.len()];
            let label = format!("`{}` needs `{next}`", stage.name.value);
            diagnostic = Some(match diagnostic {
                None => ConfigDiagnostic::error(
                    DiagnosticCode::Cycle,
                    format!("stages need each other in a loop: {loop_text}"),
                    stage.name.span,
                    label,
                ),
                Some(diagnostic) => diagnostic.with_label(stage.name.span, label),
            });
        }
        if let Some(diagnostic) = diagnostic {
            reader.push(diagnostic.with_help("remove one of these `needs` to break the loop"));
        }
    }
}

/// One simple cycle through a strongly connected component, starting at its earliest stage.
fn cycle_in(graph: &DiGraph<usize, ()>, component: &[NodeIndex]) -> Option<Vec<usize>> {
    let start = *component.iter().min_by_key(|node| graph[**node])?;
    let inside = |node: NodeIndex| component.contains(&node);
    // Breadth-first search from `start` back to `start` within the component gives a shortest loop.
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut neighbors: Vec<NodeIndex> = graph.neighbors(node).filter(|n| inside(*n)).collect();
        neighbors.sort_by_key(|n| graph[*n]);
        for next in neighbors {
            if next == start {
                let mut path = vec![graph[node]];
                let mut current = node;
                while let Some(&previous) = parent.get(&current) {
                    path.push(graph[previous]);
                    current = previous;
                }
                path.reverse();
                return Some(path);
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

fn check_stage(reader: &mut Reader<'_>, pipeline: &Pipeline, stage: &Stage) {
    // A runner whose `default-executor` is `local` is caught when the stage starts.
    let on_host = runs_on_host(pipeline, stage);
    if let Some(service) = stage.services.first().filter(|_| on_host) {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!(
                    "stage `{}` has services but runs on the host",
                    stage.name.value
                ),
                service.name.span,
                "services need a container stage",
            )
            .with_help(
                "services share a network with the stage's container: give the stage an `image`",
            ),
        );
    }
    if stage.run.is_empty() {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::EmptyStage,
                format!("stage `{}` has no `run` command", stage.name.value),
                stage.name.span,
                "nothing to run",
            )
            .with_help("add `run \"make\"` (several `run` nodes run in order, in one shell)"),
        );
    }
    for cache in &stage.caches {
        match pipeline.cache(&cache.value) {
            None => {
                let help = did_you_mean(&cache.value, pipeline.caches.iter().map(|c| c.name.value.as_str()))
                    .unwrap_or_else(|| format!("define it at the top level: `cache \"{}\" {{ path \"...\"; key \"...\" }}`", cache.value));
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::UnknownCache,
                        format!(
                            "stage `{}` uses cache `{}`, which is not defined",
                            stage.name.value, cache.value
                        ),
                        cache.span,
                        "unknown cache",
                    )
                    .with_help(help),
                );
            }
            Some(definition) => {
                // A cache key may use `{matrix.AXIS}`; every stage using the cache must have that axis.
                let axes = stage
                    .matrix
                    .as_ref()
                    .map(|m| m.axis_names())
                    .unwrap_or_default();
                let templates = std::iter::once(&definition.key)
                    .chain(&definition.paths)
                    .chain(&definition.restore_keys);
                let mut missing: Vec<&str> = Vec::new();
                let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
                for template in templates {
                    for (variable, _) in template.value.variables() {
                        if let Variable::Matrix(axis) = variable
                            && !axes.contains(axis)
                            && seen.insert(axis.as_str())
                        {
                            missing.push(axis);
                        }
                    }
                }
                // One diagnostic per stage and cache, however many axes are missing: cheap for any file size.
                if !missing.is_empty() {
                    let shown: Vec<String> = missing
                        .iter()
                        .take(5)
                        .map(|axis| format!("`{{matrix.{axis}}}`"))
                        .collect();
                    let more = if missing.len() > 5 {
                        format!(" and {} more", missing.len() - 5)
                    } else {
                        String::new()
                    };
                    reader.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::UnknownVariable,
                            format!(
                                "cache `{}` uses {}{more}, but stage `{}` has no such matrix axis",
                                cache.value,
                                shown.join(", "),
                                stage.name.value
                            ),
                            cache.span,
                            "unknown matrix axis",
                        )
                        .with_label(definition.key.span, "the cache's key")
                        .with_help(
                            "add the axis to the stage's `matrix`, or remove it from the cache",
                        ),
                    );
                }
            }
        }
    }
    check_matrix_paths(reader, stage);
    let has_image = stage.image.is_some() || pipeline.defaults.image.is_some();
    if let Some(executor) = &stage.executor {
        match executor.value {
            ExecutorKind::Docker | ExecutorKind::Kubernetes if !has_image => reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "stage `{}` runs on `{}` but has no image",
                        stage.name.value, executor.value
                    ),
                    executor.span,
                    "needs an image",
                )
                .with_help("add `image \"...\"` to the stage or to `defaults`"),
            ),
            ExecutorKind::Local if stage.image.is_some() => {
                let image_span = stage
                    .image
                    .as_ref()
                    .map_or(executor.span, |image| image.span);
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!(
                            "stage `{}` runs on the host (`local`) but names an image",
                            stage.name.value
                        ),
                        executor.span,
                        "runs on the host",
                    )
                    .with_label(image_span, "this image would be ignored")
                    .with_help("remove the `image`, or the `executor \"local\"`"),
                );
            }
            _ => {}
        }
    }
    if let Some(matrix) = &stage.matrix
        && matrix.instance_count() > MAX_MATRIX_INSTANCES
    {
        let instances = count_text(matrix.exact_instance_count());
        reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::Limit,
                    format!("the matrix of stage `{}` expands to {instances} instances; at most {MAX_MATRIX_INSTANCES} are allowed", stage.name.value),
                    matrix.span,
                    "too many combinations",
                )
                .with_help("split the stage, or drop values from an axis"),
            );
    }
}

/// A count that may not fit in `u128`: the number, or "more than" the largest that does.
fn count_text(count: Option<u128>) -> String {
    count.map_or_else(
        || format!("more than {}", u128::MAX),
        |count| count.to_string(),
    )
}

fn check_limits(reader: &mut Reader<'_>, pipeline: &Pipeline) {
    let total = pipeline.stages.iter().try_fold(0u128, |total, stage| {
        total.checked_add(
            stage
                .matrix
                .as_ref()
                .map_or(Some(1), |m| m.exact_instance_count())?,
        )
    });
    if total.is_none_or(|total| total > MAX_STAGES as u128) {
        let total = count_text(total);
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::Limit,
                format!("the pipeline has {total} stages after matrix expansion; at most {MAX_STAGES} are allowed"),
                pipeline.name.span,
                "this pipeline",
            )
            .with_help("split it into several pipelines"),
        );
    }
}

/// `workdir` and `artifacts` were checked as written; with `{matrix.AXIS}` in them, every instance's value is
/// known now too, and one like `a/../..` must not take an instance out of the workspace.
fn check_matrix_paths(reader: &mut Reader<'_>, stage: &Stage) {
    // An oversized matrix is reported as such; expanding it here would take all memory.
    if stage
        .matrix
        .as_ref()
        .is_none_or(|matrix| matrix.instance_count() > MAX_MATRIX_INSTANCES)
    {
        return;
    }
    let uses_matrix = |template: &super::template::Template| {
        template
            .variables()
            .any(|(variable, _)| matches!(variable, Variable::Matrix(_)))
    };
    let workdir = stage.workdir.as_ref().filter(|w| uses_matrix(&w.value));
    let artifacts: Vec<&super::model::Spanned<super::template::Template>> = stage
        .artifacts
        .iter()
        .filter(|a| uses_matrix(&a.value))
        .collect();
    if workdir.is_none() && artifacts.is_empty() {
        return;
    }
    for combination in combinations(stage) {
        let render = |template: &super::template::Template| {
            template.render(|variable| match variable {
                Variable::Matrix(axis) => combination
                    .iter()
                    .find(|(a, _)| a == axis)
                    .map(|(_, value)| std::borrow::Cow::Borrowed(value.as_str())),
                _ => None,
            })
        };
        let instance: Vec<String> = combination
            .iter()
            .map(|(a, v)| format!("{a}={v}"))
            .collect();
        if let Some(workdir) = workdir {
            let rendered = render(&workdir.value);
            if crate::paths::relative_path_escapes(&rendered) {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::WorkdirEscape,
                        format!(
                            "workdir `{rendered}` of instance ({}) leaves the workspace",
                            instance.join(", ")
                        ),
                        workdir.span,
                        "outside the workspace for this instance",
                    )
                    .with_help("matrix values used in `workdir` must keep it inside the workspace"),
                );
                return;
            }
        }
        for artifact in &artifacts {
            let rendered = render(&artifact.value);
            if crate::paths::relative_path_escapes(&rendered) {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!("artifact path `{rendered}` of instance ({}) leaves the workspace", instance.join(", ")),
                        artifact.span,
                        "outside the workspace for this instance",
                    )
                    .with_help("artifacts are collected from inside the workspace: use a relative path without `..`"),
                );
                return;
            }
        }
    }
}
