//! The daemon's two runtimes: runs at the process's priority, and serving (API calls, streams to watchers) on
//! threads of lower priority, so that on a busy machine the watchers of a run wait rather than slow it.

use std::io;

/// A runtime for runs and one for serving.
pub(crate) struct Runtimes {
    /// Stages, their output and its recording; child processes inherit its threads' priority.
    pub(crate) runs: tokio::runtime::Runtime,
    /// The server and its streams.
    pub(crate) serving: tokio::runtime::Runtime,
}

impl Runtimes {
    /// Builds both; the serving threads at `niceness` above the process's (0: the same).
    pub(crate) fn new(niceness: u8) -> io::Result<Self> {
        let runs = tokio::runtime::Builder::new_multi_thread()
            .thread_name("buildit-runs")
            .enable_all()
            .build()?;
        let serving = tokio::runtime::Builder::new_multi_thread()
            .thread_name("buildit-serve")
            .on_thread_start(move || lower_this_thread(niceness))
            .enable_all()
            .build()?;
        Ok(Self { runs, serving })
    }
}

/// Raises this thread's niceness by `niceness` (a thread of its own on Linux, where niceness is per thread).
/// Failing to is harmless: the thread runs at the process's priority.
#[cfg(target_os = "linux")]
fn lower_this_thread(niceness: u8) {
    if niceness == 0 {
        return;
    }
    let thread = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
    let _ = rustix::process::setpriority_process(Some(thread), current + i32::from(niceness));
}

/// Elsewhere niceness belongs to the whole process: serving runs at the process's priority.
#[cfg(not(target_os = "linux"))]
fn lower_this_thread(_niceness: u8) {}
