//! Caches: before a stage, restore the archive for its key (or the newest match of a `restore-keys` prefix);
//! after it succeeds, save one if the key is new. Archives are written to a temporary file and renamed, so a
//! crash never leaves a corrupt cache.

use std::fs::File;
use std::io::{BufReader, Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::blobs::{BlobStore, FilesystemBlobs};
use crate::config::Glob;
use crate::paths::{archive_entry_target, archive_name, cache_location};
// The container executors check their downloads with the same rule.
pub(crate) use crate::paths::written_through_symlink;

/// What a cache key keeps in its archive's name: letters, digits, `.`, `_` and `-`; the rest becomes `%XX`.
const KEY_KEEPS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// Why a cache could not be restored or saved.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("cache `{key}`: {message}")]
    #[diagnostic(code(buildit::cache::io))]
    Io {
        /// The key.
        key: String,
        /// What failed.
        message: String,
    },
}

/// Where a cache was restored from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheHit {
    /// The exact key.
    Exact,
    /// The newest key starting with this `restore-keys` prefix.
    Prefix(String),
    /// Nothing matched.
    Miss,
}

/// Cache archives, one blob `<encoded key>.tar` per key: in a directory ([`CacheStore::new`]) or any other
/// [`BlobStore`].
#[derive(Debug, Clone)]
pub struct CacheStore {
    blobs: Arc<dyn BlobStore>,
}

/// A cache as a stage uses it: resolved key, prefixes and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCache {
    /// The cache's name.
    pub name: String,
    /// Its key, variables and `{hash:GLOB}` filled in.
    pub key: String,
    /// Prefixes to fall back on.
    pub restore_keys: Vec<String>,
    /// Paths: relative to the workspace, `~/` for the home directory, or absolute.
    pub paths: Vec<String>,
}

