//! Resolving a planned stage into a [`StageSpec`]: variables, environment, `BUILDIT_*`, secrets, limits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::cache::{ResolvedCache, hash_files};
use super::executor::{DEFAULT_READY_TIMEOUT, ReadyCheck, ServiceSpec, StageSpec};
use super::outputs::{RunOutputs, output_file};
use crate::config::{Template, Variable};
use crate::plan::{Plan, PlannedStage};
use crate::source::FetchableSource;

/// What a run knows beyond the plan: identity, workspace and secret values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunIdentity {
    /// Unique id of the run.
    pub run_id: String,
    /// Number of the run within its pipeline.
    pub run_number: u64,
    /// The workspace directory.
    pub workspace: PathBuf,
    /// Where the workspace's files came from, when it is a git commit or an uploaded archive.
    pub source: Option<FetchableSource>,
    /// Secret values by name (from the secret store).
    pub secrets: BTreeMap<String, String>,
    /// Host environment variables stages must not inherit, nor read through `{env.NAME}` (the secret store's
    /// `BUILDIT_SECRET_*` variables).
    pub scrub_env: Vec<String>,
    /// What the run's instances wrote to `$BUILDIT_OUTPUT`, for the stages that need them.
    pub outputs: RunOutputs,
}

impl RunIdentity {
    /// A run with this id and number in `workspace`, with no secrets.
    pub fn new(run_id: impl Into<String>, run_number: u64, workspace: impl Into<PathBuf>) -> Self {
        Self {
            run_id: run_id.into(),
            run_number,
            workspace: workspace.into(),
            source: None,
            secrets: BTreeMap::new(),
            scrub_env: Vec::new(),
            outputs: RunOutputs::default(),
        }
    }
}

/// A stage that cannot start, for a reason that is the pipeline's or the runner's, not the command's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

/// The values of template variables for one stage instance of a run.
struct Values<'a> {
    plan: &'a Plan,
    stage: &'a PlannedStage,
    run: &'a RunIdentity,
}

impl Values<'_> {
    fn get(&self, variable: &Variable) -> Option<String> {
        let context = self.plan.context();
        match variable {
            Variable::GitSha => context.sha.clone(),
            Variable::GitShortSha => context
                .sha
                .as_ref()
                .map(|sha| sha.chars().take(8).collect()),
            Variable::GitBranch => context.branch.clone(),
            Variable::GitTag => context.tag.clone(),
            Variable::GitRef => context.git_ref(),
            Variable::Event => context.event.map(|event| event.as_str().to_owned()),
            Variable::PipelineName => Some(self.plan.pipeline().name.value.clone()),
            Variable::RunId => Some(self.run.run_id.clone()),
            Variable::RunNumber => Some(self.run.run_number.to_string()),
            Variable::StageName => Some(self.plan.definition(self.stage).name.value.clone()),
            Variable::Matrix(axis) => self
                .stage
                .matrix()
                .iter()
                .find(|(a, _)| a == axis)
                .map(|(_, v)| v.clone()),
            Variable::Env(name) => context.env.get(name).cloned().or_else(|| {
                // Never a secret store variable: `{env.BUILDIT_SECRET_X}` would put a secret into a command.
                (!self.run.scrub_env.contains(name))
                    .then(|| std::env::var(name).ok())
                    .flatten()
            }),
            Variable::Hash(_) => None,
            Variable::Output { stage, name } => {
                let producer = self.producer(stage)?;
                self.run.outputs.get(producer, name)
            }
        }
    }

    /// The instance of stage `definition` this instance needs (validation makes it one: a stage without a matrix,
    /// or the instance paired by `matrix="same"`).
    fn producer(&self, definition: &str) -> Option<&str> {
        self.stage
            .needs()
            .iter()
            .map(|&need| &self.plan.stages()[need])
            .find(|need| self.plan.definition(need).name.value == definition)
            .map(PlannedStage::name)
    }

    /// Missing values render as empty strings at run time: the plan showed them as written, the stage gets
    /// nothing.
    fn render(&self, template: &Template) -> String {
        template.render(|variable| Some(Cow::Owned(self.get(variable).unwrap_or_default())))
    }
}

