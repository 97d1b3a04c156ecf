//! Reading what a stage wrote to `$BUILDIT_OUTPUT` once it succeeded (through the executor when its workspace is
//! not on the host), keeping what it declared for the stages that need it, and telling the run.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::executor::{Executor, StageSpec};
use super::super::outputs::{MAX_OUTPUT_FILE_BYTES, output_file, parse_outputs};
use super::stage::StageTask;
use crate::events::FailureKind;
use crate::paths::written_through_symlink;

impl<E: Executor> StageTask<E> {
    /// Reads attempt `attempt`'s outputs, keeping the declared ones. A file that cannot be read as outputs fails
    /// the stage; one never written gives none (a stage that needs a missing output fails, saying which).
    /// Nothing is recorded yet: see [`StageTask::publish_outputs`].
    pub(super) async fn read_outputs(
        &self,
        attempt: u32,
        remote: Option<&StageSpec>,
    ) -> Result<BTreeMap<String, String>, (FailureKind, String)> {
        let stage = &self.plan.stages()[self.position];
        let declared = &self.plan.definition(stage).outputs;
        if declared.is_empty() {
            return Ok(BTreeMap::new());
        }
        let failed = |why: String| {
            (
                FailureKind::Config,
                format!("the stage's outputs cannot be read: {why}"),
            )
        };
        let relative =
            std::path::PathBuf::from(output_file(&self.run.run_id, stage.name(), attempt));
        let (_staging, root) = self.host_side(remote).map_err(failed)?;
        if let Some(spec) = remote {
            self.executor
                .get_files(spec, std::slice::from_ref(&relative), &root)
                .await
                .map_err(|error| {
                    (
                        error.failure_kind(),
                        format!("the stage's outputs cannot be copied out: {error}"),
                    )
                })?;
        }
        let read = tokio::task::spawn_blocking(move || read_bounded(&root, &relative))
            .await
            .map_err(|join| failed(join.to_string()))?;
        let text = read.map_err(failed)?.unwrap_or_default();
        let mut written = parse_outputs(&text).map_err(failed)?;
        let before = written.len();
        written.retain(|name, _| declared.iter().any(|output| output.value == *name));
        let ignored = before - written.len();
        if ignored > 0 {
            // Not by name: a line of the file may be a secret that only looks like a name.
            self.note(
                attempt,
                format!(
                    "buildit: {ignored} output{} not declared in the stage's `outputs` ignored",
                    if ignored == 1 { "" } else { "s" }
                ),
            )
            .await;
        }
        Ok(written)
    }

    /// Records a successful attempt's outputs for the stages that need it, and tells the run (masked).
    pub(super) async fn publish_outputs(&self, attempt: u32, outputs: BTreeMap<String, String>) {
        let stage = &self.plan.stages()[self.position];
        if self.plan.definition(stage).outputs.is_empty() {
            return;
        }
        self.run.outputs.set(stage.name(), outputs.clone());
        let masked: BTreeMap<String, String> = outputs
            .into_iter()
            .map(|(name, value)| (name, self.masker.mask(&value)))
            .collect();
        super::lifecycle::outputs_written(&self.bus, stage.name(), attempt, masked).await;
    }
}

/// The text of the file `relative` under `root`, which is removed once read; `None` when it does not exist. Never
/// through a symlink (the stage controls the workspace: a link must not make BuildIt read or remove another file
/// of this machine), never more than the limit, never a FIFO that would block.
fn read_bounded(root: &Path, relative: &Path) -> Result<Option<String>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let at = root.join(relative);
    let through_link = || "`$BUILDIT_OUTPUT` or a directory above it is a symbolic link".to_owned();
    if written_through_symlink(root, &at) {
        return Err(through_link());
    }
    match std::fs::symlink_metadata(&at) {
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(error) => return Err(error.to_string()),
        Ok(metadata) if metadata.file_type().is_symlink() => return Err(through_link()),
        Ok(_) => {}
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(&at)
        .map_err(|error| error.to_string())?;
    let metadata = file.metadata().map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("`$BUILDIT_OUTPUT` is not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(MAX_OUTPUT_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() > MAX_OUTPUT_FILE_BYTES {
        return Err(format!(
            "the file holds more than {MAX_OUTPUT_FILE_BYTES} bytes"
        ));
    }
    // Read: the file is the run's, not the workspace's.
    let _ = std::fs::remove_file(&at);
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "the file is not UTF-8 text".to_owned())
}

/// Removes run `run`'s output files from the host workspace `workspace`, unless a directory on the way is a
/// symbolic link (a stage made it one: what it points at is not the run's to remove).
pub(super) fn remove_run_outputs(workspace: &Path, run: &str) {
    let file = output_file(run, "x", 0);
    let Some(run_dir) = Path::new(&file).parent() else {
        return;
    };
    let at = workspace.join(run_dir);
    let real_dir = at
        .symlink_metadata()
        .is_ok_and(|metadata| metadata.is_dir());
    if real_dir && !written_through_symlink(workspace, &at) {
        let _ = std::fs::remove_dir_all(&at);
    }
}

/// `O_NOFOLLOW | O_NONBLOCK`: the last component is not followed, and opening a FIFO does not wait for a writer.
fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits()
}
