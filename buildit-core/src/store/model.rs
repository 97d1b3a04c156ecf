//! The store's domain types: runs, attempts, log lines and jobs, free of any database type.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::{LogStreamKind, RunOutcome, StageOutcome};
// Who owns a run, and the lease of a job, are shared with the executors (what they leave behind is owned too).
pub use crate::owner::{Lease, RunOwner};

/// The tenant a store works in when none is chosen.
pub const DEFAULT_TENANT: &str = "default";

/// Everything a store can fail with. A stage's failure is never one of these: only the store's own.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or opened.
    #[error("cannot open the store at {location}: {message}")]
    #[diagnostic(code(buildit::store::open))]
    Open {
        /// Where (a path, or a URL without its password).
        location: String,
        /// Why.
        message: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the store: {0}")]
    #[diagnostic(code(buildit::store::migrate))]
    Migrate(String),
    /// A query failed.
    #[error("store query failed: {0}")]
    #[diagnostic(code(buildit::store::query))]
    Query(String),
    /// A job's lease is no longer this worker's: it expired and was taken over, or the job ended.
    #[error("the lease on job {job} (claim {attempt}) is no longer held")]
    #[diagnostic(
        code(buildit::store::lease_lost),
        help("the lease expired and another worker may have claimed the job; stop working on it")
    )]
    LeaseLost {
        /// The job.
        job: i64,
        /// The claim (fencing token) that was presented.
        attempt: i64,
    },
    /// A run reference matched nothing.
    #[error("no run `{0}`")]
    #[diagnostic(
        code(buildit::store::no_such_run),
        help("`buildit runs list` shows the recorded runs")
    )]
    NoSuchRun(String),
    /// A run number that several pipelines have.
    #[error("run number {number} exists in several pipelines: {}", pipelines.join(", "))]
    #[diagnostic(
        code(buildit::store::ambiguous_run),
        help("name the pipeline: `--pipeline NAME`, or write the run as `PIPELINE#{number}`")
    )]
    AmbiguousRun {
        /// The number.
        number: u64,
        /// The pipelines that have it.
        pipelines: Vec<String>,
    },
    /// A token id this tenant does not have.
    #[error("no token {0}")]
    #[diagnostic(
        code(buildit::store::no_such_token),
        help("`buildit tokens list` shows the tokens and their ids")
    )]
    NoSuchToken(i64),
    /// A run id this tenant has already requested, without the idempotency key that requested it.
    #[error("run `{0}` was already requested")]
    #[diagnostic(
        code(buildit::store::duplicate_run),
        help(
            "give every run request a new id; a retried request passes the same idempotency key instead"
        )
    )]
    DuplicateRun(String),
    /// A run request asked to go where its state does not lead (a started run is never queued again; a
    /// cancelled or failed request is over).
    #[error("run request `{run_id}` is {} and cannot become {}", from.as_str(), to.as_str())]
    #[diagnostic(code(buildit::store::run_request_transition))]
    RunRequestTransition {
        /// The run.
        run_id: String,
        /// Its state.
        from: RunRequestState,
        /// The state asked for.
        to: RunRequestState,
    },
    /// A tenant name that is not 1 to 64 characters of `a-z`, `0-9`, `-` and `_`.
    #[error("invalid tenant name `{0}`: a tenant is 1 to 64 characters of a-z, 0-9, `-` and `_`")]
    #[diagnostic(code(buildit::store::invalid_tenant))]
    InvalidTenant(String),
    /// A run that cannot be deleted because it is running (its runner is alive).
    #[error("run `{0}` is still running")]
    #[diagnostic(
        code(buildit::store::run_still_running),
        help("cancel it first (`buildit runs cancel RUN`) and delete it once it has ended")
    )]
    RunStillRunning(String),
    /// The store URL is not one BuildIt knows.
    #[error("unsupported store `{0}`")]
    #[diagnostic(
        code(buildit::store::unsupported),
        help("use a `postgres://` URL, or a `sqlite:` path")
    )]
    Unsupported(String),
}

