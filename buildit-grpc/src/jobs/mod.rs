//! The runs queue: what a trigger puts in the store's job queue, and the in-process workers that claim those
//! jobs with leases and run them through the core's `Runner`.

mod reclaim;
mod watchdog;
mod worker;

pub(crate) use reclaim::release_gone_workers;
pub(crate) use worker::{Workers, worker_name};

use std::collections::BTreeMap;

use buildit_core::config::EventKind;
use buildit_core::config::parse_pipeline_with_includes;
use buildit_core::plan::ChangedFiles;
use buildit_core::runner::{LoadError, check_against_system, plan_for};
use buildit_core::source::SourceStore;
use buildit_core::system::SystemConfig;
use buildit_core::{Plan, RunContext};
use serde::{Deserialize, Serialize};

/// A tenant's uploaded archives: stored apart from every other tenant's, so a digest never reaches another
/// tenant's upload.
pub(crate) fn sources(
    data_dir: &std::path::Path,
    tenant: &str,
    system: &SystemConfig,
) -> SourceStore {
    SourceStore::new(data_dir.join("sources").join(tenant), system.sources)
}

/// The queue runs wait in.
pub(crate) const RUNS_QUEUE: &str = "runs";

/// A queued run, as the job's payload (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunJob {
    /// The run the trigger asked for (a restart of it after its daemon died has an id of its own).
    pub(crate) run_id: String,
    /// The pipeline's name (known once the trigger parsed it).
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) pipeline: String,
    pub(crate) file_name: String,
    pub(crate) branch: Option<String>,
    pub(crate) sha: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) stages: Vec<String>,
    /// The sha256 of an uploaded archive to unpack as the workspace.
    #[serde(default)]
    pub(crate) source: Option<String>,
    /// Whether the pipeline's `on` triggers decide if the run happens.
    #[serde(default)]
    pub(crate) match_triggers: bool,
    /// The files changed since the run's base, when known.
    #[serde(default)]
    pub(crate) changes: Option<JobChanges>,
    /// The files the pipeline includes, by their paths relative to its directory.
    #[serde(default)]
    pub(crate) includes: BTreeMap<String, String>,
}

/// [`buildit_core::plan::ChangedFiles`], as a job carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobChanges {
    pub(crate) base: String,
    pub(crate) paths: Vec<String>,
}

impl RunJob {
    /// The run context the job asks for.
    pub(crate) fn context(&self) -> Result<RunContext, String> {
        let mut context = RunContext::new();
        context.branch.clone_from(&self.branch);
        context.sha.clone_from(&self.sha);
        context.tag.clone_from(&self.tag);
        context.event = Some(match &self.event {
            Some(event) => event
                .parse::<EventKind>()
                .map_err(|_| format!("unknown event `{event}`"))?,
            None => EventKind::Manual,
        });
        context.env = self.env.clone();
        context.selected = self.stages.clone();
        context.match_triggers = self.match_triggers;
        context.changes = self
            .changes
            .as_ref()
            .map(|changes| ChangedFiles::new(changes.base.clone(), changes.paths.clone()));
        Ok(context)
    }

    /// The plan the job runs: parsed, checked against the daemon's system configuration and planned. The
    /// trigger refuses a job this refuses; a worker that gets a refusal saw the configuration change in between.
    pub(crate) fn plan(&self, system: &SystemConfig) -> Result<Plan, Refusal> {
        let pipeline = parse_pipeline_with_includes(&self.pipeline, &self.file_name, &mut |path| {
            self.includes.get(path).cloned().ok_or_else(|| {
                "it was not sent with the pipeline (`buildit pipelines trigger` sends the files it includes)"
                    .to_owned()
            })
        })
        .map_err(|error| Refusal::Load(LoadError::Config(error)))?;
        check_against_system(&pipeline, system).map_err(Refusal::Load)?;
        let context = self.context().map_err(Refusal::Context)?;
        plan_for(pipeline, system, context).map_err(Refusal::Load)
    }
}

/// Why a job's pipeline cannot be planned.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The pipeline, or the pipeline against the system configuration, is invalid; or the run cannot be planned.
    Load(LoadError),
    /// The job's context is not one (an unknown event).
    Context(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Load(error) => error.fmt(f),
            Self::Context(problem) => f.write_str(problem),
        }
    }
}