impl CacheStore {
    /// A store of archives in the directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_blobs(Arc::new(FilesystemBlobs::new(root)))
    }

    /// A store of archives in `blobs`.
    pub fn with_blobs(blobs: Arc<dyn BlobStore>) -> Self {
        Self { blobs }
    }

    /// How messages name a blob: its path when it is on this machine.
    fn shown(&self, name: &str) -> String {
        self.blobs
            .local_path(name)
            .map_or_else(|| name.to_owned(), |path| path.display().to_string())
    }

    #[cfg(test)]
    fn archive(&self, key: &str) -> PathBuf {
        PathBuf::from(self.shown(&archive_blob(key)))
    }

    /// Whether an archive for `key` is saved.
    pub fn contains(&self, key: &str) -> bool {
        self.blobs.contains(&archive_blob(key))
    }

    /// Restores the cache into place; `home` resolves `~/` paths.
    pub fn restore(
        &self,
        cache: &ResolvedCache,
        workspace: &Path,
        home: Option<&Path>,
    ) -> Result<CacheHit, CacheError> {
        let error = |message: String| CacheError::Io {
            key: cache.key.clone(),
            message,
        };
        let exact = archive_blob(&cache.key);
        let opened = |name: &str| {
            self.blobs
                .get(name)
                .map_err(|e| error(format!("cannot open `{}`: {e}", self.shown(name))))
        };
        // Opened once for both passes: an archive saved under the same key in between (another run renames
        // its new file into place) cannot swap what was checked for what is written.
        let (archive, mut file, hit) = match opened(&exact)? {
            Some(blob) => (exact, blob, CacheHit::Exact),
            None => match self.newest_with_prefix(&cache.restore_keys) {
                Some((name, prefix)) => match opened(&name)? {
                    Some(blob) => (name, blob, CacheHit::Prefix(prefix)),
                    None => {
                        return Err(error(format!(
                            "cannot open `{}`: it was removed",
                            self.shown(&name)
                        )));
                    }
                },
                None => return Ok(CacheHit::Miss),
            },
        };
        let roots: Vec<PathBuf> = cache
            .paths
            .iter()
            .filter_map(|path| cache_location(path, workspace, home).map(|(_, at)| at))
            .collect();
        let shown = self.shown(&archive);
        let corrupt = |e: std::io::Error| error(format!("corrupt archive `{shown}`: {e}"));
        // Two passes: every entry is checked before the first one is written, so a refused archive restores
        // nothing (a hostile entry at the end must not leave the entries before it in place). The first pass
        // reads headers only and seeks over the data.
        let mut checker = EntryCheck {
            workspace,
            home,
            roots: &roots,
            links: Vec::new(),
        };
        let mut headers = tar::Archive::new(&mut file);
        for entry in headers.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            checker.check(&entry).map_err(error)?;
        }
        file.seek(std::io::SeekFrom::Start(0)).map_err(corrupt)?;
        let mut checker = EntryCheck {
            links: Vec::new(),
            ..checker
        };
        let mut tar = tar::Archive::new(BufReader::new(&mut file));
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            // Checked again as the files land: the file system may have changed since the first pass.
            let target = checker.check(&entry).map_err(error)?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| error(format!("cannot create `{}`: {e}", parent.display())))?;
            }
            entry
                .unpack(&target)
                .map_err(|e| error(format!("cannot write `{}`: {e}", target.display())))?;
        }
        // A restored archive counts as used: `buildit gc` prunes by age, and a cache hit every day must not
        // look as old as its first save. Best effort: a read-only store still restores.
        let _ = self.blobs.touch(&archive);
        Ok(hit)
    }

    /// Saves the cache unless an archive for its key exists; returns whether it saved one.
    pub fn save(
        &self,
        cache: &ResolvedCache,
        workspace: &Path,
        home: Option<&Path>,
    ) -> Result<bool, CacheError> {
        let error = |message: String| CacheError::Io {
            key: cache.key.clone(),
            message,
        };
        let archive = archive_blob(&cache.key);
        if self.blobs.contains(&archive) {
            return Ok(false);
        }
        // Nothing to save: an empty archive would pin the key to nothing forever.
        let any_path = cache
            .paths
            .iter()
            .any(|path| cache_location(path, workspace, home).is_some_and(|(_, at)| at.exists()));
        if !any_path {
            return Ok(false);
        }
        self.blobs
            .put(&archive, &mut |writer| {
                let mut builder = tar::Builder::new(writer);
                builder.follow_symlinks(false);
                for path in &cache.paths {
                    let (prefix, source) =
                        cache_location(path, workspace, home).ok_or_else(|| {
                            std::io::Error::other(format!("path `{path}` cannot be cached"))
                        })?;
                    if !source.exists() {
                        continue;
                    }
                    let name = archive_name(prefix, path);
                    let added = if source.is_dir() {
                        builder.append_dir_all(&name, &source)
                    } else {
                        builder.append_path_with_name(&source, &name)
                    };
                    added.map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot archive `{}`: {e}", source.display()),
                        )
                    })?;
                }
                builder.into_inner().map(drop).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot finish the archive: {e}"))
                })
            })
            .map_err(|e| error(e.to_string()))?;
        Ok(true)
    }

    /// The most recently written archive whose key starts with one of `prefixes`, tried in order.
    fn newest_with_prefix(&self, prefixes: &[String]) -> Option<(String, String)> {
        let entries: Vec<(String, String, std::time::SystemTime)> = self
            .blobs
            .list("")
            .ok()?
            .into_iter()
            .filter_map(|blob| {
                let key = decode_key(blob.name.strip_suffix(".tar")?)?;
                Some((key, blob.name, blob.modified))
            })
            .collect();
        prefixes.iter().find_map(|prefix| {
            entries
                .iter()
                .filter(|(key, _, _)| key.starts_with(prefix.as_str()))
                .max_by_key(|(_, _, modified)| *modified)
                .map(|(_, path, _)| (path.clone(), prefix.clone()))
        })
    }
}