impl StoreError {
    pub(crate) fn query(error: impl std::fmt::Display) -> Self {
        Self::Query(error.to_string())
    }
}

/// How a recorded run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Its runner is working on it.
    Running,
    /// Every stage that ran succeeded (or was allowed to fail).
    Succeeded,
    /// A stage failed.
    Failed,
    /// It was cancelled.
    Cancelled,
    /// Its runner died before it ended (killed, crashed, lost its machine).
    Interrupted,
}

impl RunState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "interrupted" => Self::Interrupted,
            _ => Self::Running,
        }
    }
}

impl From<RunOutcome> for RunState {
    fn from(status: RunOutcome) -> Self {
        match status {
            RunOutcome::Succeeded => Self::Succeeded,
            RunOutcome::Failed => Self::Failed,
            RunOutcome::Cancelled => Self::Cancelled,
        }
    }
}

/// How one recorded attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptState {
    /// Still running (or its runner has not been seen to die yet).
    Running,
    /// Its runner died while it ran.
    Interrupted,
    /// It ended.
    Finished(StageOutcome),
}

impl Serialize for AttemptState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl AttemptState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Finished(outcome) => outcome.as_str(),
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "succeeded" => Self::Finished(StageOutcome::Succeeded),
            "failed" => Self::Finished(StageOutcome::Failed),
            "failed-allowed" => Self::Finished(StageOutcome::FailedAllowed),
            "timed-out" => Self::Finished(StageOutcome::TimedOut),
            "cancelled" => Self::Finished(StageOutcome::Cancelled),
            "skipped" => Self::Finished(StageOutcome::Skipped),
            "interrupted" => Self::Interrupted,
            _ => Self::Running,
        }
    }
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Unique id.
    pub id: String,
    /// Pipeline name (its run numbers count from 1).
    pub pipeline: String,
    /// Who runs it.
    pub owner: RunOwner,
    /// Commit.
    pub sha: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// What started it.
    pub event: Option<String>,
    /// What a rerun needs to start it again: its file and flags (`None`: not known, as for a daemon's run).
    pub inputs: Option<RunInputs>,
    /// The run this one reruns (`buildit runs retry`), or whose stages it reused (`buildit run --from`).
    pub retry_of: Option<String>,
}

/// What a run was started from, as given: a rerun starts the same pipeline file, in the same workspace, with the
/// same flags (git facts not given are read again, and must come out the same). Never holds a secret value: the
/// `--env` values are recorded as they are, secrets come from the secret store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInputs {
    /// The pipeline file (absolute).
    pub file: Option<String>,
    /// The sha256 of the file's text: a rerun of a file that changed is refused.
    pub digest: Option<String>,
    /// The workspace directory.
    pub workspace: Option<String>,
    /// `--branch`, as given.
    pub branch: Option<String>,
    /// `--tag`, as given.
    pub tag: Option<String>,
    /// `--sha`, as given.
    pub sha: Option<String>,
    /// `--event`, as given.
    pub event: Option<String>,
    /// `--base`, as given.
    pub base: Option<String>,
    /// `--env`, as given.
    pub env: std::collections::BTreeMap<String, String>,
    /// `--stage`, as given.
    pub stages: Vec<String>,
    /// How it reruns an earlier run: `all`, `failed`, or `from STAGE` (`None`: not a rerun).
    pub rerun: Option<String>,
}

