//! What a watch sees: one change to one object, with the resource version it made, and the bounded history of
//! recent changes that a watch from an older version replays.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use super::ObjectKey;

/// How many changes are kept for replay; a watch from before them gets `410 Gone`.
pub(crate) const HISTORY_LENGTH: usize = 10_000;

/// The kind of a change, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl ChangeType {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct Change {
    /// Which object.
    pub key: ObjectKey,
    /// What happened to it.
    pub change_type: ChangeType,
    /// The object after the change (for a deletion: as it was, with the deletion's resource version).
    pub object: Value,
    /// The object before the change, for watches with selectors (an object that stops matching is deleted for
    /// them).
    pub previous: Option<Value>,
    /// The resource version of the change.
    pub revision: u64,
}

/// The recent changes, oldest first, and from which version on they are complete.
#[derive(Debug, Default)]
pub(crate) struct History {
    changes: VecDeque<Arc<Change>>,
    /// Every change with a version above this one is in `changes`.
    complete_after: u64,
}

impl History {
    pub(crate) fn push(&mut self, change: Arc<Change>) {
        if self.changes.len() == HISTORY_LENGTH
            && let Some(dropped) = self.changes.pop_front()
        {
            self.complete_after = dropped.revision;
        }
        self.changes.push_back(change);
    }

    /// Forgets everything up to `revision`: watches from before it get `410 Gone`.
    pub(crate) fn forget_until(&mut self, revision: u64) {
        self.changes.retain(|change| change.revision > revision);
        self.complete_after = self.complete_after.max(revision);
    }

    /// The changes after `revision`, or `None` if some of them were forgotten.
    pub(crate) fn since(&self, revision: u64) -> Option<Vec<Arc<Change>>> {
        if revision < self.complete_after {
            return None;
        }
        Some(
            self.changes
                .iter()
                .filter(|change| change.revision > revision)
                .cloned()
                .collect(),
        )
    }
}
