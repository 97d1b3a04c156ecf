//! Blobs as files under a directory: a blob's name is its path below the root. Writes go to a temporary file
//! beside the target and are renamed into place, so a crash never leaves half a blob.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::api::{Blob, BlobInfo, BlobStore, checked_name};

/// A directory of blobs: `<root>/<name>`. What BuildIt has always kept on disk: cache archives
/// (`<root>/<encoded key>.tar`) and artifact files (`<root>/<run>/<stage>/<path in the workspace>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemBlobs {
    root: PathBuf,
}

impl FilesystemBlobs {
    /// Blobs under `root`, created when the first one is written.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory that holds the blobs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> std::io::Result<PathBuf> {
        Ok(self.root.join(checked_name(name)?))
    }
}

/// A unique number per temporary file: parallel stages may write the same blob, or restore the same artifact
/// into a shared workspace, at once.
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The same error, saying what was being done to which file.
fn context(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let message = format!("{what} `{}`", path.display());
    move |error| std::io::Error::new(error.kind(), format!("{message}: {error}"))
}

/// Whether a file name is one of the temporary files writes go through.
fn is_temporary(name: &str) -> bool {
    name.contains(".buildit-tmp-") || (name.starts_with('.') && name.contains(".tmp-"))
}

/// Copies a file (with its permissions) through a temporary name beside `destination`, so that a reader never
/// sees half a file.
pub(crate) fn copy_through_temporary(source: &Path, destination: &Path) -> std::io::Result<()> {
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent).map_err(context("cannot create", parent))?;
    }
    let mut name = destination.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".buildit-tmp-{}-{}", std::process::id(), unique()));
    let temporary = destination.with_file_name(name);
    if let Err(error) = std::fs::copy(source, &temporary) {
        let _ = std::fs::remove_file(&temporary);
        return Err(context("cannot copy", source)(error));
    }
    std::fs::rename(&temporary, destination).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        context("cannot write", destination)(error)
    })
}

impl BlobStore for FilesystemBlobs {
    fn put(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let target = self.path(name)?;
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(context("cannot create", dir))?;
        let temporary = dir.join(format!(
            ".{}.tmp-{}-{}",
            target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            unique()
        ));
        let written = (|| -> std::io::Result<()> {
            let file = File::create(&temporary).map_err(context("cannot create", &temporary))?;
            let mut writer = BufWriter::new(file);
            write(&mut writer)?;
            let file = writer
                .into_inner()
                .map_err(|e| std::io::Error::other(format!("cannot finish the blob: {e}")))?;
            file.sync_all()
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot flush the blob: {e}")))
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        std::fs::rename(&temporary, &target).map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            context("cannot store", &target)(error)
        })
    }

    fn put_file(&self, name: &str, source: &Path) -> std::io::Result<()> {
        copy_through_temporary(source, &self.path(name)?)
    }

    fn get(&self, name: &str) -> std::io::Result<Option<Box<dyn Blob>>> {
        let path = self.path(name)?;
        if !path.is_file() {
            return Ok(None);
        }
        match File::open(&path) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(context("cannot open", &path)(error)),
        }
    }

    fn get_file(&self, name: &str, destination: &Path) -> std::io::Result<bool> {
        let path = self.path(name)?;
        if !path.is_file() {
            return Ok(false);
        }
        copy_through_temporary(&path, destination)?;
        Ok(true)
    }

    fn contains(&self, name: &str) -> bool {
        self.path(name).is_ok_and(|path| path.is_file())
    }

    fn list(&self, prefix: &str) -> std::io::Result<Vec<BlobInfo>> {
        // Only the directory the prefix ends in is walked: listing one stage's artifacts does not read the
        // whole store.
        let dir = match prefix.rfind('/') {
            Some(end) => &prefix[..end],
            None => "",
        };
        let start = if dir.is_empty() {
            self.root.clone()
        } else {
            self.path(dir)?
        };
        let mut found = Vec::new();
        walk(&start, dir, prefix, &mut found)?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn remove(&self, name: &str) -> std::io::Result<bool> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(context("cannot remove", &path)(error)),
        }
    }

    fn touch(&self, name: &str) -> std::io::Result<()> {
        let path = self.path(name)?;
        File::options()
            .append(true)
            .open(&path)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()))
            .map_err(context("cannot mark as used", &path))
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.root.join(name))
    }
}

