//! The labels that mark what BuildIt creates on the engine: the run it belongs to and its owner, so that a sweep
//! finds it and can tell whether its owner is gone.

use std::collections::HashMap;

use crate::owner::LeftoverOwner;

/// Label every BuildIt container, network and volume carries: the run it belongs to.
pub const RUN_LABEL: &str = "buildit.run";
/// Label naming the process that created it (`host/pid`): a sweep removes what dead owners left.
pub const OWNER_LABEL: &str = crate::owner::OWNER_MARK;
/// Label naming the fleet worker that created it, when a worker did.
pub const WORKER_LABEL: &str = crate::owner::WORKER_MARK;
/// Label naming the job lease it was created under (`job/claim`), when there was one.
pub const LEASE_LABEL: &str = crate::owner::LEASE_MARK;

/// The labels that say `owner` created something.
pub(super) fn owner_labels(owner: &LeftoverOwner) -> Vec<(String, String)> {
    owner.marks()
}

/// The owner `labels` name, when they name one that can be read.
pub(super) fn owner_from_labels(labels: &HashMap<String, String>) -> Option<LeftoverOwner> {
    LeftoverOwner::from_marks(|mark| labels.get(mark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::{Lease, RunOwner};

    #[test]
    fn owners_are_read_back_from_their_labels() {
        let local = LeftoverOwner::this_process();
        let fleet = LeftoverOwner::this_process()
            .with_worker("worker-3")
            .with_lease(Lease {
                job: 12,
                attempt: 2,
            });
        for owner in [local, fleet] {
            let labels: HashMap<String, String> = owner_labels(&owner).into_iter().collect();
            assert_eq!(owner_from_labels(&labels), Some(owner));
        }
        // Written by an older BuildIt: only the process.
        let old = HashMap::from([(
            OWNER_LABEL.to_owned(),
            "ci-1 pid:[4026531836]/42".to_owned(),
        )]);
        assert_eq!(
            owner_from_labels(&old).map(|owner| (owner.process, owner.worker, owner.lease)),
            Some((
                RunOwner {
                    host: "ci-1 pid:[4026531836]".to_owned(),
                    pid: 42
                },
                None,
                None
            ))
        );
        let unreadable = HashMap::from([(OWNER_LABEL.to_owned(), "no-pid".to_owned())]);
        assert_eq!(owner_from_labels(&unreadable), None);
        assert_eq!(owner_from_labels(&HashMap::new()), None);
    }
}