impl RunInputs {
    /// The text stored for these inputs.
    pub(crate) fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The inputs stored as `text`; `None` for a run recorded without them (or text this BuildIt cannot read).
    pub(crate) fn from_text(text: Option<&str>) -> Option<Self> {
        text.and_then(|text| serde_json::from_str(text).ok())
    }
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    /// Unique id.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Number within the pipeline, from 1.
    pub number: u64,
    /// How it stands.
    pub state: RunState,
    /// Why it is interrupted, when it is.
    pub reason: Option<String>,
    /// Stage instances in its plan, once it started.
    pub stage_count: Option<u64>,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
    /// Wall time.
    pub duration_ms: Option<u64>,
    /// Commit.
    pub sha: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// What started it.
    pub event: Option<String>,
    /// What a rerun needs to start it again (`None`: recorded without them, as a daemon's run is).
    pub inputs: Option<RunInputs>,
    /// The run this one reruns, or whose stages it reused.
    pub retry_of: Option<String>,
    /// When it was asked for: its request's time when a daemon queued it, else when it was created. Runs are
    /// listed newest first by this and their id ([`RunRecord::cursor`]).
    #[serde(skip)]
    pub requested_at_ms: i64,
}

impl RunRecord {
    /// Its place in the order runs are listed in: pass it as [`RunFilter::before`] for the runs after it.
    pub fn cursor(&self) -> RunCursor {
        RunCursor {
            at_ms: self.requested_at_ms,
            id: self.id.clone(),
        }
    }
}

/// One recorded attempt of a stage instance (attempt 0: it never started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// Instance name.
    pub stage: String,
    /// Attempt number.
    pub attempt: u32,
    /// How it stands.
    pub state: AttemptState,
    /// Exit code of its shell.
    pub exit_code: Option<i32>,
    /// Why (skips, timeouts, errors).
    pub reason: Option<String>,
    /// When it started.
    pub started_at_ms: Option<i64>,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
    /// Wall time.
    pub duration_ms: Option<u64>,
}

/// One API token, as the store keeps it: never the token, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Its id (what `revoke_token` takes).
    pub id: i64,
    /// The tenant it gives access to.
    pub tenant: String,
    /// Its label.
    pub name: String,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When it was last presented (to the minute: the store updates it at most once a minute).
    pub last_used_at_ms: Option<i64>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at_ms: Option<i64>,
}

/// A run the daemon is asked for, before a worker starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRunRequest {
    /// The id its run will have.
    pub run_id: String,
    /// The pipeline to run.
    pub pipeline: String,
    /// The client's key: the same key twice (in one tenant) gives the first request back.
    pub idempotency_key: Option<String>,
    /// The branch the run builds, if any: what a listing of runs filters on before the run has a record.
    pub branch: Option<String>,
}

/// How a run request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunRequestState {
    /// Waiting for a worker.
    Queued,
    /// A worker started its run; the run's record says how it goes.
    Started,
    /// Cancelled (while queued, or after it started: the run's record then says how it ended).
    Cancelled,
    /// It could not be started (the worker refused it, its source was gone).
    Failed,
}

impl RunRequestState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Started => "started",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "started" => Self::Started,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => Self::Queued,
        }
    }

    /// Whether a request in this state may be set to `to`: a queued one to anything, a started one to
    /// cancelled or failed (never queued again), a cancelled or failed one to nothing else. Setting the state a
    /// request has is allowed and changes nothing.
    pub fn can_become(self, to: Self) -> bool {
        self == to
            || matches!(
                (self, to),
                (Self::Queued, _) | (Self::Started, Self::Cancelled | Self::Failed)
            )
    }

    /// The states that lead to `self` (itself excluded).
    pub(crate) fn sources(self) -> Vec<Self> {
        [Self::Queued, Self::Started, Self::Cancelled, Self::Failed]
            .into_iter()
            .filter(|from| *from != self && from.can_become(self))
            .collect()
    }
}

