//! The owned pipeline model: what a `buildit.kdl` says, with the source span of every value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use miette::SourceSpan;
use serde::Serialize;

use super::glob::Glob;
use super::template::Template;
use crate::diagnostic::{ConfigDiagnostic, ConfigSource};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Its byte range in the source.
    pub span: SourceSpan,
}

impl<T> Spanned<T> {
    /// Pairs a value with its span.
    pub fn new(value: T, span: impl Into<SourceSpan>) -> Self {
        Self {
            value,
            span: span.into(),
        }
    }

    /// Transforms the value, keeping the span.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            span: self.span,
        }
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

/// A parsed, validated `buildit.kdl`. Build a [`crate::Plan`] from it to run it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Pipeline {
    /// `pipeline "name"`.
    pub name: Spanned<String>,
    /// Optional free text.
    pub description: Option<String>,
    /// Optional repository URL or name.
    pub repository: Option<String>,
    /// `on` / `trigger` nodes.
    pub triggers: Vec<Trigger>,
    /// Pipeline-wide environment, in order.
    pub env: Vec<EnvVar>,
    /// Named caches stages can use.
    pub caches: Vec<CacheDef>,
    /// Defaults for every stage.
    pub defaults: Defaults,
    /// Most stages running at once.
    pub concurrency: Option<Spanned<u32>>,
    /// `concurrency group="..."`: at most one run of the group at a time on one store.
    pub group: Option<ConcurrencyGroup>,
    /// The stages, in the order written.
    pub stages: Vec<Stage>,
    /// The text it was parsed from (with the files it includes joined after it).
    pub source: ConfigSource,
    /// The files it includes, by their paths relative to its directory, with their text: what a daemon needs
    /// besides the pipeline's text to read it again.
    pub included: Vec<(String, String)>,
    /// Warnings found while parsing (errors make parsing fail instead).
    pub warnings: Vec<ConfigDiagnostic>,
}

impl Pipeline {
    /// The stage with this (unexpanded) name.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|stage| stage.name.value == name)
    }

    /// Whether anything depends on which files changed (`when changes=`, `on ... paths=`): only then are they
    /// worth finding out.
    pub fn uses_changes(&self) -> bool {
        self.triggers
            .iter()
            .any(|trigger| !trigger.paths.is_empty())
            || self
                .stages
                .iter()
                .any(|stage| stage.when.iter().any(|when| !when.changes.is_empty()))
    }

    /// The cache with this name.
    pub fn cache(&self, name: &str) -> Option<&CacheDef> {
        self.caches.iter().find(|cache| cache.name.value == name)
    }
}

/// `concurrency group="deploy-{branch}" cancel-in-progress=#true`: a name shared by runs (or stages) of which at
/// most one runs at a time on one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConcurrencyGroup {
    /// The group's name; it may use the variables known before the run starts.
    pub name: Spanned<Template>,
    /// Whether a newer run of the group cancels the one in progress instead of waiting for it.
    pub cancel_in_progress: bool,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// What starts a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Commits pushed to a branch.
    Push,
    /// A pull request opened or updated.
    PullRequest,
    /// A tag pushed.
    Tag,
    /// A cron schedule.
    Schedule,
    /// Started by hand.
    Manual,
}

impl EventKind {
    /// Every kind, as written in files.
    pub const ALL: [EventKind; 5] = [
        Self::Push,
        Self::PullRequest,
        Self::Tag,
        Self::Schedule,
        Self::Manual,
    ];

    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::PullRequest => "pull-request",
            Self::Tag => "tag",
            Self::Schedule => "schedule",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("unknown event `{text}` (expected one of: push, pull-request, tag, schedule, manual)"))
    }
}

/// One `on` node: an event and its filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    /// The event.
    pub kind: EventKind,
    /// Branch globs (push, pull-request); empty means every branch.
    pub branches: Vec<Spanned<Glob>>,
    /// Changed-path globs; empty means any change.
    pub paths: Vec<Spanned<Glob>>,
    /// Tag globs (`tag` events); empty means every tag.
    pub patterns: Vec<Spanned<Glob>>,
    /// Five-field cron expression (`schedule` events).
    pub cron: Option<Spanned<String>>,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// An environment variable: `NAME "value"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// The variable name.
    pub name: Spanned<String>,
    /// Its value, which may use `{variables}`.
    pub value: Spanned<Template>,
}

