//! An in-memory store: the fake for tests and embedders, passing the same contract as the SQL backends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::api::Store;
use super::batch::{ChunkColumns, LogChunk, RecordBatch, StoredEvent, decode_chunk};
use super::groups::{GroupAcquire, GroupClaim};
use super::model::{
    AttemptRecord, AttemptState, ClaimedJob, DEFAULT_TENANT, JobRecord, JobState, LOST, Lease,
    LogCursor, LogPage, LogQuery, NewJob, NewPipeline, NewRun, NewRunRequest, PipelineFilter,
    PipelineRecord, RunCursor, RunFilter, RunOwner, RunRecord, RunRef, RunRequest,
    RunRequestFilter, RunRequestOutcome, RunRequestState, RunState, StoreError, TokenRecord,
    millis,
};
use super::replay;
use super::tokens::{check_tenant_name, last_use_is_stale, sha256_hex};
use super::{interrupted_reason, now_ms, pick_run};
use crate::events::RunEvent;

/// Everything, for every tenant.
#[derive(Debug, Default)]
struct State {
    tenants: HashSet<String>,
    /// Next run number by (tenant, pipeline).
    counters: HashMap<(String, String), u64>,
    runs: Vec<StoredRun>,
    /// Attempts by (tenant, run, stage, attempt).
    attempts: BTreeMap<(String, String, String, u32), AttemptRecord>,
    logs: Vec<(String, String, LogChunk)>,
    /// Events other than log lines by (tenant, run, seq).
    events: BTreeMap<(String, String, u64), StoredEvent>,
    jobs: Vec<StoredJob>,
    /// API tokens, in id order (id = index + 1), with the hash each is looked up by.
    tokens: Vec<(String, TokenRecord)>,
    /// Run requests, with their tenant, in the order they were made.
    requests: Vec<(String, RunRequest)>,
    /// Registered pipelines by (tenant, name).
    pipelines: BTreeMap<(String, String), PipelineRecord>,
    /// Concurrency groups by (tenant, name).
    groups: BTreeMap<(String, String), StoredGroup>,
}

/// Who holds a concurrency group (`stage` '' for a run itself), and its pending run.
#[derive(Debug, Clone)]
struct StoredGroup {
    run_id: String,
    stage: String,
    pending: Option<String>,
}

impl State {
    /// Whether `tenant`'s run `run_id` is running, its number and its place among runs.
    fn group_run(&self, tenant: &str, run_id: &str) -> Option<(bool, i64, (i64, String))> {
        self.runs
            .iter()
            .find(|stored| stored.tenant == tenant && stored.record.id == run_id)
            .map(|stored| {
                (
                    stored.record.state == RunState::Running,
                    i64::try_from(stored.record.number).unwrap_or(i64::MAX),
                    (stored.record.created_at_ms, run_id.to_owned()),
                )
            })
    }
}

#[derive(Debug, Clone)]
struct StoredRun {
    tenant: String,
    record: RunRecord,
    owner: RunOwner,
    heartbeat_at_ms: i64,
    /// When a cancel was asked for through the store.
    cancel_requested_at_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct StoredJob {
    tenant: String,
    record: JobRecord,
    lease_until_ms: Option<i64>,
}

/// A store in this process's memory; clones share it. Nothing survives the process.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    tenant: Arc<str>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the `default` tenant.
    pub fn new() -> Self {
        let mut state = State::default();
        state.tenants.insert(DEFAULT_TENANT.to_owned());
        Self {
            state: Arc::new(Mutex::new(state)),
            tenant: Arc::from(DEFAULT_TENANT),
        }
    }

    /// The same store, working in `tenant`.
    pub fn with_tenant(&self, tenant: &str) -> Self {
        Self {
            state: Arc::clone(&self.state),
            tenant: Arc::from(tenant),
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Query("the in-memory store is poisoned".to_owned()))
    }

    fn ours(&self, tenant: &str) -> bool {
        *tenant == *self.tenant
    }
}

fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        job: lease.job,
        attempt: lease.attempt,
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn for_tenant(&self, tenant: &str) -> Arc<dyn Store> {
        Arc::new(self.with_tenant(tenant))
    }

    async fn create_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.state()?.tenants.insert(tenant.to_owned());
        Ok(())
    }

    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        if !state.tenants.contains(&*self.tenant) {
            return Err(StoreError::Query(format!("no tenant `{}`", self.tenant)));
        }
        if state
            .runs
            .iter()
            .any(|stored| self.ours(&stored.tenant) && stored.record.id == run.id)
        {
            return Err(StoreError::Query(format!("run `{}` exists", run.id)));
        }
        let counter = state
            .counters
            .entry((self.tenant.to_string(), run.pipeline.clone()))
            .or_insert(0);
        *counter += 1;
        let number = *counter;
        // A daemon's run keeps its request's place in listings.
        let requested_at_ms = state
            .requests
            .iter()
            .find(|(t, request)| self.ours(t) && request.run_id == run.id)
            .map_or(now, |(_, request)| request.created_at_ms);
        let record = RunRecord {
            id: run.id.clone(),
            pipeline: run.pipeline.clone(),
            number,
            state: RunState::Running,
            reason: None,
            stage_count: None,
            created_at_ms: now,
            finished_at_ms: None,
            duration_ms: None,
            sha: run.sha.clone(),
            branch: run.branch.clone(),
            event: run.event.clone(),
            requested_at_ms,
            inputs: run.inputs.clone(),
            retry_of: run.retry_of.clone(),
        };
        state.runs.push(StoredRun {
            tenant: self.tenant.to_string(),
            record: record.clone(),
            owner: run.owner.clone(),
            heartbeat_at_ms: now,
            cancel_requested_at_ms: None,
        });
        Ok(record)
    }

    async fn write_batch(&self, run_id: &str, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let tenant = self.tenant.to_string();
        let key = |stage: &str, attempt: u32| {
            (tenant.clone(), run_id.to_owned(), stage.to_owned(), attempt)
        };
        if let Some(stages) = batch.stage_count {
            for stored in state.runs.iter_mut() {
                if stored.tenant == tenant && stored.record.id == run_id {
                    stored.record.stage_count = Some(stages);
                }
            }
        }
        for start in &batch.started {
            state
                .attempts
                .entry(key(&start.stage, start.attempt))
                .or_insert_with(|| AttemptRecord {
                    stage: start.stage.clone(),
                    attempt: start.attempt,
                    state: AttemptState::Running,
                    exit_code: None,
                    reason: None,
                    started_at_ms: Some(start.at_ms),
                    finished_at_ms: None,
                    duration_ms: None,
                });
        }
        for end in &batch.finished {
            let record = state
                .attempts
                .entry(key(&end.stage, end.attempt))
                .or_insert_with(|| AttemptRecord {
                    stage: end.stage.clone(),
                    attempt: end.attempt,
                    state: AttemptState::Running,
                    exit_code: None,
                    reason: None,
                    started_at_ms: None,
                    finished_at_ms: None,
                    duration_ms: None,
                });
            if record.started_at_ms.is_none() {
                record.started_at_ms = end.started_at_ms;
            }
            record.state = AttemptState::Finished(end.outcome);
            record.exit_code = end.exit_code;
            record.reason.clone_from(&end.reason);
            record.finished_at_ms = Some(end.at_ms);
            record.duration_ms = Some(end.duration_ms);
        }
        for event in &batch.events {
            state
                .events
                .entry((tenant.clone(), run_id.to_owned(), event.seq))
                .or_insert_with(|| event.clone());
        }
        for chunk in &batch.logs {
            let exists = state.logs.iter().any(|(t, r, stored)| {
                *t == tenant
                    && r == run_id
                    && stored.stage == chunk.stage
                    && stored.attempt == chunk.attempt
                    && stored.first_line == chunk.first_line
            });
            if !exists {
                state
                    .logs
                    .push((tenant.clone(), run_id.to_owned(), chunk.clone()));
            }
        }
        if let Some(end) = batch.run_finished {
            for ((t, r, _, _), attempt) in state.attempts.iter_mut() {
                if *t == tenant && r == run_id && attempt.state == AttemptState::Running {
                    attempt.state = AttemptState::Interrupted;
                    attempt.finished_at_ms = Some(end.at_ms);
                }
            }
            for stored in state.runs.iter_mut() {
                if stored.tenant == tenant && stored.record.id == run_id {
                    stored.record.state = RunState::from(end.status);
                    stored.record.reason = None;
                    stored.record.finished_at_ms = Some(end.at_ms);
                    stored.record.duration_ms = Some(end.duration_ms);
                }
            }
        }
        Ok(())
    }

    async fn heartbeat_run(&self, run_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        for stored in state.runs.iter_mut() {
            if self.ours(&stored.tenant) && stored.record.id == run_id {
                stored.heartbeat_at_ms = now;
            }
        }
        Ok(())
    }

    async fn mark_interrupted(
        &self,
        here: &RunOwner,
        stale_after: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let tenant = self.tenant.to_string();
        let mut marked = Vec::new();
        for stored in state.runs.iter_mut() {
            if stored.tenant != tenant || stored.record.state != RunState::Running {
                continue;
            }
            if let Some(reason) = interrupted_reason(
                &stored.owner,
                here,
                stored.heartbeat_at_ms,
                now,
                stale_after,
            ) {
                stored.record.state = RunState::Interrupted;
                stored.record.reason = Some(reason);
                stored.record.finished_at_ms = Some(now);
                marked.push(stored.record.id.clone());
            }
        }
        for ((t, run, _, _), attempt) in state.attempts.iter_mut() {
            if *t == tenant && marked.contains(run) && attempt.state == AttemptState::Running {
                attempt.state = AttemptState::Interrupted;
                attempt.finished_at_ms = Some(now);
            }
        }
        Ok(marked)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let state = self.state()?;
        let mut runs: Vec<RunRecord> = state
            .runs
            .iter()
            .filter(|stored| self.ours(&stored.tenant))
            .map(|stored| &stored.record)
            .filter(|run| {
                filter.pipeline.as_ref().is_none_or(|p| *p == run.pipeline)
                    && filter.state.is_none_or(|s| s == run.state)
                    && filter
                        .branch
                        .as_ref()
                        .is_none_or(|b| Some(b) == run.branch.as_ref())
                    && before(filter.before.as_ref(), &run.cursor())
            })
            .cloned()
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.cursor()));
        runs.truncate(filter.limit as usize);
        Ok(runs)
    }

    async fn find_run(&self, run: &RunRef) -> Result<RunRecord, StoreError> {
        let state = self.state()?;
        let found: Vec<RunRecord> = state
            .runs
            .iter()
            .filter(|stored| self.ours(&stored.tenant))
            .map(|stored| &stored.record)
            .filter(|record| match run {
                RunRef::Id(id) => record.id == *id,
                RunRef::Number { pipeline, number } => {
                    record.number == *number
                        && pipeline.as_ref().is_none_or(|p| *p == record.pipeline)
                }
            })
            .cloned()
            .collect();
        pick_run(run, found)
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let state = self.state()?;
        let rows: Vec<AttemptRecord> = state
            .attempts
            .iter()
            .filter(|((t, r, _, _), _)| self.ours(t) && r == run_id)
            .map(|(_, attempt)| attempt.clone())
            .collect();
        let Some(run) = state
            .runs
            .iter()
            .find(|stored| self.ours(&stored.tenant) && stored.record.id == run_id)
        else {
            return Ok(replay::merge_attempts(Vec::new(), rows));
        };
        let run_arc: Arc<str> = Arc::from(run_id);
        let events = self
            .stored_events(&state, run_id, 0)
            .filter(|(_, event)| matches!(event.kind.as_str(), "stage-started" | "stage-finished"))
            .map(|(_, event)| replay::decode_event(&run_arc, event.seq, event.at_ms, &event.body))
            .collect::<Result<Vec<RunEvent>, StoreError>>()?;
        let from_events =
            replay::attempts_from_events(events, run.record.state, run.record.finished_at_ms);
        Ok(replay::merge_attempts(from_events, rows))
    }

    async fn events_after(
        &self,
        run_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, StoreError> {
        let state = self.state()?;
        if !state
            .runs
            .iter()
            .any(|stored| self.ours(&stored.tenant) && stored.record.id == run_id)
        {
            return Err(StoreError::NoSuchRun(run_id.to_owned()));
        }
        let run: Arc<str> = Arc::from(run_id);
        // Everything after `after_seq`, then the first `limit`: the fake favours plainness over speed.
        let mut events = self
            .stored_events(&state, run_id, after_seq)
            .map(|(_, event)| replay::decode_event(&run, event.seq, event.at_ms, &event.body))
            .collect::<Result<Vec<RunEvent>, StoreError>>()?;
        for (t, r, chunk) in &state.logs {
            if !self.ours(t) || r != run_id || chunk.last_seq <= after_seq {
                continue;
            }
            for (seq, line) in
                decode_chunk(&ChunkColumns::from(chunk)).map_err(StoreError::Query)?
            {
                if seq > after_seq {
                    events.push(replay::line_event(&run, seq, line));
                }
            }
        }
        events.sort_by_key(|event| event.seq);
        events.truncate(limit);
        Ok(events)
    }

    async fn logs(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        let state = self.state()?;
        let after = query.after.map_or(0, |cursor| cursor.seq);
        let mut chunks: Vec<&LogChunk> = state
            .logs
            .iter()
            .filter(|(t, r, chunk)| {
                self.ours(t)
                    && *r == query.run_id
                    && query.stage.as_ref().is_none_or(|s| *s == chunk.stage)
                    && query.attempt.is_none_or(|a| a == chunk.attempt)
                    && chunk.first_seq > after
            })
            .map(|(_, _, chunk)| chunk)
            .collect();
        chunks.sort_by_key(|chunk| chunk.first_seq);
        let limit = query.chunks.max(1) as usize;
        let full = chunks.len() >= limit;
        chunks.truncate(limit);
        let mut lines = Vec::new();
        for chunk in &chunks {
            lines.extend(
                decode_chunk(&ChunkColumns::from(*chunk))
                    .map_err(StoreError::Query)?
                    .into_iter()
                    .map(|(_, line)| line),
            );
        }
        Ok(LogPage {
            lines,
            next: chunks.last().filter(|_| full).map(|chunk| LogCursor {
                seq: chunk.first_seq,
            }),
        })
    }

    async fn enqueue(&self, job: &NewJob) -> Result<i64, StoreError> {
        let mut state = self.state()?;
        let id = i64::try_from(state.jobs.len()).unwrap_or(i64::MAX - 1) + 1;
        state.jobs.push(StoredJob {
            tenant: self.tenant.to_string(),
            record: JobRecord {
                id,
                queue: job.queue.clone(),
                payload: job.payload.clone(),
                state: JobState::Queued,
                attempts: 0,
                max_attempts: job.max_attempts.max(1),
                worker: None,
                error: None,
            },
            lease_until_ms: None,
        });
        Ok(id)
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let tenant = self.tenant.to_string();
        let expired = |job: &StoredJob| {
            job.tenant == tenant
                && job.record.queue == queue
                && job.record.state == JobState::Running
                && job.lease_until_ms.is_some_and(|until| until < now)
        };
        for job in state.jobs.iter_mut() {
            if expired(job) && job.record.attempts >= job.record.max_attempts {
                job.record.state = JobState::Failed;
                job.record.error = Some(LOST.to_owned());
                job.lease_until_ms = None;
            }
        }
        // The lease that expired longest ago first, else the oldest queued job.
        let longest_expired = state
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, job)| expired(job))
            .min_by_key(|(_, job)| job.lease_until_ms)
            .map(|(index, _)| index);
        let oldest_queued = || {
            state.jobs.iter().position(|job| {
                job.tenant == tenant
                    && job.record.queue == queue
                    && job.record.state == JobState::Queued
            })
        };
        let Some(index) = longest_expired.or_else(oldest_queued) else {
            return Ok(None);
        };
        let job = &mut state.jobs[index];
        job.record.state = JobState::Running;
        job.record.attempts += 1;
        job.record.worker = Some(worker.to_owned());
        let until = now.saturating_add(millis(lease));
        job.lease_until_ms = Some(until);
        Ok(Some(ClaimedJob {
            id: job.record.id,
            payload: job.record.payload.clone(),
            lease: Lease {
                job: job.record.id,
                attempt: i64::from(job.record.attempts),
            },
            max_attempts: job.record.max_attempts,
            lease_until_ms: until,
        }))
    }

    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let job = self.held(&mut state, lease)?;
        let until = now.saturating_add(millis(duration));
        job.lease_until_ms = Some(until);
        Ok(until)
    }

    async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let job = self.held(&mut state, lease)?;
        job.record.state = JobState::Completed;
        job.lease_until_ms = None;
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let job = self.held(&mut state, lease)?;
        job.record.state = JobState::Failed;
        job.record.error = Some(error.to_owned());
        job.lease_until_ms = None;
        Ok(())
    }

    async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        Ok(self
            .state()?
            .jobs
            .iter()
            .find(|job| self.ours(&job.tenant) && job.record.id == id)
            .map(|job| job.record.clone()))
    }

    async fn leased_jobs(&self, queue: &str) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self
            .state()?
            .jobs
            .iter()
            .filter(|job| {
                self.ours(&job.tenant)
                    && job.record.queue == queue
                    && job.record.state == JobState::Running
            })
            .map(|job| job.record.clone())
            .collect())
    }

    async fn expire_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        if let Ok(job) = self.held(&mut state, lease) {
            job.lease_until_ms = Some(now - 1);
        }
        Ok(())
    }

    async fn request_run_cancel(&self, run_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let mut current = Some(run_id.to_owned());
        let mut first = true;
        // The run and every restart of it, as the SQL stores do.
        for _ in 0..16 {
            let Some(id) = current.take() else {
                break;
            };
            let Some((_, stored)) = state
                .requests
                .iter_mut()
                .find(|(t, stored)| self.ours(t) && stored.run_id == id)
            else {
                if first {
                    return Err(StoreError::NoSuchRun(run_id.to_owned()));
                }
                break;
            };
            first = false;
            stored.cancel_requested_at_ms.get_or_insert(now);
            current = stored.restarted_as.clone();
        }
        Ok(())
    }

    async fn cancel_running_run(&self, run_id: &str) -> Result<RunState, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let stored = state
            .runs
            .iter_mut()
            .find(|stored| self.ours(&stored.tenant) && stored.record.id == run_id)
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
        if stored.record.state == RunState::Running {
            stored.cancel_requested_at_ms.get_or_insert(now);
        }
        Ok(stored.record.state)
    }

    async fn run_cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        let state = self.state()?;
        Ok(state.runs.iter().any(|stored| {
            self.ours(&stored.tenant)
                && stored.record.id == run_id
                && stored.cancel_requested_at_ms.is_some()
        }))
    }

    async fn acquire_group(&self, claim: &GroupClaim) -> Result<GroupAcquire, StoreError> {
        let mut state = self.state()?;
        let tenant = self.tenant.to_string();
        let key = (tenant.clone(), claim.group.clone());
        let stage = claim.stage.clone().unwrap_or_default();
        let Some(held) = state.groups.get(&key).cloned() else {
            state.groups.insert(
                key,
                StoredGroup {
                    run_id: claim.run_id.clone(),
                    stage,
                    pending: None,
                },
            );
            return Ok(GroupAcquire::Acquired);
        };
        if held.run_id == claim.run_id && (held.stage == stage || held.stage.is_empty()) {
            return Ok(GroupAcquire::Acquired);
        }
        let holder = state.group_run(&tenant, &held.run_id);
        let mine = state.group_run(&tenant, &claim.run_id);
        if !holder.as_ref().is_some_and(|(running, _, _)| *running) {
            // The pending run is next, as the SQL stores hand it on.
            let pending = held.pending.filter(|pending| *pending != claim.run_id);
            if let Some(pending) = pending
                && let Some((true, number, order)) = state.group_run(&tenant, &pending)
            {
                state.groups.insert(
                    key,
                    StoredGroup {
                        run_id: pending.clone(),
                        stage: String::new(),
                        pending: claim.pending.then(|| claim.run_id.clone()),
                    },
                );
                return Ok(GroupAcquire::Held {
                    holder_is_older: mine.as_ref().is_none_or(|(_, _, mine)| order < *mine),
                    holder_run: pending,
                    holder_number: Some(number),
                    holder_stage: None,
                    displaced: None,
                });
            }
            state.groups.insert(
                key,
                StoredGroup {
                    run_id: claim.run_id.clone(),
                    stage,
                    pending: None,
                },
            );
            return Ok(GroupAcquire::Acquired);
        }
        let mut displaced = None;
        if claim.pending && held.pending.as_deref() != Some(claim.run_id.as_str()) {
            if let Some(pending) = &held.pending {
                let other = state.group_run(&tenant, pending);
                if let (Some((running, _, other)), Some((_, _, mine))) = (other, &mine) {
                    if running && other > *mine {
                        return Ok(GroupAcquire::Superseded {
                            by: pending.clone(),
                        });
                    }
                    if running {
                        displaced = Some(pending.clone());
                    }
                }
            }
            if let Some(group) = state.groups.get_mut(&key) {
                group.pending = Some(claim.run_id.clone());
            }
        }
        let holder_is_older = match (&holder, &mine) {
            (Some((_, _, holder)), Some((_, _, mine))) => holder < mine,
            _ => true,
        };
        Ok(GroupAcquire::Held {
            holder_run: held.run_id,
            holder_number: holder.map(|(_, number, _)| number),
            holder_stage: (!held.stage.is_empty()).then_some(held.stage),
            displaced,
            holder_is_older,
        })
    }

    async fn release_group(
        &self,
        group: &str,
        run_id: &str,
        stage: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let key = (self.tenant.to_string(), group.to_owned());
        let stage = stage.unwrap_or_default();
        let Some(held) = state.groups.get_mut(&key) else {
            return Ok(());
        };
        if held.run_id == run_id && held.stage == stage {
            match held.pending.take().filter(|pending| pending != run_id) {
                Some(pending) => {
                    held.run_id = pending;
                    held.stage = String::new();
                }
                None => {
                    state.groups.remove(&key);
                }
            }
        } else if held.pending.as_deref() == Some(run_id) && stage.is_empty() {
            held.pending = None;
        }
        Ok(())
    }

    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let tenant = self.tenant.to_string();
        let found = state
            .runs
            .iter()
            .position(|stored| stored.tenant == tenant && stored.record.id == run_id)
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
        if state.runs.get(found).map(|stored| stored.record.state) == Some(RunState::Running) {
            return Err(StoreError::RunStillRunning(run_id.to_owned()));
        }
        state.runs.remove(found);
        let of_run = |t: &str, run: &str| t == tenant && run == run_id;
        state.attempts.retain(|(t, run, _, _), _| !of_run(t, run));
        state.logs.retain(|(t, run, _)| !of_run(t, run));
        state.events.retain(|(t, run, _), _| !of_run(t, run));
        state
            .requests
            .retain(|(t, request)| !of_run(t, &request.run_id));
        Ok(())
    }

    async fn runs_ended_before(&self, before_ms: i64) -> Result<Vec<RunRecord>, StoreError> {
        let state = self.state()?;
        let mut ended: Vec<RunRecord> = state
            .runs
            .iter()
            .filter(|stored| {
                self.ours(&stored.tenant)
                    && stored.record.state != RunState::Running
                    && stored
                        .record
                        .finished_at_ms
                        .is_some_and(|end| end < before_ms)
            })
            .map(|stored| stored.record.clone())
            .collect();
        ended.sort_by(|a, b| (a.finished_at_ms, &a.id).cmp(&(b.finished_at_ms, &b.id)));
        Ok(ended)
    }

    async fn restart_run_request(
        &self,
        run_id: &str,
        restart: &str,
    ) -> Result<RunRequest, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let find = |requests: &[(String, RunRequest)], id: &str| {
            requests
                .iter()
                .position(|(t, stored)| self.ours(t) && stored.run_id == id)
        };
        let index = find(&state.requests, run_id)
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
        if let Some(existing) = state.requests[index].1.restarted_as.clone() {
            let restarted =
                find(&state.requests, &existing).ok_or(StoreError::NoSuchRun(existing))?;
            return Ok(state.requests[restarted].1.clone());
        }
        let interrupted = &mut state.requests[index].1;
        interrupted.restarted_as = Some(restart.to_owned());
        interrupted.updated_at_ms = now;
        let cancel_requested_at_ms = interrupted.cancel_requested_at_ms;
        let record = RunRequest {
            run_id: restart.to_owned(),
            pipeline: interrupted.pipeline.clone(),
            idempotency_key: None,
            state: RunRequestState::Started,
            reason: None,
            created_at_ms: now,
            updated_at_ms: now,
            cancel_requested_at_ms,
            restart_of: Some(run_id.to_owned()),
            restarted_as: None,
            branch: interrupted.branch.clone(),
        };
        state
            .requests
            .push((self.tenant.to_string(), record.clone()));
        Ok(record)
    }

    async fn list_tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut tenants: Vec<String> = self.state()?.tenants.iter().cloned().collect();
        tenants.sort();
        Ok(tenants)
    }

    async fn create_token(
        &self,
        tenant: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<TokenRecord, StoreError> {
        check_tenant_name(tenant)?;
        let mut state = self.state()?;
        if state.tokens.iter().any(|(hash, _)| hash == token_hash) {
            return Err(StoreError::Query("the token hash exists".to_owned()));
        }
        state.tenants.insert(tenant.to_owned());
        let record = TokenRecord {
            id: i64::try_from(state.tokens.len()).unwrap_or(i64::MAX - 1) + 1,
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            created_at_ms: now_ms(),
            last_used_at_ms: None,
            revoked_at_ms: None,
        };
        state.tokens.push((token_hash.to_owned(), record.clone()));
        Ok(record)
    }

    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let Some((_, record)) = state
            .tokens
            .iter_mut()
            .find(|(hash, record)| hash == token_hash && record.revoked_at_ms.is_none())
        else {
            return Ok(None);
        };
        if last_use_is_stale(record.last_used_at_ms, now) {
            record.last_used_at_ms = Some(now);
        }
        Ok(Some(record.tenant.clone()))
    }

    async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .state()?
            .tokens
            .iter()
            .find(|(hash, record)| hash == token_hash && record.revoked_at_ms.is_none())
            .map(|(_, record)| record.clone()))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .state()?
            .tokens
            .iter()
            .filter(|(_, record)| self.ours(&record.tenant))
            .map(|(_, record)| record.clone())
            .collect())
    }

    async fn revoke_token(&self, id: i64) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let (_, record) = state
            .tokens
            .iter_mut()
            .find(|(_, record)| self.ours(&record.tenant) && record.id == id)
            .ok_or(StoreError::NoSuchToken(id))?;
        record.revoked_at_ms.get_or_insert(now);
        Ok(())
    }

    async fn create_run_request(
        &self,
        request: &NewRunRequest,
    ) -> Result<RunRequestOutcome, StoreError> {
        let now = now_ms();
        // One lock for the check and the insert: the same atomicity as the databases' unique indexes.
        let mut state = self.state()?;
        if !state.tenants.contains(&*self.tenant) {
            return Err(StoreError::Query(format!("no tenant `{}`", self.tenant)));
        }
        let mut ours = state.requests.iter().filter(|(t, _)| self.ours(t));
        if let Some(key) = &request.idempotency_key
            && let Some((_, existing)) = ours
                .clone()
                .find(|(_, stored)| stored.idempotency_key.as_ref() == Some(key))
        {
            return Ok(RunRequestOutcome::Existing(existing.clone()));
        }
        if ours.any(|(_, stored)| stored.run_id == request.run_id) {
            return Err(StoreError::DuplicateRun(request.run_id.clone()));
        }
        let record = RunRequest {
            run_id: request.run_id.clone(),
            pipeline: request.pipeline.clone(),
            idempotency_key: request.idempotency_key.clone(),
            state: RunRequestState::Queued,
            reason: None,
            created_at_ms: now,
            updated_at_ms: now,
            cancel_requested_at_ms: None,
            restart_of: None,
            restarted_as: None,
            branch: request.branch.clone(),
        };
        state
            .requests
            .push((self.tenant.to_string(), record.clone()));
        Ok(RunRequestOutcome::Created(record))
    }

    async fn run_request(&self, run_id: &str) -> Result<Option<RunRequest>, StoreError> {
        Ok(self
            .state()?
            .requests
            .iter()
            .find(|(t, stored)| self.ours(t) && stored.run_id == run_id)
            .map(|(_, stored)| stored.clone()))
    }

    async fn set_run_request_state(
        &self,
        run_id: &str,
        to: RunRequestState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        let (_, stored) = state
            .requests
            .iter_mut()
            .find(|(t, stored)| self.ours(t) && stored.run_id == run_id)
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))?;
        if stored.state == to {
            return Ok(());
        }
        if !stored.state.can_become(to) {
            return Err(StoreError::RunRequestTransition {
                run_id: run_id.to_owned(),
                from: stored.state,
                to,
            });
        }
        stored.state = to;
        stored.reason = reason.map(str::to_owned);
        stored.updated_at_ms = now;
        Ok(())
    }

    async fn queued_run_requests(&self, limit: u32) -> Result<Vec<RunRequest>, StoreError> {
        let state = self.state()?;
        let mut queued: Vec<RunRequest> = state
            .requests
            .iter()
            .filter(|(t, stored)| self.ours(t) && stored.state == RunRequestState::Queued)
            .map(|(_, stored)| stored.clone())
            .collect();
        queued.sort_by(|a, b| (a.created_at_ms, &a.run_id).cmp(&(b.created_at_ms, &b.run_id)));
        queued.truncate(limit as usize);
        Ok(queued)
    }

    async fn unrecorded_run_requests(
        &self,
        filter: &RunRequestFilter,
    ) -> Result<Vec<RunRequest>, StoreError> {
        let state = self.state()?;
        let recorded = |run_id: &str| {
            state
                .runs
                .iter()
                .any(|stored| self.ours(&stored.tenant) && stored.record.id == run_id)
        };
        let mut requests: Vec<RunRequest> = state
            .requests
            .iter()
            .filter(|(t, request)| self.ours(t) && !recorded(&request.run_id))
            .map(|(_, request)| request)
            .filter(|request| {
                filter
                    .pipeline
                    .as_ref()
                    .is_none_or(|p| *p == request.pipeline)
                    && filter.state.is_none_or(|s| s == request.state)
                    && filter
                        .branch
                        .as_ref()
                        .is_none_or(|b| Some(b) == request.branch.as_ref())
                    && before(filter.before.as_ref(), &request.cursor())
            })
            .cloned()
            .collect();
        requests.sort_by_key(|request| std::cmp::Reverse(request.cursor()));
        requests.truncate(filter.limit as usize);
        Ok(requests)
    }

    async fn register_pipeline(&self, pipeline: &NewPipeline) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        if !state.tenants.contains(&*self.tenant) {
            return Err(StoreError::Query(format!("no tenant `{}`", self.tenant)));
        }
        let sha256 = sha256_hex(pipeline.source.as_bytes());
        let key = (self.tenant.to_string(), pipeline.name.clone());
        let registered_at_ms = match state.pipelines.get(&key) {
            Some(stored) if stored.sha256 == sha256 && stored.file_name == pipeline.file_name => {
                return Ok(false);
            }
            Some(stored) => stored.registered_at_ms,
            None => now,
        };
        state.pipelines.insert(
            key,
            PipelineRecord {
                name: pipeline.name.clone(),
                file_name: pipeline.file_name.clone(),
                source: pipeline.source.clone(),
                sha256,
                registered_at_ms,
                updated_at_ms: now,
                registered_by: pipeline.registered_by.clone(),
            },
        );
        Ok(true)
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        Ok(self
            .state()?
            .pipelines
            .get(&(self.tenant.to_string(), name.to_owned()))
            .cloned())
    }

    async fn list_pipelines(
        &self,
        filter: &PipelineFilter,
    ) -> Result<Vec<PipelineRecord>, StoreError> {
        let state = self.state()?;
        // Keys sort by tenant, then by name in byte order.
        Ok(state
            .pipelines
            .iter()
            .filter(|((t, name), _)| {
                self.ours(t) && filter.after.as_ref().is_none_or(|after| name > after)
            })
            .map(|(_, record)| record.clone())
            .take(filter.limit as usize)
            .collect())
    }
}

