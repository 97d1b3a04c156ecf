//! Named blobs (cache archives, artifact files) behind one trait: a directory today, an object store later.

mod api;
mod filesystem;

pub use api::{Blob, BlobInfo, BlobStore};
pub use filesystem::FilesystemBlobs;
