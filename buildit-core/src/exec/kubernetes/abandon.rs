//! Deleting what a start made when the start is abandoned halfway (its future dropped): a cleanup spawned
//! from the guard's drop, unless the start finished and disarmed it.

use std::future::Future;
use std::pin::Pin;

/// A cleanup that runs, in the background, if the guard is dropped while armed.
pub(super) struct OnAbandon(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl OnAbandon {
    /// Armed with `cleanup` (not run until the guard is dropped armed).
    pub(super) fn new(cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(Box::pin(cleanup)))
    }

    /// What was made is handed over: nothing is cleaned up.
    pub(super) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for OnAbandon {
    fn drop(&mut self) {
        if let (Some(cleanup), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(cleanup);
        }
    }
}
