//! The Docker executor: stages of the `docker` kind run in containers on a Docker Engine, a file per job.

mod engine;
mod executor;
mod files;
mod images;
mod labels;
mod services;
mod sweep;
mod workspace;

pub use engine::{DockerExecutor, DockerOptions};
pub use executor::DockerHandle;
pub use labels::{LEASE_LABEL, OWNER_LABEL, RUN_LABEL, WORKER_LABEL};
