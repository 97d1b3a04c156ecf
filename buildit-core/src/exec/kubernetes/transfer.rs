//! Moving files in and out of a run's workspace claim: tar streams through `pods/exec` of the pod that holds
//! it (`kubectl cp`'s way), packed and unpacked on this side with the same path rules as Docker's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::io::{ReaderStream, StreamReader};
use tokio_util::sync::CancellationToken;

use super::executor::{KubernetesExecutor, backend};
use super::workspace_manifest::HOLDER_CONTAINER;
use crate::exec::executor::ExecError;
use crate::exec::tree::{copy_out_paths, pack_tree, unpack_tree};

/// The most of a command's standard error kept for its error message.
const KEPT_STDERR: usize = 8 * 1024;
/// Buffer of each stream of an exec (kube-rs's pipes between the WebSocket and this side).
const STREAM_BUFFER: usize = 256 * 1024;
/// How long a copy may move no byte before it is given up (a cluster that stopped answering).
const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// How long the cluster may take to start a copy's command.
const EXEC_START_LIMIT: Duration = Duration::from_secs(60);
/// How long the end of a command's output may take to arrive once the command has ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Writes one path's tree to standard output, from the directory that holds it (so that its entries start with
/// its own name, as the unpacking expects), or nothing at all when it does not exist.
const PACK_ONE: &str = r#"cd -- "$1" 2>/dev/null || exit 0; if [ -e "$2" ] || [ -L "$2" ]; then exec tar cf - -- "$2"; fi"#;

/// What a copy's error adds when the holder's image may lack what it needs.
const IMAGE_HINT: &str = "the pod that holds the workspace needs `sh` and `tar` in its image (set `helper-image` \
     in `executor \"kubernetes\"`)";

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
        let what = "copying files into the workspace claim";
        let to = to.display().to_string();
        let command = ["tar", "xf", "-", "-C", to.as_str()];
        let mut process = started(self.pods().exec(pod, command, &params(true)), what).await?;
        let (Some(mut stdin), Some(stdout), Some(stderr), Some(status)) = (
            process.stdin(),
            process.stdout(),
            process.stderr(),
            process.take_status(),
        ) else {
            return Err(ExecError::Backend(format!(
                "{what}: the exec has no streams"
            )));
        };
        let errors = tokio::spawn(kept_text(stderr));
        let drained = tokio::spawn(discard(stdout));
        // However the copy ends, nothing is left reading a stream whose writer kube-rs dropped unclosed.
        let _readers = Readers(vec![errors.abort_handle(), drained.abort_handle()]);
        let idle = Idle::new();
        let (stream, packing) = pack_tree(from.to_path_buf(), skip_top);
        let seen = idle.clone();
        let mut reader = StreamReader::new(stream.inspect(move |_| seen.touch()));
        // The copy owns both ends: when it is dropped (the command ended first), the packing's pipe closes.
        let send = async move {
            let sent = tokio::io::copy(&mut reader, &mut stdin).await;
            // Closing stdin ends the archive for `tar` on the other side.
            let _ = stdin.shutdown().await;
            sent
        };
        tokio::pin!(status);
        // The command may end before it has read everything (a `tar` that is missing or fails, or one that
        // stops at the archive's end marker before the padding after it): its status then comes while the
        // copy still waits to write, and nothing would ever read what it writes.
        let (sent, early) = tokio::select! {
            sent = send => (Some(sent), None),
            early = &mut status => (None, Some(early)),
            () = idle.exceeded() => {
                process.abort();
                return Err(ExecError::Backend(format!("{what}: nothing moved for {}s", IDLE_LIMIT.as_secs())));
            }
        };
        let status = match early {
            Some(early) => early,
            None => tokio::time::timeout(IDLE_LIMIT, &mut status)
                .await
                .unwrap_or(None),
        };
        let (errors, ()) = tokio::join!(finished(&process, errors), finished(&process, drained));
        process.abort();
        let Some(sent) = sent else {
            // `tar` ended before it read the whole stream: its status says whether it had the whole archive
            // (it stops at the end marker, before the padding); the packing may have failed on the closed pipe,
            // which is then no fault.
            return succeeded(status, &errors, what);
        };
        // A packing error cuts the stream short: it is the real cause of a failed (or truncated) copy, before
        // what `tar` says of the cut archive.
        packing
            .await
            .map_err(|error| ExecError::Backend(format!("packing failed: {error}")))?
            .map_err(ExecError::Backend)?;
        succeeded(status, &errors, what)?;
        sent.map(|_| ())
            .map_err(|error| ExecError::Backend(format!("{what}: {error}")))
    }

    /// Copies `paths` (inside the workspace; the empty path is the whole workspace) from `workspace` in the
    /// holder pod `pod` into the host directory `into`, at the same relative places; missing ones are skipped.
    pub(super) async fn copy_out(
        &self,
        pod: &str,
        workspace: &Path,
        paths: Vec<PathBuf>,
        into: &Path,
    ) -> Result<(), ExecError> {
        for path in &copy_out_paths(paths, into)? {
            // `/ws` + `dist/app` is packed from `/ws/dist` as `app`; the whole workspace from `/` as `ws`.
            let full = workspace.join(path);
            let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
                return Err(ExecError::Backend(format!(
                    "`{}` cannot be copied out of the workspace claim",
                    full.display()
                )));
            };
            let directory = parent.display().to_string();
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
        let mut process = started(
            self.pods()
                .exec(pod, command.iter().copied(), &params(false)),
            "copying files out",
        )
        .await
        .map_err(|error| failed(error.to_string()))?;
        let (Some(stdout), Some(stderr), Some(status)) =
            (process.stdout(), process.stderr(), process.take_status())
        else {
            return Err(failed("the exec has no streams".to_owned()));
        };
        let errors = tokio::spawn(kept_text(stderr));
        let _readers = Readers(vec![errors.abort_handle()]);
        let idle = Idle::new();
        let seen = idle.clone();
        // Ended when this copy ends, whichever way: the unpacking thread then reads the end of the stream
        // instead of waiting forever on a pipe kube-rs dropped unclosed.
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        let archive = ReaderStream::with_capacity(stdout, STREAM_BUFFER)
            .inspect(move |_| seen.touch())
            .take_until(Box::pin(stop.cancelled_owned()));
        let mut archive = archive.peekable();
        tokio::pin!(status);
        let unpack = async {
            // A path that does not exist sends nothing: nothing to copy.
            if std::pin::Pin::new(&mut archive).peek().await.is_some() {
                Some(unpack_tree(archive, destination.to_path_buf()).await)
            } else {
                None
            }
        };
        tokio::pin!(unpack);
        let mut ended = None;
        let unpacked = loop {
            tokio::select! {
                unpacked = &mut unpack => break unpacked,
                // Its status comes once the command's output has been handed over whole: the unpacking
                // reads the rest, and ends. No status (the connection lost) means the rest never comes.
                status = &mut status, if ended.is_none() => {
                    if status.is_none() {
                        process.abort();
                        return Err(failed("the connection to the cluster ended before the copy did".to_owned()));
                    }
                    ended = Some(status);
                }
                () = idle.exceeded() => {
                    process.abort();
                    return Err(failed(format!("nothing moved for {}s", IDLE_LIMIT.as_secs())));
                }
            }
        };
        if let Some(Err(why)) = unpacked {
            // Nothing reads the rest of the output now: the exec is stopped rather than left blocked on it.
            process.abort();
            return Err(failed(why));
        }
        let status = match ended {
            Some(status) => status,
            None => tokio::time::timeout(DRAIN_LIMIT, &mut status)
                .await
                .unwrap_or(None),
        };
        let errors = finished(&process, errors).await;
        process.abort();
        succeeded(status, &errors, "copying files out").map_err(|error| failed(error.to_string()))
    }
}

