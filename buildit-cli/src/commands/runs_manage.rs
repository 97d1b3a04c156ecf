//! `buildit runs cancel|delete|prune` on a local store: a cancel asked through the store, and ended runs deleted
//! with their files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use buildit_core::exec::{ArtifactStore, run_outputs_dir};
use buildit_core::store::{RunRecord, RunRef, RunState, Store, StoreError};
use buildit_core::system::{ArtifactStoreConfig, SystemConfig};
use serde::Serialize;

use super::prune::{bytes_of, is_cache_archive, prune_or_count, remove};
use super::runs::{json, print, timestamp};
use crate::cli::HistoryOutput;
use crate::exit::Exit;
use crate::report::error_line;

/// Where a local store's runs keep files besides their rows.
pub(crate) struct RunFiles<'a> {
    pub(crate) system: &'a SystemConfig,
    /// The workspace the command was given (or the current directory): runs' outputs files and caches.
    pub(crate) workspace: &'a Path,
}

impl RunFiles<'_> {
    /// The files and directories of `run_id` that may exist: its artifacts and its outputs files.
    fn of(&self, run_id: &str) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let ArtifactStoreConfig::Filesystem { path } = &self.system.artifacts
            && let Some(dir) = ArtifactStore::new(path).run_dir(run_id)
        {
            paths.push(dir);
        }
        paths.push(self.workspace.join(run_outputs_dir(run_id)));
        paths
    }

    /// Bytes `run_id`'s files hold.
    fn bytes(&self, run_id: &str) -> u64 {
        self.of(run_id).iter().map(|path| bytes_of(path)).sum()
    }

    /// Removes `run_id`'s files; the bytes they held.
    fn remove(&self, run_id: &str) -> Result<u64, String> {
        let mut removed = 0;
        for path in self.of(run_id) {
            let bytes = bytes_of(&path);
            match remove(&path) {
                Ok(()) => removed += bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(format!("cannot remove `{}`: {error}", path.display())),
            }
        }
        Ok(removed)
    }
}

fn name(run: &RunRecord) -> String {
    format!("{}#{} ({})", run.pipeline, run.number, run.id)
}

#[derive(Serialize)]
struct Cancelled<'a> {
    id: &'a str,
    pipeline: &'a str,
    number: u64,
    /// The run's state when the cancel was asked for.
    state: RunState,
    /// Whether the cancel was noted (false: the run had already ended).
    cancel_requested: bool,
}

/// Asks the process running the run to cancel it. A run that has already ended is left as it is, and the command
/// still succeeds: what its caller wants, a run that is not running, holds.
pub(crate) async fn cancel(
    store: &dyn Store,
    run: &str,
    pipeline: Option<&str>,
    format: HistoryOutput,
) -> Result<Exit, StoreError> {
    let record = store.find_run(&RunRef::parse(run, pipeline)).await?;
    let state = store.cancel_running_run(&record.id).await?;
    let requested = state == RunState::Running;
    let text = match format {
        HistoryOutput::Json => json(&Cancelled {
            id: &record.id,
            pipeline: &record.pipeline,
            number: record.number,
            state,
            cancel_requested: requested,
        }),
        HistoryOutput::Text if requested => format!(
            "cancel requested for run {}: its `buildit run` stops it within {} s, giving running stages their grace period\n",
            name(&record),
            buildit_core::runner::CANCEL_POLL.as_secs().max(1)
        ),
        HistoryOutput::Text => format!(
            "run {} has already ended ({}): nothing to cancel\n",
            name(&record),
            state.as_str()
        ),
    };
    print(&text);
    Ok(Exit::Success)
}

#[derive(Serialize)]
struct Deleted<'a> {
    id: &'a str,
    pipeline: &'a str,
    number: u64,
    /// Bytes of artifacts and outputs files removed.
    bytes: u64,
}