/// One run request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRequest {
    /// The id its run has (or will have).
    pub run_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The client's key, if it gave one.
    pub idempotency_key: Option<String>,
    /// How it stands.
    pub state: RunRequestState,
    /// Why it was cancelled or failed, when given.
    pub reason: Option<String>,
    /// When it was requested (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
    /// When a cancel was first asked for (through any daemon of the store), if one was.
    pub cancel_requested_at_ms: Option<i64>,
    /// The interrupted run this one starts again.
    pub restart_of: Option<String>,
    /// The run that started this one again after it was interrupted.
    pub restarted_as: Option<String>,
    /// The branch its run builds, if the trigger said.
    pub branch: Option<String>,
}

impl RunRequest {
    /// Its place in the order runs are listed in (its run, once recorded, keeps it: [`RunRecord::cursor`]).
    pub fn cursor(&self) -> RunCursor {
        RunCursor {
            at_ms: self.created_at_ms,
            id: self.run_id.clone(),
        }
    }
}

/// What [`Store::create_run_request`](super::Store::create_run_request) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRequestOutcome {
    /// The request is new.
    Created(RunRequest),
    /// Its idempotency key had already asked for this one: the request stored then, unchanged.
    Existing(RunRequest),
}

impl RunRequestOutcome {
    /// The request, new or not.
    pub fn request(&self) -> &RunRequest {
        match self {
            Self::Created(request) | Self::Existing(request) => request,
        }
    }

    /// The request, new or not, by value.
    pub fn into_request(self) -> RunRequest {
        match self {
            Self::Created(request) | Self::Existing(request) => request,
        }
    }

    /// Whether the request is new.
    pub fn is_created(&self) -> bool {
        matches!(self, Self::Created(_))
    }
}

/// Which runs to list, newest first: by when they were asked for, then by id, descending.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this pipeline's.
    pub pipeline: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only the runs after this one in the order (the last one of the previous page).
    pub before: Option<RunCursor>,
    /// At most this many.
    pub limit: u32,
}

/// Which requests without a run record to list (queued, starting, cancelled before they started, failed to
/// start), newest first in the order runs are listed in.
#[derive(Debug, Clone, Default)]
pub struct RunRequestFilter {
    /// Only this pipeline's.
    pub pipeline: Option<String>,
    /// Only requests in this state.
    pub state: Option<RunRequestState>,
    /// Only requests of this branch.
    pub branch: Option<String>,
    /// Only the requests after this one in the order.
    pub before: Option<RunCursor>,
    /// At most this many.
    pub limit: u32,
}

/// A place in the order runs are listed in, newest first: when the run was asked for and its id (a tie is
/// broken by the id). A page of runs ends at one; the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunCursor {
    /// When the run was asked for (ms since the Unix epoch).
    pub at_ms: i64,
    /// The run's id.
    pub id: String,
}

/// A pipeline to register: its KDL text, already validated by the caller, under the name it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPipeline {
    /// The pipeline's name (`pipeline "NAME"`).
    pub name: String,
    /// The file name its diagnostics name.
    pub file_name: String,
    /// The KDL text.
    pub source: String,
    /// The label of the token that registered it, if known.
    pub registered_by: Option<String>,
}

/// A registered pipeline, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineRecord {
    /// Its name.
    pub name: String,
    /// The file name its diagnostics name.
    pub file_name: String,
    /// The KDL text.
    pub source: String,
    /// The SHA-256 of the text, lowercase hex.
    pub sha256: String,
    /// When it was first registered (ms since the Unix epoch).
    pub registered_at_ms: i64,
    /// When its text (or file name) last changed.
    pub updated_at_ms: i64,
    /// The label of the token that last changed it.
    pub registered_by: Option<String>,
}

/// Which registered pipelines to list, by name.
#[derive(Debug, Clone, Default)]
pub struct PipelineFilter {
    /// Only the pipelines whose name sorts after this one (the last of the previous page).
    pub after: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// How a run is named: its id, or its number within a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRef {
    /// The run's id.
    Id(String),
    /// A pipeline-scoped number; with no pipeline, the number must be unique across pipelines.
    Number {
        /// The pipeline, if known.
        pipeline: Option<String>,
        /// The number.
        number: u64,
    },
}

