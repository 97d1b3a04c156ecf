//! Workspace sources: a host directory, a git commit or an uploaded archive, prepared into the directory a run
//! uses.

mod archive;
mod error;
mod fetchable;
mod git;
mod git_script;
mod ids;
mod links;
mod prepare;
mod store;

pub use crate::system::SourceLimits;
pub use error::SourceError;
pub use fetchable::FetchableSource;
#[cfg(feature = "kubernetes")]
pub(crate) use git::{check_repository as check_git_repository, password as url_password};
pub use git_script::{
    COMMIT_VARIABLE, REPOSITORY_VARIABLE, UNKNOWN_COMMIT_EXIT, WRONG_CHECKOUT_EXIT, checkout_script,
};
pub use ids::{ArchiveDigest, CommitId, IdError};
pub use links::ArchiveLinks;
pub use prepare::{WorkspaceSource, prepare};
pub use store::SourceStore;
