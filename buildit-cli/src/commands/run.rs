//! `buildit run`: execute a pipeline on this machine, streaming its logs, and summarise it.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use buildit_core::Plan;
use buildit_core::config::ExecutorKind;
use buildit_core::events::{EventBus, RunStatus};
use buildit_core::exec::{
    AnyExecutor, ArtifactStore, CacheStore, DockerExecutor, DockerOptions, Executor as _,
    RunIdentity, RunOptions, SweepScope, execute,
};
use buildit_core::store::{
    MAX_BATCH_EVENTS, NewRun, RUN_STALE_AFTER, RunOwner, Store, StoreError, StoreLocation,
    open_store, record_run,
};
use buildit_core::system::{ArtifactStoreConfig, ExecutorConfig, SecretStoreConfig, SystemConfig};
use tokio_util::sync::CancellationToken;

use super::load::load_system_config;
use super::plan::load_plan;
use crate::cli::{RunArgs, RunOutput};
use crate::exit::Exit;
use crate::report::error_line;
use crate::reporter::{LineReporter, json_line, print_text, summary};

pub(crate) fn run(args: &RunArgs) -> Exit {
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
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => return super::runtime_error(&error),
    };
    if let Some(stage) = plan
        .order()
        .find(|s| !s.is_skipped() && s.executor() == ExecutorKind::Kubernetes)
    {
        error_line(
            &format!(
                "stage `{}` needs the `kubernetes` executor, which this version of BuildIt cannot run yet",
                stage.name(),
            ),
            Some("stages run on the host, or in Docker with `image` and the `docker` executor"),
        );
        return Exit::Infrastructure;
    }
    let names: Vec<&str> = plan
        .order()
        .filter(|s| !s.is_skipped())
        .flat_map(|s| {
            plan.definition(s)
                .secrets
                .iter()
                .map(|secret| secret.value.as_str())
        })
        .collect();
    let secrets = match system.load_secrets(names, |name| std::env::var(name).ok()) {
        Ok(secrets) => secrets,
        Err(error) => {
            error_line(&error.to_string(), None);
            return Exit::Infrastructure;
        }
    };
    let docker = plan
        .order()
        .any(|s| !s.is_skipped() && s.executor() == ExecutorKind::Docker)
        .then(|| DockerOptions {
            bind_workspace: args.bind,
            ..docker_options(&system)
        });
    let location = match super::store::locate(&args.store, &system) {
        Ok(location) => location,
        Err(exit) => return exit,
    };
    // Opened early for this same place (the configuration could have changed in between), or opened now.
    let opened = opening.and_then(|(early, opened)| (early == location).then_some(opened));
    create_data_dir(&workspace);
    let run_id = new_run_id();
    let show_command = show_command(&run_id, &workspace, args);
    let caches = CacheStore::new(workspace.join(".buildit/cache"));
    let mut identity = RunIdentity::new(run_id.clone(), 1, workspace);
    identity.secrets = secrets;
    if let SecretStoreConfig::Env { prefix } = &system.secrets
        && !prefix.is_empty()
    {
        identity.scrub_env = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.starts_with(prefix.as_str()))
            .collect();
    }
    let uses_artifacts = plan
        .order()
        .any(|s| !s.is_skipped() && !plan.definition(s).artifacts.is_empty());
    let artifacts = match &system.artifacts {
        ArtifactStoreConfig::Filesystem { path } => Some(ArtifactStore::new(path)),
        ArtifactStoreConfig::S3 { .. } if uses_artifacts => {
            error_line(
                "the `s3` artifact store is not supported by this version of BuildIt yet",
                Some("use `artifacts \"filesystem\"` in the system configuration"),
            );
            return Exit::Infrastructure;
        }
        ArtifactStoreConfig::S3 { .. } => None,
    };
    let options = RunOptions {
        concurrency: args.jobs.map(|jobs| jobs as usize),
        fail_fast: args.fail_fast,
        artifacts,
        caches: Some(caches),
        ..RunOptions::default()
    };
    let colors = !args.plain
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let output = Output {
        format: args.format,
        colors,
    };
    let backends = Backends {
        location,
        opened,
        docker,
        show_command,
    };
    runtime.block_on(run_plan(plan, identity, options, backends, output))
}

