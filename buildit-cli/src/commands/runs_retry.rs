//! `buildit runs retry RUN [--failed]` and `buildit run --from STAGE`: a new run of a recorded run's pipeline,
//! commit and flags, which may take the stages that need not run again from an earlier run.

use std::path::{Path, PathBuf};

use buildit_core::Plan;
use buildit_core::runner::{Rerun, RerunError, rerun_failed, rerun_from};
use buildit_core::store::{
    RUN_STALE_AFTER, RunInputs, RunOwner, RunRecord, RunRef, RunState, Store, StoreError,
    sha256_hex,
};
use clap::ValueEnum as _;

use super::load::load_system_config;
use crate::cli::{ContextArgs, EventArg, HistoryOutput, RunArgs, RunOutput, RunsCommon, StoreArgs};
use crate::exit::Exit;
use crate::report::error_line;

/// The run a `buildit runs retry` starts again, and how.
#[derive(Debug)]
pub(crate) struct Retry {
    /// The recorded run.
    pub(crate) earlier: RunRecord,
    /// Only its failed and cancelled stages and what depends on them.
    pub(crate) failed: bool,
}

/// `buildit runs retry`: finds the run, checks that it can start again as it was, and runs it.
pub(crate) fn retry(
    run: &str,
    pipeline: Option<&str>,
    failed: bool,
    plain: bool,
    common: &RunsCommon,
) -> Exit {
    if common.server.is_some() {
        error_line(
            "retrying a run works only for a local store, not with `--server`",
            Some("trigger the pipeline again on the daemon: `buildit pipelines trigger`"),
        );
        return Exit::Usage;
    }
    let earlier = match find(run, pipeline, common) {
        Ok(earlier) => earlier,
        Err(exit) => return exit,
    };
    let name = format!("{}#{}", earlier.pipeline, earlier.number);
    if earlier.state == RunState::Running {
        error_line(
            &format!("run {name} is still running"),
            Some("wait for it to end, or cancel it (`buildit runs cancel RUN`), then retry it"),
        );
        return Exit::Usage;
    }
    let Some(inputs) = earlier.inputs.clone() else {
        error_line(
            &format!(
                "run {name} was recorded without what a retry needs (its pipeline file and flags)"
            ),
            Some(
                "a daemon's runs, and runs recorded by an older BuildIt, cannot be retried; run the pipeline with `buildit run`",
            ),
        );
        return Exit::Usage;
    };
    let (Some(file), Some(workspace)) = (&inputs.file, &inputs.workspace) else {
        error_line(
            &format!("run {name} was recorded without its pipeline file"),
            None,
        );
        return Exit::Usage;
    };
    if std::fs::metadata(file).is_err() {
        error_line(
            &format!("the pipeline file `{file}` of run {name} is gone"),
            Some("run the pipeline anew with `buildit run FILE`"),
        );
        return Exit::Usage;
    }
    if inputs.digest.is_none() || inputs.digest != digest_on_disk(Path::new(file)) {
        error_line(
            &format!("the pipeline file `{file}` changed since run {name}"),
            Some(
                "a retry runs the pipeline as it was; run the new one with `buildit run`, or `buildit run --from STAGE` to reuse what it needs",
            ),
        );
        return Exit::Usage;
    }
    if failed && earlier.state == RunState::Succeeded {
        println!(
            "nothing to rerun: run {name} succeeded (`buildit runs retry {name}` runs it all again)"
        );
        return Exit::Success;
    }
    let args = RunArgs {
        file: PathBuf::from(file),
        jobs: None,
        fail_fast: false,
        workspace: Some(PathBuf::from(workspace)),
        format: match common.format {
            HistoryOutput::Text => RunOutput::Text,
            HistoryOutput::Json => RunOutput::Json,
        },
        plain,
        bind: false,
        from: None,
        store: StoreArgs {
            database_url: common.store.database_url.clone(),
            system: common.store.system.clone(),
        },
        context: context_of(&inputs),
    };
    super::run::run_again(&args, Some(Retry { earlier, failed }))
}

/// The recorded run `run`, with interrupted runs marked first (a dead runner's run is not running).
fn find(run: &str, pipeline: Option<&str>, common: &RunsCommon) -> Result<RunRecord, Exit> {
    let workspace = common
        .workspace
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let system = load_system_config(common.store.system.as_deref(), &workspace, None)?;
    let location = super::store::locate(&common.store, &system)?;
    if let buildit_core::store::StoreLocation::Sqlite(path) = &location
        && !path.exists()
    {
        error_line(
            &format!("no run history at `{}`", path.display()),
            Some("use --workspace or --database-url for the store the run is recorded in"),
        );
        return Err(Exit::Usage);
    }
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let store = super::store::open(&location).await?;
        let _ = store
            .mark_interrupted(&RunOwner::this_process(), RUN_STALE_AFTER)
            .await;
        let found = store.find_run(&RunRef::parse(run, pipeline)).await;
        store.close().await;
        found.map_err(|error| store_error(&error))
    })
}

fn store_error(error: &StoreError) -> Exit {
    let help = miette::Diagnostic::help(error).map(|help| help.to_string());
    error_line(&error.to_string(), help.as_deref());
    match error {
        StoreError::NoSuchRun(_) | StoreError::AmbiguousRun { .. } => Exit::Usage,
        _ => Exit::Infrastructure,
    }
}

/// The flags a run was started with, as `buildit run` takes them.
fn context_of(inputs: &RunInputs) -> ContextArgs {
    ContextArgs {
        branch: inputs.branch.clone(),
        tag: inputs.tag.clone(),
        sha: inputs.sha.clone(),
        event: inputs
            .event
            .as_deref()
            .and_then(|event| EventArg::from_str(event, false).ok()),
        base: inputs.base.clone(),
        env: inputs
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect(),
        stages: inputs.stages.clone(),
    }
}

