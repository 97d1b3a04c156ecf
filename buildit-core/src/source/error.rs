//! Why a source could not be stored or prepared.

use std::path::PathBuf;

use super::ids::{ArchiveDigest, CommitId};

/// Why a source could not be stored or prepared. Never a panic: every bad input (a hostile archive, an unknown
/// commit, an unreachable repository) is one of these.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum SourceError {
    /// The host directory does not exist or is not a directory.
    #[error("workspace `{}` is not a directory", path.display())]
    #[diagnostic(code(buildit::source::not_a_directory))]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory to prepare into exists and is not empty.
    #[error("cannot prepare a source into `{}`: {problem}", path.display())]
    #[diagnostic(
        code(buildit::source::destination),
        help("give a directory that does not exist yet, or an empty one")
    )]
    Destination {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The repository is not something git should be given.
    #[error("invalid git repository `{repository}`: {problem}")]
    #[diagnostic(code(buildit::source::invalid_repository))]
    InvalidRepository {
        /// The repository, credentials hidden.
        repository: String,
        /// What is wrong.
        problem: String,
    },
    /// `git` could not be started.
    #[error("cannot run git: {source}")]
    #[diagnostic(
        code(buildit::source::git_missing),
        help("install git and make sure it is in PATH")
    )]
    GitUnavailable {
        /// Why.
        source: std::io::Error,
    },
    /// A git command failed (the repository cannot be reached, the checkout cannot be written).
    #[error("git {step} failed for `{repository}`: {message}")]
    #[diagnostic(code(buildit::source::git))]
    Git {
        /// What was being done: `init`, `fetch`, `checkout`.
        step: &'static str,
        /// The repository, credentials hidden.
        repository: String,
        /// Git's own message (its last lines), credentials hidden.
        message: String,
    },
    /// The repository was reached but has no such commit.
    #[error("commit `{commit}` is not in `{repository}`")]
    #[diagnostic(
        code(buildit::source::unknown_commit),
        help("a commit is fetched by its full id; check that it was pushed")
    )]
    UnknownCommit {
        /// The repository, credentials hidden.
        repository: String,
        /// The commit.
        commit: CommitId,
    },
    /// After the checkout, HEAD is not the commit asked for, or not detached.
    #[error("checkout of `{expected}` left HEAD at `{found}`")]
    #[diagnostic(code(buildit::source::wrong_checkout))]
    WrongCheckout {
        /// The commit asked for.
        expected: CommitId,
        /// What HEAD is.
        found: String,
    },
    /// An upload is larger than the limit; nothing was stored.
    #[error("upload is larger than the limit of {limit} bytes")]
    #[diagnostic(
        code(buildit::source::upload_too_large),
        help(
            "leave build outputs and dependencies out of the upload, or raise `sources max-upload=` in the system configuration"
        )
    )]
    UploadTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// No archive with this digest is stored.
    #[error("no uploaded source `{digest}`")]
    #[diagnostic(code(buildit::source::not_found))]
    NotFound {
        /// The digest asked for.
        digest: ArchiveDigest,
    },
    /// The stored archive's bytes no longer have its digest (disk corruption, a changed file).
    #[error("stored source `{digest}` is corrupt: its sha256 is now `{found}`")]
    #[diagnostic(
        code(buildit::source::corrupt),
        help(
            "upload the source again; the corrupt file is replaced by the next upload of the same bytes"
        )
    )]
    DigestMismatch {
        /// The digest it is stored under.
        digest: ArchiveDigest,
        /// The sha256 of what is there now.
        found: String,
    },
    /// The archive cannot be read as a tar archive.
    #[error("uploaded source `{digest}` is not a valid tar archive: {message}")]
    #[diagnostic(code(buildit::source::invalid_archive))]
    InvalidArchive {
        /// The archive.
        digest: ArchiveDigest,
        /// What the tar reader said.
        message: String,
    },
    /// An archive entry breaks the path rules; nothing is left unpacked.
    #[error("archive entry `{entry}` {problem}")]
    #[diagnostic(
        code(buildit::source::unsafe_entry),
        help("an uploaded source holds only files, directories and symlinks that stay inside it")
    )]
    UnsafeEntry {
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why it is refused.
        problem: String,
    },
    /// The archive holds more entries than the limit.
    #[error("archive has more than {limit} entries")]
    #[diagnostic(
        code(buildit::source::too_many_entries),
        help("raise `sources max-entries=` in the system configuration")
    )]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The archive's files add up to more than the limit.
    #[error("archive unpacks to more than {limit} bytes")]
    #[diagnostic(
        code(buildit::source::unpacked_too_large),
        help("raise `sources max-upload=` in the system configuration")
    )]
    UnpackedTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// Reading or writing a file failed.
    #[error("cannot access `{}`: {source}", path.display())]
    #[diagnostic(code(buildit::source::io))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An upload could not be read from its stream.
    #[error("cannot read the upload: {source}")]
    #[diagnostic(code(buildit::source::upload))]
    Upload {
        /// Why.
        source: std::io::Error,
    },
}

/// Maps an I/O error on `path` to [`SourceError::Io`].
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SourceError {
    let path = path.into();
    move |source| SourceError::Io { path, source }
}
