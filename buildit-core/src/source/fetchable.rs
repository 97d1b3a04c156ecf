//! A run's source as an executor that fetches it where the stages run sees it: a git commit, or an uploaded
//! archive it can ask a download link for.

use super::ids::{ArchiveDigest, CommitId};
use super::prepare::WorkspaceSource;
use super::store::SourceStore;

/// Where a run's files come from, when it is not a directory of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchableSource {
    /// One commit of a git repository (checked as [`WorkspaceSource::Git`] is).
    Git {
        /// A URL (a local path reaches no pod) that may carry credentials: it is never put in a pod's body.
        repository: String,
        /// The commit.
        commit: CommitId,
    },
    /// An uploaded archive, and the store that holds it (and may issue links to it).
    Archive {
        /// The archive's sha256.
        digest: ArchiveDigest,
        /// The store it is in.
        store: SourceStore,
    },
}

impl FetchableSource {
    /// The fetchable form of `source` (stored in `store` when it is an archive); `None` for a host directory.
    pub fn new(source: &WorkspaceSource, store: &SourceStore) -> Option<Self> {
        match source {
            WorkspaceSource::HostDir(_) => None,
            WorkspaceSource::Git { repository, commit } => Some(Self::Git {
                repository: repository.clone(),
                commit: commit.clone(),
            }),
            WorkspaceSource::Archive(digest) => Some(Self::Archive {
                digest: digest.clone(),
                store: store.clone(),
            }),
        }
    }

    /// A one-time URL that serves the archive, when it is one and its store issues links.
    pub fn archive_link(&self) -> Option<String> {
        match self {
            Self::Archive { digest, store } => store.link(digest),
            Self::Git { .. } => None,
        }
    }
}
