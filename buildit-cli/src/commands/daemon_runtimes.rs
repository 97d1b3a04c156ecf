//! The daemon's two runtimes: runs at the process's priority, and serving (API calls, streams to watchers) on
//! threads of lower priority, so that on a busy machine the watchers of a run wait rather than slow it.

use std::io;
use std::time::Duration;

/// A runtime for runs, and one for serving when it is to run at a lower priority.
pub(crate) struct Runtimes {
    /// Runs: stages, their output and its recording (child processes inherit its threads' priority), and
    /// the daemon's stop sequence.
    pub(crate) runs: tokio::runtime::Runtime,
    /// The server and its streams; `None` (niceness 0): on the runs' runtime.
    pub(crate) serving: Option<tokio::runtime::Runtime>,
}

impl Runtimes {
    /// Builds them; the serving threads at `niceness` above the process's (0: no runtime of their own).
    pub(crate) fn new(niceness: u8) -> io::Result<Self> {
        let runs = tokio::runtime::Builder::new_multi_thread()
            .thread_name("buildit-runs")
            .enable_all()
            .build()?;
        let serving = if niceness == 0 || !cfg!(target_os = "linux") {
            None
        } else {
            Some(
                tokio::runtime::Builder::new_multi_thread()
                    .thread_name("buildit-serve")
                    .on_thread_start(move || lower_this_thread(niceness))
                    .enable_all()
                    .build()?,
            )
        };
        Ok(Self { runs, serving })
    }

    /// Stops both without waiting for blocking work left behind (a store write the stop sequence gave up on)
    /// for more than a moment: the daemon's exit is bounded by its drain window, not by that work.
    pub(crate) fn shut_down(self) {
        self.runs.shutdown_timeout(Duration::from_millis(200));
        if let Some(serving) = self.serving {
            serving.shutdown_background();
        }
    }
}

/// Raises this thread's niceness by `niceness` (a thread of its own on Linux, where niceness is per thread).
/// Failing to is harmless: the thread runs at the process's priority.
#[cfg(target_os = "linux")]
fn lower_this_thread(niceness: u8) {
    let thread = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
    let _ = rustix::process::setpriority_process(Some(thread), current + i32::from(niceness));
}

/// Elsewhere niceness belongs to the whole process: serving runs at the process's priority.
#[cfg(not(target_os = "linux"))]
fn lower_this_thread(_niceness: u8) {}
