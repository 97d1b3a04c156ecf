//! The one exit-code table of the whole CLI (documented in the README).

use buildit_core::events::{RunEnding, RunOutcome};

/// What a `buildit` process tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything worked.
    Success,
    /// A run failed (a stage failed that was not allowed to).
    RunFailed,
    /// The command line was wrong.
    Usage,
    /// A configuration file is invalid or missing.
    InvalidConfig,
    /// Docker, the store or the network failed.
    Infrastructure,
    /// Interrupted by Ctrl-C.
    Interrupted,
}

impl Exit {
    /// How a run that was executed ended, for its caller: a run whose failed stages all failed because the
    /// infrastructure did (an image that cannot be pulled, a lost container, an executor error) exits as an
    /// infrastructure error.
    pub(crate) fn of_run(outcome: RunOutcome, ending: Option<&RunEnding>) -> Self {
        match outcome {
            RunOutcome::Succeeded => Self::Success,
            RunOutcome::Failed if ending.is_some_and(RunEnding::failed_by_infrastructure_only) => {
                Self::Infrastructure
            }
            RunOutcome::Failed => Self::RunFailed,
            RunOutcome::Cancelled => Self::Interrupted,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::RunFailed => 1,
            Self::Usage => 2,
            Self::InvalidConfig => 3,
            Self::Infrastructure => 4,
            Self::Interrupted => 130,
        }
    }
}
