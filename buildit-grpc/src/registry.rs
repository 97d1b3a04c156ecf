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
    pipeline: String,
    created_at_ms: i64,
    phase: watch::Sender<Phase>,
    cancel: CancellationToken,
}

/// What `GetRun` says of a run that has no record yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) pipeline: String,
    pub(crate) created_at_ms: i64,
    pub(crate) cancelled: bool,
}

/// The daemon's runs, by tenant and id, and idempotency keys by tenant.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    runs: Mutex<HashMap<(String, String), Entry>>,
    keys: Mutex<HashMap<(String, String), String>>,
}

impl Registry {
    /// The run an idempotency key already gave, if any.
    pub(crate) fn run_for_key(&self, tenant: &str, key: &str) -> Option<String> {
        self.keys
            .lock()
            .ok()?
            .get(&(tenant.to_owned(), key.to_owned()))
            .cloned()
    }

    /// Records a queued run (and the key that asked for it).
    pub(crate) fn queued(&self, tenant: &str, run_id: &str, pipeline: &str, created_at_ms: i64) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(
                (tenant.to_owned(), run_id.to_owned()),
                Entry {
                    pipeline: pipeline.to_owned(),
                    created_at_ms,
                    phase: watch::channel(Phase::Queued).0,
                    cancel: CancellationToken::new(),
                },
            );
        }
    }

    /// The cancel token of a run a worker claimed, its entry made when this daemon did not queue it.
    pub(crate) fn ensure(&self, tenant: &str, run_id: &str, pipeline: &str) -> CancellationToken {
        let Ok(mut runs) = self.runs.lock() else {
            return CancellationToken::new();
        };
        runs.entry((tenant.to_owned(), run_id.to_owned()))
            .or_insert_with(|| Entry {
                pipeline: pipeline.to_owned(),
                created_at_ms: 0,
                phase: watch::channel(Phase::Queued).0,
                cancel: CancellationToken::new(),
            })
            .cancel
            .clone()
    }

    /// Reserves an idempotency key for `run_id`, atomically; the run that holds it already, if another does.
    pub(crate) fn reserve_key(&self, tenant: &str, key: &str, run_id: &str) -> Result<(), String> {
        let Ok(mut keys) = self.keys.lock() else {
            return Ok(());
        };
        match keys.entry((tenant.to_owned(), key.to_owned())) {
            std::collections::hash_map::Entry::Occupied(held) => Err(held.get().clone()),
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(run_id.to_owned());
                Ok(())
            }
        }
    }

    /// Gives a reserved key up (the run was not queued after all).
    pub(crate) fn release_key(&self, tenant: &str, key: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&(tenant.to_owned(), key.to_owned()));
        }
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

    /// Cancels every run of this daemon (the drain window is over).
    pub(crate) fn cancel_all(&self) {
        if let Ok(runs) = self.runs.lock() {
            for entry in runs.values() {
                entry.cancel.cancel();
            }
        }
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

    /// A run that is queued (or ended without a record), as far as this daemon knows it.
    pub(crate) fn pending(&self, tenant: &str, run_id: &str) -> Option<Pending> {
        let runs = self.runs.lock().ok()?;
        let entry = runs.get(&(tenant.to_owned(), run_id.to_owned()))?;
        Some(Pending {
            pipeline: entry.pipeline.clone(),
            created_at_ms: entry.created_at_ms,
            cancelled: entry.cancel.is_cancelled(),
        })
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
