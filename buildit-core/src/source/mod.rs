//! Workspace sources: a host directory, a git commit or an uploaded archive, prepared into the directory a run
//! uses.

mod archive;
mod error;
mod git;
mod ids;
mod prepare;
mod store;

pub use crate::system::SourceLimits;
pub use error::SourceError;
pub use ids::{ArchiveDigest, CommitId, IdError};
pub use prepare::{WorkspaceSource, prepare};
pub use store::SourceStore;