/// Where the run is recorded and where its container stages run.
#[derive(Debug)]
struct Backends {
    location: StoreLocation,
    /// The store, when it was opened while the pipeline was read.
    opened: Option<Result<Arc<dyn Store>, StoreError>>,
    docker: Option<DockerOptions>,
    /// `buildit runs show ...` for this run, with the flags that find its store from any directory.
    show_command: String,
}

/// Creates the workspace's `.buildit/` (store, caches, artifacts) with a `.gitignore` of its own, so that nothing
/// in it is ever committed, whether or not the repository ignores it. An existing directory is left as it is.
fn create_data_dir(workspace: &std::path::Path) {
    let dir = workspace.join(".buildit");
    // `create_dir` fails when it exists: only the run that creates it writes the file. Failures surface later,
    // where the store or cache is written, with a better message.
    if std::fs::create_dir(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join(".gitignore"),
            "# Created by BuildIt: its store, caches and artifacts are never committed.\n*\n",
        );
    }
}

/// The `buildit runs show` command for a run, shell-quoted, that finds the same store from any directory.
fn show_command(run_id: &str, workspace: &std::path::Path, args: &RunArgs) -> String {
    let mut words = vec![
        "buildit".to_owned(),
        "runs".to_owned(),
        "show".to_owned(),
        run_id.to_owned(),
        "--workspace".to_owned(),
        std::path::absolute(workspace)
            .unwrap_or_else(|_| workspace.to_path_buf())
            .display()
            .to_string(),
    ];
    if let Some(system) = &args.store.system {
        let system = std::path::absolute(system).unwrap_or_else(|_| system.clone());
        words.extend(["--system".to_owned(), system.display().to_string()]);
    }
    if let Some(url) = &args.store.database_url {
        // Taken from the environment, it is there for the next command too; a password is never printed.
        let from_env = std::env::var("BUILDIT_DATABASE_URL").is_ok_and(|env| env == *url);
        let has_password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(user, _)| user.contains(':'))
            || url.to_ascii_lowercase().contains("password");
        if !from_env && !has_password {
            words.extend(["--database-url".to_owned(), url.clone()]);
        }
    }
    words
        .iter()
        .map(|word| shell_word(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as one POSIX shell word: as it is when it holds only safe characters, else in single quotes.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,#".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// How to reach Docker, from the system configuration's `executor "docker"`.
pub(crate) fn docker_options(system: &SystemConfig) -> DockerOptions {
    match system.executor(ExecutorKind::Docker) {
        Some(ExecutorConfig::Docker {
            host,
            pull,
            network,
        }) => DockerOptions {
            host: host.clone(),
            pull: *pull,
            network: network.clone(),
            ..DockerOptions::default()
        },
        _ => DockerOptions::default(),
    }
}

/// Connects to Docker and removes what killed runs left behind; an unreachable engine is an infrastructure
/// error before anything runs.
pub(crate) async fn connect_docker(options: DockerOptions) -> Result<DockerExecutor, Exit> {
    let docker = DockerExecutor::connect(options).await.map_err(|error| {
        error_line(
            &error.to_string(),
            Some("start Docker, or set `DOCKER_HOST` or `executor \"docker\" host=...` in the system configuration"),
        );
        Exit::Infrastructure
    })?;
    if let Err(error) = docker.sweep(&SweepScope::leftovers()).await {
        error_line(
            &format!("cannot remove leftovers of earlier runs: {error}"),
            None,
        );
    }
    Ok(docker)
}

/// How the run is shown.
#[derive(Debug, Clone, Copy)]
struct Output {
    format: RunOutput,
    colors: bool,
}

async fn run_plan(
    plan: Plan,
    mut identity: RunIdentity,
    options: RunOptions,
    Backends {
        location,
        opened,
        docker,
        show_command,
    }: Backends,
    Output { format, colors }: Output,
) -> Exit {
    let executor = match docker {
        Some(options) => match connect_docker(options).await {
            Ok(docker) => AnyExecutor::with_docker(docker),
            Err(exit) => return exit,
        },
        None => AnyExecutor::local(),
    };
    // The run is recorded before anything executes: a store that cannot take it stops the run here.
    let store = match opened {
        Some(opened) => super::store::opened(opened),
        None => super::store::open(&location).await,
    };
    let store = match store {
        Ok(store) => store,
        Err(exit) => return exit,
    };
    let here = RunOwner::this_process();
    // Runs left `running` by a runner that died (kill -9, a crash) are marked interrupted.
    if let Err(error) = store.mark_interrupted(&here, RUN_STALE_AFTER).await {
        error_line(&error.to_string(), None);
        return Exit::Infrastructure;
    }
    let context = plan.context();
    let record = match store
        .create_run(&NewRun {
            id: identity.run_id.clone(),
            pipeline: plan.pipeline().name.value.clone(),
            owner: here,
            sha: context.sha.clone(),
            branch: context.branch.clone(),
            event: context.event.map(|event| event.as_str().to_owned()),
        })
        .await
    {
        Ok(record) => record,
        Err(error) => {
            error_line(&error.to_string(), None);
            return Exit::Infrastructure;
        }
    };
    identity.run_number = record.number;
    let interactive = colors && format == RunOutput::Text;
    let cancel = CancellationToken::new();
    let kill = options.kill.clone();
    // Only the binary installs signal handlers: the first Ctrl-C stops gracefully, the second kills.
    let signals = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            // SIGTERM and SIGHUP (a CI job cancelled, a terminal closed) stop the run like Ctrl-C: a runner
            // that dies on them would leave its stages running.
            let mut stops = match StopSignals::new() {
                Ok(stops) => stops,
                Err(error) => {
                    eprintln!("warning: cannot watch for SIGTERM and SIGHUP: {error}");
                    return;
                }
            };
            stops.next().await;
            eprintln!("\ninterrupted: stopping running stages (Ctrl-C again to kill them now)");
            cancel.cancel();
            stops.next().await;
            eprintln!("killing running stages");
            kill.cancel();
        })
    };
    let mut bus = EventBus::new(identity.run_id.clone());
    let recorder = tokio::spawn(record_run(
        store.clone(),
        identity.run_id.clone(),
        bus.subscribe_lossless(MAX_BATCH_EVENTS),
    ));
    let printer = if interactive {
        // On a terminal, the display never slows the run; it says so when it skips.
        tokio::spawn(crate::progress::show(plan.clone(), bus.subscribe_display()))
    } else {
        // In logs and pipes, every line matters more than speed: the printer is a lossless subscriber.
        let events = bus.subscribe_lossless(1024);
        let printer_plan = plan.clone();
        tokio::spawn(async move {
            let reporter = LineReporter::new(&printer_plan, colors);
            print_events(events, reporter, format, std::io::stdout()).await;
        })
    };
    let report = execute(
        &plan,
        Arc::new(executor),
        &identity,
        &options,
        &bus,
        &cancel,
    )
    .await;
    drop(bus);
    if let Some(problem) = &report.cleanup {
        error_line(
            problem,
            Some("`buildit gc` removes it once this run is over"),
        );
    }
    let _ = printer.await;
    signals.abort();
    // The summary is written while the recorder writes the last events; where the run is recorded follows
    // once they are in.
    let show = |text: &str| match format {
        RunOutput::Text => print_text(text),
        RunOutput::Json => eprint!("{text}"),
    };
    show(&summary(&plan, &report));
    let recorded = recorder.await;
    show(&format!(
        "recorded as {}#{} (`{show_command}`)\n",
        record.pipeline, record.number
    ));
    // After the summary is out: closing folds the store's log into its file, which the reader need not wait for.
    store.close().await;
    let record_error = match recorded {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(error) => Some(error.to_string()),
    };
    if let Some(error) = record_error {
        error_line(
            &format!("the run's record in the store is incomplete: {error}"),
            None,
        );
        return Exit::Infrastructure;
    }
    // The process ends right after this: freeing every stage's plan and definition one by one would only
    // delay the exit (about 0.5 ms for 1,000 stages).
    std::mem::forget(plan);
    match report.status {
        RunStatus::Succeeded => Exit::Success,
        RunStatus::Failed => Exit::RunFailed,
        RunStatus::Cancelled => Exit::Interrupted,
    }
}

