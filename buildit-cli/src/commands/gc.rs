//! `buildit gc`: prune old caches and artifacts, and remove what killed runs left in Docker and on the
//! Kubernetes cluster the system configuration names.

use std::path::PathBuf;

use buildit_core::exec::{Executor as _, SweepScope};
use buildit_core::system::ArtifactStoreConfig;

use super::load::load_system_config;
use crate::cli::GcArgs;
use crate::exit::Exit;
use crate::report::error_line;
use buildit_core::config::ExecutorKind;
use buildit_core::exec::KubernetesExecutor;
use buildit_core::runner::{docker_options, kubernetes_options};

pub(crate) fn run(args: &GcArgs) -> Exit {
    let workspace = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let system = match load_system_config(args.system.as_deref(), &workspace, None) {
        Ok(system) => system,
        Err(exit) => return exit,
    };
    let max_age = match buildit_core::config::parse_duration(&args.max_age) {
        Ok(age) => age,
        Err(error) => {
            error_line(
                &format!("invalid `--max-age`: {error}"),
                Some("write it like `30d` or `12h`"),
            );
            return Exit::Usage;
        }
    };
    let max_size = match args
        .max_size
        .as_deref()
        .map(super::prune::parse_size)
        .transpose()
    {
        Ok(size) => size,
        Err(error) => {
            error_line(&error, None);
            return Exit::Usage;
        }
    };
    type Owned = fn(&str, &std::fs::Metadata) -> bool;
    let mut dirs: Vec<(&str, std::path::PathBuf, Owned)> = vec![(
        "cache",
        workspace.join(".buildit/cache"),
        super::prune::is_cache_archive,
    )];
    if let ArtifactStoreConfig::Filesystem { path } = &system.artifacts {
        dirs.push(("artifact", path.clone(), super::prune::is_run_directory));
    }
    for (what, dir, owned) in dirs {
        match super::prune::prune(&dir, owned, Some(max_age), max_size) {
            Ok(pruned) => println!(
                "removed {} {what} {} ({} bytes) from `{}`",
                pruned.entries,
                if pruned.entries == 1 {
                    "entry"
                } else {
                    "entries"
                },
                pruned.bytes,
                dir.display()
            ),
            Err(error) => {
                error_line(&format!("cannot prune `{}`: {error}", dir.display()), None);
                return Exit::Infrastructure;
            }
        }
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let mut exit = Exit::Success;
        let swept = match buildit_core::exec::DockerExecutor::connect(docker_options(&system)).await
        {
            Ok(docker) => docker.sweep(&SweepScope::leftovers()).await,
            Err(error) => Err(error),
        };
        match swept {
            Ok(report) => println!(
                "removed {} container{}, {} network{} and {} volume{} left by runs whose `buildit` is gone",
                report.containers.len(),
                plural(report.containers.len()),
                report.networks.len(),
                plural(report.networks.len()),
                report.volumes.len(),
                plural(report.volumes.len())
            ),
            Err(error) => {
                error_line(&error.to_string(), None);
                exit = Exit::Infrastructure;
            }
        }
        // The cluster too, when the system configuration names one.
        if system.executor(ExecutorKind::Kubernetes).is_none() {
            return exit;
        }
        let swept = match KubernetesExecutor::connect(kubernetes_options(&system)).await {
            Ok(kubernetes) => kubernetes.sweep(&SweepScope::leftovers()).await,
            Err(error) => Err(error),
        };
        match swept {
            Ok(report) => {
                println!(
                    "removed {} Kubernetes object{} (Jobs, pods, Secrets) left by runs whose `buildit` is gone",
                    report.containers.len(),
                    plural(report.containers.len()),
                );
                exit
            }
            Err(error) => {
                error_line(&error.to_string(), None);
                Exit::Infrastructure
            }
        }
    })
}
