//! Names and labels of what the Kubernetes executor creates: object names and label values as the API accepts
//! them, the full values in annotations, and the owner read back for sweeps.

use std::collections::BTreeMap;

use sha2::Digest as _;

use crate::owner::LeftoverOwner;

/// Label every object BuildIt creates carries: the run it belongs to.
pub const RUN_LABEL: &str = "buildit.run";
/// Label naming the attempt's Job on it and on everything made for it (its pod, its secret).
pub const JOB_LABEL: &str = "buildit.job";
/// Label of a run's workspace claim and of the pod that holds it (`workspace`).
pub const ROLE_LABEL: &str = "buildit.role";
/// The longest label value and object name segment the API takes.
const MAX_LABEL: usize = 63;
/// The longest Job name whose pods' names (`JOB-xxxxx`) still fit in a label.
const MAX_JOB_NAME: usize = 52;

/// `value` as a label value (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends): unchanged when it is
/// one already, else its allowed characters and a hash of the whole, so that two values never share one.
pub fn label_value(value: &str) -> String {
    let valid = value.len() <= MAX_LABEL
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    if valid {
        return value.to_owned();
    }
    let hash = short_hash(value);
    let kept: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL - hash.len() - 1)
        .collect();
    let kept = kept.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if kept.is_empty() {
        hash
    } else {
        format!("{kept}-{hash}")
    }
}

/// The name of an attempt's Job (and its Secret): DNS-1123, short enough for its pods' names, and unique
/// (the run, the stage instance, the attempt and a random part).
pub fn job_name(run_id: &str, instance: &str, attempt: u32) -> String {
    let mut random = [0_u8; 4];
    let _ = getrandom::fill(&mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let hash = short_hash(&format!("{run_id}/{instance}/{attempt}/{random}"));
    let stage: String = instance
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let room = MAX_JOB_NAME - "buildit--".len() - hash.len() - 4;
    let stage: String = stage.chars().take(room).collect();
    let stage = stage.trim_matches('-');
    if stage.is_empty() {
        format!("buildit-{hash}-{attempt}")
    } else {
        format!("buildit-{stage}-{hash}-{}", attempt % 1000)
    }
}

/// The name of a run's workspace claim and of the pod that holds it: unique (the run and a random part).
pub fn workspace_name(run_id: &str) -> String {
    let mut random = [0_u8; 4];
    let _ = getrandom::fill(&mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("buildit-ws-{}", short_hash(&format!("{run_id}/{random}")))
}

/// A short hash of `value`, that keeps apart names made alike.
pub(super) fn short_hash(value: &str) -> String {
    let digest = sha2::Sha256::digest(value.as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The labels of an attempt's objects: the stage spec's (`buildit.run`, `buildit.stage`, ...) as label values,
/// and the Job's name.
pub fn labels(spec_labels: &BTreeMap<String, String>, job: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = spec_labels
        .iter()
        .map(|(key, value)| (key.clone(), label_value(value)))
        .collect();
    labels.insert(JOB_LABEL.to_owned(), job.to_owned());
    labels
}

/// The annotations of an attempt's objects: the spec's labels as written, and who created them.
pub fn annotations(
    spec_labels: &BTreeMap<String, String>,
    owner: &LeftoverOwner,
) -> BTreeMap<String, String> {
    let mut annotations = spec_labels.clone();
    annotations.extend(owner.marks());
    annotations
}

/// The owner `annotations` name, when they name one that can be read.
pub fn owner_from_annotations(annotations: &BTreeMap<String, String>) -> Option<LeftoverOwner> {
    LeftoverOwner::from_marks(|mark| annotations.get(mark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::{Lease, RunOwner};

    #[test]
    fn label_values_are_valid_and_keep_apart_what_differs() {
        assert_eq!(label_value("build"), "build");
        assert_eq!(label_value("18bd3a9f-1a2b"), "18bd3a9f-1a2b");
        let matrix = label_value("test[os=linux, rust=1.82]");
        assert!(matrix.starts_with("test-os-linux--rust-1.82"), "{matrix}");
        assert_ne!(matrix, label_value("test[os=linux; rust=1.82]"));
        let long = label_value(&"x".repeat(100));
        assert!(long.len() <= MAX_LABEL, "{long}");
        assert!(!label_value("[]").is_empty());
        for value in [matrix, long, label_value("-a-"), label_value("é")] {
            assert!(value.len() <= MAX_LABEL);
            assert!(
                value
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric()),
                "{value}"
            );
            assert!(
                value
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric()),
                "{value}"
            );
        }
    }

    #[test]
    fn job_names_are_dns_labels_short_enough_for_their_pods_and_unique() {
        let first = job_name("18bd3a9f-1a2b", "Test[os=linux]", 2);
        let second = job_name("18bd3a9f-1a2b", "Test[os=linux]", 2);
        assert_ne!(first, second);
        for name in [
            first,
            job_name("r", &"long-".repeat(40), 1),
            job_name("r", "[]", 3),
        ] {
            assert!(name.len() <= MAX_JOB_NAME, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert!(
                !name.ends_with('-') && name.starts_with("buildit-"),
                "{name}"
            );
        }
    }

    #[test]
    fn the_owner_is_read_back_from_the_annotations() {
        let owner = LeftoverOwner {
            process: RunOwner {
                host: "ci-7".to_owned(),
                pid: 42,
            },
            worker: Some("42/0/ci-7".to_owned()),
            lease: Some(Lease { job: 9, attempt: 2 }),
        };
        let annotations = annotations(&BTreeMap::new(), &owner);
        assert_eq!(owner_from_annotations(&annotations), Some(owner));
        assert_eq!(owner_from_annotations(&BTreeMap::new()), None);
    }
}
