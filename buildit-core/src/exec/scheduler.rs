//! The scheduler: in-degree readiness, a concurrency limit, retries, timeouts, skips, fail-fast and cancellation.
//! It never prints; everything it does is an event.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::artifacts::ArtifactStore;
use super::cache::{CacheHit, CacheStore, ResolvedCache};
use super::executor::{Executor, ExitStatus, NoteSender, StageSpec};
use super::lines::LineSplitter;
use super::mask::SecretMasker;
use super::spec::{
    DEFAULT_GRACE, RunIdentity, artifact_patterns, resolve_caches, retries, stage_spec,
};
use crate::config::WhenStatus;
use crate::events::{
    EventBus, FailureKind, LogStreamKind, PlannedInstance, RunEventKind, RunStatus, StageCounts,
    StageOutcome,
};
use crate::paths::{inside_workspace, outermost};
use crate::plan::Plan;

/// How a run is executed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most stages running at once; `None` uses the pipeline's `concurrency`, else the number of CPUs.
    pub concurrency: Option<usize>,
    /// Cancel everything still running at the first failure (instead of only skipping dependents).
    pub fail_fast: bool,
    /// Time between the graceful stop and the kill.
    pub grace: Duration,
    /// How long to wait for output after a stage's process ended (a daemonised child may hold its pipes).
    pub log_drain: Duration,
    /// Cancelled to cut every grace period short: stages being stopped are killed at once (a second Ctrl-C).
    pub kill: CancellationToken,
    /// Where artifacts are collected after a stage succeeds and restored from before its dependents run;
    /// `None` leaves them where the stages wrote them.
    pub artifacts: Option<ArtifactStore>,
    /// Where caches are kept; `None` disables them.
    pub caches: Option<CacheStore>,
    /// The home directory, for cache paths written `~/...`.
    pub home: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: None,
            fail_fast: false,
            grace: DEFAULT_GRACE,
            log_drain: Duration::from_secs(5),
            kill: CancellationToken::new(),
            artifacts: None,
            caches: None,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// What happened to one stage instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    /// Instance name.
    pub name: String,
    /// Final outcome.
    pub outcome: StageOutcome,
    /// Attempts made (0 if it never started).
    pub attempts: u32,
    /// Exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// Why, for skips, timeouts and errors.
    pub reason: Option<String>,
    /// Why it failed, for machines (see [`RunEventKind::StageFinished`]).
    pub failure: Option<FailureKind>,
    /// When its first attempt started, from the start of the run.
    pub started: Option<Duration>,
    /// When it finished, from the start of the run.
    pub finished: Duration,
}