/// What a run of `args` records so that it can be retried: its file (absolute, links kept), the digest of its
/// text and of the `included` files it read, its workspace, its flags as given, and how it reruns an earlier run.
pub(crate) fn inputs_of(
    args: &RunArgs,
    included: &[(String, String)],
    workspace: &Path,
    retry: Option<&Retry>,
) -> RunInputs {
    // `buildit run` reads a relative file from the current directory, not the workspace. Its directory is
    // resolved (`..`, linked directories: one file has one name for `--from` to match), the file's own name is
    // not: a link's included files are read from the link's directory, and a retry must read the same ones.
    let absolute = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let file = match (
        absolute
            .parent()
            .and_then(|parent| parent.canonicalize().ok()),
        absolute.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => absolute,
    };
    let context = &args.context;
    RunInputs {
        // The included files as the run read them: parsing the pipeline again only to hash them would double
        // the cost of reading it.
        digest: std::fs::read(&file)
            .ok()
            .map(|text| pipeline_digest(text, included)),
        file: Some(file.display().to_string()),
        workspace: Some(workspace.display().to_string()),
        branch: context.branch.clone(),
        tag: context.tag.clone(),
        sha: context.sha.clone(),
        event: context
            .event
            .and_then(|event| event.to_possible_value())
            .map(|value| value.get_name().to_owned()),
        base: context.base.clone(),
        env: context
            .env
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        stages: context.stages.clone(),
        rerun: match (retry, &args.from) {
            (Some(retry), _) if retry.failed => Some("failed".to_owned()),
            (Some(_), _) => Some("all".to_owned()),
            (None, Some(stage)) => Some(format!("from {stage}")),
            (None, None) => None,
        },
    }
}

/// What the run takes from an earlier run, if anything: `Ok(None)` for a run that takes nothing. Errors are
/// reported here; `Err(Exit::Success)` when there is nothing to rerun (said so).
pub(crate) async fn prepare(
    store: &dyn Store,
    plan: &Plan,
    retry: Option<&Retry>,
    from: Option<&str>,
    inputs: &RunInputs,
) -> Result<Option<Rerun>, Exit> {
    let rerun = match (retry, from) {
        (Some(retry), _) => {
            let earlier = &retry.earlier;
            let context = plan.context();
            // The same flags could give another commit or branch: git's HEAD moved since.
            for (what, then, now) in [
                ("commit", &earlier.sha, &context.sha),
                ("branch", &earlier.branch, &context.branch),
            ] {
                if then != now {
                    error_line(
                        &format!(
                            "run {}#{} was of {what} {}, the workspace is now at {}",
                            earlier.pipeline,
                            earlier.number,
                            then.as_deref().unwrap_or("(none)"),
                            now.as_deref().unwrap_or("(none)")
                        ),
                        Some(
                            "check out what the run was of, or run the pipeline anew with `buildit run`",
                        ),
                    );
                    return Err(Exit::Usage);
                }
            }
            if !retry.failed {
                return Ok(None);
            }
            rerun_failed(store, plan, earlier).await
        }
        // Only a run of this same file in this same workspace lends its stages: another file of the same
        // pipeline name, or another checkout on a shared store, built other things.
        (None, Some(stage)) => {
            let same_origin = |earlier: &buildit_core::store::RunRecord| {
                earlier.inputs.as_ref().is_some_and(|then| {
                    then.file.is_some()
                        && then.file == inputs.file
                        && then.workspace == inputs.workspace
                })
            };
            rerun_from(store, plan, stage, &same_origin).await
        }
        (None, None) => return Ok(None),
    };
    match rerun {
        Ok(rerun) => {
            if let (Some(earlier), Some(reuse)) = (&rerun.earlier, &rerun.reuse)
                && !reuse.stages.is_empty()
            {
                eprintln!(
                    "reusing from run {}#{} ({}): {}",
                    earlier.pipeline,
                    earlier.number,
                    earlier.id,
                    reuse.stages.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            eprintln!("rerunning: {}", rerun.reruns.join(", "));
            Ok(Some(rerun))
        }
        Err(RerunError::NothingToRerun { run }) => {
            println!("nothing to rerun: no stage of {run} failed or was cancelled");
            Err(Exit::Success)
        }
        Err(error) => {
            let help = miette::Diagnostic::help(&error).map(|help| help.to_string());
            error_line(&error.to_string(), help.as_deref());
            Err(match error {
                RerunError::Store(_) => Exit::Infrastructure,
                _ => Exit::Usage,
            })
        }
    }
}

/// The digest of a pipeline file as it is on disk now, with the files it includes (read and parsed anew).
fn digest_on_disk(file: &Path) -> Option<String> {
    let text = std::fs::read(file).ok()?;
    let included = buildit_core::runner::read_pipeline(file)
        .map(|pipeline| pipeline.included)
        .unwrap_or_default();
    Some(pipeline_digest(text, &included))
}

/// The SHA-256 of a pipeline file's text and of every file it includes (path and text, in the order read): a
/// retry of a pipeline whose included template changed is refused as one whose own file changed.
fn pipeline_digest(text: Vec<u8>, included: &[(String, String)]) -> String {
    let mut all = text;
    for (path, included) in included {
        all.push(0);
        all.extend_from_slice(path.as_bytes());
        all.push(0);
        all.extend_from_slice(included.as_bytes());
    }
    sha256_hex(&all)
}
