//! Pruning the cache and artifact directories on disk by age and total size, for `buildit gc` and
//! `buildit runs prune`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What pruning one directory removed.
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    pub(crate) entries: usize,
    pub(crate) bytes: u64,
}

/// Removes the entries directly under `dir` (each cache archive, each run's artifacts) last modified more than
/// `max_age` ago, then the oldest of the rest until they hold at most `max_bytes`. A missing `dir` is empty.
/// Only entries that `owned` recognises as BuildIt's (by name and kind) are considered: the artifact directory
/// is configured by the user and may hold other files.
pub(crate) fn prune(
    dir: &Path,
    owned: fn(&str, &std::fs::Metadata) -> bool,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
) -> std::io::Result<Pruned> {
    prune_or_count(dir, owned, max_age, max_bytes, false)
}

/// [`prune`], or with `dry_run` only what it would remove.
pub(crate) fn prune_or_count(
    dir: &Path,
    owned: fn(&str, &std::fs::Metadata) -> bool,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    dry_run: bool,
) -> std::io::Result<Pruned> {
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Pruned::default()),
        Err(error) => return Err(error),
    };
    for entry in listing {
        let entry = entry?;
        let path = entry.path();
        // Temporary files of a cache being written right now are the writer's to clean up.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let metadata = std::fs::symlink_metadata(&path)?;
        if !owned(&entry.file_name().to_string_lossy(), &metadata) {
            continue;
        }
        let modified = newest(&path, &metadata);
        entries.push((modified, size(&path, &metadata), path));
    }
    // Oldest first.
    entries.sort_by_key(|(modified, _, _)| *modified);
    let now = SystemTime::now();
    let mut total: u64 = entries.iter().map(|(_, bytes, _)| bytes).sum();
    let mut pruned = Pruned::default();
    for (modified, bytes, path) in entries {
        let too_old =
            max_age.is_some_and(|max| now.duration_since(modified).is_ok_and(|age| age > max));
        let too_big = max_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            continue;
        }
        if !dry_run {
            remove(&path)?;
        }
        total = total.saturating_sub(bytes);
        pruned.entries += 1;
        pruned.bytes += bytes;
    }
    Ok(pruned)
}

/// Removes a file, or a directory with everything in it (a symlink itself, never what it points to).
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Bytes of a file or directory with everything under it; 0 for one that does not exist.
pub(crate) fn bytes_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |metadata| size(path, &metadata))
}

/// A cache archive: a regular file named `KEY.tar`.
pub(crate) fn is_cache_archive(name: &str, metadata: &std::fs::Metadata) -> bool {
    metadata.is_file() && name.len() > 4 && name.ends_with(".tar")
}

/// A run's artifacts: a directory named like a run id (`18eed40ee02b4296-421e`: hexadecimal, a dash,
/// hexadecimal).
pub(crate) fn is_run_directory(name: &str, metadata: &std::fs::Metadata) -> bool {
    let hex = |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_hexdigit());
    metadata.is_dir() && name.split_once('-').is_some_and(|(a, b)| hex(a) && hex(b))
}

/// When an entry was last written: for a directory, its newest file (a run's artifacts are written over time;
/// the directories' own times change when anything is added or removed, so they say less), or its own time
/// when it holds no file.
fn newest(path: &Path, metadata: &std::fs::Metadata) -> SystemTime {
    let own = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !metadata.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path).into_iter().flatten().flatten();
    children
        .filter_map(|child| {
            let metadata = std::fs::symlink_metadata(child.path()).ok()?;
            Some(newest(&child.path(), &metadata))
        })
        .max()
        .unwrap_or(own)
}

/// Bytes of an entry, with everything under it (symlinks are not followed).
fn size(path: &Path, metadata: &std::fs::Metadata) -> u64 {
    if !metadata.is_dir() {
        return metadata.len();
    }
    let children = std::fs::read_dir(path).into_iter().flatten().flatten();
    children
        .filter_map(|child| {
            let metadata = std::fs::symlink_metadata(child.path()).ok()?;
            Some(size(&child.path(), &metadata))
        })
        .sum()
}

/// `500M`, `10G`, `1.5GiB`, `2048`: a size in bytes (K, M, G, T are powers of 1024, as `du -h` shows them).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: expected a number and a unit, like `10G`"))?;
    let factor: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size `{text}`: the unit is one of K, M, G, T"
            ));
        }
    };
    // Sizes are far below 2^53 bytes, where f64 is exact.
    Ok((number * factor as f64) as u64)
}
