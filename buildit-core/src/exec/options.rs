//! How a run is executed: concurrency, fail-fast, grace and drain periods, the kill token, artifact and cache
//! stores.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::artifacts::ArtifactStore;
use super::cache::CacheStore;
use super::groups::ConcurrencyGroups;
use super::scheduler::Reuse;
use super::spec::DEFAULT_GRACE;

/// How a run is executed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most stages running at once; `None` uses the pipeline's `concurrency`, else the number of CPUs.
    pub concurrency: Option<usize>,
    /// Cancel everything still running at the first failure (instead of only skipping dependents).
    pub fail_fast: bool,
    /// Time between the graceful stop and the kill.
    pub grace: Duration,
    /// How long to wait for output after a stage's process ended (a daemonised child may hold its pipes).
    pub log_drain: Duration,
    /// Cancelled to cut every grace period short: stages being stopped are killed at once (a second Ctrl-C).
    pub kill: CancellationToken,
    /// Where artifacts are collected after a stage succeeds and restored from before its dependents run;
    /// `None` leaves them where the stages wrote them.
    pub artifacts: Option<ArtifactStore>,
    /// Where caches are kept; `None` disables them.
    pub caches: Option<CacheStore>,
    /// The home directory, for cache paths written `~/...`.
    pub home: Option<PathBuf>,
    /// What a rerun takes from an earlier run instead of running it again, and what it leaves out.
    pub reuse: Option<Arc<Reuse>>,
    /// Where concurrency groups are held; `None` ignores them (the runner gives its store's).
    pub groups: Option<Arc<dyn ConcurrencyGroups>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: None,
            fail_fast: false,
            grace: DEFAULT_GRACE,
            log_drain: Duration::from_secs(5),
            kill: CancellationToken::new(),
            artifacts: None,
            caches: None,
            home: std::env::var_os("HOME").map(PathBuf::from),
            reuse: None,
            groups: None,
        }
    }
}