/// What an archive entry may be: inside the cache's paths, a file, directory or symlink, never a symlink in
/// place of a cached path, never written through a symlink (on disk, or made by an earlier entry).
struct EntryCheck<'a> {
    workspace: &'a Path,
    home: Option<&'a Path>,
    roots: &'a [PathBuf],
    /// Where earlier entries of the archive put symlinks.
    links: Vec<PathBuf>,
}

impl EntryCheck<'_> {
    /// Where the entry goes, or why it is refused.
    fn check<R: std::io::Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<PathBuf, String> {
        let stored = entry.path().map_err(|e| e.to_string())?.into_owned();
        let Some(target) = archive_entry_target(&stored, self.workspace, self.home) else {
            return Err(format!(
                "archive entry `{}` has an unsafe path",
                stored.display()
            ));
        };
        // An archive only restores what the cache declares, only as files, directories and symlinks, and
        // never through a symlink (an earlier entry `dir -> /etc` must not redirect `dir/x`).
        if !self.roots.iter().any(|root| target.starts_with(root)) {
            return Err(format!(
                "archive entry `{}` is outside the cache's paths",
                stored.display()
            ));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            return Err(format!(
                "archive entry `{}` is not a file, directory or symlink",
                stored.display()
            ));
        }
        if kind.is_symlink() && self.roots.contains(&target) {
            return Err(format!(
                "archive entry `{}` would replace a cached path with a symlink",
                stored.display()
            ));
        }
        let under_earlier_link = self
            .links
            .iter()
            .any(|link| target != *link && target.starts_with(link));
        if under_earlier_link || through_symlink(&target, self.roots) {
            return Err(format!(
                "archive entry `{}` would be written through a symlink",
                stored.display()
            ));
        }
        if kind.is_symlink() {
            self.links.push(target.clone());
        }
        Ok(target)
    }
}

/// Whether any directory between the cache root that holds `target` and `target` itself is a symlink.
fn through_symlink(target: &Path, roots: &[PathBuf]) -> bool {
    let Some(root) = roots.iter().find(|root| target.starts_with(root)) else {
        return true;
    };
    written_through_symlink(root, target)
}

/// The blob an archive for `key` is stored as.
fn archive_blob(key: &str) -> String {
    format!("{}.tar", encode_key(key))
}

/// File-name-safe, reversible: letters, digits, `.`, `_` and `-` stay, everything else becomes `%XX`.
fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_KEEPS).to_string()
}

/// The key an encoded name stands for; `None` for a name [`encode_key`] never writes (a stray `%`, a byte
/// that should have been encoded, an encoding of something that is not UTF-8).
fn decode_key(encoded: &str) -> Option<String> {
    let key = percent_decode_str(encoded).decode_utf8().ok()?.into_owned();
    (encode_key(&key) == encoded).then_some(key)
}

