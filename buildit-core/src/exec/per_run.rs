//! Something an executor makes once per run (a workspace volume or claim): made by the first stage that needs
//! it, shared by the others, and handed back when the run ends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::executor::ExecError;

/// Each run's `T`, by run id.
#[derive(Debug)]
pub(crate) struct PerRun<T>(Mutex<HashMap<String, Arc<OnceCell<T>>>>);

impl<T> Default for PerRun<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Clone> PerRun<T> {
    /// Run `run`'s `T`, made by `make` when no stage has made it yet (a failed making is tried again by the
    /// next stage that needs it).
    pub(crate) async fn get_or_make<F, Fut>(&self, run: &str, make: F) -> Result<T, ExecError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ExecError>>,
    {
        let cell = match self.0.lock() {
            Ok(mut runs) => Arc::clone(runs.entry(run.to_owned()).or_default()),
            Err(_) => {
                return Err(ExecError::Backend(
                    "the per-run registry is poisoned".to_owned(),
                ));
            }
        };
        cell.get_or_try_init(make).await.cloned()
    }

    /// Run `run`'s `T`, if one was made; the run forgets it.
    pub(crate) fn take(&self, run: &str) -> Option<T> {
        let cell = self.0.lock().ok()?.remove(run)?;
        cell.get().cloned()
    }
}
