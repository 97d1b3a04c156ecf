//! The output of every container the kubelet started, kept by the fake (not by Docker) so that `pods/log`
//! serves it after the container is removed, until the pod is deleted; followers are woken on each line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

/// One line of output (with its newline, if it had one).
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    /// When the runtime received it.
    pub time: Timestamp,
    /// The text.
    pub text: Bytes,
}

/// How far a container's log is: lines so far, and whether it is complete (the container ended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogProgress {
    pub lines: usize,
    pub complete: bool,
}

/// One container's output.
#[derive(Debug)]
pub(crate) struct ContainerLog {
    lines: Mutex<Vec<LogLine>>,
    progress: watch::Sender<LogProgress>,
}

impl ContainerLog {
    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<LogLine>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn append(&self, line: LogLine) {
        let mut lines = self.lines();
        lines.push(line);
        let count = lines.len();
        self.progress.send_modify(|progress| progress.lines = count);
    }

    /// No more lines will come.
    pub(crate) fn complete(&self) {
        self.progress
            .send_modify(|progress| progress.complete = true);
    }

    /// Lines from index `from` on.
    pub(crate) fn lines_from(&self, from: usize) -> Vec<LogLine> {
        self.lines().iter().skip(from).cloned().collect()
    }

    pub(crate) fn progress(&self) -> watch::Receiver<LogProgress> {
        self.progress.subscribe()
    }
}

/// Every container's output, by pod uid and container name.
#[derive(Debug, Default)]
pub(crate) struct LogBook {
    containers: Mutex<HashMap<(String, String), Arc<ContainerLog>>>,
}

impl LogBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<ContainerLog>>> {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh log for a container that is starting (a restarted container starts a new one).
    pub(crate) fn start(&self, pod_uid: &str, container: &str) -> Arc<ContainerLog> {
        let log = Arc::new(ContainerLog {
            lines: Mutex::default(),
            progress: watch::channel(LogProgress::default()).0,
        });
        self.lock()
            .insert((pod_uid.to_owned(), container.to_owned()), Arc::clone(&log));
        log
    }

    /// The container's log, if it started.
    pub(crate) fn get(&self, pod_uid: &str, container: &str) -> Option<Arc<ContainerLog>> {
        self.lock()
            .get(&(pod_uid.to_owned(), container.to_owned()))
            .cloned()
    }

    /// Forgets a deleted pod's logs.
    pub(crate) fn forget_pod(&self, pod_uid: &str) {
        self.lock().retain(|(uid, _), _| uid != pod_uid);
    }
}