/// Tasks reading an exec's output, stopped when the copy ends whichever way.
struct Readers(Vec<tokio::task::AbortHandle>);

impl Drop for Readers {
    fn drop(&mut self) {
        for reader in &self.0 {
            reader.abort();
        }
    }
}

/// The exec of a copy, once the cluster has upgraded its connection (within [`EXEC_START_LIMIT`]).
async fn started(
    exec: impl std::future::Future<Output = Result<AttachedProcess, kube::Error>>,
    what: &str,
) -> Result<AttachedProcess, ExecError> {
    match tokio::time::timeout(EXEC_START_LIMIT, exec).await {
        Ok(Ok(process)) => Ok(process),
        Ok(Err(error)) => Err(backend(&format!("{what} failed"), &error)),
        Err(_) => Err(ExecError::Backend(format!(
            "{what}: the cluster did not start the command within {}s",
            EXEC_START_LIMIT.as_secs()
        ))),
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

/// What a reader task of the exec's output returned, once the command has ended: a connection lost without
/// closing the stream never ends it, so the wait is bounded.
async fn finished<T: Default>(process: &AttachedProcess, task: tokio::task::JoinHandle<T>) -> T {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_LIMIT, task).await {
        Ok(Ok(value)) => value,
        _ => {
            abort.abort();
            process.abort();
            T::default()
        }
    }
}

/// Whether the command's status says it succeeded; else an error with what it wrote to standard error.
fn succeeded(
    status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    errors: &str,
    what: &str,
) -> Result<(), ExecError> {
    let Some(status) = status else {
        let errors = errors.trim();
        let said = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({errors})")
        };
        return Err(ExecError::Backend(format!(
            "{what}: the connection ended before the command did{said}; the cluster's API must offer \
             `v5.channel.k8s.io` (Kubernetes 1.30 or later)"
        )));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(());
    }
    let message = status.message.unwrap_or_default();
    let errors = errors.trim();
    Err(ExecError::Backend(if errors.is_empty() {
        format!("{what} failed: {message}; {IMAGE_HINT}")
    } else {
        format!("{what} failed: {errors} ({message}); {IMAGE_HINT}")
    }))
}

/// When a copy last moved bytes.
#[derive(Clone)]
struct Idle {
    started: tokio::time::Instant,
    /// Milliseconds after `started`.
    last: Arc<AtomicU64>,
}

impl Idle {
    fn new() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for [`IDLE_LIMIT`].
    async fn exceeded(&self) {
        loop {
            let last = self.started + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let due = last + IDLE_LIMIT;
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
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
