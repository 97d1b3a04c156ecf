//! Copying files in and out of containers through the engine's archive API (artifacts and caches, the first
//! copy of a workspace).

use std::path::{Path, PathBuf};

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt as _;

use super::engine::{DockerExecutor, backend, is_not_found};
use crate::exec::executor::ExecError;
use crate::exec::tree::{copy_out_paths, pack_tree, unpack_tree};

impl DockerExecutor {
    /// Copies the host tree `from` to `to` (a path inside the container `holder`), over what is there.
    pub(super) async fn upload_tree(
        &self,
        holder: &str,
        from: &Path,
        to: &Path,
        skip_top: &'static [&'static str],
    ) -> Result<(), String> {
        let (stream, packing) = pack_tree(from.to_path_buf(), skip_top);
        let options = UploadToContainerOptionsBuilder::new()
            .path(&to.display().to_string())
            .build();
        let uploaded = self
            .docker
            .upload_to_container(holder, Some(options), bollard::body_try_stream(stream))
            .await;
        // A packing error cuts the stream short: it is the real cause of a failed (or truncated) upload.
        packing
            .await
            .map_err(|error| format!("packing failed: {error}"))??;
        uploaded.map_err(|error| error.to_string())
    }

    /// Copies `paths` (inside the workspace, from [`workspace_paths`](crate::exec::tree::workspace_paths)) from
    /// `workspace` inside the container `holder` into the host directory `into`, at the same relative places;
    /// missing ones are skipped.
    pub(super) async fn copy_out(
        &self,
        holder: &str,
        workspace: &Path,
        paths: Vec<PathBuf>,
        into: &Path,
    ) -> Result<(), ExecError> {
        for path in &copy_out_paths(paths, into)? {
            let inside = workspace.join(path);
            let options = DownloadFromContainerOptionsBuilder::new()
                .path(&inside.display().to_string())
                .build();
            let mut download = self
                .docker
                .download_from_container(holder, Some(options))
                .peekable();
            // The engine answers a missing path with 404 before any byte: nothing to copy.
            match std::pin::Pin::new(&mut download).peek().await {
                Some(Err(error)) if is_not_found(error) => continue,
                _ => {}
            }
            unpack_tree(download, into.join(path))
                .await
                .map_err(|error| {
                    backend(
                        &format!(
                            "cannot copy `{}` out of the workspace volume",
                            path.display()
                        ),
                        error,
                    )
                })?;
        }
        Ok(())
    }
}