/// A named cache: paths saved under a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheDef {
    /// Its name, used by stages' `cache` nodes.
    pub name: Spanned<String>,
    /// Paths to save and restore.
    pub paths: Vec<Spanned<Template>>,
    /// The key; may use `{hash:GLOB}`.
    pub key: Spanned<Template>,
    /// Prefixes tried, in order, when the exact key is missing.
    pub restore_keys: Vec<Spanned<Template>>,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// `defaults { ... }`: values every stage inherits unless it sets its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Defaults {
    /// Default container image.
    pub image: Option<Spanned<Template>>,
    /// Default timeout.
    pub timeout: Option<Spanned<Duration>>,
    /// Default extra attempts.
    pub retry: Option<Spanned<u8>>,
    /// Default shell.
    pub shell: Option<Spanned<String>>,
}

/// Where a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Processes on the host.
    Local,
    /// Containers on a Docker Engine.
    Docker,
    /// Pods on a Kubernetes cluster.
    Kubernetes,
}

impl ExecutorKind {
    /// Every kind.
    pub const ALL: [ExecutorKind; 3] = [Self::Local, Self::Docker, Self::Kubernetes];

    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutorKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!("unknown executor `{text}` (expected one of: local, docker, kubernetes)")
            })
    }
}

/// On which outcome of its needs a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenStatus {
    /// Only when everything it needs succeeded (the default).
    #[default]
    Success,
    /// Only when something it needs failed.
    Failure,
    /// Whatever happened before (cleanup, notifications).
    Always,
}

impl WhenStatus {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Always => "always",
        }
    }
}

impl FromStr for WhenStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "success" => Ok(Self::Success),
            "failure" => Ok(Self::Failure),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "unknown status `{other}` (expected one of: success, failure, always)"
            )),
        }
    }
}

/// One `when` node: its conditions AND together; several `when` nodes OR together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct When {
    /// Branch glob.
    pub branch: Option<Spanned<Glob>>,
    /// Tag glob.
    pub tag: Option<Spanned<Glob>>,
    /// Event kind.
    pub event: Option<Spanned<EventKind>>,
    /// Changed-path globs (relative to the repository's root), any of which a changed file must match; empty
    /// means no condition on changes.
    pub changes: Vec<Spanned<Glob>>,
    /// Outcome of the needs.
    pub status: WhenStatus,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// `matrix { axis "v1" "v2"; ... }`: the stage runs once per combination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// Axes in the order written; instances vary the last axis fastest.
    pub axes: Vec<MatrixAxis>,
    /// `exclude { AXIS "value" ... }`: the combinations that match every pair given are left out.
    pub exclude: Vec<MatrixEntry>,
    /// `include { AXIS "value" ... }`: combinations added after the exclusions, each with a value for every axis.
    pub include: Vec<MatrixEntry>,
    /// How many instances it has, counted once when it was read (with `exclude` or `include`; the product of
    /// the axes otherwise).
    #[serde(skip)]
    pub(crate) counted: Option<usize>,
    /// The `matrix` keyword.
    #[serde(skip)]
    pub span: SourceSpan,
}

impl Matrix {
    /// How many instances the matrix expands to (saturating).
    pub fn instance_count(&self) -> usize {
        match self.counted {
            Some(count) => count,
            None => self.axes.iter().fold(1usize, |count, axis| {
                count.saturating_mul(axis.values.len())
            }),
        }
    }

    /// How many instances the matrix expands to, exactly; `None` when that is more than `u128::MAX` (about
    /// 3.4 x 10^38), which the file size allows (a few hundred axes of two values).
    pub fn exact_instance_count(&self) -> Option<u128> {
        match self.counted {
            Some(count) => u128::try_from(count).ok(),
            None => self.axes.iter().try_fold(1u128, |count, axis| {
                count.checked_mul(u128::try_from(axis.values.len()).ok()?)
            }),
        }
    }

    /// The axis names.
    pub fn axis_names(&self) -> Vec<String> {
        self.axes
            .iter()
            .map(|axis| axis.name.value.clone())
            .collect()
    }
}

/// One axis of a matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixAxis {
    /// The axis name, used as `{matrix.NAME}`.
    pub name: Spanned<String>,
    /// Its values.
    pub values: Vec<Spanned<String>>,
}

/// The most combinations of its axes a matrix with `exclude` or `include` may have (before exclusions): it is
/// expanded to apply them.
pub const MAX_ENTRY_MATRIX_COMBINATIONS: usize = 4096;
/// The most axes a matrix with `exclude` or `include` may have.
pub const MAX_ENTRY_MATRIX_AXES: usize = 32;
/// The most `exclude`s, and the most `include`s, of one matrix.
pub const MAX_MATRIX_ENTRIES: usize = 64;

