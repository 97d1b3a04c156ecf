//! `buildit runs list|show|logs|events`: reading run history from the store; and where every `runs` command goes.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use buildit_core::events::RunEventKind;
use buildit_core::store::{
    AttemptRecord, LogLineRecord, LogQuery, RUN_STALE_AFTER, RunFilter, RunFollower, RunOwner,
    RunRecord, RunRef, RunState, Store, StoreError,
};
use serde::Serialize;

use super::load::load_system_config;
use crate::cli::{HistoryOutput, RunsCommand};
use crate::exit::Exit;
use crate::report::error_line;
use crate::reporter::{human, json_line};

/// Chunks of log lines read per page: bounded memory for runs of any size.
const LOG_PAGE_CHUNKS: u32 = 64;
/// Events read per page.
const EVENT_PAGE: usize = 1000;

pub(crate) fn run(command: &RunsCommand) -> Exit {
    // A retry is a run: it opens the store and starts its runtime as `buildit run` does.
    if let RunsCommand::Retry {
        run,
        pipeline,
        failed,
        plain,
        common,
    } = command
    {
        return super::runs_retry::retry(run, pipeline.as_deref(), *failed, *plain, common);
    }
    let common = match command {
        RunsCommand::List { common, .. }
        | RunsCommand::Show { common, .. }
        | RunsCommand::Logs { common, .. }
        | RunsCommand::Events { common, .. }
        | RunsCommand::Cancel { common, .. }
        | RunsCommand::Delete { common, .. }
        | RunsCommand::Prune { common, .. }
        | RunsCommand::Retry { common, .. } => common,
    };
    let store_only = match command {
        RunsCommand::Delete { .. } => Some("deleting a run"),
        RunsCommand::Prune { .. } => Some("pruning runs"),
        _ => None,
    };
    if let Some(what) = store_only
        && common.server.is_some()
    {
        error_line(
            &format!("{what} works only for a local store, not with `--server`"),
            Some(
                "run it where the store is: `--database-url URL`, `--system FILE` or `--workspace DIR` name it",
            ),
        );
        return Exit::Usage;
    }
    // Checked before the store is opened: a mistake in the age is a usage error, whatever the store.
    let prune_age = match command {
        RunsCommand::Prune { older_than, .. } => match super::runs_manage::parse_age(older_than) {
            Some(age) => Some(age),
            None => return Exit::Usage,
        },
        _ => None,
    };
    if common.server.is_some() {
        let remote = crate::cli::RemoteArgs {
            server: common.server.clone(),
            token: common.token.clone(),
        };
        return match super::login::resolve(&remote) {
            Ok((server, token)) => super::runs_remote::run(command, &server, &token),
            Err(exit) => exit,
        };
    }
    let local_only = match command {
        // A store read here holds recorded runs; the runs a daemon has not started are the daemon's to list.
        RunsCommand::List {
            state: Some(state), ..
        } if recorded_state(state).is_none() => Some("listing runs not recorded yet"),
        _ => None,
    };
    if let Some(what) = local_only {
        error_line(
            &format!("{what} works against a daemon"),
            Some("give `--server URL` (or `BUILDIT_SERVER`) and a token"),
        );
        return Exit::Usage;
    }
    let workspace = common
        .workspace
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let system = match load_system_config(common.store.system.as_deref(), &workspace, None) {
        Ok(system) => system,
        Err(exit) => return exit,
    };
    let location = match super::store::locate(&common.store, &system) {
        Ok(location) => location,
        Err(exit) => return exit,
    };
    if let buildit_core::store::StoreLocation::Sqlite(path) = &location
        && !path.exists()
    {
        // Reading history never creates a database as a side effect.
        error_line(
            &format!("no run history at `{}`", path.display()),
            Some(
                "`buildit run` records runs there; use --workspace or --database-url for another store",
            ),
        );
        return Exit::Usage;
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let store = match super::store::open(&location).await {
            Ok(store) => store,
            Err(exit) => return exit,
        };
        // Runs whose runner died show as interrupted, not running forever.
        let _ = store
            .mark_interrupted(&RunOwner::this_process(), RUN_STALE_AFTER)
            .await;
        let result = match command {
            RunsCommand::List {
                pipeline,
                state,
                branch,
                limit,
                common,
            } => {
                let filter = RunFilter {
                    pipeline: pipeline.clone(),
                    state: state.as_deref().and_then(recorded_state),
                    branch: branch.clone(),
                    before: None,
                    limit: *limit,
                };
                list(store.as_ref(), &filter, common.format).await
            }
            RunsCommand::Show {
                run,
                pipeline,
                common,
            } => show(store.as_ref(), run, pipeline.as_deref(), common.format).await,
            RunsCommand::Logs {
                run,
                pipeline,
                stage,
                attempt,
                follow,
                common,
            } => {
                let selected = LogSelection {
                    stage: stage.clone(),
                    attempt: *attempt,
                    format: common.format,
                };
                if *follow {
                    follow_logs(Arc::clone(&store), run, pipeline.as_deref(), &selected).await
                } else {
                    logs(Arc::clone(&store), run, pipeline.as_deref(), selected).await
                }
            }
            RunsCommand::Events {
                run,
                pipeline,
                after,
                ..
            } => events(store.as_ref(), run, pipeline.as_deref(), *after).await,
            RunsCommand::Cancel {
                run,
                pipeline,
                common,
            } => {
                super::runs_manage::cancel(store.as_ref(), run, pipeline.as_deref(), common.format)
                    .await
            }
            RunsCommand::Delete {
                run,
                pipeline,
                common,
            } => {
                let files = super::runs_manage::RunFiles {
                    system: &system,
                    workspace: &workspace,
                };
                super::runs_manage::delete(
                    store.as_ref(),
                    &files,
                    run,
                    pipeline.as_deref(),
                    common.format,
                )
                .await
            }
            RunsCommand::Prune {
                dry_run, common, ..
            } => {
                let files = super::runs_manage::RunFiles {
                    system: &system,
                    workspace: &workspace,
                };
                let request = super::runs_manage::PruneRequest {
                    dry_run: *dry_run,
                    format: common.format,
                };
                match prune_age {
                    Some(age) => {
                        super::runs_manage::prune(store.as_ref(), &files, age, &request).await
                    }
                    // Parsed before the store was opened.
                    None => Ok(Exit::Usage),
                }
            }
            // Started before the store was opened here.
            RunsCommand::Retry { .. } => Ok(Exit::Usage),
        };
        store.close().await;
        match result {
            Ok(exit) => exit,
            Err(error) => {
                let exit = match error {
                    StoreError::NoSuchRun(_)
                    | StoreError::AmbiguousRun { .. }
                    | StoreError::RunStillRunning(_) => Exit::Usage,
                    _ => Exit::Infrastructure,
                };
                let help = match &error {
                    StoreError::NoSuchRun(_) => Some("`buildit runs list` shows the recorded runs"),
                    StoreError::RunStillRunning(_) => Some(
                        "cancel it first (`buildit runs cancel RUN`), then delete it once it has ended",
                    ),
                    StoreError::AmbiguousRun { .. } => Some(
                        "name the pipeline: `--pipeline NAME`, or write the run as `PIPELINE#N`",
                    ),
                    _ => None,
                };
                error_line(&error.to_string(), help);
                exit
            }
        }
    })
}

