//! One-time download links for uploaded archives, so that a pod can fetch a run's source itself: issued by
//! whoever serves the source store over HTTP (the daemon).

use std::fmt::Debug;
use std::path::Path;

use super::ids::ArchiveDigest;

/// Issues URLs that serve one stored archive, once.
pub trait ArchiveLinks: Send + Sync + Debug {
    /// A URL at which the file `archive` (the stored archive `digest`) can be downloaded once, by a pod of the
    /// cluster; `None` when there is none to give (the executor then copies the source in itself). The URL
    /// carries a secret token: it is handed to pods through a Kubernetes `Secret`, never in a pod's body.
    fn link(&self, archive: &Path, digest: &ArchiveDigest) -> Option<String>;
}