/// One `exclude` or `include` of a matrix: axis names and values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixEntry {
    /// The pairs, in the order written.
    pub pairs: Vec<(Spanned<String>, Spanned<String>)>,
    /// The `exclude` or `include` keyword.
    #[serde(skip)]
    pub span: SourceSpan,
}

impl MatrixEntry {
    /// The combination an include names, with its values in the order of `axes`; `None` when it lacks an axis.
    pub fn combination(&self, axes: &[MatrixAxis]) -> Option<Vec<(String, String)>> {
        axes.iter()
            .map(|axis| {
                self.pairs
                    .iter()
                    .find(|(name, _)| name.value == axis.name.value)
                    .map(|(_, value)| (axis.name.value.clone(), value.value.clone()))
            })
            .collect()
    }

    /// Whether `combination` has every value of this entry.
    pub fn matches(&self, combination: &[(String, String)]) -> bool {
        self.pairs.iter().all(|(axis, value)| {
            combination
                .iter()
                .any(|(a, v)| *a == axis.value && *v == value.value)
        })
    }
}

/// `resources cpu="500m" memory="512Mi"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// CPU as written, e.g. `500m` or `2`.
    pub cpu: Option<String>,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
    /// Memory as written, e.g. `512Mi`.
    pub memory: Option<String>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// One `stage` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The stage name (before matrix expansion).
    pub name: Spanned<String>,
    /// Names of the stages it needs (before expansion).
    pub needs: Vec<Spanned<String>>,
    /// Those of `needs` given with `matrix="same"`: each instance needs only the instance of that stage with the
    /// same matrix values, not all of them.
    pub paired_needs: Vec<Spanned<String>>,
    /// Container image; `None` with no default runs on the host.
    pub image: Option<Spanned<Template>>,
    /// Commands, run in order in one shell session.
    pub run: Vec<Spanned<Template>>,
    /// Shell to run the commands with.
    pub shell: Option<Spanned<String>>,
    /// Working directory relative to the workspace.
    pub workdir: Option<Spanned<Template>>,
    /// Stage environment.
    pub env: Vec<EnvVar>,
    /// Secrets injected as environment variables.
    pub secrets: Vec<Spanned<String>>,
    /// Pipeline caches it uses.
    pub caches: Vec<Spanned<String>>,
    /// Paths collected after success and handed to dependents.
    pub artifacts: Vec<Spanned<Template>>,
    /// Names of the values it writes to `$BUILDIT_OUTPUT`, for the stages that need it.
    pub outputs: Vec<Spanned<String>>,
    /// Test reports read after each attempt, failed or not.
    pub reports: Vec<TestReport>,
    /// Time limit per attempt.
    pub timeout: Option<Spanned<Duration>>,
    /// Extra attempts after a failure.
    pub retry: Option<Spanned<u8>>,
    /// A failure does not fail the run.
    pub allow_failure: bool,
    /// Conditions; empty means always (on success of the needs).
    pub when: Vec<When>,
    /// Runs only when requested by name.
    pub manual: bool,
    /// Matrix expansion.
    pub matrix: Option<Matrix>,
    /// Explicit executor.
    pub executor: Option<Spanned<ExecutorKind>>,
    /// Resource requests.
    pub resources: Option<Resources>,
    /// Sidecar containers started before the stage and stopped after it.
    pub services: Vec<Service>,
    /// `concurrency group="..."`: at most one stage of the group at a time on one store, across runs.
    pub group: Option<ConcurrencyGroup>,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// A `reports` node of a stage: the test reports its attempts write, read after each attempt (a failed one
/// too: that is when they matter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// `junit=`: a glob, relative to the workspace, of JUnit XML files.
    pub junit: Spanned<Template>,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// A `service` of a stage: a container started before the stage, reachable by its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The name, also its host name on the run's network.
    pub name: Spanned<String>,
    /// Its image.
    pub image: Spanned<Template>,
    /// Its environment.
    pub env: Vec<EnvVar>,
    /// Its command; empty: the image's default.
    pub command: Vec<Spanned<String>>,
    /// Run inside it until it succeeds, before the stage starts: one value is a shell command (`sh -c`),
    /// several are a program and its arguments, run without a shell (for images that have none). Empty: none.
    pub ready: Vec<Spanned<String>>,
    /// How long `ready` may take.
    pub ready_timeout: Option<Spanned<Duration>>,
    /// The whole node.
    #[serde(skip)]
    pub span: SourceSpan,
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*`: names of pipelines, stages, caches and matrix axes.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Matrix values may also hold `/`, `:` and `+` (`ubuntu/22.04`, `node:20`, `1.0+git`).
pub(crate) fn is_valid_matrix_value(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '+'))
}