/// The state of a recorded run `--state` names (`None` for `queued` and `started`, which only requests have).
fn recorded_state(name: &str) -> Option<RunState> {
    [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Interrupted,
    ]
    .into_iter()
    .find(|state| state.as_str() == name)
}

async fn list(
    store: &dyn Store,
    filter: &RunFilter,
    format: HistoryOutput,
) -> Result<Exit, StoreError> {
    let runs = store.list_runs(filter).await?;
    let mut listed = Vec::with_capacity(runs.len());
    for run in &runs {
        listed.push(ListedRun {
            run,
            waiting_for_group: waiting_for_group(store, run).await,
        });
    }
    let text = match format {
        HistoryOutput::Json => json(&listed),
        HistoryOutput::Text if runs.is_empty() => "no runs recorded\n".to_owned(),
        HistoryOutput::Text => {
            let mut rows = vec![[
                "RUN".to_owned(),
                "PIPELINE".to_owned(),
                "STATUS".to_owned(),
                "STARTED".to_owned(),
                "DURATION".to_owned(),
                "ID".to_owned(),
            ]];
            for ListedRun {
                run,
                waiting_for_group,
            } in &listed
            {
                rows.push([
                    format!("#{}", run.number),
                    run.pipeline.clone(),
                    match waiting_for_group {
                        Some(waiting) => format!("waiting ({})", waiting.group),
                        None => run.state.as_str().to_owned(),
                    },
                    timestamp(run.created_at_ms),
                    duration(run.duration_ms),
                    run.id.clone(),
                ]);
            }
            table(&rows)
        }
    };
    print(&text);
    Ok(Exit::Success)
}

