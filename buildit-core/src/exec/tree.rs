//! Directory trees as tar streams, for executors whose workspace is not on the host: packed while they are
//! read, never held in memory, unpacked without writing outside their destination.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use tokio::task::JoinHandle;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use super::cache::written_through_symlink;
use super::executor::{ExecError, inside_workspace, outermost};

/// Bytes in flight between the packing thread and the upload.
const PIPE_BYTES: usize = 256 * 1024;

/// A tar stream of the tree under `root` (entries relative to it), packed on a blocking thread while it is
/// read, and the packing's result. Top-level entries named in `skip_top` are left out; so are sockets and
/// devices. Symlinks are stored as symlinks, never followed.
pub(crate) fn pack_tree(
    root: PathBuf,
    skip_top: &'static [&'static str],
) -> (
    impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    JoinHandle<Result<(), String>>,
) {
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let packing = tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(SyncIoBridge::new(writer));
        builder.follow_symlinks(false);
        append_dir(&mut builder, &root, Path::new(""), skip_top)?;
        let mut bridge = builder
            .into_inner()
            .map_err(|error| format!("cannot pack `{}`: {error}", root.display()))?;
        bridge
            .flush()
            .map_err(|error| format!("cannot pack `{}`: {error}", root.display()))?;
        bridge
            .shutdown()
            .map_err(|error| format!("cannot pack `{}`: {error}", root.display()))
    });
    (ReaderStream::new(reader), packing)
}

fn append_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    relative: &Path,
    skip_top: &[&str],
) -> Result<(), String> {
    let dir = root.join(relative);
    let failed =
        |path: &Path, error: std::io::Error| format!("cannot pack `{}`: {error}", path.display());
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|error| failed(&dir, error))?
        .collect::<Result<_, _>>()
        .map_err(|error| failed(&dir, error))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        if relative.as_os_str().is_empty() && skip_top.iter().any(|skipped| name == *skipped) {
            continue;
        }
        let path = entry.path();
        let inside = relative.join(&name);
        let kind = entry.file_type().map_err(|error| failed(&path, error))?;
        if kind.is_dir() {
            builder
                .append_dir(&inside, &path)
                .map_err(|error| failed(&path, error))?;
            append_dir(builder, root, &inside, skip_top)?;
        } else if kind.is_file() {
            append_file(builder, &path, &inside).map_err(|error| failed(&path, error))?;
        } else if kind.is_symlink() {
            builder
                .append_path_with_name(&path, &inside)
                .map_err(|error| failed(&path, error))?;
        }
    }
    Ok(())
}

/// Appends a file with exactly the size its header gives: a file that grows or shrinks while it is read (a
/// host stage still writing it) is cut or padded with zeros instead of corrupting the stream.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    inside: &Path,
) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&metadata);
    let size = metadata.len();
    let data = std::io::Read::chain(
        std::io::Read::take(file, size),
        std::io::Read::take(std::io::repeat(0), size),
    );
    builder.append_data(&mut header, inside, std::io::Read::take(data, size))
}

/// Unpacks a tar stream whose entries all start with one top-level name (what the Docker archive API sends for
/// a path) into `destination`, without that name: `dist/app.js` lands at `destination/app.js`. Only files,
/// directories and symlinks are written; an entry that would leave `destination`, or be written through a
/// symlink, fails the whole transfer.
pub(crate) async fn unpack_tree<E: std::fmt::Display>(
    stream: impl Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    destination: PathBuf,
) -> Result<(), String> {
    let reader =
        StreamReader::new(stream.map_err(|error| std::io::Error::other(error.to_string())));
    let bridge = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || unpack_into(bridge, &destination))
        .await
        .map_err(|error| format!("unpacking failed: {error}"))?
}

fn unpack_into(reader: impl std::io::Read, destination: &Path) -> Result<(), String> {
    std::fs::create_dir_all(destination)
        .map_err(|error| format!("cannot create `{}`: {error}", destination.display()))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|error| format!("cannot read the archive: {error}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| format!("cannot read the archive: {error}"))?;
        let stored = entry
            .path()
            .map_err(|error| format!("bad entry name: {error}"))?
            .into_owned();
        let mut components = stored.components();
        // The first component is the name of what was asked for.
        components.next();
        let inside: PathBuf = components.collect();
        if inside
            .components()
            .any(|component| !matches!(component, Component::Normal(_)))
        {
            return Err(format!("entry `{}` has an unsafe path", stored.display()));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        let target = if inside.as_os_str().is_empty() {
            destination.to_path_buf()
        } else {
            destination.join(&inside)
        };
        if written_through_symlink(destination, &target) {
            return Err(format!(
                "entry `{}` would be written through a symlink",
                stored.display()
            ));
        }
        if inside.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            // What was asked for is itself a symlink: copied out, it would point into the host (and a cache
            // saved from it would archive what it points to there).
            if kind.is_symlink() {
                return Err(format!(
                    "`{}` is a symlink; only files and directories are copied out",
                    stored.display()
                ));
            }
            // A single file was asked for: it lands at `destination` itself, which is then not a directory.
            std::fs::remove_dir(destination)
                .map_err(|error| format!("cannot write `{}`: {error}", destination.display()))?;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("cannot create `{}`: {error}", parent.display()))?;
        }
        // Directories keep the default mode: a read-only one (a Go module cache) would refuse the files that
        // follow it in the archive.
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|error| format!("cannot create `{}`: {error}", target.display()))?;
            continue;
        }
        entry
            .unpack(&target)
            .map_err(|error| format!("cannot write `{}`: {error}", target.display()))?;
    }
    Ok(())
}

