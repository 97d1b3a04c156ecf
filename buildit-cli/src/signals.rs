//! The signals that stop a run, watched only by the binary: the first stops gracefully, the second kills.

use tokio_util::sync::CancellationToken;

/// The signals that stop a run: SIGINT (Ctrl-C), SIGTERM and SIGHUP.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next one.
    pub(crate) async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Watches for stop signals: the first cancels `cancel` (running stages get their grace period), the second
/// cancels `kill`. SIGTERM and SIGHUP (a CI job cancelled, a terminal closed) stop the run like Ctrl-C: a runner
/// that dies on them would leave its stages running.
pub(crate) fn watch(
    cancel: CancellationToken,
    kill: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stops = match StopSignals::new() {
            Ok(stops) => stops,
            Err(error) => {
                eprintln!("warning: cannot watch for SIGTERM and SIGHUP: {error}");
                return;
            }
        };
        stops.next().await;
        eprintln!("\ninterrupted: stopping running stages (Ctrl-C again to kill them now)");
        cancel.cancel();
        stops.next().await;
        eprintln!("killing running stages");
        kill.cancel();
    })
}
