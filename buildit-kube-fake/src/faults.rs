//! Scripted faults: what a test asks to go wrong for the pods a label selector matches, once per pod.

use std::collections::HashSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::selector::{LabelSelector, SelectorError};

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The image cannot be pulled (`ErrImagePull`, then `ImagePullBackOff`), even if it is present.
    ImagePull,
    /// After `after_ms` of running, the first container is killed as by the kernel's OOM killer
    /// (`OOMKilled`, exit code 137).
    Oom,
    /// After `after_ms` of running, the kubelet evicts the pod (`Failed`, reason `Evicted`,
    /// condition `DisruptionTarget`).
    Evict,
    /// The pod cannot be scheduled, whatever it requests.
    Unschedulable,
    /// After `after_ms` of running, another client deletes the pod (grace period 0).
    Delete,
    /// The first follow of the pod's log is cut after `after_lines` lines (the connection ends without the
    /// final chunk).
    CutLogs,
}

/// One fault, as `POST /fake/faults` takes it:
/// `{"selector":"buildit.stage=build","fault":"evict","after_ms":300}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Which pods (a label selector; empty: every pod).
    #[serde(default)]
    pub selector: String,
    /// What goes wrong.
    pub fault: FaultKind,
    /// For timed faults: how long after the pod's containers start.
    #[serde(default)]
    pub after_ms: u64,
    /// For `cut-logs`: how many lines are sent before the cut.
    #[serde(default)]
    pub after_lines: u64,
}

impl Fault {
    /// A fault for the pods `selector` matches, with no delay.
    pub fn new(fault: FaultKind, selector: &str) -> Fault {
        Fault {
            selector: selector.to_owned(),
            fault,
            after_ms: 0,
            after_lines: 0,
        }
    }

    /// The same fault, `after_ms` milliseconds after the pod's containers start.
    #[must_use]
    pub fn after_ms(mut self, after_ms: u64) -> Fault {
        self.after_ms = after_ms;
        self
    }

    /// The same fault, after `after_lines` log lines.
    #[must_use]
    pub fn after_lines(mut self, after_lines: u64) -> Fault {
        self.after_lines = after_lines;
        self
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    selector: LabelSelector,
    /// The uids of the pods it was applied to.
    applied: HashSet<String>,
}

/// The faults injected into one fake cluster.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Vec<Armed>>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms a fault; an invalid selector is refused.
    pub fn inject(&self, fault: Fault) -> Result<(), SelectorError> {
        let selector = LabelSelector::parse(&fault.selector)?;
        self.lock().push(Armed {
            fault,
            selector,
            applied: HashSet::new(),
        });
        Ok(())
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The armed faults.
    pub fn list(&self) -> Vec<Fault> {
        self.lock()
            .iter()
            .map(|armed| armed.fault.clone())
            .collect()
    }

    /// The fault of `kind` for a pod, the first time it is asked for that pod (it applies once per pod).
    pub(crate) fn take(
        &self,
        kind: FaultKind,
        pod_uid: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<Fault> {
        let mut armed = self.lock();
        let entry = armed.iter_mut().find(|armed| {
            armed.fault.fault == kind
                && !armed.applied.contains(pod_uid)
                && armed.selector.matches(labels)
        })?;
        entry.applied.insert(pod_uid.to_owned());
        Some(entry.fault.clone())
    }

    /// Whether a fault of `kind` was applied to the pod (for faults that hold for the pod's life).
    pub(crate) fn applied(&self, kind: FaultKind, pod_uid: &str) -> bool {
        self.lock()
            .iter()
            .any(|armed| armed.fault.fault == kind && armed.applied.contains(pod_uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_control_api_json() {
        let fault: Result<Fault, _> = serde_json::from_str(
            r#"{"selector":"buildit.stage=build","fault":"evict","after_ms":300}"#,
        );
        assert_eq!(
            fault.ok(),
            Some(Fault::new(FaultKind::Evict, "buildit.stage=build").after_ms(300))
        );
    }

    #[test]
    fn a_fault_applies_once_per_matching_pod() {
        let faults = Faults::default();
        assert!(faults.inject(Fault::new(FaultKind::Oom, "app=x")).is_ok());
        let matching = [("app".to_owned(), "x".to_owned())].into_iter().collect();
        let other = [("app".to_owned(), "y".to_owned())].into_iter().collect();
        assert!(faults.take(FaultKind::Oom, "uid-1", &other).is_none());
        assert!(faults.take(FaultKind::Evict, "uid-1", &matching).is_none());
        assert!(faults.take(FaultKind::Oom, "uid-1", &matching).is_some());
        assert!(faults.take(FaultKind::Oom, "uid-1", &matching).is_none());
        assert!(faults.applied(FaultKind::Oom, "uid-1"));
        assert!(faults.take(FaultKind::Oom, "uid-2", &matching).is_some());
    }
}