/// The paths to copy out of a workspace into the host directory `into`: `paths` without those nested in
/// another (they would unpack twice, the second time through what the first one wrote), or an error naming the
/// first whose place in `into` would be written through a symlink.
pub(crate) fn copy_out_paths(paths: Vec<PathBuf>, into: &Path) -> Result<Vec<PathBuf>, ExecError> {
    let paths = outermost(paths);
    match paths
        .iter()
        .find(|path| written_through_symlink(into, &into.join(path)))
    {
        Some(path) => Err(ExecError::Backend(format!(
            "`{}` would be written through a symlink",
            path.display()
        ))),
        None => Ok(paths),
    }
}

/// `paths` as paths inside the workspace, or an error naming the first that is not.
pub(crate) fn workspace_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ExecError> {
    paths
        .iter()
        .map(|path| {
            inside_workspace(path).ok_or_else(|| {
                ExecError::Backend(format!(
                    "`{}` is not a path inside the workspace",
                    path.display()
                ))
            })
        })
        .collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            // Bypasses the builder's own path checks, as a hostile archive would.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[tokio::test]
    async fn packs_a_tree_and_unpacks_it_under_the_top_name() {
        let source = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(source.path().join("dist/sub")).unwrap();
        std::fs::write(source.path().join("dist/sub/a.txt"), "a").unwrap();
        std::fs::create_dir_all(source.path().join(".buildit")).unwrap();
        std::fs::write(source.path().join(".buildit/db"), "state").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", source.path().join("dist/link")).unwrap();
        let (stream, packing) = pack_tree(source.path().to_path_buf(), &[".buildit"]);
        let bytes: Vec<Bytes> = stream.try_collect().await.unwrap();
        packing.await.unwrap().unwrap();
        let mut names: Vec<String> = tar::Archive::new(bytes.concat().as_slice())
            .entries()
            .unwrap()
            .map(|entry| entry.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["dist", "dist/link", "dist/sub", "dist/sub/a.txt"]);

        // Docker names entries after the path asked for: `ws/dist/...`.
        let mut wrapped = tar::Builder::new(Vec::new());
        wrapped.follow_symlinks(false);
        wrapped.append_dir_all("ws", source.path()).unwrap();
        let wrapped = wrapped.into_inner().unwrap();
        let into = tempfile::tempdir().unwrap();
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(wrapped))]);
        unpack_tree(stream, into.path().to_path_buf())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(into.path().join("dist/sub/a.txt")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_link(into.path().join("dist/link")).unwrap(),
            Path::new("sub/a.txt")
        );
    }

    #[test]
    fn refuses_entries_that_leave_the_destination() {
        let escape = archive(&[("ws/../../evil", tar::EntryType::Regular, b"x", None)]);
        let into = tempfile::tempdir().unwrap();
        let error = unpack_into(escape.as_slice(), &into.path().join("d")).unwrap_err();
        assert!(error.contains("unsafe path"), "{error}");
        assert!(!into.path().join("evil").exists());

        let outside = tempfile::tempdir().unwrap();
        let link = outside.path().display().to_string();
        let through = archive(&[
            ("ws/dir", tar::EntryType::Symlink, b"", Some(&link)),
            ("ws/dir/planted", tar::EntryType::Regular, b"x", None),
        ]);
        let error = unpack_into(through.as_slice(), &into.path().join("e")).unwrap_err();
        assert!(error.contains("through a symlink"), "{error}");
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn a_symlink_asked_for_is_refused() {
        let link = archive(&[("node_modules", tar::EntryType::Symlink, b"", Some("/root"))]);
        let into = tempfile::tempdir().unwrap();
        let error = unpack_into(link.as_slice(), &into.path().join("node_modules")).unwrap_err();
        assert!(error.contains("is a symlink"), "{error}");
        assert!(!into.path().join("node_modules").is_symlink());
    }

    #[test]
    fn a_single_file_lands_at_the_destination() {
        let file = archive(&[("report.xml", tar::EntryType::Regular, b"<ok/>", None)]);
        let into = tempfile::tempdir().unwrap();
        let target = into.path().join("report.xml");
        unpack_into(file.as_slice(), &target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "<ok/>");
    }
}
