//! The store contract: every backend passes the same tests, SQLite on temporary files and PostgreSQL on a real
//! server named by `BUILDIT_TEST_DATABASE_URL` (`.ci/run` starts one; with `CI` set, a missing server fails).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use buildit_core::events::{
    EventBus, FailureKind, LogStreamKind, RunEvent, RunEventKind, RunOutcome, StageCounts,
    StageOutcome, TestSummary,
};
use buildit_core::store::{
    AttemptEnd, AttemptStart, AttemptState, GroupAcquire, GroupClaim, JobState, LOST,
    LogLineRecord, LogQuery, MemoryStore, NewJob, NewPipeline, NewRun, NewRunRequest,
    PipelineFilter, PostgresStore, RecordBatch, RunCursor, RunFilter, RunOwner, RunRef,
    RunRequestFilter, RunRequestOutcome, RunRequestState, RunState, SqliteStore, Store, StoreError,
    hash_token, new_token, record_run, sha256_hex,
};
use sqlx::Connection as _;

#[expect(
    dead_code,
    reason = "the store tests do not check log lines with the shared helper"
)]
mod support;

const DATABASE_URL: &str = "BUILDIT_TEST_DATABASE_URL";

/// A store to test and what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    /// Opens another handle on the same database (another "process").
    reopen: Reopen,
    _dir: Option<tempfile::TempDir>,
}

enum Reopen {
    Sqlite(std::path::PathBuf),
    Postgres(String),
    /// Another handle on the same memory.
    Memory(MemoryStore),
}

impl Backend {
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.reopen {
            Reopen::Sqlite(path) => match SqliteStore::open(path).await {
                Ok(store) => Arc::new(store),
                Err(error) => panic!("reopen: {error}"),
            },
            Reopen::Postgres(url) => match PostgresStore::connect_with(url, 16).await {
                Ok(store) => Arc::new(store),
                Err(error) => panic!("reconnect: {error}"),
            },
            Reopen::Memory(store) => Arc::new(store.clone()),
        }
    }
}

async fn sqlite() -> Backend {
    let dir = support::temp_dir();
    let path = dir.path().join("nested/buildit.db");
    let store = match SqliteStore::open(&path).await {
        Ok(store) => store,
        Err(error) => panic!("open: {error}"),
    };
    Backend {
        store: Arc::new(store),
        reopen: Reopen::Sqlite(path),
        _dir: Some(dir),
    }
}

/// The in-memory fake: it passes the same contract.
async fn memory() -> Backend {
    let store = MemoryStore::new();
    Backend {
        store: Arc::new(store.clone()),
        reopen: Reopen::Memory(store),
        _dir: None,
    }
}

/// A fresh database on the test server, or `None` (outside CI) when there is no server.
async fn postgres() -> Option<Backend> {
    postgres_created("").await
}

/// [`postgres`], the database created with `options` (`CREATE DATABASE name options`).
async fn postgres_created(options: &str) -> Option<Backend> {
    let Ok(server) = std::env::var(DATABASE_URL) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{DATABASE_URL} is not set: CI must start PostgreSQL (scripts/start-postgres.sh) for these tests"
        );
        eprintln!(
            "skipped: set {DATABASE_URL} to a PostgreSQL server URL to run the PostgreSQL contract"
        );
        return None;
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "buildit_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = match sqlx::PgConnection::connect(&server).await {
        Ok(connection) => connection,
        Err(error) => panic!("connect to {server}: {error}"),
    };
    if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} {options}"
    )))
    .execute(&mut admin)
    .await
    {
        panic!("create database: {error}");
    }
    let _ = admin.close().await;
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("{DATABASE_URL} must end in /DATABASE"),
    };
    let store = match PostgresStore::connect_with(&url, 16).await {
        Ok(store) => store,
        Err(error) => panic!("connect: {error}"),
    };
    Some(Backend {
        store: Arc::new(store),
        reopen: Reopen::Postgres(url),
        _dir: None,
    })
}

/// Runs one contract check against each backend.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::sqlite().await).await;
                }
            )*
        }
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::memory().await).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    if let Some(backend) = super::postgres().await {
                        super::$check(backend).await;
                    }
                }
            )*
        }
    };
}

contract!(
    migrations_are_idempotent_and_concurrent,
    run_numbers_count_per_pipeline,
    concurrent_run_numbers_never_repeat,
    recorded_events_read_back_exactly,
    attempts_keep_their_start_whether_it_came_with_the_end_or_before,
    log_pages_continue_where_they_stopped,
    tenants_do_not_see_each_other,
    dead_runners_runs_become_interrupted,
    runs_are_found_by_id_or_number,
    queue_claims_completes_and_fences,
    expired_lease_is_taken_over_and_fenced,
    heartbeat_keeps_the_job,
    lost_jobs_fail_after_max_attempts,
    many_claimers_never_share_a_job,
    stored_events_read_back_from_any_point,
    tokens_give_their_tenant_and_are_stored_only_as_hashes,
    run_requests_are_created_once_per_key_and_change_state_by_the_rules,
    cancels_and_restarts_travel_through_run_requests,
    a_lease_ended_early_lets_its_job_be_claimed_at_once,
    runs_keep_their_place_from_request_to_record_and_list_by_filter_and_cursor,
    pages_of_runs_never_skip_nor_repeat_a_run,
    pipelines_are_registered_replaced_and_listed_per_tenant,
    test_counts_are_read_from_their_events_alone,
    cancels_asked_through_the_store_reach_only_running_runs,
    a_deleted_run_leaves_nothing_and_other_runs_stay,
    runs_ended_before_a_time_are_found_for_pruning,
    a_runs_inputs_and_the_run_it_reruns_read_back,
    a_concurrency_group_has_one_holder_and_passes_on_when_it_ends_or_dies,
    the_newest_waiting_run_of_a_group_displaces_an_older_one_and_is_handed_the_group,
);

fn ok<T>(result: Result<T, StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("store error: {error}"),
    }
}

fn new_run(id: &str, pipeline: &str) -> NewRun {
    NewRun {
        id: id.to_owned(),
        pipeline: pipeline.to_owned(),
        owner: RunOwner::this_process(),
        sha: Some("abc123".to_owned()),
        branch: Some("main".to_owned()),
        event: Some("push".to_owned()),
        inputs: None,
        retry_of: None,
    }
}

async fn migrations_are_idempotent_and_concurrent(backend: Backend) {
    // Four handles opened at once on a database that is already migrated, then four at once on a new one.
    let (a, b, c, d) = tokio::join!(
        backend.reopen(),
        backend.reopen(),
        backend.reopen(),
        backend.reopen()
    );
    for store in [a, b, c, d] {
        assert_eq!(store.backend(), backend.store.backend());
    }
    ok(backend.store.create_run(&new_run("r1", "p")).await);
    // Reopening keeps the data.
    let again = backend.reopen().await;
    assert_eq!(
        ok(again.find_run(&RunRef::Id("r1".to_owned())).await).number,
        1
    );
}

async fn run_numbers_count_per_pipeline(backend: Backend) {
    let store = backend.store;
    let mut got = Vec::new();
    for (id, pipeline) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a")] {
        let run = ok(store.create_run(&new_run(id, pipeline)).await);
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.pipeline, pipeline);
        got.push(run.number);
    }
    assert_eq!(got, [1, 2, 1, 3]);
    // The same id twice is refused, and does not use up a number.
    assert!(store.create_run(&new_run("a1", "a")).await.is_err());
    assert_eq!(ok(store.create_run(&new_run("a4", "a")).await).number, 4);
}

async fn concurrent_run_numbers_never_repeat(backend: Backend) {
    // Several handles on one database stand for several processes triggering runs at once.
    let mut handles = vec![backend.store.clone()];
    for _ in 0..3 {
        handles.push(backend.reopen().await);
    }
    let mut set = tokio::task::JoinSet::new();
    for index in 0..40 {
        let store = handles[index % handles.len()].clone();
        set.spawn(async move {
            ok(store
                .create_run(&new_run(&format!("run-{index}"), "busy"))
                .await)
            .number
        });
    }
    let mut numbers = Vec::new();
    while let Some(number) = set.join_next().await {
        match number {
            Ok(number) => numbers.push(number),
            Err(error) => panic!("task: {error}"),
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=40).collect::<Vec<u64>>());
}

/// Emits a run's events on a bus that a recorder writes to `store`; returns the log lines emitted.
async fn emit_sample_run(store: Arc<dyn Store>, run_id: &str, lines: usize) -> Vec<LogLineRecord> {
    let mut bus = EventBus::new(run_id);
    let events = bus.subscribe_lossless(64);
    let recorder = tokio::spawn(record_run(store, run_id.to_owned(), events));
    bus.emit(RunEventKind::RunStarted {
        pipeline: "sample".to_owned(),
        stages: 3,
        plan: Vec::new(),
    })
    .await;
    let mut emitted = Vec::new();
    let mut numbers = std::collections::HashMap::new();
    for (stage, attempt) in [("build", 1), ("test", 1), ("test", 2)] {
        bus.emit(RunEventKind::StageStarted {
            stage: stage.to_owned(),
            attempt,
        })
        .await;
    }
    for index in 0..lines {
        // Interleaved stages and streams, with text that needs care: quotes, tabs, unicode, empty lines.
        let (stage, attempt) = [("build", 1), ("test", 1), ("test", 2)][index % 3 / 2 + index % 2];
        let stream = if index % 5 == 0 {
            LogStreamKind::Stderr
        } else {
            LogStreamKind::Stdout
        };
        let text = match index % 4 {
            0 => format!("line {index} \"quoted\" \t tab"),
            1 => String::new(),
            2 => format!("ünïcødé {index} \\ back\\slash"),
            _ => format!("{index}"),
        };
        let number = numbers.entry((stage, attempt)).or_insert(0u64);
        *number += 1;
        emitted.push(LogLineRecord {
            stage: stage.to_owned(),
            attempt,
            line: *number,
            stream,
            at_ms: 0,
            text: text.clone(),
        });
        bus.emit(RunEventKind::LogLine {
            stage: stage.to_owned(),
            attempt,
            stream,
            text,
        })
        .await;
    }
    for (stage, attempt, outcome, code) in [
        ("build", 1, StageOutcome::Succeeded, Some(0)),
        ("test", 1, StageOutcome::Failed, Some(3)),
        ("test", 2, StageOutcome::Succeeded, Some(0)),
    ] {
        bus.emit(RunEventKind::StageFinished {
            stage: stage.to_owned(),
            attempt,
            outcome,
            exit_code: code,
            duration_ms: 5,
            reason: None,
            failure: (outcome == StageOutcome::Failed).then_some(FailureKind::ExitCode),
            retrying: outcome == StageOutcome::Failed,
        })
        .await;
    }
    bus.emit(RunEventKind::StageFinished {
        stage: "deploy".to_owned(),
        attempt: 0,
        outcome: StageOutcome::Skipped,
        exit_code: None,
        duration_ms: 0,
        reason: Some("dependency failed".to_owned()),
        failure: None,
        retrying: false,
    })
    .await;
    bus.emit(RunEventKind::RunFinished {
        status: RunOutcome::Failed,
        duration_ms: 42,
        counts: StageCounts::default(),
        failures: std::collections::BTreeMap::new(),
        critical_path: Vec::new(),
    })
    .await;
    drop(bus);
    match recorder.await {
        Ok(Ok(summary)) => assert!(summary.batches >= 1),
        Ok(Err(error)) => panic!("recorder: {error}"),
        Err(error) => panic!("recorder task: {error}"),
    }
    emitted
}

async fn all_lines(store: &dyn Store, query: LogQuery) -> Vec<LogLineRecord> {
    let mut query = query;
    let mut lines = Vec::new();
    loop {
        let page = ok(store.logs(&query).await);
        lines.extend(page.lines);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return lines,
        }
    }
}

