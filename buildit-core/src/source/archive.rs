//! Unpacks a stored archive into a fresh directory under the path rules: nothing absolute, no `..`, no `.git`,
//! only files, directories and symlinks that resolve inside, within the entry and size limits, and only when
//! the bytes still have the archive's digest.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read, Seek as _};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::error::{SourceError, io};
use super::ids::ArchiveDigest;
use crate::system::SourceLimits;

/// How many symlinks one path may go through before it counts as a loop (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Unpacks the archive at `archive`, stored under `digest`, into the empty directory `into`.
///
/// Two passes over one open file: the first reads every entry and checks it and the archive's digest without
/// writing anything, so a refused archive leaves `into` empty; the second writes, checking every entry and the
/// digest again (the file cannot be swapped in between, and a change in place is caught by the digest). A
/// failure in the second pass can leave part of the archive in `into`; the caller removes it.
pub(crate) fn unpack(
    archive: &Path,
    digest: &ArchiveDigest,
    into: &Path,
    limits: SourceLimits,
) -> Result<(), SourceError> {
    let file = File::open(archive).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SourceError::NotFound {
                digest: digest.clone(),
            }
        } else {
            io(archive)(source)
        }
    })?;
    pass(&file, archive, digest, limits, None)?;
    pass(&file, archive, digest, limits, Some(into))
}