/// Deletes an ended run: its rows in one transaction, then its files (a run whose rows stay keeps its files).
pub(crate) async fn delete(
    store: &dyn Store,
    files: &RunFiles<'_>,
    run: &str,
    pipeline: Option<&str>,
    format: HistoryOutput,
) -> Result<Exit, StoreError> {
    let record = store.find_run(&RunRef::parse(run, pipeline)).await?;
    store.delete_run(&record.id).await?;
    let bytes = match files.remove(&record.id) {
        Ok(bytes) => bytes,
        Err(problem) => {
            error_line(
                &format!(
                    "run {} is deleted from the store, but not all its files: {problem}",
                    name(&record)
                ),
                Some("`buildit gc` removes artifacts left behind once they are old enough"),
            );
            return Ok(Exit::Infrastructure);
        }
    };
    let text = match format {
        HistoryOutput::Json => json(&Deleted {
            id: &record.id,
            pipeline: &record.pipeline,
            number: record.number,
            bytes,
        }),
        HistoryOutput::Text => format!(
            "deleted run {}: its record, logs and events, and {bytes} bytes of artifacts and outputs\n",
            name(&record)
        ),
    };
    print(&text);
    Ok(Exit::Success)
}

#[derive(Serialize)]
struct Pruned {
    dry_run: bool,
    /// The runs deleted (with `dry_run`: that would be), earliest end first.
    runs: Vec<String>,
    /// Bytes of their artifacts and outputs files.
    run_bytes: u64,
    /// Cache archives removed.
    caches: usize,
    /// Bytes they held.
    cache_bytes: u64,
}

/// What `runs prune` is asked to do.
pub(crate) struct PruneRequest {
    pub(crate) dry_run: bool,
    pub(crate) format: HistoryOutput,
}

/// Parses `--older-than`, reporting a mistake; `None` after a report.
pub(crate) fn parse_age(text: &str) -> Option<Duration> {
    match buildit_core::config::parse_duration(text) {
        Ok(age) => Some(age),
        Err(error) => {
            error_line(
                &format!("invalid `--older-than`: {error}"),
                Some("write it like `30d`, `12h` or `90m`"),
            );
            None
        }
    }
}

/// Deletes every run that ended more than `age` ago, as [`delete`] does, then the workspace's caches not written
/// for as long.
pub(crate) async fn prune(
    store: &dyn Store,
    files: &RunFiles<'_>,
    age: Duration,
    request: &PruneRequest,
) -> Result<Exit, StoreError> {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| i64::try_from(now.as_millis()).unwrap_or(i64::MAX));
    let ended = store
        .runs_ended_before(now_ms.saturating_sub(age_ms))
        .await?;
    let mut pruned = Pruned {
        dry_run: request.dry_run,
        runs: Vec::new(),
        run_bytes: 0,
        caches: 0,
        cache_bytes: 0,
    };
    let mut lines = String::new();
    let mut exit = Exit::Success;
    for run in &ended {
        if request.dry_run {
            pruned.run_bytes += files.bytes(&run.id);
        } else {
            match store.delete_run(&run.id).await {
                Ok(()) => {}
                // Deleted meanwhile by someone else: gone, as wanted.
                Err(StoreError::NoSuchRun(_)) => continue,
                Err(error) => return Err(error),
            }
            match files.remove(&run.id) {
                Ok(bytes) => pruned.run_bytes += bytes,
                Err(problem) => {
                    error_line(
                        &format!(
                            "run {} is deleted from the store, but not all its files: {problem}",
                            name(run)
                        ),
                        None,
                    );
                    exit = Exit::Infrastructure;
                }
            }
        }
        let ended_at = run.finished_at_ms.map_or_else(|| "-".to_owned(), timestamp);
        let verb = if request.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        lines.push_str(&format!(
            "{verb} run {} ({}, ended {ended_at})\n",
            name(run),
            run.state.as_str()
        ));
        pruned.runs.push(run.id.clone());
    }
    let caches = files.workspace.join(".buildit/cache");
    match prune_or_count(&caches, is_cache_archive, Some(age), None, request.dry_run) {
        Ok(removed) => {
            pruned.caches = removed.entries;
            pruned.cache_bytes = removed.bytes;
        }
        Err(error) => {
            error_line(
                &format!("cannot prune the caches in `{}`: {error}", caches.display()),
                None,
            );
            exit = Exit::Infrastructure;
        }
    }
    let text = match request.format {
        HistoryOutput::Json => json(&pruned),
        HistoryOutput::Text => {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            lines.push_str(&format!(
                "{} {} run{} ({} bytes of artifacts and outputs) and {} cache archive{} ({} bytes)\n",
                if request.dry_run {
                    "would delete"
                } else {
                    "deleted"
                },
                pruned.runs.len(),
                plural(pruned.runs.len()),
                pruned.run_bytes,
                pruned.caches,
                plural(pruned.caches),
                pruned.cache_bytes
            ));
            lines
        }
    };
    print(&text);
    Ok(exit)
}