/// `{hash:GLOB}`: sha256 over the workspace files matching `glob`, in path order (paths and contents), hex.
pub fn hash_files(workspace: &Path, glob: &str) -> Result<String, String> {
    let pattern = Glob::new(glob)?;
    let mut files = Vec::new();
    collect_files(workspace, Path::new(""), &pattern, &mut files).map_err(|e| e.to_string())?;
    files.sort();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for relative in files {
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        let mut file = File::open(workspace.join(&relative))
            .map_err(|e| format!("cannot read `{}`: {e}", relative.display()))?;
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|e| format!("cannot read `{}`: {e}", relative.display()))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn collect_files(
    workspace: &Path,
    dir: &Path,
    glob: &Glob,
    found: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(workspace.join(dir))? {
        let entry = entry?;
        let name = entry.file_name();
        let relative = dir.join(&name);
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if dir.as_os_str().is_empty() && (name == ".git" || name == ".buildit") {
                continue;
            }
            collect_files(workspace, &relative, glob, found)?;
        } else if file_type.is_file() && glob.is_match(&relative.to_string_lossy()) {
            found.push(relative);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(key: &str, restore: &[&str]) -> ResolvedCache {
        ResolvedCache {
            name: "deps".into(),
            key: key.into(),
            restore_keys: restore.iter().map(|s| (*s).to_owned()).collect(),
            paths: vec!["target".into(), "~/.tool/registry".into()],
        }
    }

    #[test]
    fn saves_once_and_restores_exact_and_prefix_matches() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let (workspace, home) = (dir.path().join("ws"), dir.path().join("home"));
        let _ = std::fs::create_dir_all(workspace.join("target/debug"));
        let _ = std::fs::create_dir_all(home.join(".tool/registry"));
        let _ = std::fs::write(workspace.join("target/debug/app"), "binary");
        let _ = std::fs::write(home.join(".tool/registry/index"), "index");
        let store = CacheStore::new(dir.path().join("cache"));
        assert_eq!(
            store
                .save(&cache("deps-linux-abc", &[]), &workspace, Some(&home))
                .ok(),
            Some(true)
        );
        assert_eq!(
            store
                .save(&cache("deps-linux-abc", &[]), &workspace, Some(&home))
                .ok(),
            Some(false),
            "existing keys are kept"
        );
        let _ = std::fs::remove_dir_all(&workspace);
        let _ = std::fs::remove_dir_all(&home);
        // An archive restored counts as used, for `buildit gc`'s age limit.
        let archive = store.archive("deps-linux-abc");
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(90 * 86_400);
        let aged = std::fs::File::options()
            .append(true)
            .open(&archive)
            .and_then(|file| file.set_modified(long_ago));
        assert!(aged.is_ok(), "{aged:?}");
        let hit = store.restore(&cache("deps-linux-abc", &[]), &workspace, Some(&home));
        assert_eq!(hit.ok(), Some(CacheHit::Exact));
        let used = std::fs::metadata(&archive).and_then(|m| m.modified());
        assert!(
            used.as_ref()
                .is_ok_and(|used| *used > long_ago + std::time::Duration::from_secs(86_400)),
            "{used:?}"
        );
        assert_eq!(
            std::fs::read_to_string(workspace.join("target/debug/app"))
                .ok()
                .as_deref(),
            Some("binary")
        );
        assert_eq!(
            std::fs::read_to_string(home.join(".tool/registry/index"))
                .ok()
                .as_deref(),
            Some("index")
        );
        let hit = store.restore(
            &cache("deps-linux-new", &["deps-mac-", "deps-linux-"]),
            &workspace,
            Some(&home),
        );
        assert_eq!(hit.ok(), Some(CacheHit::Prefix("deps-linux-".into())));
        assert_eq!(
            store
                .restore(&cache("other", &["zzz"]), &workspace, Some(&home))
                .ok(),
            Some(CacheHit::Miss)
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary archives are left behind"
        );
    }

    #[test]
    fn hostile_archives_cannot_write_outside_the_cache_paths() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let (workspace, victim) = (dir.path().join("ws"), dir.path().join("victim"));
        let _ = std::fs::create_dir_all(&workspace);
        let _ = std::fs::create_dir_all(&victim);
        let store = CacheStore::new(dir.path().join("cache"));
        let _ = std::fs::create_dir_all(dir.path().join("cache"));
        let hostile = |key: &str, build: &dyn Fn(&mut tar::Builder<File>)| {
            let file = File::create(store.archive(key)).ok();
            if let Some(file) = file {
                let mut builder = tar::Builder::new(file);
                build(&mut builder);
                let _ = builder.finish();
            }
        };
        let data = b"pwned";
        hostile("symlink", &|builder| {
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            let _ = builder.append_link(&mut link, "w/cdir", &victim);
            let mut file = tar::Header::new_gnu();
            file.set_size(data.len() as u64);
            file.set_mode(0o644);
            let _ = builder.append_data(&mut file, "w/cdir/x", &data[..]);
        });
        hostile("hardlink", &|builder| {
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Link);
            link.set_size(0);
            let _ = builder.append_link(&mut link, "w/cdir/y", victim.join("orig"));
        });
        hostile("elsewhere", &|builder| {
            let mut file = tar::Header::new_gnu();
            file.set_size(data.len() as u64);
            file.set_mode(0o644);
            let _ = builder.append_data(&mut file, "w/other/z", &data[..]);
        });
        for key in ["symlink", "hardlink", "elsewhere"] {
            let cache = ResolvedCache {
                name: "c".into(),
                key: key.into(),
                restore_keys: Vec::new(),
                paths: vec!["cdir".into()],
            };
            assert!(
                store.restore(&cache, &workspace, None).is_err(),
                "{key} was restored"
            );
        }
        assert!(!victim.join("x").exists() && !victim.join("orig").exists());
        assert!(!workspace.join("other").exists());
    }

    #[test]
    fn a_refused_archive_restores_nothing() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let (workspace, victim) = (dir.path().join("ws"), dir.path().join("victim"));
        let _ = std::fs::create_dir_all(&workspace);
        let _ = std::fs::create_dir_all(&victim);
        let store = CacheStore::new(dir.path().join("cache"));
        let _ = std::fs::create_dir_all(dir.path().join("cache"));
        let write = |key: &str, entries: &[(&str, Option<&Path>)]| {
            let Ok(file) = File::create(store.archive(key)) else {
                return;
            };
            let mut builder = tar::Builder::new(file);
            for (path, link) in entries {
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o644);
                match link {
                    Some(target) => {
                        header.set_entry_type(tar::EntryType::Symlink);
                        header.set_size(0);
                        let _ = builder.append_link(&mut header, path, target);
                    }
                    None => {
                        header.set_size(2);
                        let _ = builder.append_data(&mut header, path, &b"ok"[..]);
                    }
                }
            }
            let _ = builder.finish();
        };
        // Good entries first, the refused one last: none of them may be left behind.
        write(
            "late-escape",
            &[
                ("w/cdir/first", None),
                ("w/cdir/second", None),
                ("w/other/z", None),
            ],
        );
        write(
            "late-link",
            &[
                ("w/cdir/first", None),
                ("w/cdir/sub", Some(victim.as_path())),
                ("w/cdir/sub/x", None),
            ],
        );
        for key in ["late-escape", "late-link"] {
            let cache = ResolvedCache {
                name: "c".into(),
                key: key.into(),
                restore_keys: Vec::new(),
                paths: vec!["cdir".into()],
            };
            assert!(
                store.restore(&cache, &workspace, None).is_err(),
                "{key} was restored"
            );
            assert!(!workspace.join("cdir").exists(), "{key} left files behind");
        }
        assert!(!victim.join("x").exists());
        assert!(!workspace.join("other").exists());
    }

    #[test]
    fn keys_round_trip_and_paths_cannot_escape() {
        for key in ["cargo-{x}/y z", "plain-key.1", "ünï"] {
            assert_eq!(decode_key(&encode_key(key)).as_deref(), Some(key));
        }
        for stray in ["a%zz", "a%4", "a b", "%41"] {
            assert_eq!(decode_key(stray), None, "{stray}");
        }
    }

    #[test]
    fn hashes_change_with_contents() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let _ = std::fs::write(dir.path().join("Cargo.lock"), "a");
        let first = hash_files(dir.path(), "Cargo.lock");
        let _ = std::fs::write(dir.path().join("Cargo.lock"), "b");
        let second = hash_files(dir.path(), "Cargo.lock");
        assert!(first.is_ok() && second.is_ok() && first != second);
        assert_eq!(first.map(|h| h.len()).ok(), Some(64));
    }
}