/// One read of the whole archive: checks every entry, writes it when `into` is given, and checks the digest.
fn pass(
    file: &File,
    archive: &Path,
    digest: &ArchiveDigest,
    limits: SourceLimits,
    into: Option<&Path>,
) -> Result<(), SourceError> {
    let mut reader = Hashing {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    };
    reader
        .inner
        .seek(std::io::SeekFrom::Start(0))
        .map_err(io(archive))?;
    let mut checker = Checker::new(limits);
    let result = (|| -> Result<(), SourceError> {
        let invalid = |error: std::io::Error| SourceError::InvalidArchive {
            digest: digest.clone(),
            message: error.to_string(),
        };
        let mut tar = tar::Archive::new(&mut reader);
        for entry in tar.entries().map_err(invalid)? {
            let mut entry = entry.map_err(invalid)?;
            let action = checker.check(&entry)?;
            if let Some(into) = into {
                write(&mut entry, &action, into)?;
            }
        }
        checker.links_stay_inside()
    })();
    // Read to the end whatever happened, so that a corrupt archive is reported as corrupt rather than by
    // whichever entry its damage made look wrong.
    let drained = std::io::copy(&mut reader, &mut std::io::sink());
    let found = ArchiveDigest::from_bytes(&reader.hasher.finalize());
    if drained.is_ok() && found != *digest {
        return Err(SourceError::DigestMismatch {
            digest: digest.clone(),
            found: found.to_string(),
        });
    }
    result?;
    drained.map(|_| ()).map_err(io(archive))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// What to do with one entry, at its path relative to the destination.
#[derive(Debug)]
enum Action {
    /// Nothing (a pax global header, the archive's `./`).
    Skip,
    Directory(PathBuf),
    File(PathBuf),
    Symlink(PathBuf, PathBuf),
}

/// The path rules and limits, applied entry by entry.
struct Checker {
    limits: SourceLimits,
    entries: u64,
    bytes: u64,
    /// Every path an entry made, and the directories above them.
    paths: HashSet<PathBuf>,
    /// The symlinks made so far: where each is, and what it points to.
    links: BTreeMap<PathBuf, PathBuf>,
}

impl Checker {
    fn new(limits: SourceLimits) -> Self {
        Self {
            limits,
            entries: 0,
            bytes: 0,
            paths: HashSet::new(),
            links: BTreeMap::new(),
        }
    }

    fn check<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Action, SourceError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(SourceError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            // `git archive` starts with one (it records the commit); it describes, it writes nothing.
            return Ok(Action::Skip);
        }
        let shown = shown(&entry.path_bytes());
        let refuse = |problem: &str| SourceError::UnsafeEntry {
            entry: shown.clone(),
            problem: problem.to_owned(),
        };
        let stored = entry
            .path()
            .map_err(|_| refuse("has a path that cannot be read"))?;
        let relative = relative_path(&stored).map_err(&refuse)?;
        if relative.as_os_str().is_empty() {
            return if kind.is_dir() {
                Ok(Action::Skip)
            } else {
                Err(refuse("has an empty path"))
            };
        }
        // Never through a symlink an earlier entry made, never in its place.
        // The entry's own path and each directory above it, looked up: linear in its depth, however many links
        // came before (a scan of every link per entry made an archive of 50,000 links take minutes).
        if let Some(link) = relative
            .ancestors()
            .filter(|ancestor| !ancestor.as_os_str().is_empty())
            .find(|ancestor| self.links.contains_key(*ancestor))
        {
            return Err(refuse(&if link == relative {
                "replaces a symlink made by an earlier entry".to_owned()
            } else {
                format!("would be written through the symlink `{}`", link.display())
            }));
        }
        let action = match kind {
            tar::EntryType::Directory => Action::Directory(relative.clone()),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.bytes = self.bytes.saturating_add(entry.size());
                if self.bytes > self.limits.max_upload {
                    return Err(SourceError::UnpackedTooLarge {
                        limit: self.limits.max_upload,
                    });
                }
                Action::File(relative.clone())
            }
            tar::EntryType::Symlink => {
                if self.paths.contains(&relative) {
                    return Err(refuse("replaces an earlier entry with a symlink"));
                }
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .filter(|target| !target.as_os_str().is_empty())
                    .ok_or_else(|| refuse("is a symlink without a target"))?
                    .into_owned();
                if target.has_root() {
                    return Err(refuse(&format!(
                        "is a symlink to the absolute path `{}`",
                        target.display()
                    )));
                }
                self.links.insert(relative.clone(), target.clone());
                Action::Symlink(relative.clone(), target)
            }
            tar::EntryType::Link => return Err(refuse("is a hard link")),
            tar::EntryType::Char | tar::EntryType::Block => return Err(refuse("is a device")),
            tar::EntryType::Fifo => return Err(refuse("is a FIFO")),
            tar::EntryType::GNUSparse => return Err(refuse("is a sparse file")),
            _ => return Err(refuse("is not a file, directory or symlink")),
        };
        for ancestor in relative.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.paths.insert(ancestor.to_path_buf()) {
                break;
            }
        }
        Ok(action)
    }

    /// Every symlink, followed through the others as the file system would, stays inside the destination.
    /// Checked once all are known: `a/l -> ../../x` looks inside while `a` is a directory, and is not once a
    /// later entry makes `a` a symlink to somewhere shallower.
    fn links_stay_inside(&self) -> Result<(), SourceError> {
        for (link, target) in &self.links {
            if !resolves_inside(&self.links, link, target) {
                return Err(SourceError::UnsafeEntry {
                    entry: link.display().to_string(),
                    problem: format!(
                        "is a symlink to `{}`, which leads outside the source (or into a loop)",
                        target.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The entry's path with `.` removed; refused when absolute, with `..`, or inside a `.git` directory.
fn relative_path(stored: &Path) -> Result<PathBuf, &'static str> {
    let mut relative = PathBuf::new();
    for component in stored.components() {
        match component {
            Component::Normal(name) => {
                // A `.git` in a workspace is a repository whose configuration can name programs (hooks,
                // `core.fsmonitor`) that run when git is used there; a git source makes its own.
                if name.as_encoded_bytes().eq_ignore_ascii_case(b".git") {
                    return Err(
                        "is inside a `.git` directory, which an uploaded source never carries",
                    );
                }
                relative.push(name);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err("goes up with `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path"),
        }
    }
    Ok(relative)
}

/// Whether the symlink at `link` pointing to `target` resolves inside the destination, following the
/// archive's other symlinks (paths no entry made count as directories: the link may dangle, but a stage
/// writing through it must still land inside).
fn resolves_inside(links: &BTreeMap<PathBuf, PathBuf>, link: &Path, target: &Path) -> bool {
    let mut current: Vec<OsString> = link
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut pending: VecDeque<OsString> = target
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        match Path::new(&component).components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                if current.pop().is_none() {
                    return false;
                }
            }
            Some(Component::Normal(name)) => {
                current.push(name.to_os_string());
                let here: PathBuf = current.iter().collect();
                if let Some(next) = links.get(&here) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS || next.has_root() {
                        return false;
                    }
                    current.pop();
                    for part in next.components().rev() {
                        pending.push_front(part.as_os_str().to_os_string());
                    }
                }
            }
            Some(Component::RootDir | Component::Prefix(_)) => return false,
        }
    }
    true
}

/// Writes one checked entry under `into`.
fn write<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    action: &Action,
    into: &Path,
) -> Result<(), SourceError> {
    let parent_of = |relative: &Path| -> Result<(), SourceError> {
        let target = into.join(relative);
        // The checks above rule this out for what the archive makes; this rules out the file system changing
        // under us (the destination is the caller's, and a process of theirs may write in it).
        if through_symlink(into, &target) {
            return Err(SourceError::UnsafeEntry {
                entry: relative.display().to_string(),
                problem: "would be written through a symlink".to_owned(),
            });
        }
        match target.parent() {
            Some(parent) => std::fs::create_dir_all(parent).map_err(io(parent)),
            None => Ok(()),
        }
    };
    match action {
        Action::Skip => Ok(()),
        Action::Directory(relative) => {
            parent_of(relative)?;
            let target = into.join(relative);
            // Made with the default mode rather than the archive's: a directory stored read-only would stop
            // the entries below it from being written, and its removal afterwards.
            match std::fs::create_dir(&target) {
                Err(error)
                    if error.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() =>
                {
                    Ok(())
                }
                other => other.map_err(io(&target)),
            }
        }
        Action::File(relative) => {
            parent_of(relative)?;
            let target = into.join(relative);
            // The tar crate writes a new file (an existing one is unlinked first, never written through), and
            // drops setuid, setgid and sticky bits.
            entry.unpack(&target).map(|_| ()).map_err(io(&target))
        }
        Action::Symlink(relative, link_target) => {
            parent_of(relative)?;
            let target = into.join(relative);
            std::os::unix::fs::symlink(link_target, &target).map_err(io(&target))
        }
    }
}

/// Whether a directory between `root` (excluded) and `target` (excluded) is a symlink.
fn through_symlink(root: &Path, target: &Path) -> bool {
    let mut current = target.parent();
    while let Some(dir) = current {
        if dir == root || !dir.starts_with(root) {
            break;
        }
        if dir
            .symlink_metadata()
            .is_ok_and(|metadata| metadata.file_type().is_symlink())
        {
            return true;
        }
        current = dir.parent();
    }
    false
}

/// An entry's path for a message: lossy, at most 200 characters.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> BTreeMap<PathBuf, PathBuf> {
        pairs
            .iter()
            .map(|(link, target)| (PathBuf::from(link), PathBuf::from(target)))
            .collect()
    }

    #[test]
    fn symlinks_are_followed_through_each_other() {
        let inside = links(&[("a/l", "../b"), ("c", "a/l/x")]);
        for (link, target) in &inside {
            assert!(resolves_inside(&inside, link, target), "{link:?}");
        }
        // `a/b/e` looks inside as text, but `a/b/d` leads to the top first.
        let tricky = links(&[("a/b/d", "../../q"), ("a/b/e", "d/../../..")]);
        assert!(!resolves_inside(
            &tricky,
            Path::new("a/b/e"),
            Path::new("d/../../..")
        ));
        assert!(!resolves_inside(&inside, Path::new("x"), Path::new("..")));
        let looping = links(&[("a", "b"), ("b", "a")]);
        assert!(!resolves_inside(&looping, Path::new("a"), Path::new("b")));
        let absolute = links(&[("a", "/etc")]);
        assert!(!resolves_inside(
            &absolute,
            Path::new("b"),
            Path::new("a/x")
        ));
    }

    #[test]
    fn paths_are_relative_without_dot_dot_or_git() {
        assert_eq!(
            relative_path(Path::new("./src/./main.rs")).ok(),
            Some(PathBuf::from("src/main.rs"))
        );
        assert!(relative_path(Path::new("/etc/passwd")).is_err());
        assert!(relative_path(Path::new("a/../../x")).is_err());
        assert!(relative_path(Path::new("sub/.GIT/config")).is_err());
        assert!(relative_path(Path::new("a/.gitignore")).is_ok());
    }
}
