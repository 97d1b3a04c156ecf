//! Workspace sources: a host directory, a git commit or an uploaded archive, prepared into the directory a run
//! uses.

mod archive;
mod error;
mod fetchable;
mod git;
mod ids;
mod links;
mod prepare;
mod store;

pub use crate::system::SourceLimits;
pub use error::SourceError;
pub use fetchable::FetchableSource;
pub use ids::{ArchiveDigest, CommitId, IdError};
pub use links::ArchiveLinks;
pub use prepare::{WorkspaceSource, prepare};
pub use store::SourceStore;
