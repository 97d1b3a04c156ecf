//! Concurrency groups as a run holds them: the group's name rendered for the run, and bounded in length.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::MAX_GROUP_BYTES;

/// A concurrency group of a run or of a stage instance, with its name rendered for the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedGroup {
    /// The group's name: at most [`MAX_GROUP_BYTES`] bytes.
    pub name: String,
    /// Whether a newer holder cancels the one in progress instead of waiting for it.
    pub cancel_in_progress: bool,
}

impl PlannedGroup {
    /// The group named `rendered` (shortened when longer than [`MAX_GROUP_BYTES`]).
    pub(crate) fn new(rendered: String, cancel_in_progress: bool) -> Self {
        Self {
            name: bounded(rendered),
            cancel_in_progress,
        }
    }
}

/// `name`, or, when it is longer than [`MAX_GROUP_BYTES`] (a long branch name substituted), its start followed
/// by `~` and a hash of the whole: two long names that share their start stay two groups.
fn bounded(name: String) -> String {
    if name.len() <= MAX_GROUP_BYTES {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut keep = MAX_GROUP_BYTES - hash.len() - 1;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}~{hash}", &name[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_shortened_and_stay_distinct() {
        let short = bounded("deploy-main".to_owned());
        assert_eq!(short, "deploy-main");
        let first = bounded(format!("deploy-{}a", "é".repeat(200)));
        let second = bounded(format!("deploy-{}b", "é".repeat(200)));
        assert!(first.len() <= MAX_GROUP_BYTES, "{}", first.len());
        assert!(second.len() <= MAX_GROUP_BYTES);
        assert_ne!(first, second);
        assert!(first.starts_with("deploy-é"));
    }
}
