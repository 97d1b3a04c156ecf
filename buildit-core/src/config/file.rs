//! Reading a configuration file from disk, bounded while it is read: never more than the size limit, never a block.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::reader::MAX_FILE_BYTES;

/// Why a configuration file could not be read as text.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ReadFileError {
    /// Nothing at that path.
    #[error("`{}` not found", path.display())]
    #[diagnostic(code(buildit::config::unreadable))]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// A directory, FIFO, device or socket: something that may never end or never answer.
    #[error("`{}` is {kind}, not a regular file", path.display())]
    #[diagnostic(
        code(buildit::config::unreadable),
        help("give the path of a file; to read generated text, write it to a file first")
    )]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead, with an article: "a directory", "a FIFO".
        kind: &'static str,
    },
    /// Larger than [`MAX_FILE_BYTES`] (checked while reading, so a growing file is refused too).
    #[error("`{}` is larger than 1 MiB ({MAX_FILE_BYTES} bytes)", path.display())]
    #[diagnostic(
        code(buildit::config::limit),
        help("split the pipeline, or generate fewer stages with a `matrix`")
    )]
    TooLarge {
        /// The path.
        path: PathBuf,
    },
    /// Not UTF-8 text.
    #[error("`{}` is not valid UTF-8 (first bad byte at offset {offset})", path.display())]
    #[diagnostic(code(buildit::config::unreadable), help("save the file as UTF-8"))]
    NotUtf8 {
        /// The path.
        path: PathBuf,
        /// Offset of the first invalid byte.
        offset: usize,
        /// The valid text before it, for a line and column.
        valid: String,
    },
    /// Any other I/O error (permissions, ...).
    #[error("cannot read `{}`: {source}", path.display())]
    #[diagnostic(code(buildit::config::unreadable))]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads the configuration file at `path` as UTF-8 text of at most [`MAX_FILE_BYTES`] bytes.
///
/// The file is opened without blocking (a FIFO with no writer would otherwise wait forever) and refused unless it
/// is a regular file; then at most one byte more than the limit is read, so `/dev/zero`-like or growing files cost
/// constant time and memory.
pub fn read_config_file(path: &Path) -> Result<String, ReadFileError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ReadFileError::NotFound {
                path: path.to_owned(),
            }
        } else {
            ReadFileError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)
        .map_err(io)?;
    let file_type = file.metadata().map_err(io)?.file_type();
    if !file_type.is_file() {
        return Err(ReadFileError::NotRegular {
            path: path.to_owned(),
            kind: describe(file_type),
        });
    }
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReadFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        let mut bytes = error.into_bytes();
        bytes.truncate(offset);
        ReadFileError::NotUtf8 {
            path: path.to_owned(),
            offset,
            valid: String::from_utf8(bytes).unwrap_or_default(),
        }
    })
}

fn describe(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads a file a pipeline includes: `relative` (a `/`-separated path without `..`, as the include loader gives
/// it) under `base`, the pipeline's directory. No part of the path below `base` may be a symbolic link: a
/// link could lead an include, and its text shown in diagnostics, out of the directory (`~/.netrc`).
pub fn read_included_file(base: &Path, relative: &str) -> Result<String, String> {
    let mut path = base.to_path_buf();
    for part in relative.split('/') {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "`{}` is a symbolic link; included files are read without following links",
                    path.display()
                ));
            }
            // A missing part is said by the read below.
            _ => {}
        }
    }
    read_config_file(&path).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("cannot create a temporary directory: {error}"),
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        if let Err(error) = std::fs::write(path, bytes) {
            panic!("cannot write {}: {error}", path.display());
        }
    }

    #[test]
    fn refuses_special_files_without_blocking() {
        let dir = temp_dir();
        let fifo = dir.path().join("fifo");
        if let Err(error) = nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU) {
            panic!("mkfifo: {error}");
        }
        for (path, expected) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/urandom"), "a character device"),
            (dir.path(), "a directory"),
            (fifo.as_path(), "a FIFO"),
        ] {
            let started = std::time::Instant::now();
            match read_config_file(path) {
                Err(ReadFileError::NotRegular { kind, .. }) => assert_eq!(kind, expected),
                other => panic!("{}: {other:?}", path.display()),
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn bounds_size_and_reports_utf8() {
        let dir = temp_dir();
        let at_limit = dir.path().join("at-limit.kdl");
        write(&at_limit, &vec![b' '; MAX_FILE_BYTES]);
        assert_eq!(
            read_config_file(&at_limit).map(|text| text.len()).ok(),
            Some(MAX_FILE_BYTES)
        );
        let over = dir.path().join("over.kdl");
        write(&over, &vec![b' '; MAX_FILE_BYTES + 1]);
        assert!(matches!(
            read_config_file(&over),
            Err(ReadFileError::TooLarge { .. })
        ));
        let latin1 = dir.path().join("latin1.kdl");
        write(&latin1, b"stage \"caf\xe9\"");
        match read_config_file(&latin1) {
            Err(ReadFileError::NotUtf8 { offset, valid, .. }) => {
                assert_eq!(offset, 10);
                assert_eq!(valid, "stage \"caf");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_config_file(&dir.path().join("missing.kdl")),
            Err(ReadFileError::NotFound { .. })
        ));
    }
}