/// A run as `runs list` shows it.
#[derive(Serialize)]
struct ListedRun<'a> {
    #[serde(flatten)]
    run: &'a RunRecord,
    /// The concurrency group a running run waits for before its first stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for_group: Option<WaitingFor>,
}

/// The group a run waits for, and who holds it.
#[derive(Serialize)]
struct WaitingFor {
    group: String,
    holder_run: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder_number: Option<i64>,
}

/// Events read, after the stages' `stage-queued`, to tell whether a running run waits for its group: such a run
/// has told nothing else yet but who holds the group.
const WAITING_EVENTS: usize = 64;

/// The group `run` waits for, as its recorded events tell: a `waiting-for-group` of the run itself that no stage
/// followed. `None` for a run that is not running, not started yet, or that the store cannot read.
async fn waiting_for_group(store: &dyn Store, run: &RunRecord) -> Option<WaitingFor> {
    if run.state != RunState::Running {
        return None;
    }
    // `run-started`, then one `stage-queued` a stage, then the wait: the plan is not read again for each run.
    let queued = run.stage_count?;
    let events = store
        .events_after(&run.id, queued, WAITING_EVENTS)
        .await
        .ok()?;
    let mut waiting = None;
    for event in events {
        match event.kind {
            RunEventKind::WaitingForGroup {
                stage: None,
                group,
                holder_run,
                holder_number,
                ..
            } => {
                waiting = Some(WaitingFor {
                    group,
                    holder_run,
                    holder_number,
                });
            }
            // It holds its group once a stage starts, waits for a stage's group, or ends (a skip); stages are
            // queued before it waits.
            RunEventKind::WaitingForGroup { stage: Some(_), .. }
            | RunEventKind::StageStarted { .. }
            | RunEventKind::StageFinished { .. }
            | RunEventKind::RunFinished { .. } => return None,
            _ => {}
        }
    }
    waiting
}

#[derive(Serialize)]
struct RunDetail<'a> {
    #[serde(flatten)]
    run: &'a RunRecord,
    attempts: &'a [AttemptRecord],
    /// What each instance wrote to `$BUILDIT_OUTPUT` (masked), by instance name.
    outputs: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// What each instance's test reports counted (its last attempt that had any), by instance name.
    tests: &'a buildit_core::store::StageTests,
}

/// What a rerun reran: `retry of build#3 (its failed stages)`; the earlier run by id once it is deleted.
async fn rerun_line(store: &dyn Store, run: &RunRecord) -> Option<String> {
    let earlier_id = run.retry_of.as_deref()?;
    let earlier = match store.find_run(&RunRef::Id(earlier_id.to_owned())).await {
        Ok(earlier) => format!("{}#{}", earlier.pipeline, earlier.number),
        Err(_) => format!("{earlier_id} (deleted)"),
    };
    let how = run
        .inputs
        .as_ref()
        .and_then(|inputs| inputs.rerun.as_deref())
        .unwrap_or("all");
    Some(match how.strip_prefix("from ") {
        Some(stage) => format!("from `{stage}`, what it needs reused from {earlier}\n"),
        None if how == "failed" => {
            format!("retry of {earlier} (its failed and cancelled stages and their dependents)\n")
        }
        None => format!("retry of {earlier}\n"),
    })
}

