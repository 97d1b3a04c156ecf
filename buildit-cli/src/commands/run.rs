//! `buildit run`: execute a pipeline on this machine, streaming its logs, and summarise it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use buildit_core::Plan;
use buildit_core::events::RunView;
use buildit_core::exec::RunOptions;
use buildit_core::runner::{RunSetup, Runner, check_executors, connect_executor, new_run_id};
use buildit_core::store::{RunInputs, Store, StoreError, StoreLocation, open_store};
use buildit_core::system::SystemConfig;
use tokio_util::sync::CancellationToken;

use super::load::load_system_config;
use super::plan::load_plan;
use super::runs_retry::{Retry, inputs_of, prepare};
use crate::cli::{RunArgs, RunOutput};
use crate::exit::Exit;
use crate::printer::{follow, print_events};
use crate::report::{error_line, runner_error};
use crate::reporter::{LineReporter, print_text, summary};

pub(crate) fn run(args: &RunArgs) -> Exit {
    run_again(args, None)
}

/// `buildit run`, or the run `buildit runs retry` starts again (`retry`).
pub(crate) fn run_again(args: &RunArgs, retry: Option<Retry>) -> Exit {
    // Orphans of the stages become this process's children, so a stopped stage is reaped at once rather than
    // whenever `init` gets round to it. Without it (a kernel that refuses) stages still stop, a little later.
    let _ = buildit_core::exec::adopt_orphans();
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    // Absolute, so that `BUILDIT_WORKSPACE` means the same from any stage's working directory.
    let workspace = match workspace.canonicalize() {
        Ok(workspace) if workspace.is_dir() => workspace,
        _ => {
            error_line(
                &format!("workspace `{}` is not a directory", workspace.display()),
                None,
            );
            return Exit::Usage;
        }
    };
    // The pipeline is read and planned on a thread of its own from the start. Meanwhile this thread starts the
    // runtime and, when the store's place follows from the flags and the system configuration alone, opens an
    // existing SQLite store (its own threads doing the file work). The configuration is read here without
    // printing anything; reading it again below reports it, in its order. A new store is only created, and a
    // database server only contacted, once the pipeline is known to be valid: a broken pipeline leaves no
    // database behind, and an unreachable server does not hold up its report.
    let (loaded, runtime, opening) = std::thread::scope(|scope| {
        let planning = scope.spawn(|| {
            load_plan(
                &args.file,
                args.store.system.as_deref(),
                &args.context,
                &workspace,
            )
        });
        // A failure is reported after the pipeline's own problems, which the planning thread may be printing.
        let runtime = super::quiet_runtime();
        let early = load_system_config(
            args.store.system.as_deref(),
            &workspace,
            Some(&mut Vec::new()),
        )
        .ok()
        .and_then(|system| super::store::locate_quietly(&args.store, &system))
        .filter(|location| matches!(location, StoreLocation::Sqlite(path) if path.is_file()));
        let opening = match (&runtime, early) {
            (Ok(runtime), Some(location)) => {
                let opened = runtime.block_on(open_store(&location));
                Some((location, opened))
            }
            _ => None,
        };
        (planning.join(), runtime, opening)
    });
    let (plan, system) = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(exit)) => return exit,
        Err(_) => {
            error_line("reading the pipeline failed unexpectedly", None);
            return Exit::Infrastructure;
        }
    };
    // An event none of the pipeline's `on` triggers matches starts nothing: no run is recorded, as a CI
    // service would not start one.
    if let Some(reason) = plan.not_triggered() {
        match args.format {
            RunOutput::Text => print_text(&format!("{reason}: nothing runs\n")),
            RunOutput::Json => print_text(&format!(
                "{}\n",
                serde_json::json!({ "type": "not-triggered", "detail": reason })
            )),
        }
        return Exit::Success;
    }
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => return super::runtime_error(&error),
    };
    // A stage this BuildIt cannot run is refused before anything is prepared for the run.
    let setup = check_executors(&plan).and_then(|()| {
        RunSetup::from_system(
            &plan,
            &system,
            &workspace,
            |name| std::env::var(name).ok(),
            std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()),
        )
    });
    let setup = match setup {
        Ok(setup) => setup,
        Err(error) => return runner_error(&error),
    };
    let location = match super::store::locate(&args.store, &system) {
        Ok(location) => location,
        Err(exit) => return exit,
    };
    // Opened early for this same place (the configuration could have changed in between), or opened now.
    let opened = opening.and_then(|(early, opened)| (early == location).then_some(opened));
    buildit_core::runner::create_data_dir(&workspace);
    let inputs = inputs_of(args, &plan.pipeline().included, &workspace, retry.as_ref());
    let colors = !args.plain
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let run = LocalRun {
        plan,
        system,
        setup,
        workspace,
        location,
        opened,
        colors,
        inputs,
        retry,
    };
    runtime.block_on(run.execute(args))
}

/// A run of this machine, planned and set up, ready to execute.
#[derive(Debug)]
struct LocalRun {
    plan: Plan,
    system: SystemConfig,
    setup: RunSetup,
    workspace: PathBuf,
    location: StoreLocation,
    /// The store, when it was opened while the pipeline was read.
    opened: Option<Result<Arc<dyn Store>, StoreError>>,
    colors: bool,
    /// What the run records so that it can be retried.
    inputs: RunInputs,
    /// The run this one retries.
    retry: Option<Retry>,
}