fn without_times(lines: Vec<LogLineRecord>) -> Vec<LogLineRecord> {
    lines
        .into_iter()
        .map(|line| LogLineRecord { at_ms: 0, ..line })
        .collect()
}

fn query(run_id: &str) -> LogQuery {
    LogQuery {
        run_id: run_id.to_owned(),
        stage: None,
        attempt: None,
        after: None,
        chunks: 7,
    }
}

async fn recorded_events_read_back_exactly(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("rec", "sample")).await);
    let emitted = emit_sample_run(store.clone(), "rec", 5000).await;

    let run = ok(store.find_run(&RunRef::Id("rec".to_owned())).await);
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.stage_count, Some(3));
    assert_eq!(run.duration_ms, Some(42));
    assert_eq!(run.sha.as_deref(), Some("abc123"));
    assert!(run.finished_at_ms.is_some());

    let attempts = ok(store.attempts("rec").await);
    let summary: Vec<(String, u32, AttemptState, Option<i32>)> = attempts
        .iter()
        .map(|a| (a.stage.clone(), a.attempt, a.state, a.exit_code))
        .collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    for expected in [
        ("build", 1, StageOutcome::Succeeded, Some(0)),
        ("test", 1, StageOutcome::Failed, Some(3)),
        ("test", 2, StageOutcome::Succeeded, Some(0)),
        ("deploy", 0, StageOutcome::Skipped, None),
    ] {
        assert!(
            summary.contains(&(
                expected.0.to_owned(),
                expected.1,
                AttemptState::Finished(expected.2),
                expected.3
            )),
            "{expected:?} missing from {summary:?}"
        );
    }
    let deploy = attempts.iter().find(|a| a.stage == "deploy");
    assert_eq!(
        deploy.and_then(|a| a.reason.as_deref()),
        Some("dependency failed")
    );

    // Every line, in the order it was emitted, across stages.
    let lines = all_lines(store.as_ref(), query("rec")).await;
    assert!(lines.iter().all(|line| line.at_ms > 0));
    assert_eq!(without_times(lines), emitted);

    // One attempt's lines, numbered without gaps.
    let mut only = query("rec");
    only.stage = Some("test".to_owned());
    only.attempt = Some(2);
    let lines = all_lines(store.as_ref(), only).await;
    let expected: Vec<LogLineRecord> = emitted
        .iter()
        .filter(|line| line.stage == "test" && line.attempt == 2)
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(without_times(lines.clone()), expected);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(index, line)| line.line == index as u64 + 1)
    );
}

fn end(stage: &str, attempt: u32, at_ms: i64, started_at_ms: Option<i64>) -> AttemptEnd {
    AttemptEnd {
        stage: stage.to_owned(),
        attempt,
        outcome: StageOutcome::Succeeded,
        exit_code: Some(0),
        reason: None,
        duration_ms: 5,
        at_ms,
        started_at_ms,
    }
}

async fn attempts_keep_their_start_whether_it_came_with_the_end_or_before(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("starts", "sample")).await);
    // `early` starts in one batch and ends in the next; `quick` starts and ends within one batch, written once.
    let first = RecordBatch {
        started: vec![AttemptStart {
            stage: "early".to_owned(),
            attempt: 1,
            at_ms: 100,
        }],
        ..RecordBatch::default()
    };
    let second = RecordBatch {
        finished: vec![end("early", 1, 150, None), end("quick", 1, 170, Some(160))],
        ..RecordBatch::default()
    };
    ok(store.write_batch("starts", &first).await);
    let running = ok(store.attempts("starts").await);
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].state, AttemptState::Running);
    ok(store.write_batch("starts", &second).await);
    // A batch written twice (its commit was lost) changes nothing.
    ok(store.write_batch("starts", &second).await);
    let attempts = ok(store.attempts("starts").await);
    let times: Vec<(String, Option<i64>, Option<i64>, AttemptState)> = attempts
        .iter()
        .map(|a| (a.stage.clone(), a.started_at_ms, a.finished_at_ms, a.state))
        .collect();
    let done = AttemptState::Finished(StageOutcome::Succeeded);
    assert_eq!(
        times,
        [
            ("early".to_owned(), Some(100), Some(150), done),
            ("quick".to_owned(), Some(160), Some(170), done),
        ]
    );
}

async fn log_pages_continue_where_they_stopped(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("paged", "sample")).await);
    let emitted = emit_sample_run(store.clone(), "paged", 20_000).await;
    let mut paged = query("paged");
    paged.chunks = 1;
    let mut pages = 0;
    let mut lines = Vec::new();
    loop {
        let page = ok(store.logs(&paged).await);
        pages += 1;
        lines.extend(page.lines);
        match page.next {
            Some(next) => paged.after = Some(next),
            None => break,
        }
    }
    assert!(pages > 3, "{pages} pages");
    assert_eq!(without_times(lines), emitted);
    // A run without logs has an empty first page.
    ok(store.create_run(&new_run("quiet", "sample")).await);
    let page = ok(store.logs(&query("quiet")).await);
    assert!(page.lines.is_empty() && page.next.is_none());
}

async fn tenants_do_not_see_each_other(backend: Backend) {
    let store = backend.store;
    ok(store.create_tenant("acme").await);
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    assert_eq!(acme.tenant(), "acme");
    ok(store.create_run(&new_run("shared-id", "p")).await);
    // Run ids and numbers are per tenant.
    let theirs = ok(acme.create_run(&new_run("shared-id", "p")).await);
    assert_eq!(theirs.number, 1);
    ok(acme.create_run(&new_run("acme-only", "p")).await);
    let filter = RunFilter {
        limit: 100,
        ..RunFilter::default()
    };
    assert_eq!(ok(store.list_runs(&filter).await).len(), 1);
    assert_eq!(ok(acme.list_runs(&filter).await).len(), 2);
    assert!(matches!(
        store.find_run(&RunRef::Id("acme-only".to_owned())).await,
        Err(StoreError::NoSuchRun(_))
    ));
    let job = ok(acme
        .enqueue(&NewJob {
            queue: "runs".to_owned(),
            payload: "{}".to_owned(),
            max_attempts: 1,
        })
        .await);
    assert!(ok(store.claim("runs", "w", Duration::from_secs(5)).await).is_none());
    assert!(ok(store.job(job).await).is_none());
    assert!(ok(acme.claim("runs", "w", Duration::from_secs(5)).await).is_some());
    // Unknown tenants are refused rather than created by accident.
    assert!(
        store
            .for_tenant("nobody")
            .create_run(&new_run("x", "p"))
            .await
            .is_err()
    );
}

/// Records a run whose stages write interleaved reads of several lines (so chunks of different attempts
/// alternate), beside the other events; returns every event the bus emitted, from a lossless subscriber.
async fn emit_interleaved_run(store: Arc<dyn Store>, run_id: &str) -> Vec<RunEvent> {
    let mut bus = EventBus::new(run_id);
    let recorded = bus.subscribe_lossless(64);
    let mut everything = bus.subscribe_lossless(100_000);
    let recorder = tokio::spawn(record_run(store, run_id.to_owned(), recorded));
    bus.emit(RunEventKind::RunStarted {
        pipeline: "sample".to_owned(),
        stages: 3,
        plan: Vec::new(),
    })
    .await;
    let stages = [("build", 1), ("test", 1), ("lint", 1)];
    bus.emit_all(stages.map(|(stage, _)| RunEventKind::StageQueued {
        stage: stage.to_owned(),
    }))
    .await;
    for (stage, attempt) in stages {
        bus.emit(RunEventKind::StageStarted {
            stage: stage.to_owned(),
            attempt,
        })
        .await;
    }
    for read in 0..60usize {
        let (stage, attempt) = stages[read % 3];
        let lines = (0..=read % 4)
            .map(|line| format!("{stage} read {read} line {line} \"q\""))
            .collect();
        let stream = if read % 5 == 0 {
            LogStreamKind::Stderr
        } else {
            LogStreamKind::Stdout
        };
        bus.emit_lines(stage, attempt, stream, lines).await;
        if read == 30 {
            // A retry in the middle of the output.
            bus.emit(RunEventKind::StageFinished {
                stage: "lint".to_owned(),
                attempt: 1,
                outcome: StageOutcome::Failed,
                exit_code: Some(1),
                duration_ms: 3,
                reason: None,
                failure: Some(FailureKind::ExitCode),
                retrying: true,
            })
            .await;
        }
    }
    for (stage, attempt) in stages {
        bus.emit(RunEventKind::StageFinished {
            stage: stage.to_owned(),
            attempt: if stage == "lint" { 2 } else { attempt },
            outcome: StageOutcome::Succeeded,
            exit_code: Some(0),
            duration_ms: 5,
            reason: None,
            failure: None,
            retrying: false,
        })
        .await;
    }
    bus.emit(RunEventKind::RunFinished {
        status: RunOutcome::Succeeded,
        duration_ms: 9,
        counts: StageCounts::default(),
        failures: std::collections::BTreeMap::new(),
        critical_path: Vec::new(),
    })
    .await;
    drop(bus);
    match recorder.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("recorder: {error}"),
        Err(error) => panic!("recorder task: {error}"),
    }
    let mut events = Vec::new();
    while let Some(batch) = everything.recv().await {
        events.extend(batch.iter().cloned());
    }
    events
}

async fn stored_events_read_back_from_any_point(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("replayed", "sample")).await);
    let emitted = emit_interleaved_run(store.clone(), "replayed").await;
    let seqs: Vec<u64> = emitted.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=emitted.len() as u64).collect::<Vec<u64>>());
    assert!(
        emitted
            .iter()
            .any(|event| matches!(event.kind, RunEventKind::LogLine { .. }))
    );

    // Paged through with any page size, the store gives back exactly what the bus emitted.
    for limit in [1usize, 7, 64, 10_000] {
        let mut read = Vec::new();
        loop {
            let after = read.last().map_or(0, |event: &RunEvent| event.seq);
            let page = ok(store.events_after("replayed", after, limit).await);
            assert!(page.len() <= limit);
            if page.is_empty() {
                break;
            }
            read.extend(page);
        }
        assert_eq!(read, emitted, "pages of {limit}");
    }
    // From any point, in the middle of a chunk of lines or not.
    for after in [0u64, 5, 6, 17, 40, emitted.len() as u64 - 1] {
        let page = ok(store.events_after("replayed", after, 9).await);
        let start = after as usize;
        let end = (start + 9).min(emitted.len());
        assert_eq!(page, emitted[start..end], "after {after}");
    }
    assert!(
        ok(store
            .events_after("replayed", emitted.len() as u64, 10)
            .await)
        .is_empty()
    );
    assert!(ok(store.events_after("replayed", 0, 0).await).is_empty());

    // The attempts `runs show` reads come from the same events.
    let attempts = ok(store.attempts("replayed").await);
    let summary: Vec<(String, u32, AttemptState)> = attempts
        .iter()
        .map(|a| (a.stage.clone(), a.attempt, a.state))
        .collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert!(summary.contains(&(
        "lint".to_owned(),
        1,
        AttemptState::Finished(StageOutcome::Failed)
    )));

    // An unknown run is an error, not an empty stream; another tenant sees neither the run nor its events.
    assert!(matches!(
        store.events_after("no-such-run", 0, 10).await,
        Err(StoreError::NoSuchRun(_))
    ));
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    assert!(matches!(
        acme.events_after("replayed", 0, 10).await,
        Err(StoreError::NoSuchRun(_))
    ));
    ok(acme.create_run(&new_run("replayed", "sample")).await);
    assert!(ok(acme.events_after("replayed", 0, 10).await).is_empty());
    assert_eq!(ok(store.events_after("replayed", 0, 10_000).await), emitted);
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    match std::process::Command::new("true").spawn() {
        Ok(mut child) => {
            let pid = child.id();
            let _ = child.wait();
            pid
        }
        Err(error) => panic!("spawn: {error}"),
    }
}