async fn show(
    store: &dyn Store,
    run: &str,
    pipeline: Option<&str>,
    format: HistoryOutput,
) -> Result<Exit, StoreError> {
    let run = store.find_run(&RunRef::parse(run, pipeline)).await?;
    let attempts = store.attempts(&run.id).await?;
    let outputs = store.stage_outputs(&run.id).await?;
    let tests = store.stage_tests(&run.id).await?;
    let text = match format {
        HistoryOutput::Json => json(&RunDetail {
            run: &run,
            attempts: &attempts,
            outputs: &outputs,
            tests: &tests,
        }),
        HistoryOutput::Text => {
            let mut text = format!(
                "run {}#{} ({}): {}",
                run.pipeline,
                run.number,
                run.id,
                run.state.as_str()
            );
            if let Some(ms) = run.duration_ms {
                text.push_str(&format!(" in {}", duration(Some(ms))));
            }
            text.push('\n');
            let mut facts = vec![format!("started {}", timestamp(run.created_at_ms))];
            for (name, value) in [
                ("branch", &run.branch),
                ("sha", &run.sha),
                ("event", &run.event),
            ] {
                if let Some(value) = value {
                    facts.push(format!("{name} {value}"));
                }
            }
            text.push_str(&facts.join(", "));
            text.push('\n');
            if let Some(reason) = &run.reason {
                text.push_str(&format!("interrupted: {reason}\n"));
            }
            if let Some(line) = rerun_line(store, &run).await {
                text.push_str(&line);
            }
            text.push('\n');
            let mut rows = vec![[
                "STAGE".to_owned(),
                "ATTEMPT".to_owned(),
                "OUTCOME".to_owned(),
                "EXIT".to_owned(),
                "DURATION".to_owned(),
                "REASON".to_owned(),
            ]];
            for attempt in &attempts {
                rows.push([
                    attempt.stage.clone(),
                    if attempt.attempt == 0 {
                        "-".to_owned()
                    } else {
                        attempt.attempt.to_string()
                    },
                    attempt.state.as_str().to_owned(),
                    attempt
                        .exit_code
                        .map_or_else(|| "-".to_owned(), |code| code.to_string()),
                    duration(attempt.duration_ms),
                    attempt.reason.clone().unwrap_or_default(),
                ]);
            }
            text.push_str(&table(&rows));
            if !outputs.is_empty() {
                text.push_str("\noutputs\n");
                for (stage, written) in &outputs {
                    text.push_str(&format!(
                        "  {stage}: {}\n",
                        crate::reporter::outputs_line(written)
                    ));
                }
            }
            if !tests.is_empty() {
                text.push_str("\ntests\n");
                for (stage, counted) in &tests {
                    // The counts on the stage's line, then every failed test the run kept, one a line.
                    text.push_str(&format!(
                        "  {stage}: {}\n",
                        crate::reporter::tests_line(counted, 0)
                    ));
                    for name in &counted.failed {
                        text.push_str(&format!("    {name}\n"));
                    }
                    let more = counted
                        .not_passed()
                        .saturating_sub(counted.failed.len() as u64);
                    if more > 0 {
                        text.push_str(&format!("    and {more} more\n"));
                    }
                }
            }
            text
        }
    };
    print(&text);
    Ok(Exit::Success)
}

/// Which log lines `runs logs` prints, and how.
struct LogSelection {
    stage: Option<String>,
    attempt: Option<u32>,
    format: HistoryOutput,
}

impl LogSelection {
    /// Writes one line as `runs logs` prints it; an error is a closed pipe.
    fn write(&self, out: &mut impl std::io::Write, line: &LogLineRecord) -> std::io::Result<()> {
        match self.format {
            HistoryOutput::Json => {
                writeln!(out, "{}", serde_json::to_string(line).unwrap_or_default())
            }
            HistoryOutput::Text if self.stage.is_none() && line.attempt > 1 => {
                writeln!(out, "{}#{} | {}", line.stage, line.attempt, line.text)
            }
            HistoryOutput::Text if self.stage.is_none() => {
                writeln!(out, "{} | {}", line.stage, line.text)
            }
            HistoryOutput::Text => writeln!(out, "{}", line.text),
        }
    }
}