impl StageReport {
    /// A stage that made no attempt (skipped, or lost to an internal error), with why.
    fn not_run(
        name: &str,
        outcome: StageOutcome,
        failure: Option<FailureKind>,
        reason: String,
        finished: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            outcome,
            attempts: 0,
            exit_code: None,
            reason: Some(reason),
            failure,
            started: None,
            finished,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub status: RunStatus,
    /// Every stage, in plan order of positions ([`Plan::stages`]).
    pub stages: Vec<StageReport>,
    /// Wall time.
    pub duration: Duration,
    /// What the executor could not release when the run ended (left for the next run's sweep, or `buildit gc`).
    pub cleanup: Option<String>,
}

impl RunReport {
    /// The chain of needs that ended last: the stages that decided the run's duration.
    pub fn critical_path(&self, plan: &Plan) -> Vec<usize> {
        let ran = |position: usize| self.stages[position].started.is_some();
        let Some(mut current) = (0..self.stages.len())
            .filter(|&p| ran(p))
            .max_by_key(|&p| self.stages[p].finished)
        else {
            return Vec::new();
        };
        let mut path = vec![current];
        while let Some(previous) = plan.stages()[current]
            .needs()
            .iter()
            .copied()
            .filter(|&need| ran(need))
            .max_by_key(|&need| self.stages[need].finished)
        {
            path.push(previous);
            current = previous;
        }
        path.reverse();
        path
    }
}

/// The end of one attempt.
struct Attempt {
    outcome: StageOutcome,
    exit_code: Option<i32>,
    reason: Option<String>,
    failure: Option<FailureKind>,
}

impl Attempt {
    /// An attempt that failed before or around its commands, for `failure`'s reason.
    fn failed(failure: FailureKind, reason: String) -> Self {
        Self {
            outcome: StageOutcome::Failed,
            exit_code: None,
            reason: Some(reason),
            failure: Some(failure),
        }
    }
}

/// Runs `plan` on `executor`. `cancel` stops the run gracefully: nothing new starts, running stages are
/// cancelled with the grace period, and the run ends `cancelled`.
pub async fn execute<E: Executor>(
    plan: &Plan,
    executor: Arc<E>,
    run: &RunIdentity,
    options: &RunOptions,
    bus: &EventBus,
    cancel: &CancellationToken,
) -> RunReport {
    let started = Instant::now();
    let stages = plan.stages();
    let count = stages.len();
    let concurrency = options
        .concurrency
        .or_else(|| plan.concurrency().map(|c| c as usize))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // The run's own stop: the user's cancel, or fail-fast.
    let stop = cancel.child_token();
    // Shared by every stage task (a plan's clones share it).
    let shared_plan = plan.clone();
    let run = Arc::new(run.clone());
    let masker = Arc::new(SecretMasker::new(run.secrets.values().map(String::as_str)));
    // Secrets that cannot be masked are never handed to a stage: each stage that asks for one fails before it
    // starts, with the reason (never the value), and the run fails.
    let unmaskable: HashMap<&str, String> = run
        .secrets
        .iter()
        .filter_map(|(name, value)| {
            super::mask::unmaskable(value).map(|why| {
                (
                    name.as_str(),
                    format!("secret `{name}` {why}; BuildIt does not hand it to the stage"),
                )
            })
        })
        .collect();
    let order_index: HashMap<usize, usize> = plan
        .order_positions()
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i))
        .collect();

    bus.emit(RunEventKind::RunStarted {
        pipeline: plan.pipeline().name.value.clone(),
        stages: u32::try_from(count).unwrap_or(u32::MAX),
        plan: planned_instances(plan),
    })
    .await;
    bus.emit_all(plan.order().map(|stage| RunEventKind::StageQueued {
        stage: stage.name().to_owned(),
    }))
    .await;

    let mut reports: Vec<Option<StageReport>> = vec![None; count];
    let mut waiting_needs: Vec<usize> = stages.iter().map(|stage| stage.needs().len()).collect();
    // Ready stages, by their place in the plan's order.
    let mut ready: BTreeSet<(usize, usize)> = (0..count)
        .filter(|&p| waiting_needs[p] == 0)
        .map(|p| (order_index[&p], p))
        .collect();
    let mut running: JoinSet<(usize, StageReport)> = JoinSet::new();
    let mut fail_fast_triggered = false;
    let mut task_positions: HashMap<tokio::task::Id, usize> = HashMap::new();
    // Stages whose cache paths or artifacts overlap run one after the other: a ready stage waits in `held`
    // while a running stage holds an overlapping path.
    let mut locks = super::exclusion::PathLocks::new(plan, &run, options);
    let mut held: Vec<(usize, usize)> = Vec::new();

    loop {
        while running.len() < concurrency {
            let Some((order, position)) = ready.pop_first() else {
                break;
            };
            let stage = &stages[position];
            let decision = if stop.is_cancelled() {
                Err(if cancel.is_cancelled() {
                    "run cancelled"
                } else {
                    "fail-fast: another stage failed"
                }
                .to_owned())
            } else if let Some(reason) = stage.skip_reason() {
                Err(reason.to_string())
            } else {
                decide(plan, position, &reports)
            };
            let refused = decision
                .is_ok()
                .then(|| {
                    plan.definition(stage)
                        .secrets
                        .iter()
                        .find_map(|secret| unmaskable.get(secret.value.as_str()))
                })
                .flatten();
            if let Some(reason) = refused {
                let report = StageReport::not_run(
                    stage.name(),
                    StageOutcome::Failed,
                    Some(FailureKind::Config),
                    reason.clone(),
                    started.elapsed(),
                );
                bus.emit(RunEventKind::StageFinished {
                    stage: report.name.clone(),
                    attempt: 0,
                    outcome: StageOutcome::Failed,
                    exit_code: None,
                    duration_ms: 0,
                    reason: Some(reason.clone()),
                    failure: Some(FailureKind::Config),
                    retrying: false,
                })
                .await;
                if options.fail_fast && !fail_fast_triggered {
                    fail_fast_triggered = true;
                    stop.cancel();
                }
                complete(
                    plan,
                    position,
                    report,
                    &mut reports,
                    &mut waiting_needs,
                    &mut ready,
                    &order_index,
                );
                continue;
            }
            match decision {
                Err(reason) => {
                    let report = StageReport::not_run(
                        stage.name(),
                        StageOutcome::Skipped,
                        None,
                        reason.clone(),
                        started.elapsed(),
                    );
                    bus.emit(RunEventKind::StageFinished {
                        stage: report.name.clone(),
                        attempt: 0,
                        outcome: StageOutcome::Skipped,
                        exit_code: None,
                        duration_ms: 0,
                        reason: Some(reason),
                        failure: None,
                        retrying: false,
                    })
                    .await;
                    complete(
                        plan,
                        position,
                        report,
                        &mut reports,
                        &mut waiting_needs,
                        &mut ready,
                        &order_index,
                    );
                }
                // Skips and refusals above never wait: only a stage that is about to run needs its paths.
                Ok(()) if locks.blocked(position) => held.push((order, position)),
                Ok(()) => {
                    let task = StageTask {
                        plan: shared_plan.clone(),
                        position,
                        executor: Arc::clone(&executor),
                        run: Arc::clone(&run),
                        options: options.clone(),
                        bus: bus.clone(),
                        stop: stop.clone(),
                        masker: Arc::clone(&masker),
                        run_started: started,
                    };
                    let handle = running.spawn(async move { (position, task.run().await) });
                    task_positions.insert(handle.id(), position);
                    locks.acquire(position);
                }
            }
        }
        let Some(joined) = running.join_next().await else {
            // Nothing runs, so nothing holds a stage back.
            ready.extend(held.drain(..));
            if ready.is_empty() {
                break;
            }
            continue;
        };
        let (position, report) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                // A stage task panicked: the stage failed for BuildIt's reasons, and the run stops.
                let Some(&position) = task_positions.get(&error.id()) else {
                    stop.cancel();
                    continue;
                };
                let report = StageReport::not_run(
                    plan.stages()[position].name(),
                    StageOutcome::Failed,
                    Some(FailureKind::Infrastructure),
                    format!("internal error: {error}"),
                    started.elapsed(),
                );
                // Every subscriber learns how the stage ended, as for any other stage.
                bus.emit(RunEventKind::StageFinished {
                    stage: report.name.clone(),
                    attempt: 0,
                    outcome: report.outcome,
                    exit_code: None,
                    duration_ms: 0,
                    reason: report.reason.clone(),
                    failure: report.failure,
                    retrying: false,
                })
                .await;
                stop.cancel();
                (position, report)
            }
        };
        // The stage's paths are free again (also after a panicked task): what waited for them gets its turn.
        if locks.release(position) {
            ready.extend(held.drain(..));
        }
        if report.outcome.is_failure() && options.fail_fast && !fail_fast_triggered {
            fail_fast_triggered = true;
            stop.cancel();
        }
        complete(
            plan,
            position,
            report,
            &mut reports,
            &mut waiting_needs,
            &mut ready,
            &order_index,
        );
    }

    let stages: Vec<StageReport> = reports
        .into_iter()
        .enumerate()
        .map(|(position, report)| {
            report.unwrap_or_else(|| {
                StageReport::not_run(
                    plan.stages()[position].name(),
                    StageOutcome::Skipped,
                    None,
                    "never became ready".to_owned(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let status = if cancel.is_cancelled() {
        RunStatus::Cancelled
    } else if stages
        .iter()
        .any(|s| s.outcome.is_failure() || s.outcome == StageOutcome::Cancelled)
    {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    // What the executor kept for the run (a workspace volume) goes before the run is reported finished.
    let cleanup = executor
        .release_run(&run.run_id)
        .await
        .err()
        .map(|error| format!("cannot remove what the run left: {error}"));
    let duration = started.elapsed();
    let report = RunReport {
        status,
        stages,
        duration,
        cleanup,
    };
    let mut counts = StageCounts::default();
    let mut failures = std::collections::BTreeMap::new();
    for stage in &report.stages {
        counts.add(stage.outcome);
        if stage.outcome.is_failure() {
            let kind = stage.failure.unwrap_or(FailureKind::Infrastructure);
            *failures.entry(kind).or_insert(0u32) += 1;
        }
    }
    bus.emit(RunEventKind::RunFinished {
        status,
        duration_ms: millis(duration),
        counts,
        failures,
        critical_path: report
            .critical_path(plan)
            .into_iter()
            .map(|position| report.stages[position].name.clone())
            .collect(),
    })
    .await;
    report
}

/// The plan's instances as events carry them: in the plan's order, needs as indexes into that order.
fn planned_instances(plan: &Plan) -> Vec<PlannedInstance> {
    let order = plan.order_positions();
    let mut index_of = vec![0u32; plan.stages().len()];
    for (index, &position) in order.iter().enumerate() {
        index_of[position] = u32::try_from(index).unwrap_or(u32::MAX);
    }
    plan.order()
        .map(|stage| PlannedInstance {
            name: stage.name().to_owned(),
            needs: stage.needs().iter().map(|&need| index_of[need]).collect(),
            level: u32::try_from(stage.level()).unwrap_or(u32::MAX),
        })
        .collect()
}

/// Records a finished stage and releases the dependents whose needs are now all done.
fn complete(
    plan: &Plan,
    position: usize,
    report: StageReport,
    reports: &mut [Option<StageReport>],
    waiting_needs: &mut [usize],
    ready: &mut BTreeSet<(usize, usize)>,
    order_index: &HashMap<usize, usize>,
) {
    reports[position] = Some(report);
    for dependent in plan.dependents(position) {
        waiting_needs[dependent] -= 1;
        if waiting_needs[dependent] == 0 {
            ready.insert((order_index[&dependent], dependent));
        }
    }
}

/// Whether a stage whose needs are all done runs, from their outcomes and its `when` statuses.
fn decide(plan: &Plan, position: usize, reports: &[Option<StageReport>]) -> Result<(), String> {
    let stage = &plan.stages()[position];
    let outcomes: Vec<StageOutcome> = stage
        .needs()
        .iter()
        .filter_map(|&need| reports[need].as_ref().map(|report| report.outcome))
        .collect();
    let failed = outcomes.iter().any(|outcome| outcome.is_failure());
    let cancelled = outcomes.contains(&StageOutcome::Cancelled);
    let skipped = outcomes.contains(&StageOutcome::Skipped);
    let all_succeeded = !failed && !cancelled && !skipped;
    let runs = stage.run_on().iter().any(|status| match status {
        WhenStatus::Success => all_succeeded,
        WhenStatus::Failure => failed,
        WhenStatus::Always => true,
    });
    if runs {
        return Ok(());
    }
    Err(
        if failed && !stage.run_on().contains(&WhenStatus::Failure) {
            "dependency failed"
        } else if cancelled {
            "dependency cancelled"
        } else if skipped {
            "dependency skipped"
        } else {
            "no dependency failed"
        }
        .to_owned(),
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One stage instance, with everything its attempts need.
struct StageTask<E> {
    plan: Plan,
    position: usize,
    executor: Arc<E>,
    run: Arc<RunIdentity>,
    options: RunOptions,
    bus: EventBus,
    stop: CancellationToken,
    masker: Arc<SecretMasker>,
    run_started: Instant,
}

impl<E: Executor> StageTask<E> {
    async fn run(self) -> StageReport {
        let stage = &self.plan.stages()[self.position];
        let name = stage.name().to_owned();
        let attempts_allowed = 1 + retries(&self.plan, stage);
        let allow_failure = self.plan.definition(stage).allow_failure;
        let first_start = self.run_started.elapsed();
        let mut last = Attempt {
            outcome: StageOutcome::Cancelled,
            exit_code: None,
            reason: Some("run cancelled".to_owned()),
            failure: Some(FailureKind::Cancelled),
        };
        let mut attempts = 0;
        let mut caches: Vec<ResolvedCache> = Vec::new();
        for attempt in 1..=attempts_allowed {
            if self.stop.is_cancelled() {
                break;
            }
            attempts = attempt;
            self.bus
                .emit(RunEventKind::StageStarted {
                    stage: name.clone(),
                    attempt,
                })
                .await;
            let attempt_started = Instant::now();
            last = match stage_spec(&self.plan, stage, &self.run, attempt) {
                // Boxed: an attempt's future is large, and the stage task's own future, moved into the task
                // set for every stage, stays small.
                Ok(spec) => Box::pin(self.attempt(attempt, spec, &mut caches)).await,
                Err(error) => Attempt::failed(FailureKind::Config, error.0),
            };
            let retrying = last.outcome.is_failure()
                && attempt < attempts_allowed
                && !self.stop.is_cancelled();
            if last.outcome.is_failure() && !retrying && allow_failure {
                last.outcome = StageOutcome::FailedAllowed;
            }
            last.reason = last.reason.map(|reason| self.masker.mask(&reason));
            self.bus
                .emit(RunEventKind::StageFinished {
                    stage: name.clone(),
                    attempt,
                    outcome: last.outcome,
                    exit_code: last.exit_code,
                    duration_ms: millis(attempt_started.elapsed()),
                    reason: last.reason.clone(),
                    failure: last.failure,
                    retrying,
                })
                .await;
            if !retrying {
                break;
            }
        }
        if attempts == 0 {
            // Stopped before its first attempt: still reported, so that every queued stage finishes.
            self.bus
                .emit(RunEventKind::StageFinished {
                    stage: name.clone(),
                    attempt: 0,
                    outcome: StageOutcome::Skipped,
                    exit_code: None,
                    duration_ms: 0,
                    reason: last.reason.clone(),
                    failure: None,
                    retrying: false,
                })
                .await;
            last.outcome = StageOutcome::Skipped;
            last.failure = None;
        }
        StageReport {
            name,
            outcome: last.outcome,
            attempts,
            exit_code: last.exit_code,
            reason: last.reason,
            failure: last.failure,
            started: (attempts > 0).then_some(first_start),
            finished: self.run_started.elapsed(),
        }
    }

    /// Runs what comes before an attempt's commands (`work`) against the attempt's deadline and the run's stop,
    /// writing the executor's notes (image pulls) to the log as they come.
    async fn while_starting<T>(
        &self,
        attempt: u32,
        work: impl Future<Output = T>,
        deadline: &mut (impl Future<Output = ()> + Unpin),
        noted: &mut Option<tokio::sync::mpsc::Receiver<String>>,
        timeout: Option<Duration>,
    ) -> Result<T, Attempt> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                Some(note) = next_note(noted) => self.note(attempt, note).await,
                () = &mut *deadline => return Err(Attempt {
                    outcome: StageOutcome::TimedOut,
                    exit_code: None,
                    reason: timeout.map(|t| {
                        format!("timed out after {} while starting", crate::config::format_duration(t))
                    }),
                    failure: Some(FailureKind::Timeout),
                }),
                () = self.stop.cancelled() => return Err(Attempt {
                    outcome: StageOutcome::Cancelled,
                    exit_code: None,
                    reason: Some("cancelled while starting".to_owned()),
                    failure: Some(FailureKind::Cancelled),
                }),
            }
        }
    }

    /// One attempt: caches (first attempt only, into `caches` for saving) and the needs' artifacts restored, the
    /// commands run, and on success the artifacts collected and new caches saved.
    async fn attempt(
        &self,
        attempt: u32,
        spec: StageSpec,
        caches: &mut Vec<ResolvedCache>,
    ) -> Attempt {
        let stage = &self.plan.stages()[self.position];
        let failed = |reason: String| Attempt::failed(FailureKind::Infrastructure, reason);
        let timeout = spec.timeout;
        let mut spec = spec;
        // A container executor may pull images first: what it reports goes to the log as it happens.
        let mut noted = spec.image.is_some().then(|| {
            let (notes, noted) = NoteSender::channel();
            spec.notes = Some(notes);
            noted
        });
        // A workspace the host cannot see (a container executor's volume): artifacts and caches move through
        // the executor, which a copy of the spec points at.
        let remote = (!self.executor.workspace_on_host(&spec)).then(|| spec.clone());
        let remote = remote.as_ref();
        // Starting can take long (restoring caches and artifacts into a container's workspace, pulling images,
        // starting services and waiting for them): it counts against the timeout and gives way to
        // cancellation. What a container executor created before it was interrupted carries the run's label
        // for the run's sweep.
        let starting = Instant::now();
        let deadline = sleep_or_forever(timeout);
        tokio::pin!(deadline);
        let prepare = async {
            // Caches are restored once, as part of the first attempt (its log says what was restored).
            if attempt == 1 {
                *caches = self.restore_caches(remote).await?;
            }
            self.restore_artifacts(remote).await
        };
        match self
            .while_starting(attempt, prepare, &mut deadline, &mut noted, timeout)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return failed(reason),
            Err(ended) => return ended,
        }
        let spawned = match self
            .while_starting(
                attempt,
                self.executor.spawn(spec),
                &mut deadline,
                &mut noted,
                timeout,
            )
            .await
        {
            Ok(spawned) => spawned,
            Err(ended) => return ended,
        };
        if let Some(noted) = &mut noted {
            while let Ok(note) = noted.try_recv() {
                self.note(attempt, note).await;
            }
        }
        // Nobody reads notes any more: a later one (a transfer after the commands) is dropped, never waited on.
        drop(noted);
        let handle = match spawned {
            Ok(handle) => handle,
            Err(error) => return Attempt::failed(error.failure_kind(), error.to_string()),
        };
        let remaining = timeout.map(|t| t.saturating_sub(starting.elapsed()));
        // Without its output an attempt still runs to its end; the log says why it is missing.
        let logs = match self.executor.logs(&handle).await {
            Ok(logs) => Some(logs),
            Err(error) => {
                self.bus
                    .emit(RunEventKind::LogLine {
                        stage: stage.name().to_owned(),
                        attempt,
                        stream: LogStreamKind::Stderr,
                        text: format!("buildit: cannot read the output of this attempt: {error}"),
                    })
                    .await;
                None
            }
        };
        let progress = Arc::new(AtomicU64::new(0));
        let pump = logs.map(|logs| {
            tokio::spawn(pump_lines(
                logs,
                self.bus.clone(),
                stage.name().to_owned(),
                attempt,
                Arc::clone(&self.masker),
                Arc::clone(&progress),
            ))
        });
        enum Ended {
            Exited(Result<ExitStatus, (FailureKind, String)>),
            TimedOut,
            Cancelled,
        }
        let ended = tokio::select! {
            status = self.executor.wait(&handle) => {
                Ended::Exited(status.map_err(|e| (e.failure_kind(), e.to_string())))
            }
            () = sleep_or_forever(remaining) => Ended::TimedOut,
            () = self.stop.cancelled() => Ended::Cancelled,
        };
        if matches!(ended, Ended::TimedOut | Ended::Cancelled) {
            let grace = if self.options.kill.is_cancelled() {
                Duration::ZERO
            } else {
                self.options.grace
            };
            let stopped = tokio::select! {
                result = self.executor.cancel(&handle, grace) => result,
                () = self.options.kill.cancelled() => self.executor.cancel(&handle, Duration::ZERO).await,
            };
            if let Err(error) = stopped {
                return failed(format!("cannot stop the stage: {error}"));
            }
        }
        if let Some(mut pump) = pump {
            // Output is complete once every pipe has closed. A slow subscriber only slows this down (every line
            // still arrives before the stage is reported finished); but a process that left the stage's
            // process group (`setsid`) may hold a pipe open forever, so reading stops once no output has moved
            // for the drain period.
            loop {
                let before = progress.load(Ordering::Relaxed);
                if tokio::time::timeout(self.options.log_drain, &mut pump)
                    .await
                    .is_ok()
                {
                    break;
                }
                if progress.load(Ordering::Relaxed) == before {
                    pump.abort();
                    self.note(
                        attempt,
                        "buildit: stopped reading this stage's output: a process that left its process group still holds it open".to_owned(),
                    )
                    .await;
                    break;
                }
            }
        }
        match ended {
            Ended::Exited(Ok(status)) if status.success() => {
                match self.collect_artifacts(remote).await {
                    Ok(()) => {
                        if !caches.is_empty() {
                            // Before the stage is reported finished, so that its cache notes belong to its log.
                            self.save_caches(caches.clone(), attempt, remote).await;
                        }
                        Attempt {
                            outcome: StageOutcome::Succeeded,
                            exit_code: Some(0),
                            reason: None,
                            failure: None,
                        }
                    }
                    Err((failure, reason)) => Attempt {
                        outcome: StageOutcome::Failed,
                        exit_code: Some(0),
                        reason: Some(reason),
                        failure: Some(failure),
                    },
                }
            }
            Ended::Exited(Ok(status)) => Attempt {
                outcome: StageOutcome::Failed,
                exit_code: status.code,
                reason: Some(match (status.code, status.signal, status.oom_killed) {
                    (_, _, true) => "killed: out of memory".to_owned(),
                    (Some(code), _, _) => format!("exited with code {code}"),
                    (None, Some(signal), _) => format!("killed by signal {signal}"),
                    (None, None, _) => "ended without an exit code".to_owned(),
                }),
                failure: Some(if status.oom_killed {
                    FailureKind::OutOfMemory
                } else {
                    FailureKind::ExitCode
                }),
            },
            Ended::Exited(Err((failure, error))) => Attempt::failed(failure, error),
            Ended::TimedOut => Attempt {
                outcome: StageOutcome::TimedOut,
                exit_code: None,
                reason: timeout
                    .map(|t| format!("timed out after {}", crate::config::format_duration(t))),
                failure: Some(FailureKind::Timeout),
            },
            Ended::Cancelled => Attempt {
                outcome: StageOutcome::Cancelled,
                exit_code: None,
                reason: Some("cancelled".to_owned()),
                failure: Some(FailureKind::Cancelled),
            },
        }
    }
}

impl<E: Executor> StageTask<E> {
    /// A line in the stage's log from BuildIt itself (cache hits and misses), on stderr.
    async fn note(&self, attempt: u32, text: String) {
        self.bus
            .emit(RunEventKind::LogLine {
                stage: self.plan.stages()[self.position].name().to_owned(),
                attempt,
                stream: LogStreamKind::Stderr,
                text: self.masker.mask(&text),
            })
            .await;
    }

    /// Restores the stage's caches before its first attempt; returns them, resolved, for saving afterwards.
    /// With a `remote` workspace, caches are unpacked on the host first and then copied in; only paths inside
    /// the workspace can be cached there (the log says which paths were left out).
    async fn restore_caches(
        &self,
        remote: Option<&StageSpec>,
    ) -> Result<Vec<ResolvedCache>, String> {
        let Some(store) = self.options.caches.clone() else {
            return Ok(Vec::new());
        };
        if self
            .plan
            .definition(&self.plan.stages()[self.position])
            .caches
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let plan = self.plan.clone();
        let run = Arc::clone(&self.run);
        let position = self.position;
        let home = self.options.home.clone();
        let (staging, target) = self
            .host_side(remote)
            .map_err(|error| format!("cache restore failed: {error}"))?;
        let in_container = staging.is_some();
        let restored = tokio::task::spawn_blocking(move || {
            let mut caches = resolve_caches(&plan, &plan.stages()[position], &run).map_err(|error| error.0)?;
            let mut notes = Vec::new();
            let mut hits = 0;
            for cache in &mut caches {
                if in_container {
                    cache.paths.retain(|path| {
                        let inside = inside_workspace(std::path::Path::new(path)).is_some();
                        if !inside {
                            notes.push(format!(
                                "buildit: cache `{}`: `{path}` is outside the workspace, which a container stage cannot cache; it is left out",
                                cache.name
                            ));
                        }
                        inside
                    });
                }
                // `~/` means the host's home only when the stage runs on the host.
                let home = if in_container { None } else { home.as_deref() };
                // A cache is an optimisation: one that cannot be restored is reported, and the stage runs
                // without it.
                let hit = match store.restore(cache, &target, home) {
                    Ok(hit) => hit,
                    Err(error) => {
                        notes.push(format!("buildit: cache `{}` not restored: {error}", cache.name));
                        continue;
                    }
                };
                hits += usize::from(hit != CacheHit::Miss);
                notes.push(match hit {
                    CacheHit::Exact => format!("buildit: cache `{}` restored (key `{}`)", cache.name, cache.key),
                    CacheHit::Prefix(prefix) => {
                        format!("buildit: cache `{}` restored from the newest key starting with `{prefix}`", cache.name)
                    }
                    CacheHit::Miss => format!("buildit: cache `{}` not found (key `{}`)", cache.name, cache.key),
                });
            }
            Ok::<_, String>((caches, notes, hits))
        })
        .await
        .unwrap_or_else(|error| Err(format!("cache restore failed: {error}")))?;
        let (caches, notes, hits) = restored;
        for note in notes {
            self.note(1, note).await;
        }
        if let (Some(spec), Some(staging), true) = (remote, &staging, hits > 0)
            && let Err(error) = self.executor.put_files(spec, staging.path()).await
        {
            self.note(1, format!("buildit: caches not restored: {error}"))
                .await;
        }
        Ok(caches)
    }

    /// Saves caches whose key is new, after the stage succeeded. A cache that cannot be saved is reported, not
    /// fatal: the stage's own work succeeded.
    async fn save_caches(
        &self,
        mut caches: Vec<ResolvedCache>,
        attempt: u32,
        remote: Option<&StageSpec>,
    ) {
        let Some(store) = self.options.caches.clone() else {
            return;
        };
        // A key that is saved already is never saved again: nothing to copy out for it.
        caches.retain(|cache| !store.contains(&cache.key));
        if caches.is_empty() {
            return;
        }
        let mut notes = Vec::new();
        // Each cache with the directory its paths are found in: the workspace, or (with a `remote` workspace)
        // a staging directory of its own, so that one cache that cannot be copied out does not stop the others.
        let mut sources: Vec<(ResolvedCache, PathBuf)> = Vec::new();
        let mut staging = None;
        match remote {
            None => sources.extend(
                caches
                    .into_iter()
                    .map(|cache| (cache, self.run.workspace.clone())),
            ),
            Some(spec) => {
                let dir = match staging_dir() {
                    Ok(dir) => dir,
                    Err(error) => {
                        self.note(attempt, format!("buildit: caches not saved: {error}"))
                            .await;
                        return;
                    }
                };
                for (index, cache) in caches.into_iter().enumerate() {
                    let into = dir.path().join(index.to_string());
                    // Restoring left only paths inside the workspace; the executor copies nested ones once.
                    let paths: Vec<PathBuf> = cache.paths.iter().map(PathBuf::from).collect();
                    match self.executor.get_files(spec, &paths, &into).await {
                        Ok(()) => sources.push((cache, into)),
                        Err(error) => notes.push(format!(
                            "buildit: cache `{}` not saved: {error}",
                            cache.name
                        )),
                    }
                }
                staging = Some(dir);
            }
        }
        let home = if staging.is_some() {
            None
        } else {
            self.options.home.clone()
        };
        let saved = tokio::task::spawn_blocking(move || {
            sources
                .iter()
                .filter_map(
                    |(cache, root)| match store.save(cache, root, home.as_deref()) {
                        Ok(true) => Some(format!(
                            "buildit: cache `{}` saved (key `{}`)",
                            cache.name, cache.key
                        )),
                        Ok(false) => None,
                        Err(error) => Some(format!(
                            "buildit: cache `{}` not saved: {error}",
                            cache.name
                        )),
                    },
                )
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        drop(staging);
        for note in notes.into_iter().chain(saved) {
            self.note(attempt, note).await;
        }
    }

    /// Copies the artifacts of every stage this one needs into the workspace (with a `remote` workspace:
    /// into a host directory first, then in through the executor).
    async fn restore_artifacts(&self, remote: Option<&StageSpec>) -> Result<(), String> {
        let Some(store) = self.options.artifacts.clone() else {
            return Ok(());
        };
        // Only needs that declare artifacts have any to restore; skipping the others keeps file-system work (and
        // a blocking-pool hop) off the path of the many stages that have none.
        let needs: Vec<String> = self.plan.stages()[self.position]
            .needs()
            .iter()
            .map(|&need| &self.plan.stages()[need])
            .filter(|need| !self.plan.definition(need).artifacts.is_empty())
            .map(|need| need.name().to_owned())
            .collect();
        if needs.is_empty() {
            return Ok(());
        }
        let (staging, target) = self
            .host_side(remote)
            .map_err(|error| format!("artifact restore failed: {error}"))?;
        let run = Arc::clone(&self.run);
        let restored = tokio::task::spawn_blocking(move || {
            let mut files = 0;
            for need in needs {
                files += store
                    .restore(&run.run_id, &need, &target)
                    .map_err(|error| {
                        format!("cannot restore the artifacts of `{need}`: {error}")
                    })?;
            }
            Ok(files)
        })
        .await
        .unwrap_or_else(|error| Err(format!("artifact restore failed: {error}")))?;
        if let (Some(spec), Some(staging), true) = (remote, &staging, restored > 0) {
            self.executor
                .put_files(spec, staging.path())
                .await
                .map_err(|error| format!("cannot restore artifacts: {error}"))?;
        }
        Ok(())
    }

    /// Collects the stage's artifacts after it succeeded; a pattern that matches nothing fails the stage. With a
    /// `remote` workspace, what the patterns can match is copied out first (the part of each pattern before
    /// its first wildcard), and collected from there with the same rules.
    async fn collect_artifacts(
        &self,
        remote: Option<&StageSpec>,
    ) -> Result<(), (FailureKind, String)> {
        let Some(store) = self.options.artifacts.clone() else {
            return Ok(());
        };
        let stage = &self.plan.stages()[self.position];
        let patterns = artifact_patterns(&self.plan, stage, &self.run);
        if patterns.is_empty() {
            return Ok(());
        }
        // Before anything is copied out: an empty pattern would otherwise collect the whole workspace.
        let written = &self.plan.definition(stage).artifacts;
        if let Some(problem) = written
            .iter()
            .zip(&patterns)
            .find_map(|(written, rendered)| {
                crate::paths::artifact_path_problem(written.value.as_str(), rendered)
            })
        {
            return Err((FailureKind::Config, problem));
        }
        let (_staging, workspace) = self.host_side(remote).map_err(|error| {
            (
                FailureKind::Infrastructure,
                format!("artifact collection failed: {error}"),
            )
        })?;
        if let Some(spec) = remote {
            self.executor
                .get_files(spec, &pattern_roots(&patterns), &workspace)
                .await
                .map_err(|error| {
                    (
                        error.failure_kind(),
                        format!("artifact collection failed: {error}"),
                    )
                })?;
        }
        let run = Arc::clone(&self.run);
        let name = stage.name().to_owned();
        let collected = tokio::task::spawn_blocking(move || {
            store
                .collect(&run.run_id, &name, &workspace, &patterns)
                .map(|_| ())
                .map_err(|error| {
                    // What the stage wrote (or did not) is the pipeline's matter; a copy that failed is not.
                    let kind = match error {
                        super::artifacts::ArtifactError::Io { .. } => FailureKind::Infrastructure,
                        _ => FailureKind::Config,
                    };
                    (kind, error.to_string())
                })
        })
        .await;
        collected.unwrap_or_else(|error| {
            Err((
                FailureKind::Infrastructure,
                format!("artifact collection failed: {error}"),
            ))
        })
    }
}

impl<E: Executor> StageTask<E> {
    /// Where a transfer's files are on the host: the workspace itself, or, for a `remote` workspace, a staging
    /// directory (returned too: it is removed when dropped).
    fn host_side(
        &self,
        remote: Option<&StageSpec>,
    ) -> Result<(Option<tempfile::TempDir>, PathBuf), String> {
        match remote {
            None => Ok((None, self.run.workspace.clone())),
            Some(_) => {
                let dir = staging_dir()?;
                let path = dir.path().to_path_buf();
                Ok((Some(dir), path))
            }
        }
    }
}

/// A host directory where files pass between a workspace the host cannot see and the artifact or cache store;
/// removed when dropped.
fn staging_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("buildit-staging-")
        .tempdir()
        .map_err(|error| format!("cannot create a staging directory: {error}"))
}

/// The directories (or files) that artifact patterns can match in: each pattern up to its first wildcard.
/// Patterns that leave the workspace get nothing copied (collection then refuses them as it always does).
fn pattern_roots(patterns: &[String]) -> Vec<PathBuf> {
    let roots = patterns
        .iter()
        .filter_map(|pattern| inside_workspace(std::path::Path::new(pattern)))
        .map(|path| {
            path.components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect()
        })
        .collect();
    outermost(roots)
}

/// The next note of a starting attempt; `None` at once when nobody sends any.
async fn next_note(noted: &mut Option<tokio::sync::mpsc::Receiver<String>>) -> Option<String> {
    match noted {
        Some(noted) => noted.recv().await,
        None => None,
    }
}

async fn sleep_or_forever(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Turns raw output into masked log-line events, flushing partial last lines when the output ends.
async fn pump_lines(
    mut logs: super::executor::LogStream,
    bus: EventBus,
    stage: String,
    attempt: u32,
    masker: Arc<SecretMasker>,
    progress: Arc<AtomicU64>,
) {
    // The splitters mask, before lines are cut, so that no secret straddles a cut.
    let mut stdout = LineSplitter::with_masker(Arc::clone(&masker));
    let mut stderr = LineSplitter::with_masker(Arc::clone(&masker));
    while let Some(chunk) = logs.next().await {
        progress.fetch_add(1, Ordering::Relaxed);
        let splitter = match chunk.stream {
            LogStreamKind::Stdout => &mut stdout,
            LogStreamKind::Stderr => &mut stderr,
        };
        let lines = splitter.push(&chunk.bytes);
        bus.emit_lines(&stage, attempt, chunk.stream, lines).await;
    }
    for (stream, splitter) in [
        (LogStreamKind::Stdout, &mut stdout),
        (LogStreamKind::Stderr, &mut stderr),
    ] {
        if let Some(line) = splitter.finish() {
            bus.emit_lines(&stage, attempt, stream, vec![line]).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::pattern_roots;

    #[test]
    fn artifact_patterns_are_copied_out_from_before_their_first_wildcard() {
        let roots = |patterns: &[&str]| {
            pattern_roots(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            roots(&[
                "dist/**/*.js",
                "dist/sub/a.txt",
                "report.xml",
                "../up",
                "/etc/x"
            ]),
            [PathBuf::from("dist"), PathBuf::from("report.xml")]
        );
        assert_eq!(roots(&["build/*/out", "**/*.log"]), [PathBuf::new()]);
        assert_eq!(roots(&["a/b[0-9]/c", "a/bc"]), [PathBuf::from("a")]);
        assert_eq!(
            roots(&["./dist/*.js", "dist/a.txt", "~/x"]),
            [PathBuf::from("dist")]
        );
    }
}