async fn dead_runners_runs_become_interrupted(backend: Backend) {
    let store = backend.store;
    let here = RunOwner::this_process();
    let mut dead = new_run("dead", "p");
    dead.owner.pid = dead_pid();
    ok(store.create_run(&dead).await);
    let mut remote = new_run("remote", "p");
    remote.owner.host = "another-host".to_owned();
    ok(store.create_run(&remote).await);
    ok(store.create_run(&new_run("alive", "p")).await);
    let mut bus = EventBus::new("dead");
    let events = bus.subscribe_lossless(8);
    let recorder = tokio::spawn(record_run(store.clone(), "dead".to_owned(), events));
    bus.emit(RunEventKind::StageStarted {
        stage: "build".to_owned(),
        attempt: 1,
    })
    .await;
    drop(bus);
    let _ = recorder.await;

    let marked = ok(store.mark_interrupted(&here, Duration::from_secs(60)).await);
    assert_eq!(marked, ["dead"]);
    let run = ok(store.find_run(&RunRef::Id("dead".to_owned())).await);
    assert_eq!(run.state, RunState::Interrupted);
    assert!(run.reason.as_deref().is_some_and(|r| r.contains("gone")));
    let attempts = ok(store.attempts("dead").await);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Interrupted);
    // A remote runner that stopped heart-beating is interrupted too; a run whose runner heart-beats is alive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(store.heartbeat_run("alive").await);
    let marked = ok(store
        .mark_interrupted(&here, Duration::from_millis(200))
        .await);
    assert_eq!(marked, ["remote"]);
    assert_eq!(
        ok(store.find_run(&RunRef::Id("alive".to_owned())).await).state,
        RunState::Running
    );
}

async fn runs_are_found_by_id_or_number(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("x1", "build")).await);
    ok(store.create_run(&new_run("x2", "build")).await);
    ok(store.create_run(&new_run("y1", "deploy")).await);
    let by = |text: &str, pipeline: Option<&str>| RunRef::parse(text, pipeline);
    assert_eq!(ok(store.find_run(&by("x2", None)).await).number, 2);
    assert_eq!(ok(store.find_run(&by("2", None)).await).id, "x2");
    assert_eq!(ok(store.find_run(&by("build#1", None)).await).id, "x1");
    assert_eq!(ok(store.find_run(&by("1", Some("deploy"))).await).id, "y1");
    match store.find_run(&by("1", None)).await {
        Err(StoreError::AmbiguousRun { number, pipelines }) => {
            assert_eq!(number, 1);
            assert_eq!(pipelines, ["build", "deploy"]);
        }
        other => panic!("expected an ambiguous run, got {other:?}"),
    }
    assert!(matches!(
        store.find_run(&by("9", None)).await,
        Err(StoreError::NoSuchRun(_))
    ));
    let listed = ok(store
        .list_runs(&RunFilter {
            pipeline: Some("build".to_owned()),
            limit: 1,
            ..RunFilter::default()
        })
        .await);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "x2");
}

async fn a_runs_inputs_and_the_run_it_reruns_read_back(backend: Backend) {
    let store = backend.store;
    let plain = ok(store.create_run(&new_run("first", "build")).await);
    assert_eq!(plain.inputs, None);
    assert_eq!(plain.retry_of, None);
    let inputs = buildit_core::store::RunInputs {
        file: Some("/ws/buildit.kdl".to_owned()),
        digest: Some("ab12".to_owned()),
        workspace: Some("/ws".to_owned()),
        branch: Some("main".to_owned()),
        event: Some("manual".to_owned()),
        env: [("MODE".to_owned(), "fast = yes".to_owned())].into(),
        stages: vec!["test".to_owned(), "lint (os=linux)".to_owned()],
        rerun: Some("failed".to_owned()),
        ..buildit_core::store::RunInputs::default()
    };
    let retry = ok(store
        .create_run(&NewRun {
            inputs: Some(inputs.clone()),
            retry_of: Some("first".to_owned()),
            ..new_run("second", "build")
        })
        .await);
    assert_eq!(retry.inputs.as_ref(), Some(&inputs));
    assert_eq!(retry.retry_of.as_deref(), Some("first"));
    let found = ok(store.find_run(&RunRef::Id("second".to_owned())).await);
    assert_eq!(found.inputs, Some(inputs));
    assert_eq!(found.retry_of.as_deref(), Some("first"));
    let listed = ok(store
        .list_runs(&RunFilter {
            limit: 10,
            ..RunFilter::default()
        })
        .await);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].retry_of.as_deref(), Some("first"));
    assert_eq!(listed[1].inputs, None);
}

fn job(payload: &str, max_attempts: u32) -> NewJob {
    NewJob {
        queue: "runs".to_owned(),
        payload: payload.to_owned(),
        max_attempts,
    }
}