impl LocalRun {
    async fn execute(self, args: &RunArgs) -> Exit {
        let bind = args.bind;
        let (executor, swept) = match connect_executor(&self.plan, &self.system, |options| {
            buildit_core::exec::DockerOptions {
                bind_workspace: bind,
                ..options
            }
        })
        .await
        {
            Ok(connected) => connected,
            Err(error) => return runner_error(&error),
        };
        if let Some(problem) = swept {
            error_line(&problem, None);
        }
        let store = match self.opened {
            Some(opened) => super::store::opened(opened),
            None => super::store::open(&self.location).await,
        };
        let store = match store {
            Ok(store) => store,
            Err(exit) => return exit,
        };
        let rerun = match prepare(
            store.as_ref(),
            &self.plan,
            self.retry.as_ref(),
            args.from.as_deref(),
            &self.inputs,
        )
        .await
        {
            Ok(rerun) => rerun,
            Err(exit) => {
                store.close().await;
                return exit;
            }
        };
        // A retry records the run it retries; `--from`, the run its stages come from.
        let retry_of = self
            .retry
            .as_ref()
            .map(|retry| retry.earlier.id.clone())
            .or_else(|| {
                rerun
                    .as_ref()
                    .and_then(|rerun| rerun.earlier.as_ref())
                    .map(|earlier| earlier.id.clone())
            });
        let run_id = new_run_id();
        let show_command = super::show_command::show_command(&run_id, &self.workspace, args);
        let cancel = CancellationToken::new();
        let kill = CancellationToken::new();
        let options = RunOptions {
            concurrency: args.jobs.map(|jobs| jobs as usize),
            fail_fast: args.fail_fast,
            reuse: rerun.and_then(|rerun| rerun.reuse).map(Arc::new),
            ..RunOptions::default()
        };
        let mut runner = Runner::new(run_id, self.plan, executor, Arc::clone(&store))
            .inputs(self.inputs)
            .workspace(self.workspace)
            .options(options)
            .setup(self.setup)
            .cancel_token(cancel.clone())
            .kill_token(kill.clone());
        if let Some(retry_of) = retry_of {
            runner = runner.retry_of(retry_of);
        }
        let format = args.format;
        let mut display = None;
        let printer = if self.colors && format == RunOutput::Text {
            // On a terminal, the display never slows the run; it says so when it skips. The summary follows
            // every event on its own.
            display = Some(tokio::spawn(crate::progress::show(
                runner.subscribe_display(),
            )));
            tokio::spawn(follow(runner.subscribe(1024)))
        } else {
            // In logs and pipes, every line matters more than speed: the printer is a lossless subscriber.
            let reporter = LineReporter::new(self.colors);
            let events = runner.subscribe(1024);
            tokio::spawn(print_events(events, reporter, format, std::io::stdout()))
        };
        // The run is recorded before anything executes: a store that cannot take it stops the run here.
        let handle = match runner.start().await {
            Ok(handle) => handle,
            Err(error) => return runner_error(&error),
        };
        let record = handle.record().clone();
        // Only the binary installs signal handlers: the first Ctrl-C stops gracefully, the second kills.
        let signals = crate::signals::watch(cancel, kill);
        // A cancel asked through the store (`buildit runs cancel`) stops the run as Ctrl-C does; say why.
        let store_cancel = handle.store_cancel();
        let told = tokio::spawn(async move {
            store_cancel.cancelled().await;
            eprintln!(
                "\ncancel requested through the store (`buildit runs cancel`, or a newer run of its concurrency group): stopping running stages"
            );
        });
        let mut executed = match handle.wait().await {
            Ok(executed) => executed,
            Err(error) => return runner_error(&error),
        };
        if let Some(problem) = &executed.report.cleanup {
            error_line(
                problem,
                Some("`buildit gc` removes it once this run is over"),
            );
        }
        let view = printer.await.unwrap_or_else(|_| RunView::new());
        // The progress bar is cleared before the summary is written below it.
        if let Some(display) = display {
            let _ = display.await;
        }
        signals.abort();
        told.abort();
        // The summary is written while the recorder writes the last events; where the run is recorded follows
        // once they are in.
        let show = |text: &str| match format {
            RunOutput::Text => print_text(text),
            RunOutput::Json => eprint!("{text}"),
        };
        show(&summary(&view));
        let status = executed.report.status;
        // The process ends right after this: freeing every stage's plan and definition one by one would only
        // delay the exit (about 0.5 ms for 1,000 stages).
        let recorded = executed.recorded().await;
        std::mem::forget(executed);
        show(&format!(
            "recorded as {}#{} (`{show_command}`)\n",
            record.pipeline, record.number
        ));
        // After the summary is out: closing folds the store's log into its file, which the reader need not wait for.
        store.close().await;
        if let Err(error) = recorded {
            error_line(
                &format!("the run's record in the store is incomplete: {error}"),
                None,
            );
            return Exit::Infrastructure;
        }
        Exit::of_run(status, view.ending.as_ref())
    }
}