impl RunRef {
    /// Reads `ID`, `N` or `PIPELINE#N`; `pipeline` names the pipeline of a bare number.
    pub fn parse(text: &str, pipeline: Option<&str>) -> Self {
        if let Ok(number) = text.parse::<u64>() {
            return Self::Number {
                pipeline: pipeline.map(str::to_owned),
                number,
            };
        }
        if let Some((name, number)) = text.rsplit_once('#')
            && let Ok(number) = number.parse::<u64>()
        {
            return Self::Number {
                pipeline: Some(name.to_owned()),
                number,
            };
        }
        Self::Id(text.to_owned())
    }
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLineRecord {
    /// Instance name.
    pub stage: String,
    /// Attempt.
    pub attempt: u32,
    /// Line number within the attempt, from 1, without gaps.
    pub line: u64,
    /// stdout or stderr.
    pub stream: LogStreamKind,
    /// When it was read (ms since the Unix epoch).
    pub at_ms: i64,
    /// The text (secrets already masked).
    pub text: String,
}

/// Which log lines to read, a page at a time.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// The run's id.
    pub run_id: String,
    /// Only this stage instance's.
    pub stage: Option<String>,
    /// Only this attempt's.
    pub attempt: Option<u32>,
    /// Continue after this point (from the previous page); `None` starts at the beginning.
    pub after: Option<LogCursor>,
    /// At most this many stored chunks per page.
    pub chunks: u32,
}

/// Where a page of log lines ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    /// Sequence number of the last chunk read.
    pub(crate) seq: u64,
}

/// A page of log lines and where to continue (`None`: that was the last page).
#[derive(Debug, Clone)]
pub struct LogPage {
    /// The lines, in the order they were written.
    pub lines: Vec<LogLineRecord>,
    /// Pass as [`LogQuery::after`] for the next page.
    pub next: Option<LogCursor>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The queue (e.g. `runs`).
    pub queue: String,
    /// What to do, for the worker (usually JSON).
    pub payload: String,
    /// Claims allowed before a job whose leases keep expiring is failed as lost.
    pub max_attempts: u32,
}

/// A job a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job.
    pub id: i64,
    /// What to do.
    pub payload: String,
    /// The lease: present it to heartbeat, complete or fail the job.
    pub lease: Lease,
    /// Claims allowed.
    pub max_attempts: u32,
    /// When the lease ends unless extended (ms since the Unix epoch, the database's clock).
    pub lease_until_ms: i64,
}

/// How a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Claimed; the lease may have expired without anyone noticing yet.
    Running,
    /// Done.
    Completed,
    /// Failed by its worker, or lost (leases expired `max_attempts` times).
    Failed,
}

impl JobState {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    /// The job.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// What to do.
    pub payload: String,
    /// How it stands.
    pub state: JobState,
    /// Claims so far.
    pub attempts: u32,
    /// Claims allowed.
    pub max_attempts: u32,
    /// The last worker that claimed it.
    pub worker: Option<String>,
    /// Why it failed (`lost` when its leases kept expiring).
    pub error: Option<String>,
}

/// The reason stored for a job whose leases expired `max_attempts` times.
pub const LOST: &str = "lost";

/// A lease's length.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::RunRequestState::{Cancelled, Failed, Queued, Started};

    #[test]
    fn run_request_states_lead_forward_only() {
        let all = [Queued, Started, Cancelled, Failed];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|from| all.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| from != to && from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Queued, Started),
                (Queued, Cancelled),
                (Queued, Failed),
                (Started, Cancelled),
                (Started, Failed),
            ]
        );
        assert!(all.iter().all(|state| state.can_become(*state)));
        assert_eq!(Cancelled.sources(), [Queued, Started]);
        assert!(Queued.sources().is_empty());
        for state in all {
            assert_eq!(super::RunRequestState::parse(state.as_str()), state);
        }
    }
}
