//! Moving files in and out of a run's workspace claim: tar streams through `pods/exec` of the pod that holds
//! it (`kubectl cp`'s way), packed and unpacked on this side with the same path rules as Docker's.

use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use kube::api::AttachParams;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::io::{ReaderStream, StreamReader};

use super::executor::{KubernetesExecutor, backend};
use super::workspace_manifest::HOLDER_CONTAINER;
use crate::exec::cache::written_through_symlink;
use crate::exec::executor::{ExecError, outermost};
use crate::exec::tree::{pack_tree, unpack_tree};

/// The most of a command's standard error kept for its error message.
const KEPT_STDERR: usize = 8 * 1024;
/// Buffer of each stream of an exec (kube-rs's pipes between the WebSocket and this side).
const STREAM_BUFFER: usize = 256 * 1024;

/// Writes one path's tree to standard output, from the directory that holds it (so that its entries start with
/// its own name, as the unpacking expects), or nothing at all when it does not exist.
const PACK_ONE: &str = r#"cd -- "$1" 2>/dev/null || exit 0; if [ -e "$2" ] || [ -L "$2" ]; then exec tar cf - -- "$2"; fi"#;

impl KubernetesExecutor {
    /// Copies the host tree `from` to `to` (a directory inside the holder pod `pod`), over what is there; the
    /// top-level entries named in `skip_top` are left out.
    pub(super) async fn put_tree(
        &self,
        pod: &str,
        from: &Path,
        to: &Path,
        skip_top: &'static [&'static str],
    ) -> Result<(), ExecError> {
        let to = to.display().to_string();
        let command = ["tar", "xf", "-", "-C", to.as_str()];
        let mut process = self
            .pods()
            .exec(pod, command, &params(true))
            .await
            .map_err(|error| backend("cannot copy files into the workspace claim", &error))?;
        let (Some(mut stdin), Some(stdout), Some(stderr), Some(status)) = (
            process.stdin(),
            process.stdout(),
            process.stderr(),
            process.take_status(),
        ) else {
            return Err(ExecError::Backend(
                "the copy into the workspace claim has no streams".to_owned(),
            ));
        };
        let errors = tokio::spawn(kept_text(stderr));
        let drained = tokio::spawn(discard(stdout));
        let (stream, packing) = pack_tree(from.to_path_buf(), skip_top);
        let mut reader = StreamReader::new(stream);
        let sent = tokio::io::copy(&mut reader, &mut stdin).await;
        // Closing stdin ends the archive for `tar` on the other side.
        let _ = stdin.shutdown().await;
        drop(stdin);
        let status = status.await;
        let errors = errors.await.unwrap_or_default();
        let _ = drained.await;
        let _ = process.join().await;
        // A packing error cuts the stream short: it is the real cause of a failed (or truncated) copy.
        packing
            .await
            .map_err(|error| ExecError::Backend(format!("packing failed: {error}")))?
            .map_err(ExecError::Backend)?;
        sent.map_err(|error| {
            ExecError::Backend(format!(
                "cannot copy files into the workspace claim: {error}"
            ))
        })?;
        succeeded(status, &errors, "copying files into the workspace claim")
    }

    /// Copies `paths` (inside the workspace) from `workspace` in the holder pod `pod` into the host directory
    /// `into`, at the same relative places; missing ones are skipped.
    pub(super) async fn copy_out(
        &self,
        pod: &str,
        workspace: &Path,
        paths: Vec<PathBuf>,
        into: &Path,
    ) -> Result<(), ExecError> {
        // Nested paths would unpack twice, the second time through what the first one wrote.
        for path in &outermost(paths) {
            if written_through_symlink(into, &into.join(path)) {
                return Err(ExecError::Backend(format!(
                    "`{}` would be written through a symlink",
                    path.display()
                )));
            }
            let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
                continue;
            };
            let directory = workspace.join(parent).display().to_string();
            let name = name.to_string_lossy().into_owned();
            let command = [
                "sh",
                "-c",
                PACK_ONE,
                "sh",
                directory.as_str(),
                name.as_str(),
            ];
            self.copy_one_out(pod, &command, path, &into.join(path))
                .await?;
        }
        Ok(())
    }

    async fn copy_one_out(
        &self,
        pod: &str,
        command: &[&str],
        path: &Path,
        destination: &Path,
    ) -> Result<(), ExecError> {
        let failed = |why: String| {
            ExecError::Backend(format!(
                "cannot copy `{}` out of the workspace claim: {why}",
                path.display()
            ))
        };
        let mut process = self
            .pods()
            .exec(pod, command.iter().copied(), &params(false))
            .await
            .map_err(|error| failed(error.to_string()))?;
        let (Some(stdout), Some(stderr), Some(status)) =
            (process.stdout(), process.stderr(), process.take_status())
        else {
            return Err(failed("the copy has no streams".to_owned()));
        };
        let errors = tokio::spawn(kept_text(stderr));
        let mut archive = ReaderStream::with_capacity(stdout, STREAM_BUFFER).peekable();
        // A path that does not exist sends nothing: nothing to copy.
        let unpacked = if std::pin::Pin::new(&mut archive).peek().await.is_some() {
            Some(unpack_tree(archive, destination.to_path_buf()).await)
        } else {
            None
        };
        let status = status.await;
        let errors = errors.await.unwrap_or_default();
        let _ = process.join().await;
        succeeded(status, &errors, "copying files out")
            .map_err(|error| failed(error.to_string()))?;
        match unpacked {
            Some(Err(why)) => Err(failed(why)),
            _ => Ok(()),
        }
    }
}

fn params(stdin: bool) -> AttachParams {
    let mut params = AttachParams::default()
        .container(HOLDER_CONTAINER)
        .stdin(stdin)
        .stdout(true)
        .stderr(true);
    params.max_stdin_buf_size = Some(STREAM_BUFFER);
    params.max_stdout_buf_size = Some(STREAM_BUFFER);
    params.max_stderr_buf_size = Some(STREAM_BUFFER);
    params
}

/// Whether the command's status says it succeeded; else an error with what it wrote to standard error.
fn succeeded(
    status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    errors: &str,
    what: &str,
) -> Result<(), ExecError> {
    let Some(status) = status else {
        return Err(ExecError::Backend(format!(
            "{what}: the connection ended before the command did"
        )));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(());
    }
    let message = status.message.unwrap_or_default();
    let errors = errors.trim();
    Err(ExecError::Backend(if errors.is_empty() {
        format!("{what} failed: {message}")
    } else {
        format!("{what} failed: {errors} ({message})")
    }))
}

/// Reads `stream` to its end, keeping its first bytes as text.
async fn kept_text(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0_u8; 4096];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        let room = KEPT_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..read.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Reads `stream` to its end (an exec's output nobody needs must still be read, or the exec stalls).
async fn discard(mut stream: impl AsyncRead + Unpin) {
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
}
