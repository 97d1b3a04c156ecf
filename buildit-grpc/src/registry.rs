//! The runs this daemon has queued or is running: what a watcher waits for and joins, and what a cancel reaches.

use std::collections::HashMap;
use std::sync::Mutex;

use buildit_core::runner::RunJoiner;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long an ended run stays known here.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a run of this daemon is.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Queued, not started by a worker yet.
    Queued,
    /// Running: its events can be joined.
    Running(RunJoiner),
    /// Over (or never started: cancelled while queued, or refused by the worker); the store has the rest.
    Ended,
}

/// A run this daemon knows of.
#[derive(Debug)]
struct Entry {
    phase: watch::Sender<Phase>,
    cancel: CancellationToken,
}

/// The daemon's runs, by tenant and id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    runs: Mutex<HashMap<(String, String), Entry>>,
    /// The parent of every run's cancel token: once the drain is over, a run known later is cancelled too.
    all: CancellationToken,
}

impl Registry {
    /// A run known here from now on (one this daemon queues, or one a worker claimed that another daemon
    /// queued); its cancel token, which a worker hands to the run's `Runner`.
    pub(crate) fn ensure(&self, tenant: &str, run_id: &str) -> CancellationToken {
        let Ok(mut runs) = self.runs.lock() else {
            return self.all.child_token();
        };
        runs.entry((tenant.to_owned(), run_id.to_owned()))
            .or_insert_with(|| Entry {
                phase: watch::channel(Phase::Queued).0,
                cancel: self.all.child_token(),
            })
            .cancel
            .clone()
    }

    /// Moves a run on.
    pub(crate) fn set(&self, tenant: &str, run_id: &str, phase: Phase) {
        if let Ok(runs) = self.runs.lock()
            && let Some(entry) = runs.get(&(tenant.to_owned(), run_id.to_owned()))
        {
            entry.phase.send_replace(phase);
        }
    }

    /// Cancels a run of this daemon (queued or running); whether it knew the run.
    pub(crate) fn cancel(&self, tenant: &str, run_id: &str) -> bool {
        match self.runs.lock() {
            Ok(runs) => runs
                .get(&(tenant.to_owned(), run_id.to_owned()))
                .map(|entry| entry.cancel.cancel())
                .is_some(),
            Err(_) => false,
        }
    }

    /// Forgets an ended run after a while (its record is in the store): watchers that were waiting for it have
    /// moved on to the store by then, and the daemon's memory does not grow with every run it ever ran.
    pub(crate) fn forget_later(self: &std::sync::Arc<Self>, tenant: &str, run_id: &str) {
        let registry = std::sync::Arc::downgrade(self);
        let key = (tenant.to_owned(), run_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(FORGET_AFTER).await;
            if let Some(registry) = registry.upgrade()
                && let Ok(mut runs) = registry.runs.lock()
            {
                runs.remove(&key);
            }
        });
    }

    /// Cancels every run of this daemon, and every run it comes to know from now on (the drain window is over).
    pub(crate) fn cancel_all(&self) {
        self.all.cancel();
    }

    /// Watches a run's phase.
    pub(crate) fn watch(&self, tenant: &str, run_id: &str) -> Option<watch::Receiver<Phase>> {
        let runs = self.runs.lock().ok()?;
        Some(
            runs.get(&(tenant.to_owned(), run_id.to_owned()))?
                .phase
                .subscribe(),
        )
    }

    /// Every tenant with a run here: the workers claim in their queues.
    pub(crate) fn tenants(&self) -> Vec<String> {
        let mut tenants: Vec<String> = match self.runs.lock() {
            Ok(runs) => runs.keys().map(|(tenant, _)| tenant.clone()).collect(),
            Err(_) => Vec::new(),
        };
        tenants.sort();
        tenants.dedup();
        tenants
    }
}