/// Adds the blobs under `dir` (named `name_dir/...`) whose names start with `prefix`. A missing directory
/// holds none.
fn walk(
    dir: &Path,
    name_dir: &str,
    prefix: &str,
    found: &mut Vec<BlobInfo>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(context("cannot list", dir)(error)),
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let name = if name_dir.is_empty() {
            file_name.clone()
        } else {
            format!("{name_dir}/{file_name}")
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            // Descend only where names under the directory can still start with the prefix.
            if name.starts_with(prefix) || prefix.starts_with(&format!("{name}/")) {
                walk(&entry.path(), &name, prefix, found)?;
            }
            continue;
        }
        if !name.starts_with(prefix) || is_temporary(&file_name) {
            continue;
        }
        let Ok(metadata) = entry.path().metadata() else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        found.push(BlobInfo {
            name,
            size: metadata.len(),
            modified: metadata.modified()?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn blobs_are_written_whole_listed_by_prefix_and_removed() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let blobs = FilesystemBlobs::new(dir.path().join("blobs"));
        assert!(!blobs.contains("a.tar"));
        assert!(matches!(blobs.get("a.tar"), Ok(None)));
        let put = blobs.put("a.tar", &mut |w| w.write_all(b"archive"));
        assert!(put.is_ok(), "{put:?}");
        let failed = blobs.put("b.tar", &mut |_| Err(std::io::Error::other("no space")));
        assert!(failed.is_err());
        assert!(!blobs.contains("b.tar"), "a failed write leaves nothing");
        let source = dir.path().join("tool");
        let _ = std::fs::write(&source, "#!/bin/sh\n");
        let _ =
            std::fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        assert!(blobs.put_file("r1/build/out/tool", &source).is_ok());
        assert!(blobs.put_file("r1/build/out/b.txt", &source).is_ok());
        assert!(blobs.put_file("r1/buildx/c.txt", &source).is_ok());
        let mut text = String::new();
        let read = blobs
            .get("a.tar")
            .ok()
            .flatten()
            .map(|mut blob| blob.read_to_string(&mut text));
        assert!(matches!(read, Some(Ok(7))), "{read:?}");
        assert_eq!(text, "archive");
        let names = |prefix: &str| -> Vec<String> {
            blobs
                .list(prefix)
                .map(|list| list.into_iter().map(|info| info.name).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            names("r1/build/"),
            ["r1/build/out/b.txt", "r1/build/out/tool"]
        );
        assert_eq!(
            names(""),
            [
                "a.tar",
                "r1/build/out/b.txt",
                "r1/build/out/tool",
                "r1/buildx/c.txt"
            ],
            "temporary files are never listed"
        );
        assert!(names("zzz/").is_empty());
        let restored = dir.path().join("ws/out/tool");
        assert!(matches!(
            blobs.get_file("r1/build/out/tool", &restored),
            Ok(true)
        ));
        let mode = std::fs::metadata(&restored)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
        assert_eq!(mode.ok(), Some(0o755), "permissions travel with the file");
        assert!(matches!(blobs.get_file("nothing", &restored), Ok(false)));
        assert!(matches!(blobs.remove("a.tar"), Ok(true)));
        assert!(matches!(blobs.remove("a.tar"), Ok(false)));
        assert!(blobs.put("../escape", &mut |w| w.write_all(b"x")).is_err());
        assert!(!dir.path().join("escape").exists());
    }
}
