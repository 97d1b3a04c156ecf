//! How one attempt ended, as the stage task hands it to the events.

use crate::events::{FailureKind, StageOutcome};

/// The end of one attempt.
pub(super) struct Attempt {
    pub(super) outcome: StageOutcome,
    pub(super) exit_code: Option<i32>,
    pub(super) reason: Option<String>,
    pub(super) failure: Option<FailureKind>,
}

impl Attempt {
    /// An attempt that failed before or around its commands, for `failure`'s reason.
    pub(super) fn failed(failure: FailureKind, reason: String) -> Self {
        Self {
            outcome: StageOutcome::Failed,
            exit_code: None,
            reason: Some(reason),
            failure: Some(failure),
        }
    }
}
