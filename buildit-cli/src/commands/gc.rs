//! `buildit gc`: remove what killed runs left in Docker.

use std::path::PathBuf;

use super::load::load_system_config;
use super::run::docker_options;
use crate::cli::GcArgs;
use crate::exit::Exit;
use crate::report::error_line;

pub(crate) fn run(args: &GcArgs) -> Exit {
    let workspace = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let system = match load_system_config(args.system.as_deref(), &workspace, None) {
        Ok(system) => system,
        Err(exit) => return exit,
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let docker =
            match buildit_core::exec::DockerExecutor::connect(docker_options(&system)).await {
                Ok(docker) => docker,
                Err(error) => {
                    error_line(&error.to_string(), None);
                    return Exit::Infrastructure;
                }
            };
        match docker.sweep(None).await {
            Ok(report) => {
                let plural = |n: usize| if n == 1 { "" } else { "s" };
                println!(
                    "removed {} container{}, {} network{} and {} volume{} left by runs whose `buildit` is gone",
                    report.containers.len(),
                    plural(report.containers.len()),
                    report.networks.len(),
                    plural(report.networks.len()),
                    report.volumes.len(),
                    plural(report.volumes.len())
                );
                Exit::Success
            }
            Err(error) => {
                error_line(&error.to_string(), None);
                Exit::Infrastructure
            }
        }
    })
}
