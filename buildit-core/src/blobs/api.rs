//! The `BlobStore` trait: put, get, list and remove blobs by name, as caches and artifacts need them.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A blob opened for reading: read and seek, as a tar reader that checks an archive before unpacking it needs.
pub trait Blob: Read + Seek + Send {}

impl<T: Read + Seek + Send> Blob for T {}

/// One stored blob, as [`BlobStore::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobInfo {
    /// Its full name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written or marked used.
    pub modified: SystemTime,
}

/// Where caches and artifacts keep their blobs. Names are `/`-separated relative paths of plain segments (no
/// empty, `.` or `..` segment, no leading `/`); a store refuses any other name. Writing is all-or-nothing: a
/// reader sees the previous blob or the whole new one, never part of one, and a failed write leaves nothing.
pub trait BlobStore: std::fmt::Debug + Send + Sync {
    /// Stores what `write` writes under `name`, replacing any blob of that name.
    fn put(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()>;

    /// Stores a copy of the local file `source` under `name` (keeping its permissions), replacing any blob of
    /// that name.
    fn put_file(&self, name: &str, source: &Path) -> std::io::Result<()>;

    /// The blob `name`, opened for reading; `None` when there is none.
    fn get(&self, name: &str) -> std::io::Result<Option<Box<dyn Blob>>>;

    /// Copies the blob `name` to the local file `destination` (with its permissions), through a temporary file
    /// beside it so that a reader never sees half a file; returns `false` when there is no such blob.
    fn get_file(&self, name: &str, destination: &Path) -> std::io::Result<bool>;

    /// Whether a blob `name` exists.
    fn contains(&self, name: &str) -> bool;

    /// The blobs whose names start with `prefix` (any depth), in name order.
    fn list(&self, prefix: &str) -> std::io::Result<Vec<BlobInfo>>;

    /// Removes the blob `name`; returns whether there was one.
    fn remove(&self, name: &str) -> std::io::Result<bool>;

    /// Marks the blob `name` as used now, for pruning by age.
    fn touch(&self, name: &str) -> std::io::Result<()>;

    /// Where the blob (or the prefix) `name` lives on this machine's file system, for stores that keep blobs
    /// there: messages name it, and collection never reads from inside the store. `None` for remote stores.
    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }
}

/// `name` as a relative path of plain segments, or an `InvalidInput` error.
pub(crate) fn checked_name(name: &str) -> std::io::Result<&Path> {
    let plain = !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if plain {
        Ok(Path::new(name))
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid blob name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_relative_paths() {
        for good in ["a.tar", "run/stage/out/a.txt", ".hidden"] {
            assert!(checked_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a//b", "a/./b", "../a", "a/..", "a/"] {
            assert!(checked_name(bad).is_err(), "{bad}");
        }
    }
}
