//! The `Runner` builder: everything one run needs, and the start that records it and sets it going.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::cancel_requests::{CANCEL_POLL, cancel_on_request};
use super::error::RunnerError;
use super::groups::StoreGroups;
use super::handle::{RunHandle, RunJoiner};
use super::setup::RunSetup;
use crate::events::{EventBatch, EventBus};
use crate::exec::{Executor, RunIdentity, RunOptions, execute};
use crate::plan::Plan;
use crate::source::{FetchableSource, SourceStore, WorkspaceSource, prepare};
use crate::store::{
    MAX_BATCH_EVENTS, NewRun, RUN_STALE_AFTER, RunInputs, RunOwner, Store, record_run_reporting,
};

/// A run id unique on this machine: time and process, in hex.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// One run of a plan, wired for any frontend: the CLI, the daemon, an embedding program and the tests build it
/// the same way.
///
/// ```no_run
/// # async fn example(plan: buildit_core::Plan, store: std::sync::Arc<dyn buildit_core::store::Store>) -> Result<(), buildit_core::runner::RunnerError> {
/// use buildit_core::exec::AnyExecutor;
/// use buildit_core::runner::{Runner, new_run_id};
///
/// let mut runner = Runner::new(new_run_id(), plan, AnyExecutor::local(), store).workspace(".");
/// let mut events = runner.subscribe(1024);
/// let handle = runner.start().await?;
/// tokio::spawn(async move { while let Some(batch) = events.recv().await { /* draw it */ } });
/// let executed = handle.wait().await?;
/// println!("{:?}", executed.report.status);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Runner<E> {
    plan: Plan,
    executor: Arc<E>,
    store: Arc<dyn Store>,
    identity: RunIdentity,
    options: RunOptions,
    cancel: CancellationToken,
    /// The kill token given on its own, kept when options are given after it.
    kill: Option<CancellationToken>,
    /// A source to prepare into a directory that becomes the workspace.
    source: Option<(WorkspaceSource, SourceStore, PathBuf)>,
    owner: RunOwner,
    bus: EventBus,
    /// What a rerun of this run needs, recorded with it.
    inputs: Option<RunInputs>,
    /// The run this one reruns, recorded with it.
    retry_of: Option<String>,
}

impl<E: Executor> Runner<E> {
    /// A run of `plan` with id `run_id` (see [`new_run_id`]) on `executor`, recorded in `store`, in the current
    /// directory, with default options.
    pub fn new(run_id: impl Into<String>, plan: Plan, executor: E, store: Arc<dyn Store>) -> Self {
        let run_id = run_id.into();
        Self {
            bus: EventBus::new(run_id.clone()),
            identity: RunIdentity::new(run_id, 0, PathBuf::from(".")),
            plan,
            executor: Arc::new(executor),
            store,
            options: RunOptions::default(),
            cancel: CancellationToken::new(),
            kill: None,
            source: None,
            owner: RunOwner::this_process(),
            inputs: None,
            retry_of: None,
        }
    }

