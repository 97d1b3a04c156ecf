//! What the store says of concurrency groups: a claim of one, and the answer to it.

/// A run (or one stage instance of it) that wants a concurrency group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupClaim {
    /// The group's name, rendered for the run.
    pub group: String,
    /// The run that wants it.
    pub run_id: String,
    /// The instance that wants it; `None` for the run itself.
    pub stage: Option<String>,
    /// Whether the claim queues as the group's one pending run: the newest such claim waits next, and an older
    /// one still waiting is named in [`GroupAcquire::Held::displaced`] (its run is to be cancelled). Runs claim
    /// their own group this way; stages queue without it.
    pub pending: bool,
}

/// The answer to a [`GroupClaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAcquire {
    /// The claimant holds the group now (it was free, its holder's run is no longer running, it was handed over,
    /// or the claimant held it already).
    Acquired,
    /// Another holds it.
    Held {
        /// The holder's run.
        holder_run: String,
        /// That run's number, when the store has the run.
        holder_number: Option<i64>,
        /// The holder's instance, when a stage holds it.
        holder_stage: Option<String>,
        /// An older run that was the group's pending run, replaced by this claim: it should be cancelled.
        displaced: Option<String>,
        /// Whether the holder's run was created before the claimant's (by creation time, then id, as the
        /// store orders a group's claimants); true when either run cannot be read. Only an older holder is
        /// cancelled in progress.
        holder_is_older: bool,
    },
    /// A newer run waits as the group's pending run: this one is to be cancelled (the newer one asks for it).
    Superseded {
        /// The newer run.
        by: String,
    },
}
