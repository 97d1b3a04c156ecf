//! Where a run's files come from, and turning that into the directory the run uses.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{SourceError, io};
use super::ids::{ArchiveDigest, CommitId};
use super::store::SourceStore;

/// Where a run's files come from. Serialised as `{"host-dir": "/path"}`, `{"git": {"repository": "...",
/// "commit": "..."}}` or `{"archive": "<sha256>"}`, so a queued job can carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WorkspaceSource {
    /// A directory on this machine, used in place (what `buildit run` does).
    HostDir(PathBuf),
    /// One commit of a git repository, checked out into a fresh directory.
    Git {
        /// A local path or a URL (`https://`, `ssh://`, `git@host:repo`, `git://`, `file://`).
        repository: String,
        /// The commit.
        commit: CommitId,
    },
    /// An uploaded tar archive from a [`SourceStore`], unpacked into a fresh directory.
    Archive(ArchiveDigest),
}

/// Turns `source` into the directory a run uses, and returns it.
///
/// - [`WorkspaceSource::HostDir`]: the directory itself, which must exist; `into` is not used.
/// - [`WorkspaceSource::Git`] and [`WorkspaceSource::Archive`]: `into`, which must not exist or be an empty
///   directory (its parents are created).
///
/// On success the directory is the caller's: it removes `into` when the run is over (BuildIt never removes a
/// host directory). On failure, or when the returned future is dropped, what was written into `into` is
/// removed (`into` too, if it did not exist before).
pub async fn prepare(
    source: &WorkspaceSource,
    store: &SourceStore,
    into: &Path,
) -> Result<PathBuf, SourceError> {
    match source {
        WorkspaceSource::HostDir(path) => {
            if path.is_dir() {
                Ok(path.clone())
            } else {
                Err(SourceError::NotADirectory { path: path.clone() })
            }
        }
        WorkspaceSource::Git { repository, commit } => {
            let destination = Destination::claim(into)?;
            super::git::checkout(repository, commit, into).await?;
            Ok(destination.keep())
        }
        WorkspaceSource::Archive(digest) => {
            let destination = Destination::claim(into)?;
            let archive = store.path(digest);
            let digest = digest.clone();
            let limits = store.limits();
            // Unpacking is blocking file work. The destination travels with it: if this future is dropped,
            // the directory is cleaned when the unpacking ends, not while it still writes.
            let unpacked = tokio::task::spawn_blocking(move || {
                super::archive::unpack(&archive, &digest, &destination.path, limits)
                    .map(|()| destination)
            })
            .await
            .map_err(|join| io(into)(std::io::Error::other(join)))?;
            Ok(unpacked?.keep())
        }
    }
}

/// A directory being prepared: emptied (or removed, if it was made for this) unless [`Destination::keep`]
/// is called.
#[derive(Debug)]
struct Destination {
    path: PathBuf,
    created: bool,
    kept: bool,
}

impl Destination {
    /// Takes `path` for a source: it must not exist (it is made) or be an empty directory.
    fn claim(path: &Path) -> Result<Self, SourceError> {
        let refuse = |problem: &str| SourceError::Destination {
            path: path.to_path_buf(),
            problem: problem.to_owned(),
        };
        match path.symlink_metadata() {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                std::fs::create_dir(path).map_err(io(path))?;
                Ok(Self {
                    path: path.to_path_buf(),
                    created: true,
                    kept: false,
                })
            }
            Err(error) => Err(io(path)(error)),
            Ok(metadata) if !metadata.is_dir() => Err(refuse("it exists and is not a directory")),
            Ok(_) => {
                let mut entries = std::fs::read_dir(path).map_err(io(path))?;
                if entries.next().is_some() {
                    return Err(refuse("it is not empty"));
                }
                Ok(Self {
                    path: path.to_path_buf(),
                    created: false,
                    kept: false,
                })
            }
        }
    }

    /// The directory is ready: it stays, and is the caller's.
    fn keep(mut self) -> PathBuf {
        self.kept = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = match entry.file_type() {
                    Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
                    _ => std::fs::remove_file(&path),
                };
                let _ = removed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_json_and_ids_are_checked_on_the_way_in() {
        let commit = CommitId::parse(&"ab".repeat(20));
        let digest = ArchiveDigest::parse(&"cd".repeat(32));
        let (Ok(commit), Ok(digest)) = (commit, digest) else {
            panic!("valid ids refused");
        };
        for source in [
            WorkspaceSource::HostDir(PathBuf::from("/srv/ws")),
            WorkspaceSource::Git {
                repository: "https://example.com/r.git".into(),
                commit,
            },
            WorkspaceSource::Archive(digest),
        ] {
            let json = serde_json::to_string(&source).map_err(|e| e.to_string());
            let back: Result<WorkspaceSource, String> = json
                .as_deref()
                .map_err(Clone::clone)
                .and_then(|json| serde_json::from_str(json).map_err(|e| e.to_string()));
            assert_eq!(back.as_ref().ok(), Some(&source), "{json:?} {back:?}");
        }
        let forged = r#"{"git":{"repository":"r","commit":"main"}}"#;
        assert!(serde_json::from_str::<WorkspaceSource>(forged).is_err());
    }
}
