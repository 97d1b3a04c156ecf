//! The one exit-code table of the whole CLI (documented in the README).

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
