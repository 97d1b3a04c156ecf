//! Reading what a stage wrote to `$BUILDIT_OUTPUT` once it succeeded (through the executor when its workspace is
//! not on the host), keeping what it declared for the stages that need it, and telling the run.

use std::collections::BTreeMap;

use super::super::executor::{Executor, StageSpec};
use super::super::outputs::{MAX_OUTPUT_FILE_BYTES, output_file, parse_outputs};
use super::stage::StageTask;
use crate::events::FailureKind;

impl<E: Executor> StageTask<E> {
    /// Reads attempt `attempt`'s outputs, records the declared ones for the stages that need them and emits
    /// them (masked). A file that cannot be read as outputs fails the stage; one never written gives none (a
    /// stage that needs a missing output fails, saying which).
    pub(super) async fn collect_outputs(
        &self,
        attempt: u32,
        remote: Option<&StageSpec>,
    ) -> Result<(), (FailureKind, String)> {
        let stage = &self.plan.stages()[self.position];
        let declared = &self.plan.definition(stage).outputs;
        if declared.is_empty() {
            return Ok(());
        }
        let failed = |why: String| {
            (
                FailureKind::Config,
                format!("the stage's outputs cannot be read: {why}"),
            )
        };
        let relative = std::path::PathBuf::from(output_file(stage.name(), attempt));
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
        let path = root.join(&relative);
        let text = match read_bounded(&path) {
            Ok(Some(text)) => text,
            Ok(None) => String::new(),
            Err(why) => return Err(failed(why)),
        };
        if remote.is_none() {
            // Read: the file is the run's, not the workspace's.
            let _ = std::fs::remove_file(&path);
        }
        let mut written = parse_outputs(&text).map_err(failed)?;
        let undeclared: Vec<String> = written
            .keys()
            .filter(|name| !declared.iter().any(|output| output.value == **name))
            .cloned()
            .collect();
        for name in undeclared {
            written.remove(&name);
            self.note(
                attempt,
                format!(
                    "buildit: output `{name}` is not declared in the stage's `outputs`: ignored"
                ),
            )
            .await;
        }
        self.run.outputs.set(stage.name(), written.clone());
        let masked: BTreeMap<String, String> = written
            .into_iter()
            .map(|(name, value)| (name, self.masker.mask(&value)))
            .collect();
        super::lifecycle::outputs_written(&self.bus, stage.name(), attempt, masked).await;
        Ok(())
    }
}

/// The file's text; `None` when it does not exist; an error when it is too large or not text.
fn read_bounded(path: &std::path::Path) -> Result<Option<String>, String> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.to_string()),
    };
    if !metadata.is_file() {
        return Err("`$BUILDIT_OUTPUT` is not a regular file".to_owned());
    }
    if metadata.len() > MAX_OUTPUT_FILE_BYTES as u64 {
        return Err(format!(
            "the file holds {} bytes; at most {MAX_OUTPUT_FILE_BYTES} are read",
            metadata.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|error| error.to_string())?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "the file is not UTF-8 text".to_owned())
}