/// Resolves one attempt of `stage`.
pub fn stage_spec(
    plan: &Plan,
    stage: &PlannedStage,
    run: &RunIdentity,
    attempt: u32,
) -> Result<StageSpec, SpecError> {
    let definition = plan.definition(stage);
    let pipeline = plan.pipeline();
    let values = Values { plan, stage, run };
    // A command refers to its values through the environment (set below), never holds them.
    let commands = definition
        .run
        .iter()
        .map(|command| command.value.render_command())
        .collect::<Result<Vec<String>, _>>()
        .map_err(|refusal| {
            SpecError(format!(
                "a `run` command cannot be given its values: {refusal}"
            ))
        })?;
    let workdir = match &definition.workdir {
        Some(workdir) => {
            let relative = values.render(&workdir.value);
            if crate::paths::relative_path_escapes(&relative) {
                return Err(SpecError(format!(
                    "workdir `{relative}` leaves the workspace"
                )));
            }
            run.workspace.join(relative)
        }
        None => run.workspace.clone(),
    };
    let mut spec = StageSpec::new(commands, workdir);
    if definition
        .run
        .iter()
        .any(|command| !command.value.is_literal())
    {
        // The log shows the values; the script only refers to them.
        spec.echoes = definition
            .run
            .iter()
            .map(|command| values.render(&command.value))
            .collect();
        spec.echo_words = definition
            .run
            .iter()
            .map(|command| command.value.echo_word())
            .collect();
    }
    spec.workspace = run.workspace.clone();
    spec.source.clone_from(&run.source);
    spec.executor = stage.executor();
    spec.image = stage.image().map(str::to_owned);
    spec.shell = definition
        .shell
        .as_ref()
        .or(pipeline.defaults.shell.as_ref())
        .map_or_else(|| "sh".to_owned(), |shell| shell.value.clone());
    spec.timeout = definition
        .timeout
        .as_ref()
        .or(pipeline.defaults.timeout.as_ref())
        .map(|t| t.value);
    spec.resources = definition.resources.clone();
    for var in pipeline.env.iter().chain(&definition.env) {
        spec.env
            .insert(var.name.value.clone(), values.render(&var.value.value));
    }
    let context = plan.context();
    let mut standard: Vec<(String, String)> = vec![
        ("CI".into(), "true".into()),
        ("BUILDIT".into(), "true".into()),
        ("BUILDIT_RUN_ID".into(), run.run_id.clone()),
        ("BUILDIT_RUN_NUMBER".into(), run.run_number.to_string()),
        ("BUILDIT_PIPELINE".into(), pipeline.name.value.clone()),
        ("BUILDIT_STAGE".into(), stage.name().to_owned()),
        ("BUILDIT_STAGE_ATTEMPT".into(), attempt.to_string()),
        (
            "BUILDIT_WORKSPACE".into(),
            run.workspace.display().to_string(),
        ),
    ];
    let optional = [
        ("BUILDIT_SHA", context.sha.clone()),
        (
            "BUILDIT_SHORT_SHA",
            context
                .sha
                .as_ref()
                .map(|sha| sha.chars().take(8).collect()),
        ),
        ("BUILDIT_BRANCH", context.branch.clone()),
        ("BUILDIT_TAG", context.tag.clone()),
        ("BUILDIT_REF", context.git_ref()),
        (
            "BUILDIT_EVENT",
            context.event.map(|event| event.as_str().to_owned()),
        ),
    ];
    standard.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v))),
    );
    for (axis, value) in stage.matrix() {
        standard.push((crate::config::matrix_env_name(axis), value.clone()));
    }
    spec.env.extend(standard);
    // An output a stage needs and that its stage did not write stops this one before it starts.
    let uses = definition
        .run
        .iter()
        .map(|command| &command.value)
        .chain(definition.env.iter().map(|var| &var.value.value));
    for template in uses {
        for (variable, _) in template.variables() {
            if let Variable::Output {
                stage: producer,
                name,
            } = variable
                && values.get(variable).is_none()
            {
                return Err(SpecError(format!(
                    "stage `{producer}` has no output `{name}`: it did not succeed, or did not write it (a line \
                     `{name}=value` in the file `$BUILDIT_OUTPUT` names)"
                )));
            }
        }
    }
    // Every output of a stage it needs is in the environment too (the one instance of it this one needs).
    let needed_definitions: Vec<&str> = stage
        .needs()
        .iter()
        .map(|&need| plan.definition(&plan.stages()[need]).name.value.as_str())
        .collect();
    for producer in plan.pipeline().stages.iter().filter(|producer| {
        !producer.outputs.is_empty()
            && needed_definitions
                .iter()
                .filter(|name| **name == producer.name.value)
                .count()
                == 1
    }) {
        for output in &producer.outputs {
            let variable = Variable::Output {
                stage: producer.name.value.clone(),
                name: output.value.clone(),
            };
            if let (Some(value), Some(name)) = (values.get(&variable), variable.env_name()) {
                spec.env.insert(name, value);
            }
        }
    }
    if !definition.outputs.is_empty() {
        spec.env.insert(
            "BUILDIT_OUTPUT".to_owned(),
            run.workspace
                .join(output_file(&run.run_id, stage.name(), attempt))
                .display()
                .to_string(),
        );
    }
    // The values the commands refer to, set even when empty (a command under `set -u` must not fail on a
    // missing tag), and after the user's `env`, which cannot change what a reference means.
    let mut scrubbed_references = Vec::new();
    for command in &definition.run {
        for (variable, _) in command.value.variables() {
            let Some(name) = variable.env_name() else {
                continue;
            };
            // A secret store variable is never read: its reference stays empty, never inherited.
            if matches!(variable, Variable::Env(scrubbed) if run.scrub_env.contains(scrubbed)) {
                spec.env.remove(&name);
                scrubbed_references.push(name);
                continue;
            }
            let value = values.get(variable).unwrap_or_default();
            spec.env.insert(name, value);
        }
    }
    for secret in &definition.secrets {
        let value = run.secrets.get(&secret.value).ok_or_else(|| {
            SpecError(format!(
                "secret `{}` is not set in the runner's secret store",
                secret.value
            ))
        })?;
        spec.secrets.insert(secret.value.clone(), value.clone());
    }
    // A value that holds a secret (an output a stage wrote from one, an `env` entry built from it) travels as the
    // stage's secrets do: never in a container's configuration or a pod's body.
    let holding_secrets: Vec<String> = spec
        .env
        .iter()
        .filter(|(_, value)| {
            run.secrets
                .values()
                .any(|secret| !secret.is_empty() && value.contains(secret.as_str()))
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in holding_secrets {
        if let Some(value) = spec.env.remove(&name) {
            spec.secrets.insert(name, value);
        }
    }
    spec.env_remove = run.scrub_env.clone();
    spec.env_remove.extend(scrubbed_references);
    spec.services = definition
        .services
        .iter()
        .map(|service| ServiceSpec {
            name: service.name.value.clone(),
            image: values.render(&service.image.value),
            env: service
                .env
                .iter()
                .map(|var| (var.name.value.clone(), values.render(&var.value.value)))
                .collect(),
            command: service
                .command
                .iter()
                .map(|arg| arg.value.clone())
                .collect(),
            ready: match service.ready.as_slice() {
                [] => None,
                [command] => Some(ReadyCheck::Shell(command.value.clone())),
                argv => Some(ReadyCheck::Exec(
                    argv.iter().map(|arg| arg.value.clone()).collect(),
                )),
            },
            ready_timeout: service
                .ready_timeout
                .as_ref()
                .map_or(DEFAULT_READY_TIMEOUT, |timeout| timeout.value),
        })
        .collect();
    spec.labels.insert("buildit.run".into(), run.run_id.clone());
    spec.labels
        .insert("buildit.stage".into(), definition.name.value.clone());
    spec.labels
        .insert("buildit.instance".into(), stage.name().to_owned());
    spec.labels
        .insert("buildit.attempt".into(), attempt.to_string());
    Ok(spec)
}

/// The stage's `artifacts` patterns with variables filled in.
pub fn artifact_patterns(plan: &Plan, stage: &PlannedStage, run: &RunIdentity) -> Vec<String> {
    let values = Values { plan, stage, run };
    plan.definition(stage)
        .artifacts
        .iter()
        .map(|pattern| values.render(&pattern.value))
        .collect()
}

/// The stage's `reports` globs with variables filled in, in the order written.
pub fn report_patterns(plan: &Plan, stage: &PlannedStage, run: &RunIdentity) -> Vec<String> {
    let values = Values { plan, stage, run };
    plan.definition(stage)
        .reports
        .iter()
        .map(|report| values.render(&report.junit.value))
        .collect()
}

/// The paths of the caches the stage uses, with variables filled in (no key is computed).
pub(crate) fn cache_paths(plan: &Plan, stage: &PlannedStage, run: &RunIdentity) -> Vec<String> {
    let values = Values { plan, stage, run };
    plan.definition(stage)
        .caches
        .iter()
        .filter_map(|name| plan.pipeline().cache(&name.value))
        .flat_map(|cache| &cache.paths)
        .map(|path| values.render(&path.value))
        .collect()
}

/// The caches the stage uses, with keys resolved (`{hash:GLOB}` computed over the workspace).
pub fn resolve_caches(
    plan: &Plan,
    stage: &PlannedStage,
    run: &RunIdentity,
) -> Result<Vec<ResolvedCache>, SpecError> {
    let values = Values { plan, stage, run };
    let mut resolved = Vec::new();
    for name in &plan.definition(stage).caches {
        let Some(cache) = plan.pipeline().cache(&name.value) else {
            return Err(SpecError(format!("cache `{}` is not defined", name.value)));
        };
        // The renderer takes a plain `Fn`; the first hashing error is kept aside.
        let hash_error = std::cell::RefCell::new(None);
        let key = cache.key.value.render(|variable| match variable {
            Variable::Hash(glob) => match hash_files(&run.workspace, glob) {
                Ok(hash) => Some(Cow::Owned(hash)),
                Err(error) => {
                    *hash_error.borrow_mut() = Some(format!(
                        "cannot compute `{{hash:{glob}}}` for cache `{}`: {error}",
                        name.value
                    ));
                    Some(Cow::Borrowed(""))
                }
            },
            other => Some(Cow::Owned(values.get(other).unwrap_or_default())),
        });
        if let Some(error) = hash_error.into_inner() {
            return Err(SpecError(error));
        }
        resolved.push(ResolvedCache {
            name: name.value.clone(),
            key,
            restore_keys: cache
                .restore_keys
                .iter()
                .map(|k| values.render(&k.value))
                .collect(),
            paths: cache
                .paths
                .iter()
                .map(|path| {
                    let rendered = values.render(&path.value);
                    match crate::paths::cache_path_problem(path.value.as_str(), &rendered) {
                        Some(problem) => {
                            Err(SpecError(format!("cache `{}`: {problem}", name.value)))
                        }
                        None => Ok(rendered),
                    }
                })
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(resolved)
}

/// Extra attempts allowed after a failure (stage, else defaults, else 0).
pub fn retries(plan: &Plan, stage: &PlannedStage) -> u32 {
    let definition = plan.definition(stage);
    definition
        .retry
        .as_ref()
        .or(plan.pipeline().defaults.retry.as_ref())
        .map_or(0, |retry| u32::from(retry.value))
}

/// Default grace period between the graceful stop and the kill.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;
    use crate::{RunContext, parse_pipeline};

    /// An output that holds a secret reaches the stage that needs it the way secrets do (never in its plain
    /// environment: a container's configuration, a pod's body), and a paired instance gets its partner's value.
    #[test]
    fn outputs_reach_their_consumers_and_one_holding_a_secret_travels_as_a_secret() {
        let source = r#"pipeline "p"
stage "login" { outputs "url" "plain"; secrets "TOKEN"; run "true"; }
stage "build" {
    matrix { os "a" "b"; }
    outputs "bin"
    run "true"
}
stage "use" {
    matrix { os "a" "b"; }
    needs "login"
    needs "build" matrix="same"
    env { BIN "{needs.build.outputs.bin}" }
    run "echo {needs.login.outputs.plain}"
}
"#;
        let pipeline = parse_pipeline(source, "buildit.kdl").expect("a valid pipeline");
        let plan = Plan::build(&pipeline, &RunContext::default()).expect("a plan");
        let mut run = RunIdentity::new("outputs-test", 1, "/ws");
        run.secrets.insert("TOKEN".into(), "hunter2-secret".into());
        run.outputs.set(
            "login",
            BTreeMap::from([
                (
                    "url".to_owned(),
                    "https://ci:hunter2-secret@host/r.git".to_owned(),
                ),
                ("plain".to_owned(), "hello".to_owned()),
            ]),
        );
        run.outputs.set(
            "build (os=a)",
            BTreeMap::from([("bin".to_owned(), "bin-a".to_owned())]),
        );
        run.outputs.set(
            "build (os=b)",
            BTreeMap::from([("bin".to_owned(), "bin-b".to_owned())]),
        );
        for stage in plan
            .stages()
            .iter()
            .filter(|stage| stage.name().starts_with("use"))
        {
            let spec = stage_spec(&plan, stage, &run, 1).expect("a spec");
            let url = "BUILDIT_NEEDS_LOGIN_OUTPUTS_URL";
            assert!(!spec.env.contains_key(url), "{:?}", spec.env);
            assert_eq!(
                spec.secrets.get(url).map(String::as_str),
                Some("https://ci:hunter2-secret@host/r.git")
            );
            assert_eq!(spec.env["BUILDIT_NEEDS_LOGIN_OUTPUTS_PLAIN"], "hello");
            let partner = if stage.name().contains("os=a") {
                "bin-a"
            } else {
                "bin-b"
            };
            assert_eq!(spec.env["BIN"], partner, "{}", stage.name());
            assert!(
                spec.env
                    .values()
                    .all(|value| !value.contains("hunter2-secret"))
            );
        }
    }
}