/// Whether `place` comes after `cursor` in the newest-first order of listings (anything does without one).
fn before(cursor: Option<&RunCursor>, place: &RunCursor) -> bool {
    cursor.is_none_or(|cursor| place < cursor)
}

impl MemoryStore {
    /// This tenant's stored events of `run_id` after `after`, in order.
    fn stored_events<'s>(
        &self,
        state: &'s State,
        run_id: &str,
        after: u64,
    ) -> impl Iterator<Item = (&'s (String, String, u64), &'s StoredEvent)> {
        let from = (
            self.tenant.to_string(),
            run_id.to_owned(),
            after.saturating_add(1),
        );
        let to = (self.tenant.to_string(), run_id.to_owned(), u64::MAX);
        state.events.range(from..=to)
    }

    /// The job `lease` holds, if it still holds it.
    fn held<'s>(
        &self,
        state: &'s mut State,
        lease: &Lease,
    ) -> Result<&'s mut StoredJob, StoreError> {
        state
            .jobs
            .iter_mut()
            .find(|job| {
                self.ours(&job.tenant)
                    && job.record.id == lease.job
                    && i64::from(job.record.attempts) == lease.attempt
                    && job.record.state == JobState::Running
            })
            .ok_or_else(|| lease_lost(lease))
    }
}