    /// The workspace directory stages run in.
    #[must_use]
    pub fn workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.identity.workspace = dir.into();
        self
    }

    /// Where the run's files come from. A git commit or an uploaded archive (from `sources`) is prepared into
    /// `into`, a fresh directory, when the run starts, before it is recorded: a source that cannot be prepared
    /// is an error of [`Runner::start`], and no run is recorded. That directory is then the workspace; it is
    /// the caller's to remove once the run is over (a host directory is used in place, as
    /// [`Runner::workspace`] does).
    #[must_use]
    pub fn source(
        mut self,
        source: WorkspaceSource,
        sources: SourceStore,
        into: impl Into<PathBuf>,
    ) -> Self {
        self.source = Some((source, sources, into.into()));
        self
    }

    /// How the run is executed (concurrency, fail-fast, grace, artifact and cache stores). A token given with
    /// [`Runner::kill_token`], before or after, takes the place of its `kill`.
    #[must_use]
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        if let Some(kill) = &self.kill {
            self.options.kill = kill.clone();
        }
        self
    }

    /// Secret values by name, for the stages that ask for them (masked in every event).
    #[must_use]
    pub fn secrets(mut self, secrets: std::collections::BTreeMap<String, String>) -> Self {
        self.identity.secrets = secrets;
        self
    }

    /// Secrets, scrubbed environment, artifact and cache stores, from [`RunSetup::from_system`]; it replaces
    /// the stores [`Runner::options`] gave.
    #[must_use]
    pub fn setup(mut self, setup: RunSetup) -> Self {
        self.identity.secrets = setup.secrets;
        self.identity.scrub_env = setup.scrub_env;
        self.options.artifacts = setup.artifacts;
        self.options.caches = setup.caches;
        self
    }

    /// Cancelled to stop the run gracefully: nothing new starts, running stages get the grace period.
    #[must_use]
    pub fn cancel_token(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Cancelled to cut every grace period short (a second Ctrl-C).
    #[must_use]
    pub fn kill_token(mut self, kill: CancellationToken) -> Self {
        self.options.kill = kill.clone();
        self.kill = Some(kill);
        self
    }

    /// Who runs it, as the store records it (this process by default).
    #[must_use]
    pub fn owner(mut self, owner: RunOwner) -> Self {
        self.owner = owner;
        self
    }

    /// What the run was started from (its file and flags), recorded with it so that `buildit runs retry` can
    /// start it again.
    #[must_use]
    pub fn inputs(mut self, inputs: RunInputs) -> Self {
        self.inputs = Some(inputs);
        self
    }

    /// Records that this run reruns the run `run_id` (or reuses its stages).
    #[must_use]
    pub fn retry_of(mut self, run_id: impl Into<String>) -> Self {
        self.retry_of = Some(run_id.into());
        self
    }

    /// How many batches a display subscriber may fall behind before it skips (default 4,096). Set it before
    /// subscribing: it starts the run's event bus anew.
    #[must_use]
    pub fn display_capacity(mut self, capacity: usize) -> Self {
        self.bus = EventBus::with_display_capacity(self.identity.run_id.clone(), capacity);
        self
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.identity.run_id
    }

    /// A subscriber that receives every event and slows the run when it falls more than `capacity` batches
    /// behind: for output where every line matters (logs, JSON). Subscribe before [`Runner::start`].
    pub fn subscribe(&mut self, capacity: usize) -> mpsc::Receiver<EventBatch> {
        self.bus.subscribe_lossless(capacity)
    }

    /// A display subscriber that never slows the run and is told how much it skipped when it falls behind.
    /// Subscribed here, it sees the run from its first event.
    pub fn subscribe_display(&self) -> broadcast::Receiver<EventBatch> {
        self.bus.subscribe_display()
    }

    /// Marks runs whose runner died as interrupted, records this run (which gives it its number), and starts
    /// it. A store that cannot take the run stops it here, before anything executes.
    pub async fn start(mut self) -> Result<RunHandle, RunnerError> {
        if let Some((source, sources, into)) = self.source.take() {
            self.identity.workspace = prepare(&source, &sources, &into).await?;
            self.identity.source = FetchableSource::new(&source, &sources);
        }
        self.store
            .mark_interrupted(&self.owner, RUN_STALE_AFTER)
            .await?;
        let context = self.plan.context();
        let record = self
            .store
            .create_run(&NewRun {
                id: self.identity.run_id.clone(),
                pipeline: self.plan.pipeline().name.value.clone(),
                owner: self.owner.clone(),
                sha: context.sha.clone(),
                branch: context.branch.clone(),
                event: context.event.map(|event| event.as_str().to_owned()),
                inputs: self.inputs.take(),
                retry_of: self.retry_of.take(),
            })
            .await?;
        self.identity.run_number = record.number;
        let (progress, recorded) = tokio::sync::watch::channel(0);
        let recorder = tokio::spawn(record_run_reporting(
            Arc::clone(&self.store),
            self.identity.run_id.clone(),
            self.bus.subscribe_lossless(MAX_BATCH_EVENTS),
            progress,
        ));
        // Concurrency groups are held in the run's store, unless the caller gave its own way to hold them.
        let has_groups =
            self.plan.group().is_some() || self.plan.stages().iter().any(|s| s.group().is_some());
        if has_groups && self.options.groups.is_none() {
            self.options.groups = Some(Arc::new(StoreGroups::new(
                Arc::clone(&self.store),
                self.identity.run_id.clone(),
                self.owner.clone(),
            )));
        }
        let subscribers = self.bus.subscriptions();
        let joiner = RunJoiner::new(Arc::clone(&self.store), subscribers.clone(), recorded);
        let Self {
            plan,
            executor,
            identity,
            options,
            cancel,
            bus,
            store,
            ..
        } = self;
        let kill = options.kill.clone();
        let run_cancel = cancel.clone();
        // Another process may ask the store to cancel this run (`buildit runs cancel`): polled until it ends.
        let executed = CancellationToken::new();
        let requested = CancellationToken::new();
        tokio::spawn(cancel_on_request(
            Arc::clone(&store),
            identity.run_id.clone(),
            CANCEL_POLL,
            cancel.clone(),
            requested.clone(),
            executed.clone(),
        ));
        let execution = tokio::spawn(async move {
            let report = execute(&plan, executor, &identity, &options, &bus, &run_cancel).await;
            executed.cancel();
            // The bus goes with the run: subscribers see the end of the stream once the last event is out.
            drop(bus);
            (report, plan)
        });
        Ok(RunHandle::new(
            record,
            subscribers,
            joiner,
            cancel,
            kill,
            execution,
            recorder,
        )
        .cancelled_through_store(requested))
    }
}