async fn logs(
    store: Arc<dyn Store>,
    run: &str,
    pipeline: Option<&str>,
    selected: LogSelection,
) -> Result<Exit, StoreError> {
    let LogSelection { stage, attempt, .. } = &selected;
    let (stage, attempt) = (stage.clone(), *attempt);
    let run = store.find_run(&RunRef::parse(run, pipeline)).await?;
    let mut query = LogQuery {
        run_id: run.id.clone(),
        stage,
        attempt,
        after: None,
        chunks: LOG_PAGE_CHUNKS,
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    loop {
        let page = store.logs(&query).await?;
        for line in &page.lines {
            let written = selected.write(&mut out, line);
            // A closed pipe (`buildit runs logs 3 | head`) is the reader's choice.
            if written.is_err() {
                return Ok(Exit::Success);
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let _ = out.flush();
    Ok(Exit::Success)
}

/// The run's lines as they are recorded, from the first, until it ends: a run another `buildit run` records in
/// this store (its record says whether it still runs; one whose runner died is marked interrupted and ends).
async fn follow_logs(
    store: Arc<dyn Store>,
    run: &str,
    pipeline: Option<&str>,
    selected: &LogSelection,
) -> Result<Exit, StoreError> {
    let run = store.find_run(&RunRef::parse(run, pipeline)).await?;
    let mut follower = RunFollower::tailing(store, &run.id, 0);
    // Lines are numbered per attempt, as the store numbers them.
    let mut numbered: std::collections::HashMap<(String, u32), u64> =
        std::collections::HashMap::new();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    loop {
        let batch = match follower.next().await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(error) => {
                let _ = out.flush();
                error_line(&format!("cannot follow the run: {error}"), None);
                return Ok(Exit::Infrastructure);
            }
        };
        for event in batch {
            let RunEventKind::LogLine {
                stage,
                attempt,
                stream,
                text,
            } = event.kind
            else {
                continue;
            };
            let number = numbered.entry((stage.clone(), attempt)).or_insert(0);
            *number += 1;
            let wanted = selected.stage.as_ref().is_none_or(|only| *only == stage)
                && selected.attempt.is_none_or(|only| only == attempt);
            if !wanted {
                continue;
            }
            let line = LogLineRecord {
                stage,
                attempt,
                line: *number,
                stream,
                at_ms: i64::try_from(event.at_ms).unwrap_or(i64::MAX),
                text,
            };
            // A closed pipe (`buildit runs logs 3 --follow | head`) is the reader's choice.
            if selected.write(&mut out, &line).is_err() {
                return Ok(Exit::Success);
            }
        }
        // Live lines are shown as they come.
        if out.flush().is_err() {
            return Ok(Exit::Success);
        }
    }
    let _ = out.flush();
    Ok(Exit::Success)
}

/// Every stored event after `after`, one JSON object a line (the shape of `buildit run --format json`), read a
/// page at a time. Both formats print JSON lines: events are for programs.
async fn events(
    store: &dyn Store,
    run: &str,
    pipeline: Option<&str>,
    after: u64,
) -> Result<Exit, StoreError> {
    let run = store.find_run(&RunRef::parse(run, pipeline)).await?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut after = after;
    loop {
        let page = store.events_after(&run.id, after, EVENT_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for event in &page {
            // A closed pipe (`buildit runs events 3 | head`) is the reader's choice.
            if writeln!(out, "{}", json_line(event)).is_err() {
                return Ok(Exit::Success);
            }
        }
    }
    let _ = out.flush();
    Ok(Exit::Success)
}

pub(super) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub(super) fn json<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

pub(super) fn duration(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| human(std::time::Duration::from_millis(ms)),
    )
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(super) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width)
                .max(cell.chars().count())
                .min(crate::reporter::MAX_COLUMN_WIDTH);
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, (cell, &width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                crate::reporter::pad(&mut line, cell, width);
                line.push_str("  ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `2026-11-27 18:20:01Z` from ms since the Unix epoch (UTC, so the output does not depend on the machine).
pub(super) fn timestamp(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, day_seconds) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{table, timestamp};

    #[test]
    fn tables_take_cells_longer_than_format_widths() {
        let long = "s".repeat(70_000);
        let text = table(&[
            ["stage".to_owned(), "outcome".to_owned()],
            [long.clone(), "succeeded".to_owned()],
        ]);
        let lines: Vec<&str> = text.lines().collect();
        // Columns are at most 60 wide: a longer cell sticks out instead of pushing every row right.
        assert_eq!(
            lines.first().copied(),
            Some(format!("{:<60}  outcome", "stage").as_str())
        );
        assert_eq!(
            lines.get(1).copied(),
            Some(format!("{long}  succeeded").as_str())
        );
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(timestamp(1_795_795_201_999), "2026-11-27 16:00:01Z");
    }
}
