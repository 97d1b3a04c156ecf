//! The content-addressed store of uploaded sources: one `<sha256>.tar` per distinct upload, written through a
//! temporary file and renamed, checked against the size limit while it is read.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::error::{SourceError, io};
use super::ids::ArchiveDigest;
use super::links::ArchiveLinks;
use crate::system::SourceLimits;

/// How much of an upload is read before it is written out.
const CHUNK: usize = 1024 * 1024;

/// A directory of uploaded archives, each stored once under its sha256.
#[derive(Debug, Clone)]
pub struct SourceStore {
    root: PathBuf,
    limits: SourceLimits,
    /// Who hands out download links to its archives, if anyone.
    links: Option<Arc<dyn ArchiveLinks>>,
}

/// Two stores are the same when they hold the same archives under the same limits (who links to them aside).
impl PartialEq for SourceStore {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.limits == other.limits
    }
}

impl Eq for SourceStore {}

impl SourceStore {
    /// A store in `root` (created on the first upload) with the system configuration's `limits`.
    pub fn new(root: impl Into<PathBuf>, limits: SourceLimits) -> Self {
        Self {
            root: root.into(),
            limits,
            links: None,
        }
    }

    /// The same store, whose archives `links` can hand out download links to (a pod then fetches a run's
    /// archive itself).
    #[must_use]
    pub fn with_links(mut self, links: Arc<dyn ArchiveLinks>) -> Self {
        self.links = Some(links);
        self
    }

    /// A one-time download link to the archive `digest`, when the store has a link issuer and the archive is
    /// stored.
    pub fn link(&self, digest: &ArchiveDigest) -> Option<String> {
        let links = self.links.as_ref()?;
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        links.link(&path, digest)
    }

    /// The limits uploads and their unpacking are held to.
    pub fn limits(&self) -> SourceLimits {
        self.limits
    }

    /// Where the archive with `digest` is (or would be) stored.
    pub fn path(&self, digest: &ArchiveDigest) -> PathBuf {
        self.root.join(format!("{digest}.tar"))
    }

    /// Whether an archive with `digest` is stored.
    pub fn contains(&self, digest: &ArchiveDigest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores what `reader` yields and returns its sha256. The upload is refused as soon as it passes the limit
    /// (nothing is stored then); the same bytes uploaded twice are one file. The archive is not unpacked or
    /// checked here: [`super::prepare`] does that each time it is used.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
    ) -> Result<ArchiveDigest, SourceError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temporary = Temporary(self.root.join(format!(
            ".upload-{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        let mut file = std::fs::File::create_new(&temporary.0).map_err(io(&temporary.0))?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            // Fill the buffer before writing: one blocking write per chunk, not one per network packet.
            let mut filled = 0;
            while filled < buffer.len() {
                let read = reader
                    .read(&mut buffer[filled..])
                    .await
                    .map_err(|source| SourceError::Upload { source })?;
                if read == 0 {
                    break;
                }
                filled += read;
                total = total.saturating_add(read as u64);
                if total > self.limits.max_upload {
                    return Err(SourceError::UploadTooLarge {
                        limit: self.limits.max_upload,
                    });
                }
            }
            if filled == 0 {
                break;
            }
            hasher.update(&buffer[..filled]);
            let path = temporary.0.clone();
            (file, buffer) = tokio::task::spawn_blocking(move || {
                file.write_all(&buffer[..filled]).map(|()| (file, buffer))
            })
            .await
            .map_err(|join| io(&path)(std::io::Error::other(join)))?
            .map_err(io(&path))?;
        }
        let digest = ArchiveDigest::from_bytes(&hasher.finalize());
        let destination = self.path(&digest);
        let from = temporary.0.clone();
        tokio::task::spawn_blocking(move || -> Result<(), SourceError> {
            file.sync_all().map_err(io(&from))?;
            // Renamed over an existing copy: the bytes are the same, and a copy that was corrupted on disk is
            // healed by the next upload of the same source.
            std::fs::rename(&from, &destination).map_err(io(&destination))
        })
        .await
        .map_err(|join| io(&temporary.0)(std::io::Error::other(join)))??;
        Ok(digest)
    }
}

/// A temporary upload file, removed unless it was renamed into place (an upload that fails or is dropped
/// half-way leaves nothing).
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