/// A run id unique on this machine: time and process, in hex.
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The signals that stop a run: SIGINT (Ctrl-C), SIGTERM and SIGHUP.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next one.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Longest a printed line waits in the output buffer. Flushing whenever the printer caught up cost a write per
/// event (three per stage on a DAG of short stages); a reader cannot tell 20 ms apart.
const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// Writes every event as a line to `out`, buffered: the buffer is flushed [`FLUSH_AFTER`] after its oldest line
/// was written, and at once when the run ends.
async fn print_events(
    mut events: tokio::sync::mpsc::Receiver<buildit_core::events::EventBatch>,
    mut reporter: LineReporter,
    format: RunOutput,
    out: impl std::io::Write,
) {
    let mut out = std::io::BufWriter::new(out);
    // One timer, armed when the buffer gets its first line since the last flush (not one per event).
    let flush_due = tokio::time::sleep(FLUSH_AFTER);
    tokio::pin!(flush_due);
    let mut unflushed = false;
    loop {
        tokio::select! {
            received = events.recv() => {
                let Some(batch) = received else { break };
                for event in batch.iter() {
                    // A closed pipe (`buildit run | head`) is the reader's choice, not a failure of the run.
                    let _ = match format {
                        RunOutput::Json => writeln!(out, "{}", json_line(event)),
                        RunOutput::Text => reporter.write(event, &mut out),
                    };
                }
                if !unflushed {
                    unflushed = true;
                    flush_due.as_mut().reset(tokio::time::Instant::now() + FLUSH_AFTER);
                }
            }
            () = &mut flush_due, if unflushed => {
                let _ = out.flush();
                unflushed = false;
            }
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use std::sync::Mutex;

    use buildit_core::events::RunEventKind;

    use super::*;

    /// Output that the test reads while the printer still owns its writer.
    #[derive(Clone, Default)]
    struct SharedOutput(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedOutput {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("output lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedOutput {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("output lock")).into_owned()
        }
    }

    fn one_stage_plan() -> Plan {
        let pipeline = buildit_core::parse_pipeline(
            "pipeline \"p\"\nstage \"build\" {\n    run \"true\"\n}\n",
            "buildit.kdl",
        )
        .expect("valid pipeline");
        Plan::build(&pipeline, &buildit_core::RunContext::new()).expect("valid plan")
    }

    #[tokio::test]
    async fn printed_lines_are_flushed_while_the_run_goes_on_and_all_at_its_end() {
        let plan = one_stage_plan();
        let output = SharedOutput::default();
        let mut bus = EventBus::new("run-1");
        let events = bus.subscribe_lossless(16);
        let printer = tokio::spawn(print_events(
            events,
            LineReporter::new(&plan, false),
            RunOutput::Text,
            output.clone(),
        ));
        bus.emit(RunEventKind::StageStarted {
            stage: "build".to_owned(),
            attempt: 1,
        })
        .await;
        // The run goes on (the bus is open), and no other event comes: the line still shows up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !output.text().contains("build") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the line was never flushed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bus.emit(RunEventKind::LogLine {
            stage: "build".to_owned(),
            attempt: 1,
            stream: buildit_core::events::LogStreamKind::Stdout,
            text: "last words".to_owned(),
        })
        .await;
        drop(bus);
        printer.await.expect("printer ends with the run");
        let text = output.text();
        assert!(text.contains("started"), "{text}");
        assert!(text.contains("last words"), "{text}");
    }
}
