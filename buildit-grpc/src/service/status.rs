//! The statuses handlers answer with: the store's errors, and a pipeline refused the way `buildit validate`
//! refuses it.

use buildit_core::runner::LoadError;
use buildit_core::store::StoreError;
use buildit_core::system::SystemConfig;
use buildit_core::{ConfigError, Plan};
use tonic::Status;

use crate::convert;
use crate::jobs::{Refusal, RunJob};

pub(super) fn store_status(error: &StoreError) -> Status {
    match error {
        StoreError::NoSuchRun(run) => Status::not_found(format!("no run `{run}`")),
        other => Status::unavailable(format!("the store: {other}")),
    }
}

fn invalid(error: &ConfigError) -> Status {
    convert::invalid_pipeline(&error.to_string(), &error.records())
}

/// The job's plan, or what refuses it: INVALID_ARGUMENT with every diagnostic in the details for a pipeline
/// `buildit validate` would refuse, with a message alone for a context that cannot be planned. A trigger and a
/// registration refuse the same pipelines.
pub(super) fn planned(job: &RunJob, system: &SystemConfig) -> Result<Plan, Status> {
    job.plan(system).map_err(|refusal| match refusal {
        Refusal::Load(LoadError::Config(error)) => invalid(&error),
        other => Status::invalid_argument(other.to_string()),
    })
}
