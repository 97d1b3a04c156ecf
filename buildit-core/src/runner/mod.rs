//! One run, wired the same way for every frontend: the pipeline read and checked against the system
//! configuration, the executor connected, the run recorded, executed and streamed.

mod builder;
mod cancel_requests;
mod error;
mod groups;
mod handle;
mod load;
mod rerun;
mod setup;

pub use builder::{Runner, new_run_id};
pub use cancel_requests::CANCEL_POLL;
pub use error::RunnerError;
pub use groups::GROUP_POLL;
pub use handle::{Executed, RunHandle, RunJoiner};
pub use load::{
    LoadError, Loaded, check_against_system, load_plan, plan_for, read_pipeline, read_system,
};
pub use rerun::{Rerun, RerunError, rerun_failed, rerun_from};
#[cfg(feature = "docker")]
pub use setup::docker_options;
#[cfg(feature = "kubernetes")]
pub use setup::kubernetes_options;
pub use setup::{RunSetup, check_executors, connect_executor, create_data_dir};
