//! Sweeping what executors leave behind: which leftovers a sweep removes, and what it removed.

use crate::owner::Lease;

/// Which leftovers a sweep removes besides those whose owner is gone (see
/// [`LeftoverOwner::is_gone`](crate::owner::LeftoverOwner::is_gone)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepScope {
    /// Everything of this run, whoever created it: the run has ended.
    pub run: Option<String>,
    /// Job leases known to be over (a fleet's coordinator knows them): what was created under them goes, on
    /// any host.
    pub ended_leases: Vec<Lease>,
}

impl SweepScope {
    /// Only what owners that are gone left behind.
    pub fn leftovers() -> Self {
        Self::default()
    }

    /// That, and everything of `run`.
    pub fn run(run: impl Into<String>) -> Self {
        Self {
            run: Some(run.into()),
            ..Self::default()
        }
    }

    /// The same scope, with `leases` counted as over.
    #[must_use]
    pub fn with_ended_leases(mut self, leases: impl IntoIterator<Item = Lease>) -> Self {
        self.ended_leases.extend(leases);
        self
    }
}

/// What a sweep removed, by kind (a Kubernetes executor's pods count as containers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Containers removed.
    pub containers: Vec<String>,
    /// Networks removed.
    pub networks: Vec<String>,
    /// Workspace volumes removed.
    pub volumes: Vec<String>,
}

impl SweepReport {
    /// Adds what another sweep removed.
    pub fn absorb(&mut self, other: SweepReport) {
        self.containers.extend(other.containers);
        self.networks.extend(other.networks);
        self.volumes.extend(other.volumes);
    }

    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty() && self.volumes.is_empty()
    }
}
