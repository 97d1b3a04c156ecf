//! `buildit daemon`: serve the gRPC API (and, when asked, one-time source links) until SIGTERM or Ctrl-C (a second
//! one exits at once).

use std::path::PathBuf;

use buildit_core::store::{StoreLocation, open_store};
use buildit_grpc::{Daemon, DaemonConfig, DaemonError, Serving, SourceLinksConfig};
use tokio_util::sync::CancellationToken;

use super::daemon_runtimes::Runtimes;
use super::load::load_system_config;
use crate::cli::{DaemonArgs, LogFormat};
use crate::exit::Exit;
use crate::report::error_line;

pub(crate) fn run(args: &DaemonArgs) -> Exit {
    let drain = match buildit_core::config::parse_duration(&args.drain) {
        Ok(drain) => drain,
        Err(problem) => {
            error_line(&format!("--drain: {problem}"), Some("write `30s`, `5m`"));
            return Exit::Usage;
        }
    };
    let source_links = args.source_listen.as_ref().map(|listen| SourceLinksConfig {
        url: args.source_url.clone(),
        ..SourceLinksConfig::new(listen.clone())
    });
    // Refused before anything is created or bound; a host name bound to every address is refused once bound.
    if let Some(Err(error)) = source_links.as_ref().map(SourceLinksConfig::check) {
        return daemon_error(&error);
    }
    if let Err(error) = std::fs::create_dir_all(&args.data_dir) {
        error_line(
            &format!("cannot create `{}`: {error}", args.data_dir.display()),
            None,
        );
        return Exit::Infrastructure;
    }
    let data_dir = args
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| args.data_dir.clone());
    let workspace = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let system = match load_system_config(args.store.system.as_deref(), &workspace, None) {
        Ok(system) => system,
        Err(exit) => return exit,
    };
    // Without a configuration that names a store, the daemon's own SQLite store in its data directory.
    let location = match (&args.store.database_url, &system.file) {
        (None, None) => StoreLocation::Sqlite(data_dir.join("buildit.db")),
        _ => match super::store::locate(&args.store, &system) {
            Ok(location) => location,
            Err(exit) => return exit,
        },
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|error| {
                    error_line(&format!("cannot read `{}`: {error}", path.display()), None);
                    Exit::Usage
                })
            };
            match (read(cert), read(key)) {
                (Ok(cert_pem), Ok(key_pem)) => Some(buildit_grpc::TlsFiles { cert_pem, key_pem }),
                (Err(exit), _) | (_, Err(exit)) => return exit,
            }
        }
        _ => None,
    };
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Plain => logs.with_ansi(false).try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
    let runtimes = match Runtimes::new(args.serve_niceness) {
        Ok(runtimes) => runtimes,
        Err(error) => return super::runtime_error(&error),
    };
    let serving_runtime = runtimes
        .serving
        .as_ref()
        .map(|serving| serving.handle().clone());
    // The runs' runtime runs the daemon (and its stop sequence); the server goes to the serving runtime.
    let exit = runtimes.runs.block_on(async {
        let store = match open_store(&location).await {
            Ok(store) => store,
            Err(error) => {
                error_line(&error.to_string(), None);
                return Exit::Infrastructure;
            }
        };
        // The serving side reads through a store opened on its own runtime: its connections (and SQLite's
        // connection threads) are of the serving priority, and never the runs'.
        let serving = match serving_runtime {
            Some(runtime) => {
                let opened = runtime.spawn({
                    let location = location.clone();
                    async move { open_store(&location).await }
                });
                match opened.await {
                    Ok(Ok(store)) => Some(Serving { runtime, store }),
                    Ok(Err(error)) => {
                        error_line(&error.to_string(), None);
                        return Exit::Infrastructure;
                    }
                    Err(error) => {
                        error_line(&format!("cannot open the store: {error}"), None);
                        return Exit::Infrastructure;
                    }
                }
            }
            None => None,
        };
        let daemon = match Daemon::bind(DaemonConfig {
            listen: args.listen.clone(),
            data_dir,
            workers: args.workers.max(1) as usize,
            drain,
            store,
            system,
            tls,
            restart_interrupted: !args.no_restart,
            serving,
            source_links,
        })
        .await
        {
            Ok(daemon) => daemon,
            Err(error) => return daemon_error(&error),
        };
        // Before the daemon says it listens: a stop sent as soon as it does is handled, never the default kill.
        let stops = crate::signals::StopSignals::new().ok();
        if let Some(address) = daemon.local_addr() {
            eprintln!("buildit daemon listening on {address}");
        }
        if let (Some(address), Some(links)) = (daemon.source_addr(), daemon.source_links()) {
            eprintln!(
                "buildit daemon serving sources on {address} (links: {}/sources/...)",
                links.base_url()
            );
        }
        let stop = CancellationToken::new();
        let signals = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let Some(mut stops) = stops else {
                    return;
                };
                stops.next().await;
                eprintln!(
                    "stopping: no new runs; running runs get the drain window (again to exit now)"
                );
                stop.cancel();
                stops.next().await;
                eprintln!("exiting now");
                std::process::exit(i32::from(Exit::Interrupted.code()));
            })
        };
        let served = daemon.serve(stop).await;
        signals.abort();
        match served {
            Ok(()) => Exit::Success,
            Err(error) => {
                error_line(&error.to_string(), None);
                Exit::Infrastructure
            }
        }
    });
    runtimes.shut_down();
    exit
}

/// Prints why the daemon cannot start; the exit code it means: a usage error for what the flags asked, else an
/// infrastructure error.
fn daemon_error(error: &DaemonError) -> Exit {
    match error {
        DaemonError::SourceUrlNeeded { listen } => {
            error_line(
                &format!(
                    "`--source-listen {listen}` listens on every address: give `--source-url` with the address pods reach it at"
                ),
                Some(
                    "`--source-url http://buildit-daemon.buildit.svc:7778` (the daemon's Service), or listen on one address",
                ),
            );
            Exit::Usage
        }
        error => {
            error_line(&error.to_string(), None);
            Exit::Infrastructure
        }
    }
}