async fn queue_claims_completes_and_fences(backend: Backend) {
    let store = backend.store;
    assert!(ok(store.claim("runs", "w1", Duration::from_secs(30)).await).is_none());
    let first = ok(store.enqueue(&job("one", 3)).await);
    let second = ok(store.enqueue(&job("two", 3)).await);
    ok(store
        .enqueue(&NewJob {
            queue: "other".to_owned(),
            ..job("elsewhere", 3)
        })
        .await);
    let claimed = ok(store.claim("runs", "w1", Duration::from_secs(30)).await);
    let Some(claimed) = claimed else {
        panic!("nothing claimed")
    };
    assert_eq!((claimed.id, claimed.payload.as_str()), (first, "one"));
    assert_eq!(claimed.lease.attempt, 1);
    let next = ok(store.claim("runs", "w2", Duration::from_secs(30)).await);
    assert_eq!(next.as_ref().map(|j| j.id), Some(second));
    assert!(ok(store.claim("runs", "w3", Duration::from_secs(30)).await).is_none());

    ok(store.complete(&claimed.lease).await);
    assert!(matches!(
        store.complete(&claimed.lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let record = ok(store.job(first).await);
    assert_eq!(record.as_ref().map(|j| j.state), Some(JobState::Completed));
    assert_eq!(record.and_then(|j| j.worker), Some("w1".to_owned()));
    if let Some(next) = next {
        ok(store.fail(&next.lease, "image missing").await);
        let record = ok(store.job(second).await);
        assert_eq!(record.as_ref().map(|j| j.state), Some(JobState::Failed));
        assert_eq!(
            record.and_then(|j| j.error).as_deref(),
            Some("image missing")
        );
    }
}

async fn expired_lease_is_taken_over_and_fenced(backend: Backend) {
    let store = backend.store;
    let id = ok(store.enqueue(&job("work", 5)).await);
    let Some(slow) = ok(store
        .claim("runs", "slow", Duration::from_millis(150))
        .await)
    else {
        panic!("nothing claimed")
    };
    // Still leased: nobody else gets it.
    assert!(ok(store.claim("runs", "fast", Duration::from_secs(30)).await).is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let Some(fast) = ok(store.claim("runs", "fast", Duration::from_secs(30)).await) else {
        panic!("the expired job was not taken over")
    };
    assert_eq!(fast.id, id);
    assert_eq!(fast.lease.attempt, 2);
    // The worker that lost its lease can neither extend nor finish the job.
    assert!(matches!(
        store.heartbeat(&slow.lease, Duration::from_secs(30)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.complete(&slow.lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
    ok(store.complete(&fast.lease).await);
    let record = ok(store.job(id).await);
    assert_eq!(
        record.as_ref().map(|j| (j.state, j.attempts)),
        Some((JobState::Completed, 2))
    );
}

async fn heartbeat_keeps_the_job(backend: Backend) {
    let store = backend.store;
    ok(store.enqueue(&job("long", 5)).await);
    let Some(held) = ok(store
        .claim("runs", "holder", Duration::from_millis(300))
        .await)
    else {
        panic!("nothing claimed")
    };
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let until = ok(store
            .heartbeat(&held.lease, Duration::from_millis(300))
            .await);
        assert!(until >= held.lease_until_ms);
        assert!(ok(store.claim("runs", "thief", Duration::from_secs(30)).await).is_none());
    }
    ok(store.complete(&held.lease).await);
}

async fn lost_jobs_fail_after_max_attempts(backend: Backend) {
    let store = backend.store;
    let id = ok(store.enqueue(&job("crashy", 2)).await);
    for attempt in 1..=2 {
        let claimed = ok(store.claim("runs", "w", Duration::from_millis(50)).await);
        assert_eq!(claimed.map(|j| j.lease.attempt), Some(attempt));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok(store.claim("runs", "w", Duration::from_millis(50)).await).is_none());
    let record = ok(store.job(id).await);
    assert_eq!(
        record.map(|j| (j.state, j.attempts, j.error)),
        Some((JobState::Failed, 2, Some(LOST.to_owned())))
    );
}

async fn many_claimers_never_share_a_job(backend: Backend) {
    // PostgreSQL is the backend for many workers: it gets the full 10,000 jobs.
    let jobs = if backend.store.backend() == "postgres" {
        10_000
    } else {
        1_000
    };
    let store = backend.reopen().await;
    for index in 0..jobs {
        ok(store.enqueue(&job(&index.to_string(), 1)).await);
    }
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        set.spawn(async move {
            let mut claimed = Vec::new();
            while let Some(job) = ok(store
                .claim("runs", &format!("w{worker}"), Duration::from_secs(600))
                .await)
            {
                claimed.push(job.id);
                ok(store.complete(&job.lease).await);
            }
            claimed
        });
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    while let Some(claimed) = set.join_next().await {
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => panic!("worker: {error}"),
        };
        total += claimed.len();
        seen.extend(claimed);
    }
    assert_eq!(total, jobs, "a job was claimed twice or not at all");
    assert_eq!(seen.len(), jobs);
}

/// An executor whose attempts start and then blow up while being waited for: a bug in an executor.
struct PanickingExecutor;

impl buildit_core::exec::Executor for PanickingExecutor {
    type Handle = ();

    async fn spawn(
        &self,
        _spec: buildit_core::exec::StageSpec,
    ) -> Result<(), buildit_core::exec::ExecError> {
        Ok(())
    }

    async fn logs(
        &self,
        _handle: &(),
    ) -> Result<buildit_core::exec::LogStream, buildit_core::exec::ExecError> {
        let (_, receiver) = tokio::sync::mpsc::channel(1);
        Ok(buildit_core::exec::LogStream::new(receiver))
    }

    async fn status(
        &self,
        _handle: &(),
    ) -> Result<buildit_core::exec::StageStatus, buildit_core::exec::ExecError> {
        Ok(buildit_core::exec::StageStatus::Running)
    }

    async fn wait(
        &self,
        _handle: &(),
    ) -> Result<buildit_core::exec::ExitStatus, buildit_core::exec::ExecError> {
        panic!("executor bug")
    }

    async fn cancel(
        &self,
        _handle: &(),
        _grace: Duration,
    ) -> Result<(), buildit_core::exec::ExecError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stage_whose_task_dies_is_recorded_as_failed_not_running() {
    let backend = sqlite().await;
    let store = backend.store;
    let plan = support::plan(
        "pipeline \"p\"\nstage \"boom\" { run \"true\" }\n",
        &buildit_core::RunContext::new(),
    );
    ok(store.create_run(&new_run("died", "p")).await);
    let mut bus = EventBus::new("died");
    let recorder = tokio::spawn(record_run(
        store.clone(),
        "died".to_owned(),
        bus.subscribe_lossless(64),
    ));
    let collector = support::collect_from(bus.subscribe_lossless(1024));
    let dir = support::temp_dir();
    let report = buildit_core::exec::execute(
        &plan,
        Arc::new(PanickingExecutor),
        &buildit_core::exec::RunIdentity::new("died", 1, dir.path()),
        &buildit_core::exec::RunOptions::default(),
        &bus,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    drop(bus);
    let _ = recorder.await;
    assert_eq!(report.status, RunOutcome::Failed);
    // Subscribers are told how the stage ended, as for any other.
    let events = support::events(collector).await;
    assert!(
        events.iter().any(|event| matches!(
            &event.kind,
            RunEventKind::StageFinished { stage, outcome: StageOutcome::Failed, reason: Some(reason), .. }
                if stage == "boom" && reason.starts_with("internal error")
        )),
        "{events:?}"
    );
    let mut attempts = ok(store.attempts("died").await);
    // Listed by time: both records can carry the same millisecond, so they are compared by attempt.
    attempts.sort_by_key(|a| a.attempt);
    let states: Vec<(u32, AttemptState)> = attempts.iter().map(|a| (a.attempt, a.state)).collect();
    assert_eq!(
        states,
        [
            (0, AttemptState::Finished(StageOutcome::Failed)),
            (1, AttemptState::Interrupted)
        ]
    );
    assert!(
        attempts[0]
            .reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with("internal error")),
        "{attempts:?}"
    );
    assert_eq!(
        ok(store.find_run(&RunRef::Id("died".to_owned())).await).state,
        RunState::Failed
    );
}

/// The write-ahead log is folded into the file while a run is recorded, so that it stays small (with SQLite's
/// default of 1,000 pages it would grow to about 4 MiB here) and closing the store has little left to do.
#[tokio::test]
async fn the_write_ahead_log_stays_small_while_a_run_is_recorded() {
    let backend = sqlite().await;
    let Reopen::Sqlite(path) = &backend.reopen else {
        panic!("an SQLite backend");
    };
    let store = backend.store.clone();
    ok(store.create_run(&new_run("big", "p")).await);
    let mut bus = EventBus::new("big");
    let recorder = tokio::spawn(record_run(
        store.clone(),
        "big".to_owned(),
        bus.subscribe_lossless(64),
    ));
    bus.emit(RunEventKind::StageStarted {
        stage: "print".to_owned(),
        attempt: 1,
    })
    .await;
    // 12 MB of log lines, which the recorder writes in many transactions.
    let text = "x".repeat(400);
    for _ in 0..30_000 {
        bus.emit(RunEventKind::LogLine {
            stage: "print".to_owned(),
            attempt: 1,
            stream: LogStreamKind::Stdout,
            text: text.clone(),
        })
        .await;
    }
    drop(bus);
    match recorder.await {
        Ok(Ok(summary)) => assert!(summary.batches > 3, "{summary:?}"),
        Ok(Err(error)) => panic!("recorder: {error}"),
        Err(error) => panic!("recorder task: {error}"),
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let size = match std::fs::metadata(&wal) {
        Ok(metadata) => metadata.len(),
        Err(error) => panic!("{}: {error}", std::path::Path::new(&wal).display()),
    };
    assert!(size < 2 * 1024 * 1024, "write-ahead log of {size} bytes");
    assert_eq!(all_lines(store.as_ref(), query("big")).await.len(), 30_000);
}

/// The migration error from opening a migrated SQLite store after `tamper` (one statement, changing one row
/// of its migration table) ran on it.
async fn migration_error_after(tamper: &str) -> String {
    let dir = support::temp_dir();
    let path = dir.path().join("buildit.db");
    ok(SqliteStore::open(&path).await).close().await;
    // Reopening an untouched store is fine.
    ok(SqliteStore::open(&path).await).close().await;
    let url = format!("sqlite://{}", path.display());
    let mut connection = match sqlx::SqliteConnection::connect(&url).await {
        Ok(connection) => connection,
        Err(error) => panic!("{error}"),
    };
    let tampered = sqlx::query(sqlx::AssertSqlSafe(tamper.to_owned()))
        .execute(&mut connection)
        .await;
    assert!(matches!(tampered, Ok(done) if done.rows_affected() == 1));
    let _ = connection.close().await;
    match SqliteStore::open(&path).await {
        Err(StoreError::Migrate(message)) => message,
        Err(other) => panic!("not a migration error: {other}"),
        Ok(_) => panic!("a store with a tampered migration table was opened"),
    }
}

#[tokio::test]
async fn a_sqlite_store_whose_applied_migration_was_changed_is_refused() {
    let message =
        migration_error_after("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1")
            .await;
    assert!(message.contains('1'), "{message}");
}

#[tokio::test]
async fn a_sqlite_store_with_a_failed_migration_is_not_taken_for_up_to_date() {
    // The latest migration, as a newer binary that failed half-way would have left it.
    let message = migration_error_after(
        "UPDATE _sqlx_migrations SET success = false WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await;
    assert!(message.contains("partially applied"), "{message}");
}

/// Everything the backend's database holds, as text: every row of every table (the memory store: its state).
async fn everything_stored(backend: &Backend) -> String {
    stored(backend, true).await
}

/// Every table row of the store and, with `files`, the SQLite database's files as they are on disk.
async fn stored(backend: &Backend, files: bool) -> String {
    use sqlx::Row as _;
    let mut dump = String::new();
    match &backend.reopen {
        Reopen::Memory(store) => dump = format!("{store:?}"),
        Reopen::Sqlite(path) => {
            let url = format!("sqlite://{}", path.display());
            let mut connection = ok(sqlx::SqliteConnection::connect(&url)
                .await
                .map_err(|error| StoreError::Query(error.to_string())));
            let tables: Vec<String> = ok(sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table'",
            )
            .fetch_all(&mut connection)
            .await
            .map_err(|error| StoreError::Query(error.to_string())));
            assert!(
                tables.iter().any(|table| table == "api_tokens"),
                "{tables:?}"
            );
            for table in tables {
                let rows = ok(sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT * FROM \"{table}\""
                )))
                .fetch_all(&mut connection)
                .await
                .map_err(|error| StoreError::Query(error.to_string())));
                for row in rows {
                    for index in 0..row.len() {
                        let cell = row
                            .try_get::<String, _>(index)
                            .or_else(|_| row.try_get::<i64, _>(index).map(|n| n.to_string()))
                            .or_else(|_| {
                                row.try_get::<Vec<u8>, _>(index)
                                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                            })
                            .unwrap_or_default();
                        dump.push_str(&cell);
                        dump.push('\t');
                    }
                    dump.push('\n');
                }
            }
            let _ = connection.close().await;
            // And the files themselves, the write-ahead log included.
            for suffix in ["", "-wal", "-shm"].into_iter().filter(|_| files) {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                if let Ok(bytes) = std::fs::read(&file) {
                    dump.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        Reopen::Postgres(url) => {
            let mut connection = ok(sqlx::PgConnection::connect(url)
                .await
                .map_err(|error| StoreError::Query(error.to_string())));
            let tables: Vec<String> = ok(sqlx::query_scalar(
                "SELECT table_name::TEXT FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&mut connection)
            .await
            .map_err(|error| StoreError::Query(error.to_string())));
            assert!(
                tables.iter().any(|table| table == "api_tokens"),
                "{tables:?}"
            );
            for table in tables {
                let rows: Vec<String> = ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT t::TEXT FROM \"{table}\" AS t"
                )))
                .fetch_all(&mut connection)
                .await
                .map_err(|error| StoreError::Query(error.to_string())));
                for row in rows {
                    dump.push_str(&row);
                    dump.push('\n');
                }
            }
            let _ = connection.close().await;
        }
    }
    dump
}

async fn tokens_give_their_tenant_and_are_stored_only_as_hashes(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let acme_token = new_token();
    let globex_token = new_token();
    // Creating a token creates its tenant, whatever the handle's tenant.
    let acme = ok(store
        .create_token("acme", "deploy bot", &hash_token(&acme_token))
        .await);
    assert_eq!(
        (
            acme.tenant.as_str(),
            acme.name.as_str(),
            acme.last_used_at_ms,
            acme.revoked_at_ms
        ),
        ("acme", "deploy bot", None, None)
    );
    let globex = ok(store
        .for_tenant("acme")
        .create_token("globex", "ci", &hash_token(&globex_token))
        .await);
    assert_ne!(acme.id, globex.id);
    assert!(ok(store.list_tenants().await).contains(&"globex".to_owned()));
    // The same hash twice is refused.
    assert!(
        store
            .create_token("acme", "again", &hash_token(&acme_token))
            .await
            .is_err()
    );
    assert!(matches!(
        store
            .create_token("Not Valid", "x", &hash_token(&new_token()))
            .await,
        Err(StoreError::InvalidTenant(_))
    ));

    // Lookups work from any tenant's handle, and from another process's.
    let other = backend.reopen().await;
    for handle in [
        Arc::clone(&store),
        store.for_tenant("globex"),
        other.for_tenant("nobody"),
    ] {
        assert_eq!(
            ok(handle.tenant_of_token(&hash_token(&acme_token)).await).as_deref(),
            Some("acme")
        );
        assert_eq!(
            ok(handle.tenant_of_token(&hash_token(&globex_token)).await).as_deref(),
            Some("globex")
        );
        assert_eq!(
            ok(handle.tenant_of_token(&hash_token("bit_unknown")).await),
            None
        );
        // The token itself is not its hash.
        assert_eq!(ok(handle.tenant_of_token(&acme_token).await), None);
    }

    // Each tenant lists only its own; the first use is recorded, later ones within the minute are not.
    let acme_store = store.for_tenant("acme");
    let listed = ok(acme_store.list_tokens().await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let used = listed[0].last_used_at_ms;
    assert!(
        used.is_some_and(|at| at >= acme.created_at_ms),
        "{listed:?}"
    );
    assert_eq!(
        ok(acme_store.tenant_of_token(&hash_token(&acme_token)).await).as_deref(),
        Some("acme")
    );
    assert_eq!(ok(acme_store.list_tokens().await)[0].last_used_at_ms, used);
    assert!(ok(store.list_tokens().await).is_empty());

    // Another tenant cannot revoke it, and unknown ids are an error.
    assert!(matches!(
        store.for_tenant("globex").revoke_token(acme.id).await,
        Err(StoreError::NoSuchToken(id)) if id == acme.id
    ));
    assert!(matches!(
        acme_store.revoke_token(globex.id + acme.id + 100).await,
        Err(StoreError::NoSuchToken(_))
    ));
    assert!(ok(store.tenant_of_token(&hash_token(&acme_token)).await).is_some());
    ok(acme_store.revoke_token(acme.id).await);
    let revoked_at = ok(acme_store.list_tokens().await)[0].revoked_at_ms;
    assert!(revoked_at.is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Revoking again keeps the first time.
    ok(acme_store.revoke_token(acme.id).await);
    assert_eq!(
        ok(acme_store.list_tokens().await)[0].revoked_at_ms,
        revoked_at
    );
    assert_eq!(
        ok(other.tenant_of_token(&hash_token(&acme_token)).await),
        None
    );
    assert_eq!(
        ok(other.tenant_of_token(&hash_token(&globex_token)).await).as_deref(),
        Some("globex")
    );

    // The store holds the hashes, never the tokens.
    let dump = everything_stored(&backend).await;
    assert!(
        dump.contains(&hash_token(&acme_token)),
        "the dump misses the table"
    );
    assert!(dump.contains(&hash_token(&globex_token)));
    for token in [&acme_token, &globex_token] {
        assert!(!dump.contains(token.as_str()), "a token is stored as it is");
        assert!(
            !dump.contains(&token["bit_".len()..]),
            "a token is stored without its prefix"
        );
    }
}

fn run_request(run_id: &str, key: Option<&str>) -> NewRunRequest {
    NewRunRequest {
        run_id: run_id.to_owned(),
        pipeline: "ci".to_owned(),
        idempotency_key: key.map(str::to_owned),
        branch: None,
    }
}

async fn run_requests_are_created_once_per_key_and_change_state_by_the_rules(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let RunRequestOutcome::Created(first) = ok(store
        .create_run_request(&run_request("r1", Some("k1")))
        .await)
    else {
        panic!("a new key made no new request");
    };
    assert_eq!(
        (
            first.run_id.as_str(),
            first.pipeline.as_str(),
            first.idempotency_key.as_deref(),
            first.state,
            first.reason.as_deref(),
        ),
        ("r1", "ci", Some("k1"), RunRequestState::Queued, None)
    );
    assert_eq!(first.created_at_ms, first.updated_at_ms);
    assert_eq!(ok(store.run_request("r1").await).as_ref(), Some(&first));

    // The same key again, with another run id or the same, gives the first request back, unchanged; from
    // another handle on the same database too (a restarted daemon).
    let other = backend.reopen().await;
    for (handle, run_id) in [(&store, "r1-retry"), (&other, "r1")] {
        let again = ok(handle
            .create_run_request(&run_request(run_id, Some("k1")))
            .await);
        assert_eq!(again, RunRequestOutcome::Existing(first.clone()));
    }
    assert_eq!(ok(store.run_request("r1-retry").await), None);
    // A run id requested already, under another key or none, is refused.
    for key in [Some("k2"), None] {
        assert!(matches!(
            store.create_run_request(&run_request("r1", key)).await,
            Err(StoreError::DuplicateRun(id)) if id == "r1"
        ));
    }
    // Requests without a key never collide with each other.
    assert!(ok(store.create_run_request(&run_request("r2", None)).await).is_created());
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(ok(store.create_run_request(&run_request("r3", None)).await).is_created());

    // Eight concurrent requests with one key: exactly one creates, the others get its record.
    let mut set = tokio::task::JoinSet::new();
    for index in 0..8 {
        let handle = if index % 2 == 0 {
            Arc::clone(&store)
        } else {
            Arc::clone(&other)
        };
        set.spawn(async move {
            ok(handle
                .create_run_request(&run_request(&format!("race-{index}"), Some("race")))
                .await)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = set.join_next().await {
        outcomes.push(match outcome {
            Ok(outcome) => outcome,
            Err(error) => panic!("request task: {error}"),
        });
    }
    let created: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.is_created())
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    let winner = created[0].request().clone();
    for outcome in &outcomes {
        assert_eq!(outcome.request(), &winner, "{outcomes:?}");
    }
    let race_ids: Vec<String> = (0..8)
        .map(|index| format!("race-{index}"))
        .filter(|id| *id != winner.run_id)
        .collect();
    for id in &race_ids {
        assert_eq!(ok(store.run_request(id).await), None, "{id}");
    }

    // Queued ones, oldest first, at most `limit`.
    let queued: Vec<String> = ok(store.queued_run_requests(10).await)
        .into_iter()
        .map(|request| request.run_id)
        .collect();
    assert_eq!(queued, ["r1", "r2", "r3", winner.run_id.as_str()]);
    let queued: Vec<String> = ok(store.queued_run_requests(2).await)
        .into_iter()
        .map(|request| request.run_id)
        .collect();
    assert_eq!(queued, ["r1", "r2"]);

    // State changes and their rules.
    tokio::time::sleep(Duration::from_millis(3)).await;
    ok(store
        .set_run_request_state("r1", RunRequestState::Started, None)
        .await);
    let started = ok(store.run_request("r1").await);
    assert_eq!(
        started.as_ref().map(|request| request.state),
        Some(RunRequestState::Started)
    );
    assert!(
        started.is_some_and(|request| request.updated_at_ms > first.updated_at_ms
            && request.created_at_ms == first.created_at_ms)
    );
    // A started request is never queued again; starting it again changes nothing.
    assert!(matches!(
        store.set_run_request_state("r1", RunRequestState::Queued, None).await,
        Err(StoreError::RunRequestTransition { ref run_id, from: RunRequestState::Started, to: RunRequestState::Queued })
            if run_id == "r1"
    ));
    ok(store
        .set_run_request_state("r1", RunRequestState::Started, None)
        .await);
    // Cancelled after it started: allowed (the run's record says how it ended), and kept by a second cancel.
    ok(store
        .set_run_request_state("r1", RunRequestState::Cancelled, Some("cancelled by alice"))
        .await);
    ok(other
        .set_run_request_state("r1", RunRequestState::Cancelled, Some("again"))
        .await);
    let cancelled = ok(store.run_request("r1").await);
    assert_eq!(
        cancelled.map(|request| (request.state, request.reason)),
        Some((
            RunRequestState::Cancelled,
            Some("cancelled by alice".to_owned())
        ))
    );
    // A cancelled or failed request is over: never started, queued or failed afterwards.
    for to in [
        RunRequestState::Queued,
        RunRequestState::Started,
        RunRequestState::Failed,
    ] {
        assert!(matches!(
            store.set_run_request_state("r1", to, None).await,
            Err(StoreError::RunRequestTransition {
                from: RunRequestState::Cancelled,
                ..
            })
        ));
    }
    ok(store
        .set_run_request_state("r2", RunRequestState::Failed, Some("source gone"))
        .await);
    assert!(matches!(
        store
            .set_run_request_state("r2", RunRequestState::Started, None)
            .await,
        Err(StoreError::RunRequestTransition {
            from: RunRequestState::Failed,
            to: RunRequestState::Started,
            ..
        })
    ));
    // A queued one can be cancelled directly.
    ok(store
        .set_run_request_state("r3", RunRequestState::Cancelled, None)
        .await);
    let queued: Vec<String> = ok(store.queued_run_requests(10).await)
        .into_iter()
        .map(|request| request.run_id)
        .collect();
    assert_eq!(queued, [winner.run_id.as_str()]);

    // Unknown ids.
    assert_eq!(ok(store.run_request("nope").await), None);
    assert!(matches!(
        store.set_run_request_state("nope", RunRequestState::Cancelled, None).await,
        Err(StoreError::NoSuchRun(id)) if id == "nope"
    ));

    // Another tenant neither sees these nor collides with them, on keys or run ids.
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    assert_eq!(ok(acme.run_request("r1").await), None);
    assert!(ok(acme.queued_run_requests(10).await).is_empty());
    assert!(matches!(
        acme.set_run_request_state("r1", RunRequestState::Failed, None)
            .await,
        Err(StoreError::NoSuchRun(_))
    ));
    let theirs = ok(acme
        .create_run_request(&run_request("r1", Some("k1")))
        .await);
    assert!(theirs.is_created(), "{theirs:?}");
    assert_eq!(
        ok(acme.queued_run_requests(10).await),
        vec![theirs.into_request()]
    );
    assert_eq!(
        ok(store.run_request("r1").await).map(|request| request.state),
        Some(RunRequestState::Cancelled)
    );
    // A tenant that does not exist cannot request runs.
    assert!(
        store
            .for_tenant("nobody")
            .create_run_request(&run_request("x", None))
            .await
            .is_err()
    );
}

async fn cancels_and_restarts_travel_through_run_requests(backend: Backend) {
    let other = backend.reopen().await;
    let store = backend.store;
    ok(store
        .create_run_request(&run_request("r1", Some("k1")))
        .await);
    ok(store
        .set_run_request_state("r1", RunRequestState::Started, None)
        .await);
    // A cancel asked through one handle is seen through another; the first time counts.
    assert_eq!(
        ok(other.run_request("r1").await).and_then(|r| r.cancel_requested_at_ms),
        None
    );
    ok(store.request_run_cancel("r1").await);
    let first = ok(other.run_request("r1").await).and_then(|r| r.cancel_requested_at_ms);
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    ok(other.request_run_cancel("r1").await);
    assert_eq!(
        ok(store.run_request("r1").await).and_then(|r| r.cancel_requested_at_ms),
        first
    );
    assert!(matches!(
        store.request_run_cancel("nope").await,
        Err(StoreError::NoSuchRun(id)) if id == "nope"
    ));

    // An interrupted run starts again as a new, started request that points back to it.
    ok(store
        .create_run_request(&run_request("r2", Some("k2")))
        .await);
    let restart = ok(store.restart_run_request("r2", "r2-again").await);
    assert_eq!(restart.run_id, "r2-again");
    assert_eq!(restart.pipeline, "ci");
    assert_eq!(restart.state, RunRequestState::Started);
    assert_eq!(restart.restart_of.as_deref(), Some("r2"));
    assert_eq!(restart.idempotency_key, None);
    assert_eq!(
        ok(store.run_request("r2").await).and_then(|r| r.restarted_as),
        Some("r2-again".to_owned())
    );
    // The first restart wins, from any handle: a second one gets the first's request and adds nothing.
    let again = ok(other.restart_run_request("r2", "r2-twice").await);
    assert_eq!(again, restart);
    assert_eq!(ok(store.run_request("r2-twice").await), None);
    // The key still names the first run.
    let by_key = ok(store
        .create_run_request(&run_request("r9", Some("k2")))
        .await);
    assert_eq!(by_key.request().run_id, "r2");
    // A restarted run is not queued.
    assert!(
        ok(store.queued_run_requests(10).await)
            .iter()
            .all(|request| request.run_id != "r2-again")
    );
    assert!(matches!(
        store.restart_run_request("nope", "x").await,
        Err(StoreError::NoSuchRun(_))
    ));
    // A cancel of a run reaches its restarts, made before the cancel or after it, and moves no request's time.
    let before = ok(store.run_request("r2-again").await).map(|r| r.updated_at_ms);
    ok(store.request_run_cancel("r2").await);
    let restarted = ok(store.run_request("r2-again").await);
    assert!(
        restarted
            .as_ref()
            .is_some_and(|r| r.cancel_requested_at_ms.is_some()),
        "{restarted:?}"
    );
    assert_eq!(restarted.map(|r| r.updated_at_ms), before);
    ok(store
        .create_run_request(&run_request("r3", Some("k3")))
        .await);
    ok(store.request_run_cancel("r3").await);
    let late = ok(store.restart_run_request("r3", "r3-again").await);
    assert!(late.cancel_requested_at_ms.is_some(), "{late:?}");

    // Another tenant sees none of it.
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    assert_eq!(ok(acme.run_request("r2-again").await), None);
    assert!(acme.request_run_cancel("r1").await.is_err());
    assert!(acme.restart_run_request("r2", "r2-acme").await.is_err());
}

async fn a_lease_ended_early_lets_its_job_be_claimed_at_once(backend: Backend) {
    let store = backend.store;
    let first = ok(store.enqueue(&job("one", 3)).await);
    let second = ok(store.enqueue(&job("two", 3)).await);
    let Some(claimed) = ok(store
        .claim("runs", "gone-1", Duration::from_secs(300))
        .await)
    else {
        panic!("nothing claimed")
    };
    assert_eq!(claimed.id, first);
    let leased = ok(store.leased_jobs("runs").await);
    assert_eq!(
        leased
            .iter()
            .map(|job| (job.id, job.worker.as_deref(), job.attempts))
            .collect::<Vec<_>>(),
        [(first, Some("gone-1"), 1)]
    );
    assert!(ok(store.leased_jobs("other").await).is_empty());
    // Without the early end, the next claim takes the other job; with it, this one again.
    ok(store.expire_lease(&claimed.lease).await);
    let Some(again) = ok(store
        .claim("runs", "next-1", Duration::from_secs(300))
        .await)
    else {
        panic!("nothing claimed")
    };
    assert_eq!((again.id, again.lease.attempt), (first, 2));
    // The old lease is fenced: ending it again changes nothing, and it cannot complete the job.
    ok(store.expire_lease(&claimed.lease).await);
    assert!(store.complete(&claimed.lease).await.is_err());
    let Some(other) = ok(store
        .claim("runs", "next-2", Duration::from_secs(300))
        .await)
    else {
        panic!("nothing claimed")
    };
    assert_eq!(other.id, second);
    assert!(
        ok(store
            .claim("runs", "next-3", Duration::from_secs(300))
            .await)
        .is_none()
    );
    ok(store.complete(&again.lease).await);
    assert_eq!(
        ok(store.leased_jobs("runs").await)
            .iter()
            .map(|job| job.id)
            .collect::<Vec<_>>(),
        [second]
    );
    // Another tenant's leases are not listed.
    ok(store.create_tenant("acme").await);
    assert!(ok(store.for_tenant("acme").leased_jobs("runs").await).is_empty());
}

/// A request of pipeline `pipeline` on `branch`.
fn request_on(run_id: &str, pipeline: &str, branch: &str) -> NewRunRequest {
    NewRunRequest {
        run_id: run_id.to_owned(),
        pipeline: pipeline.to_owned(),
        idempotency_key: None,
        branch: Some(branch.to_owned()),
    }
}

fn ids_of_runs(runs: &[buildit_core::store::RunRecord]) -> Vec<&str> {
    runs.iter().map(|run| run.id.as_str()).collect()
}

fn ids_of_requests(requests: &[buildit_core::store::RunRequest]) -> Vec<&str> {
    requests
        .iter()
        .map(|request| request.run_id.as_str())
        .collect()
}

async fn runs_keep_their_place_from_request_to_record_and_list_by_filter_and_cursor(
    backend: Backend,
) {
    let store = backend.store;
    let tick = || tokio::time::sleep(Duration::from_millis(4));
    // A run a daemon was asked for, recorded later: its record keeps its request's time.
    let asked = ok(store
        .create_run_request(&request_on("d1", "ci", "main"))
        .await)
    .into_request();
    assert_eq!(asked.branch.as_deref(), Some("main"));
    tick().await;
    let d2 = ok(store
        .create_run_request(&request_on("d2", "ci", "dev"))
        .await)
    .into_request();
    tick().await;
    ok(store
        .create_run_request(&request_on("d3", "deploy", "main"))
        .await);
    tick().await;
    let unrecorded = |filter: RunRequestFilter| {
        let store = Arc::clone(&store);
        async move { ok(store.unrecorded_run_requests(&filter).await) }
    };
    let every = RunRequestFilter {
        limit: 100,
        ..RunRequestFilter::default()
    };
    assert_eq!(
        ids_of_requests(&unrecorded(every.clone()).await),
        ["d3", "d2", "d1"]
    );
    ok(store
        .set_run_request_state("d1", RunRequestState::Started, None)
        .await);
    // Started but not recorded yet: still listed from its request.
    assert_eq!(
        ids_of_requests(&unrecorded(every.clone()).await),
        ["d3", "d2", "d1"]
    );
    let recorded = ok(store.create_run(&new_run("d1", "ci")).await);
    assert!(recorded.created_at_ms > asked.created_at_ms);
    assert_eq!(
        recorded.cursor(),
        RunCursor {
            at_ms: asked.created_at_ms,
            id: "d1".to_owned()
        }
    );
    assert_eq!(
        ids_of_requests(&unrecorded(every.clone()).await),
        ["d3", "d2"]
    );
    // A run nobody asked a daemon for (`buildit run`) is placed at its creation.
    tick().await;
    let mut local = new_run("l1", "ci");
    local.branch = Some("dev".to_owned());
    local.owner.pid = dead_pid();
    let local = ok(store.create_run(&local).await);
    assert_eq!(local.cursor().at_ms, local.created_at_ms);
    ok(store
        .mark_interrupted(&RunOwner::this_process(), Duration::from_secs(60))
        .await);
    let runs = |filter: RunFilter| {
        let store = Arc::clone(&store);
        async move { ok(store.list_runs(&filter).await) }
    };
    let all = RunFilter {
        limit: 100,
        ..RunFilter::default()
    };
    let listed = runs(all.clone()).await;
    assert_eq!(ids_of_runs(&listed), ["l1", "d1"]);
    assert_eq!(listed[1].cursor().at_ms, asked.created_at_ms);
    // Filters: state, branch, pipeline, each on both halves.
    let with = |change: fn(&mut RunFilter)| {
        let mut filter = all.clone();
        change(&mut filter);
        filter
    };
    assert_eq!(
        ids_of_runs(&runs(with(|f| f.state = Some(RunState::Interrupted))).await),
        ["l1"]
    );
    assert_eq!(
        ids_of_runs(&runs(with(|f| f.state = Some(RunState::Running))).await),
        ["d1"]
    );
    assert_eq!(
        ids_of_runs(&runs(with(|f| f.branch = Some("main".to_owned()))).await),
        ["d1"]
    );
    assert!(
        runs(with(|f| f.pipeline = Some("deploy".to_owned())))
            .await
            .is_empty()
    );
    assert_eq!(
        ids_of_requests(
            &unrecorded(RunRequestFilter {
                branch: Some("main".to_owned()),
                ..every.clone()
            })
            .await
        ),
        ["d3"]
    );
    assert_eq!(
        ids_of_requests(
            &unrecorded(RunRequestFilter {
                pipeline: Some("ci".to_owned()),
                ..every.clone()
            })
            .await
        ),
        ["d2"]
    );
    ok(store
        .set_run_request_state(
            "d2",
            RunRequestState::Cancelled,
            Some("cancelled before it started"),
        )
        .await);
    assert_eq!(
        ids_of_requests(
            &unrecorded(RunRequestFilter {
                state: Some(RunRequestState::Queued),
                ..every.clone()
            })
            .await
        ),
        ["d3"]
    );
    assert_eq!(
        ids_of_requests(
            &unrecorded(RunRequestFilter {
                state: Some(RunRequestState::Cancelled),
                ..every.clone()
            })
            .await
        ),
        ["d2"]
    );
    // Cursors: strictly after the place given.
    assert_eq!(
        ids_of_runs(
            &runs(RunFilter {
                before: Some(local.cursor()),
                ..all.clone()
            })
            .await
        ),
        ["d1"]
    );
    let before_d2 = |id: &str| RunRequestFilter {
        before: Some(RunCursor {
            at_ms: d2.created_at_ms,
            id: id.to_owned(),
        }),
        ..every.clone()
    };
    assert_eq!(
        ids_of_requests(&unrecorded(before_d2("d3")).await),
        ["d2"],
        "at the same time, a smaller id comes after"
    );
    assert!(
        unrecorded(before_d2("d2")).await.is_empty(),
        "the place itself is not after itself"
    );
    assert!(unrecorded(before_d2("d1")).await.is_empty());
    // A restart keeps its run's branch; another tenant sees none of these.
    ok(store
        .create_run_request(&request_on("d4", "ci", "feature"))
        .await);
    let restart = ok(store.restart_run_request("d4", "d4-again").await);
    assert_eq!(restart.branch.as_deref(), Some("feature"));
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    assert!(ok(acme.list_runs(&all).await).is_empty());
    assert!(ok(acme.unrecorded_run_requests(&every).await).is_empty());
}

async fn pages_of_runs_never_skip_nor_repeat_a_run(backend: Backend) {
    let store = backend.store;
    // Many runs in the same millisecond: the id breaks the tie.
    let mut made = Vec::new();
    for index in 0..11 {
        let run = ok(store
            .create_run(&new_run(&format!("run-{index:02}"), "p"))
            .await);
        made.push(run.id);
    }
    for limit in [1, 3, 4, 11, 12] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = ok(store
                .list_runs(&RunFilter {
                    before: before.clone(),
                    limit,
                    ..RunFilter::default()
                })
                .await);
            assert!(page.len() <= limit as usize);
            seen.extend(page.iter().map(|run| run.id.clone()));
            match page.last() {
                Some(last) if page.len() == limit as usize => before = Some(last.cursor()),
                _ => break,
            }
        }
        let mut expected = made.clone();
        expected.sort_by_key(|id| std::cmp::Reverse(id.clone()));
        let all = ok(store
            .list_runs(&RunFilter {
                limit: 100,
                ..RunFilter::default()
            })
            .await);
        // Newest first: one millisecond or several, the order is by time, then id.
        let mut by_place: Vec<_> = all
            .iter()
            .map(|run| (run.cursor(), run.id.clone()))
            .collect();
        by_place.sort_by(|a, b| b.0.cmp(&a.0));
        assert_eq!(
            ids_of_runs(&all),
            by_place
                .iter()
                .map(|(_, id)| id.as_str())
                .collect::<Vec<_>>()
        );
        assert_eq!(seen, ids_of_runs(&all), "pages of {limit}");
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), made.len(), "pages of {limit}");
    }
}

fn pipeline(name: &str, source: &str, by: &str) -> NewPipeline {
    NewPipeline {
        name: name.to_owned(),
        file_name: format!("{name}.kdl"),
        source: source.to_owned(),
        registered_by: Some(by.to_owned()),
    }
}

async fn pipelines_are_registered_replaced_and_listed_per_tenant(backend: Backend) {
    let store = backend.store;
    let text = "pipeline \"build\"\nstage \"a\" { run \"true\" }\n";
    assert!(ok(store
        .register_pipeline(&pipeline("build", text, "alice"))
        .await));
    let first = ok(store.get_pipeline("build").await).unwrap_or_else(|| panic!("registered"));
    assert_eq!(
        (
            first.name.as_str(),
            first.file_name.as_str(),
            first.source.as_str(),
            first.registered_by.as_deref()
        ),
        ("build", "build.kdl", text, Some("alice"))
    );
    assert_eq!(first.sha256, sha256_hex(text.as_bytes()));
    assert_eq!(first.registered_at_ms, first.updated_at_ms);
    // The same text again changes nothing, not even who registered it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!ok(store
        .register_pipeline(&pipeline("build", text, "bob"))
        .await));
    assert_eq!(ok(store.get_pipeline("build").await).as_ref(), Some(&first));
    // Another text replaces it: registered when first registered, updated now, by whoever changed it.
    let newer = format!("{text}stage \"b\" {{ run \"true\" }}\n");
    assert!(ok(store
        .register_pipeline(&pipeline("build", &newer, "bob"))
        .await));
    let second = ok(store.get_pipeline("build").await).unwrap_or_else(|| panic!("registered"));
    assert_eq!(second.source, newer);
    assert_eq!(second.sha256, sha256_hex(newer.as_bytes()));
    assert_eq!(second.registered_at_ms, first.registered_at_ms);
    assert!(second.updated_at_ms > first.updated_at_ms);
    assert_eq!(second.registered_by.as_deref(), Some("bob"));
    // So does another file name for the same text.
    let mut renamed = pipeline("build", &newer, "bob");
    renamed.file_name = "ci/build.kdl".to_owned();
    assert!(ok(store.register_pipeline(&renamed).await));
    assert_eq!(
        ok(store.get_pipeline("build").await).map(|p| p.file_name),
        Some("ci/build.kdl".to_owned())
    );

    // A pipeline that only ran is not registered; registering it keeps its run numbers going.
    ok(store.create_run(&new_run("deploy-1", "deploy")).await);
    assert_eq!(ok(store.get_pipeline("deploy").await), None);
    assert!(ok(store
        .register_pipeline(&pipeline("deploy", text, "alice"))
        .await));
    assert_eq!(
        ok(store.create_run(&new_run("deploy-2", "deploy")).await).number,
        2
    );
    // Registering first and running after numbers runs from 1.
    assert!(ok(store
        .register_pipeline(&pipeline("alpha", text, "alice"))
        .await));
    assert_eq!(
        ok(store.create_run(&new_run("alpha-1", "alpha")).await).number,
        1
    );
    ok(store.create_run(&new_run("zeta-1", "zeta")).await);

    // Listed by name, a page at a time.
    let names = |filter: PipelineFilter| {
        let store = Arc::clone(&store);
        async move {
            ok(store.list_pipelines(&filter).await)
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(PipelineFilter {
            after: None,
            limit: 10
        })
        .await,
        ["alpha", "build", "deploy"]
    );
    assert_eq!(
        names(PipelineFilter {
            after: None,
            limit: 2
        })
        .await,
        ["alpha", "build"]
    );
    assert_eq!(
        names(PipelineFilter {
            after: Some("build".to_owned()),
            limit: 2
        })
        .await,
        ["deploy"]
    );
    assert!(
        names(PipelineFilter {
            after: Some("deploy".to_owned()),
            limit: 2
        })
        .await
        .is_empty()
    );

    // Another tenant sees none of them, and has its own.
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    assert_eq!(ok(acme.get_pipeline("build").await), None);
    assert!(
        ok(acme
            .list_pipelines(&PipelineFilter {
                after: None,
                limit: 10
            })
            .await)
        .is_empty()
    );
    assert!(ok(acme
        .register_pipeline(&pipeline("build", "other", "carol"))
        .await));
    assert_eq!(
        ok(store.get_pipeline("build").await).map(|p| p.source),
        Some(newer.clone())
    );
    assert!(
        store
            .for_tenant("nobody")
            .register_pipeline(&pipeline("x", text, "a"))
            .await
            .is_err(),
        "an unknown tenant is refused rather than created by accident"
    );

    // The label of a token is found by its hash (what a registration records as its registrant).
    let token = new_token();
    let record = ok(store
        .create_token("acme", "deploy bot", &hash_token(&token))
        .await);
    let found = ok(store.find_token(&hash_token(&token)).await);
    assert_eq!(found.as_ref().map(|t| t.name.as_str()), Some("deploy bot"));
    assert_eq!(found.map(|t| t.last_used_at_ms), Some(None));
    ok(acme.revoke_token(record.id).await);
    assert_eq!(ok(store.find_token(&hash_token(&token)).await), None);
    assert_eq!(ok(store.find_token(&hash_token("unknown")).await), None);
}

/// Ids and names whose order by language rules (lowercase first, `a` before `B`) is not their byte order.
const MIXED: [&str; 7] = ["a-b", "ab", "aB", "A", "_x", "b", "B"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lists_in_byte_order_whatever_the_database_collation() {
    // A database sorting text by English rules: listings must still page in the byte order of their cursors.
    let Some(backend) = postgres_created(
        "TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
    )
    .await
    else {
        return;
    };
    let Reopen::Postgres(url) = &backend.reopen else {
        panic!("a PostgreSQL backend");
    };
    let store = Arc::clone(&backend.store);
    for id in MIXED {
        ok(store.create_run(&new_run(id, "p")).await);
        ok(store
            .create_run_request(&request_on(&format!("q{id}"), "p", "main"))
            .await);
        ok(store
            .register_pipeline(&pipeline(id, "pipeline \"x\"\n", "a"))
            .await);
    }
    // Every run and request asked for in the same millisecond: the ids alone order them.
    let mut connection = ok(sqlx::PgConnection::connect(url)
        .await
        .map_err(|error| StoreError::Query(error.to_string())));
    for statement in [
        "UPDATE pipeline_runs SET requested_at_ms = 1000",
        "UPDATE run_requests SET created_at_ms = 1000",
    ] {
        ok(sqlx::raw_sql(statement)
            .execute(&mut connection)
            .await
            .map_err(|error| StoreError::Query(error.to_string())));
    }
    let _ = connection.close().await;
    let mut bytewise: Vec<String> = MIXED.iter().map(|id| (*id).to_owned()).collect();
    bytewise.sort();
    let newest_first: Vec<String> = bytewise.iter().rev().cloned().collect();
    for limit in [2, 100] {
        let mut runs = Vec::new();
        let mut requests = Vec::new();
        let (mut run_before, mut request_before) = (None, None);
        loop {
            let page = ok(store
                .list_runs(&RunFilter {
                    before: run_before.clone(),
                    limit,
                    ..RunFilter::default()
                })
                .await);
            runs.extend(page.iter().map(|run| run.id.clone()));
            match page.last() {
                Some(last) if page.len() == limit as usize => run_before = Some(last.cursor()),
                _ => break,
            }
        }
        loop {
            let page = ok(store
                .unrecorded_run_requests(&RunRequestFilter {
                    before: request_before.clone(),
                    limit,
                    ..RunRequestFilter::default()
                })
                .await);
            requests.extend(page.iter().map(|request| request.run_id[1..].to_owned()));
            match page.last() {
                Some(last) if page.len() == limit as usize => {
                    request_before = Some(last.cursor());
                }
                _ => break,
            }
        }
        assert_eq!(runs, newest_first, "runs, pages of {limit}");
        assert_eq!(requests, newest_first, "requests, pages of {limit}");
        let mut names = Vec::new();
        let mut after = None;
        loop {
            let page = ok(store
                .list_pipelines(&PipelineFilter {
                    after: after.clone(),
                    limit,
                })
                .await);
            names.extend(page.iter().map(|pipeline| pipeline.name.clone()));
            match page.last() {
                Some(last) if page.len() == limit as usize => after = Some(last.name.clone()),
                _ => break,
            }
        }
        assert_eq!(names, bytewise, "pipelines, pages of {limit}");
    }
}

/// `stage_tests` gives each instance's last `stage-tests` event (a retry's replaces the first attempt's), and
/// nothing of another run or of the log.
async fn test_counts_are_read_from_their_events_alone(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("tested", "sample")).await);
    ok(store.create_run(&new_run("untested", "sample")).await);
    let counted = |failures: u64, failed: &[&str]| TestSummary {
        files: 1,
        tests: 10,
        failures,
        errors: 0,
        skipped: 1,
        failed: failed.iter().map(|name| (*name).to_owned()).collect(),
        unreadable: 0,
    };
    let mut bus = EventBus::new("tested");
    let events = bus.subscribe_lossless(64);
    let recorder = tokio::spawn(record_run(store.clone(), "tested".to_owned(), events));
    for (stage, attempt, tests) in [
        ("unit", 1, counted(2, &["a::one", "a::two"])),
        ("unit", 2, counted(1, &["a::two"])),
        ("lint", 1, counted(0, &[])),
    ] {
        bus.emit(RunEventKind::StageStarted {
            stage: stage.to_owned(),
            attempt,
        })
        .await;
        bus.emit_lines(
            stage,
            attempt,
            LogStreamKind::Stdout,
            vec!["{\"type\":\"stage-tests\"}".to_owned()],
        )
        .await;
        bus.emit(RunEventKind::StageTests {
            stage: stage.to_owned(),
            attempt,
            tests,
        })
        .await;
        bus.emit(RunEventKind::StageFinished {
            stage: stage.to_owned(),
            attempt,
            outcome: StageOutcome::Failed,
            exit_code: Some(1),
            duration_ms: 1,
            reason: None,
            failure: Some(FailureKind::ExitCode),
            retrying: false,
        })
        .await;
    }
    drop(bus);
    match recorder.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("recorder: {error}"),
        Err(error) => panic!("recorder task: {error}"),
    }
    let tests = ok(store.stage_tests("tested").await);
    assert_eq!(tests.len(), 2, "{tests:?}");
    assert_eq!(tests["unit"], counted(1, &["a::two"]));
    assert_eq!(tests["lint"], counted(0, &[]));
    assert!(ok(store.stage_tests("untested").await).is_empty());
    assert!(matches!(
        store.stage_tests("never").await,
        Err(StoreError::NoSuchRun(_))
    ));
}

/// Every table row of the store, without the SQLite file's bytes (a deleted row may linger in its free pages).
async fn stored_rows(backend: &Backend) -> String {
    stored(backend, false).await
}

async fn cancels_asked_through_the_store_reach_only_running_runs(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("live", "p")).await);
    ok(store.create_run(&new_run("ended", "p")).await);
    emit_sample_run(store.clone(), "ended", 10).await;
    assert!(!ok(store.run_cancel_requested("live").await));
    assert_eq!(
        ok(store.cancel_running_run("live").await),
        RunState::Running
    );
    assert!(ok(store.run_cancel_requested("live").await));
    // Asked again: the first request stands.
    assert_eq!(
        ok(store.cancel_running_run("live").await),
        RunState::Running
    );
    assert!(ok(store.run_cancel_requested("live").await));
    // A run that has ended is left as it is, and says how it ended.
    assert_eq!(
        ok(store.cancel_running_run("ended").await),
        RunState::Failed
    );
    assert!(!ok(store.run_cancel_requested("ended").await));
    assert_eq!(
        ok(store.find_run(&RunRef::Id("ended".to_owned())).await).state,
        RunState::Failed
    );
    assert!(matches!(
        store.cancel_running_run("nothing").await,
        Err(StoreError::NoSuchRun(id)) if id == "nothing"
    ));
    assert!(!ok(store.run_cancel_requested("nothing").await));
    // Another tenant neither sees the run nor cancels it.
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    ok(acme.create_run(&new_run("theirs", "p")).await);
    assert!(matches!(
        acme.cancel_running_run("live").await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(!ok(acme.run_cancel_requested("live").await));
    assert!(matches!(
        store.cancel_running_run("theirs").await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(!ok(acme.run_cancel_requested("theirs").await));
    // A request does not end the run by itself: its runner does.
    assert_eq!(
        ok(store.find_run(&RunRef::Id("live".to_owned())).await).state,
        RunState::Running
    );
}

async fn a_deleted_run_leaves_nothing_and_other_runs_stay(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let (gone, kept) = ("0d1e7ed0-9a11", "0cee9e11-b0b0");
    // The deleted run has a request, attempts both as events and as rows, log lines and events.
    ok(store.create_run_request(&run_request(gone, None)).await);
    ok(store.create_run(&new_run(gone, "sample")).await);
    ok(store.create_run(&new_run(kept, "sample")).await);
    ok(store
        .write_batch(
            gone,
            &RecordBatch {
                finished: vec![end("legacy", 1, 150, Some(100))],
                ..RecordBatch::default()
            },
        )
        .await);
    emit_sample_run(store.clone(), gone, 50).await;
    let kept_lines = emit_sample_run(store.clone(), kept, 50).await;
    let kept_events = ok(store.events_after(kept, 0, 10_000).await);
    assert!(stored_rows(&backend).await.contains(gone));
    // A running run is refused and keeps everything.
    ok(store.create_run(&new_run("running", "sample")).await);
    assert!(matches!(
        store.delete_run("running").await,
        Err(StoreError::RunStillRunning(id)) if id == "running"
    ));
    ok(store.find_run(&RunRef::Id("running".to_owned())).await);
    // Another tenant cannot delete it.
    ok(store.create_tenant("acme").await);
    assert!(matches!(
        store.for_tenant("acme").delete_run(gone).await,
        Err(StoreError::NoSuchRun(_))
    ));
    ok(store.find_run(&RunRef::Id(gone.to_owned())).await);

    ok(store.delete_run(gone).await);
    assert!(matches!(
        store.find_run(&RunRef::Id(gone.to_owned())).await,
        Err(StoreError::NoSuchRun(_))
    ));
    assert!(ok(store.attempts(gone).await).is_empty());
    assert!(all_lines(store.as_ref(), query(gone)).await.is_empty());
    assert!(ok(store.run_request(gone).await).is_none());
    assert!(
        !stored_rows(&backend).await.contains(gone),
        "a row of the deleted run is left"
    );
    assert!(matches!(
        store.delete_run(gone).await,
        Err(StoreError::NoSuchRun(_))
    ));
    // The other run is whole.
    assert_eq!(
        without_times(all_lines(store.as_ref(), query(kept)).await),
        kept_lines
    );
    assert_eq!(ok(store.events_after(kept, 0, 10_000).await), kept_events);
    assert_eq!(ok(store.attempts(kept).await).len(), 4);
    // Numbers are never given twice: the next run follows the deleted one's.
    let next = ok(store.create_run(&new_run("next", "sample")).await);
    assert_eq!(next.number, 4);
}

async fn runs_ended_before_a_time_are_found_for_pruning(backend: Backend) {
    let store = backend.store;
    ok(store.create_run(&new_run("old", "p")).await);
    emit_sample_run(store.clone(), "old", 5).await;
    ok(store.create_run(&new_run("running", "p")).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = ok(store.find_run(&RunRef::Id("old".to_owned())).await)
        .finished_at_ms
        .unwrap_or(0)
        + 10;
    tokio::time::sleep(Duration::from_millis(20)).await;
    ok(store.create_run(&new_run("new", "p")).await);
    emit_sample_run(store.clone(), "new", 5).await;
    let ids = |runs: Vec<buildit_core::store::RunRecord>| -> Vec<String> {
        runs.into_iter().map(|run| run.id).collect()
    };
    assert_eq!(ids(ok(store.runs_ended_before(between).await)), ["old"]);
    let later = ok(store.find_run(&RunRef::Id("new".to_owned())).await)
        .finished_at_ms
        .unwrap_or(0)
        + 1;
    assert_eq!(
        ids(ok(store.runs_ended_before(later).await)),
        ["old", "new"]
    );
    assert!(ok(store.runs_ended_before(0).await).is_empty());
    // Interrupted runs have ended too.
    let mut dead = new_run("dead", "p");
    dead.owner.pid = dead_pid();
    ok(store.create_run(&dead).await);
    ok(store
        .mark_interrupted(&RunOwner::this_process(), Duration::from_secs(60))
        .await);
    assert_eq!(
        ids(ok(store.runs_ended_before(i64::MAX).await)),
        ["old", "new", "dead"]
    );
    // Another tenant's runs are its own.
    ok(store.create_tenant("acme").await);
    assert!(ok(store.for_tenant("acme").runs_ended_before(i64::MAX).await).is_empty());
}

fn claim(group: &str, run_id: &str, stage: Option<&str>, pending: bool) -> GroupClaim {
    GroupClaim {
        group: group.to_owned(),
        run_id: run_id.to_owned(),
        stage: stage.map(str::to_owned),
        pending,
    }
}

/// The holder a claim was told of, or `None` when it got the group.
fn holder_of(answer: GroupAcquire) -> Option<(String, Option<i64>, Option<String>)> {
    match answer {
        GroupAcquire::Acquired => None,
        GroupAcquire::Held {
            holder_run,
            holder_number,
            holder_stage,
            ..
        } => Some((holder_run, holder_number, holder_stage)),
        GroupAcquire::Superseded { by } => panic!("superseded by {by}"),
    }
}

async fn a_concurrency_group_has_one_holder_and_passes_on_when_it_ends_or_dies(backend: Backend) {
    let other = backend.reopen().await;
    let store = backend.store;
    for id in ["a", "b"] {
        ok(store.create_run(&new_run(id, "p")).await);
    }
    assert_eq!(
        ok(store.acquire_group(&claim("g", "a", None, false)).await),
        GroupAcquire::Acquired
    );
    // Seen from another handle: held, by run #1; asked again by its holder, still its.
    assert_eq!(
        holder_of(ok(other.acquire_group(&claim("g", "b", None, false)).await)),
        Some(("a".to_owned(), Some(1), None))
    );
    assert_eq!(
        ok(store.acquire_group(&claim("g", "a", None, false)).await),
        GroupAcquire::Acquired
    );
    // A run lets go of nothing it does not hold.
    ok(other.release_group("g", "b", None).await);
    ok(other.release_group("g", "a", Some("deploy")).await);
    assert!(holder_of(ok(other.acquire_group(&claim("g", "b", None, false)).await)).is_some());
    ok(store.release_group("g", "a", None).await);
    assert_eq!(
        ok(other.acquire_group(&claim("g", "b", None, false)).await),
        GroupAcquire::Acquired
    );

    // Stages hold groups by instance; a run that holds a group holds it for its own stages too.
    assert_eq!(
        ok(store
            .acquire_group(&claim("db", "a", Some("migrate"), false))
            .await),
        GroupAcquire::Acquired
    );
    assert_eq!(
        holder_of(ok(store
            .acquire_group(&claim("db", "a", Some("seed"), false))
            .await)),
        Some(("a".to_owned(), Some(1), Some("migrate".to_owned())))
    );
    assert_eq!(
        holder_of(ok(store
            .acquire_group(&claim("db", "b", Some("migrate"), false))
            .await)),
        Some(("a".to_owned(), Some(1), Some("migrate".to_owned())))
    );
    assert_eq!(
        ok(store
            .acquire_group(&claim("g", "b", Some("deploy"), false))
            .await),
        GroupAcquire::Acquired
    );
    ok(store.release_group("g", "b", Some("deploy")).await);
    // Letting go of the stage's hold leaves the run's own.
    assert!(holder_of(ok(store.acquire_group(&claim("g", "a", None, false)).await)).is_some());

    // Another tenant's group of the same name is another group.
    ok(store.create_tenant("acme").await);
    let acme = store.for_tenant("acme");
    ok(acme.create_run(&new_run("x", "p")).await);
    assert_eq!(
        ok(acme.acquire_group(&claim("g", "x", None, false)).await),
        GroupAcquire::Acquired
    );

    // A holder whose run ended is gone.
    ok(store.create_run(&new_run("c", "p")).await);
    ok(store.create_run(&new_run("d", "p")).await);
    assert_eq!(
        ok(store.acquire_group(&claim("h", "c", None, false)).await),
        GroupAcquire::Acquired
    );
    assert!(holder_of(ok(store.acquire_group(&claim("h", "d", None, false)).await)).is_some());
    emit_sample_run(store.clone(), "c", 1).await;
    assert_eq!(
        ok(store.acquire_group(&claim("h", "d", None, false)).await),
        GroupAcquire::Acquired
    );

    // So is one whose runner died, once it is marked interrupted.
    let mut dead = new_run("dead", "p");
    dead.owner.pid = dead_pid();
    ok(store.create_run(&dead).await);
    ok(store.create_run(&new_run("e", "p")).await);
    assert_eq!(
        ok(store.acquire_group(&claim("k", "dead", None, false)).await),
        GroupAcquire::Acquired
    );
    assert!(holder_of(ok(store.acquire_group(&claim("k", "e", None, false)).await)).is_some());
    ok(store
        .mark_interrupted(&RunOwner::this_process(), Duration::from_secs(60))
        .await);
    assert_eq!(
        ok(store.acquire_group(&claim("k", "e", None, false)).await),
        GroupAcquire::Acquired
    );

    // A dead holder's group goes to the run that waited as pending, not to whoever asks first.
    dead_holder_with_pending(&store, "m", "dead-2", "waiting").await;
    // Runs are ordered by when they were created, then by id ("late" sorts first).
    tokio::time::sleep(Duration::from_millis(3)).await;
    ok(store.create_run(&new_run("late", "p")).await);
    assert_eq!(
        ok(store
            .acquire_group(&claim("m", "late", Some("deploy"), false))
            .await),
        GroupAcquire::Held {
            holder_run: "waiting".to_owned(),
            holder_number: Some(8),
            holder_stage: None,
            displaced: None,
            holder_is_older: true,
        }
    );
    assert_eq!(
        ok(store
            .acquire_group(&claim("m", "waiting", None, true))
            .await),
        GroupAcquire::Acquired
    );
    // A run's own claim that found the group handed on waits next, as it would have had the holder let go.
    dead_holder_with_pending(&store, "n", "dead-3", "next").await;
    for id in ["then", "other"] {
        ok(store.create_run(&new_run(id, "p")).await);
    }
    assert_eq!(
        holder_of(ok(store
            .acquire_group(&claim("n", "then", None, true))
            .await)),
        Some(("next".to_owned(), Some(11), None))
    );
    ok(store.release_group("n", "next", None).await);
    assert_eq!(
        holder_of(ok(store
            .acquire_group(&claim("n", "other", Some("deploy"), false))
            .await)),
        Some(("then".to_owned(), Some(12), None))
    );

    // Of many claims of a free group at once, from several handles, exactly one gets it.
    let mut claims = Vec::new();
    for index in 0..8 {
        let id = format!("racer-{index}");
        ok(store.create_run(&new_run(&id, "race")).await);
        let handle = if index % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        claims.push(tokio::spawn(async move {
            handle.acquire_group(&claim("race", &id, None, false)).await
        }));
    }
    let mut acquired = 0;
    for joined in claims {
        match joined.await {
            Ok(answer) => {
                if ok(answer) == GroupAcquire::Acquired {
                    acquired += 1;
                }
            }
            Err(error) => panic!("claim task: {error}"),
        }
    }
    assert_eq!(acquired, 1);
}

/// `group` held by a new run `dead` whose runner is gone (and marked so), with a new run `pending` waiting as the
/// group's pending run.
async fn dead_holder_with_pending(store: &Arc<dyn Store>, group: &str, dead: &str, pending: &str) {
    let mut run = new_run(dead, "p");
    run.owner.pid = dead_pid();
    ok(store.create_run(&run).await);
    ok(store.create_run(&new_run(pending, "p")).await);
    assert_eq!(
        ok(store.acquire_group(&claim(group, dead, None, true)).await),
        GroupAcquire::Acquired
    );
    assert!(
        holder_of(ok(store
            .acquire_group(&claim(group, pending, None, true))
            .await))
        .is_some()
    );
    ok(store
        .mark_interrupted(&RunOwner::this_process(), Duration::from_secs(60))
        .await);
}

async fn the_newest_waiting_run_of_a_group_displaces_an_older_one_and_is_handed_the_group(
    backend: Backend,
) {
    let store = backend.store;
    for id in ["holder", "w1", "w2", "w3"] {
        ok(store.create_run(&new_run(id, "p")).await);
        // Runs are ordered by when they were created, then by id.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(
        ok(store.acquire_group(&claim("g", "holder", None, true)).await),
        GroupAcquire::Acquired
    );
    let held = |displaced: Option<&str>| GroupAcquire::Held {
        holder_run: "holder".to_owned(),
        holder_number: Some(1),
        holder_stage: None,
        displaced: displaced.map(str::to_owned),
        holder_is_older: true,
    };
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w1", None, true)).await),
        held(None)
    );
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w1", None, true)).await),
        held(None)
    );
    // A newer run takes the pending place and names the older one, which is told it was superseded.
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w2", None, true)).await),
        held(Some("w1"))
    );
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w1", None, true)).await),
        GroupAcquire::Superseded {
            by: "w2".to_owned()
        }
    );
    // The holder lets go: the group goes to the pending run, not to whoever asks first.
    ok(store.release_group("g", "holder", None).await);
    assert_eq!(
        holder_of(ok(store
            .acquire_group(&claim("g", "w3", None, false))
            .await)),
        Some(("w2".to_owned(), Some(3), None))
    );
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w2", None, true)).await),
        GroupAcquire::Acquired
    );
    // An older run that finds a newer one holding is told so: it gives way rather than cancel the newer one.
    assert!(matches!(
        ok(store.acquire_group(&claim("g", "w1", None, false)).await),
        GroupAcquire::Held {
            holder_is_older: false,
            ..
        }
    ));

    // A pending run that stops waiting lets its place go, and takes nothing with it.
    assert!(matches!(
        ok(store.acquire_group(&claim("g", "w3", None, true)).await),
        GroupAcquire::Held {
            displaced: None,
            ..
        }
    ));
    ok(store.release_group("g", "w3", None).await);
    ok(store.release_group("g", "w2", None).await);
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w1", None, true)).await),
        GroupAcquire::Acquired
    );
    // A pending run that ended no longer keeps its place from an older one.
    assert!(holder_of(ok(store.acquire_group(&claim("g", "w3", None, true)).await)).is_some());
    emit_sample_run(store.clone(), "w3", 1).await;
    assert_eq!(
        ok(store.acquire_group(&claim("g", "w2", None, true)).await),
        GroupAcquire::Held {
            holder_run: "w1".to_owned(),
            holder_number: Some(2),
            holder_stage: None,
            displaced: None,
            holder_is_older: true,
        }
    );
}
