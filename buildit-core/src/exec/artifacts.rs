//! Artifacts: collected from the workspace after a stage succeeds, restored into the workspace of the stages
//! that need it, never from or to outside the workspace. Kept as blobs `<run>/<stage>/<path in the workspace>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::blobs::{BlobStore, FilesystemBlobs};
use crate::config::Glob;
use crate::paths::{inside_workspace, names_nothing};

/// What a run id or stage instance name keeps in a blob name: letters, digits and `._=-,`; the rest (`/`,
/// spaces, `:`) becomes `%XX`, reversibly, so two instances (`v=a/b`, `v=a:b`) never share a directory.
const NAME_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'_')
    .remove(b'=')
    .remove(b'-')
    .remove(b',');

/// Why artifacts could not be collected or restored.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A pattern matched no file.
    #[error("artifact `{pattern}` matched no files")]
    #[diagnostic(code(buildit::artifacts::no_match))]
    NoMatch {
        /// The pattern, rendered.
        pattern: String,
    },
    /// A path leaves the workspace (`..`, absolute, or a symlink pointing outside).
    #[error("artifact `{path}` leaves the workspace")]
    #[diagnostic(code(buildit::artifacts::escape))]
    Escape {
        /// The offending path.
        path: String,
    },
    /// A pattern names the whole workspace (empty, `.`, `./`): it would collect `.env` files and credentials.
    #[error("artifact `{pattern}` names the whole workspace, which is never collected")]
    #[diagnostic(code(buildit::artifacts::whole_workspace))]
    WholeWorkspace {
        /// The pattern, rendered.
        pattern: String,
    },
    /// A match is neither a regular file nor a directory (a FIFO or socket would block or mean nothing).
    #[error("artifact `{path}` is not a regular file or directory")]
    #[diagnostic(code(buildit::artifacts::special_file))]
    NotRegular {
        /// The offending path.
        path: String,
    },
    /// A pattern is not a valid glob.
    #[error("invalid artifact pattern `{pattern}`: {problem}")]
    #[diagnostic(code(buildit::artifacts::pattern))]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing failed.
    #[error("cannot copy artifact `{}`: {source}", path.display())]
    #[diagnostic(code(buildit::artifacts::io))]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Directories never searched for artifacts: BuildIt's own state and version control.
const SKIPPED_DIRS: [&str; 2] = [".buildit", ".git"];

/// The blob a run keeps beside its stages' directories when a collection stored no file. `%` is encoded in stage
/// names, so no stage's directory can be named so.
const KEPT_MARK: &str = "%kept";

/// Where artifacts are kept: a directory ([`ArtifactStore::new`], `<root>/<run>/<stage>/<path in the
/// workspace>`) or any other [`BlobStore`].
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    blobs: Arc<dyn BlobStore>,
}

impl ArtifactStore {
    /// A store under `root` (the system configuration's `artifacts "filesystem" path=`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_blobs(Arc::new(FilesystemBlobs::new(root)))
    }

    /// A store in `blobs`.
    pub fn with_blobs(blobs: Arc<dyn BlobStore>) -> Self {
        Self { blobs }
    }

    /// The blob-name prefix of one stage's artifacts of one run (`<run>/<stage>/`). Stage instance names
    /// (`test (shard=1)`) are made safe as directory names.
    fn stage_prefix(run_id: &str, stage: &str) -> String {
        let safe = |text: &str| utf8_percent_encode(text, NAME_KEEPS).to_string();
        format!("{}/{}/", safe(run_id), safe(stage))
    }

    /// Where all of one run's artifacts are kept, for a store on this machine (`None` for any other): what
    /// deleting the run removes.
    pub fn run_dir(&self, run_id: &str) -> Option<PathBuf> {
        let name = utf8_percent_encode(run_id, NAME_KEEPS).to_string();
        self.blobs.local_path(&name)
    }

    /// Where one stage's artifacts of one run are kept: a directory for a store on this machine, else the
    /// blobs' name prefix.
    pub fn stage_dir(&self, run_id: &str, stage: &str) -> PathBuf {
        let prefix = Self::stage_prefix(run_id, stage);
        let prefix = prefix.trim_end_matches('/');
        self.blobs
            .local_path(prefix)
            .unwrap_or_else(|| PathBuf::from(prefix))
    }

    /// Copies what `patterns` match in `workspace` into the stage's directory; returns the number of files.
    pub fn collect(
        &self,
        run_id: &str,
        stage: &str,
        workspace: &Path,
        patterns: &[String],
    ) -> Result<usize, ArtifactError> {
        let workspace_real = canonical(workspace)?;
        let prefix = Self::stage_prefix(run_id, stage);
        // Never collected, even through `artifacts "."`: BuildIt's own state (the store itself may live there)
        // and version control.
        let mut skip: Vec<PathBuf> = SKIPPED_DIRS
            .iter()
            .map(|dir| workspace_real.join(dir))
            .collect();
        if let Some(Ok(root)) = self.blobs.local_path("").map(|root| root.canonicalize()) {
            skip.push(root);
        }
        let mut copied = 0;
        for pattern in patterns {
            if names_nothing(pattern) {
                return Err(ArtifactError::WholeWorkspace {
                    pattern: pattern.clone(),
                });
            }
            // Plain names only (`./dist` is `dist`): they become the artifacts' names in the store.
            let Some(relative) = inside_workspace(Path::new(pattern)) else {
                return Err(ArtifactError::Escape {
                    path: pattern.clone(),
                });
            };
            let matches = if pattern.contains(['*', '?', '[']) {
                let glob = Glob::new(pattern).map_err(|problem| ArtifactError::Pattern {
                    pattern: pattern.clone(),
                    problem,
                })?;
                let mut found = Vec::new();
                walk(workspace, Path::new(""), &glob, &mut found)?;
                found
            } else if workspace.join(&relative).symlink_metadata().is_ok() {
                vec![relative]
            } else {
                Vec::new()
            };
            if matches.is_empty() {
                return Err(ArtifactError::NoMatch {
                    pattern: pattern.clone(),
                });
            }
            for path in matches {
                let inside = Inside {
                    workspace: &workspace_real,
                    skip: &skip,
                    blobs: self.blobs.as_ref(),
                };
                copied += copy_inside(&inside, &workspace.join(&path), &prefix, &path)?;
            }
        }
        if copied == 0 {
            self.mark_kept(run_id)?;
        }
        Ok(copied)
    }

    /// Copies a stage's collected artifacts into `workspace`; returns the number of files (0 if it had none).
    pub fn restore(
        &self,
        run_id: &str,
        stage: &str,
        workspace: &Path,
    ) -> Result<usize, ArtifactError> {
        let prefix = Self::stage_prefix(run_id, stage);
        let shown = self.stage_dir(run_id, stage);
        let mut copied = 0;
        for blob in self.blobs.list(&prefix).map_err(io(&shown))? {
            let Some(relative) = blob.name.strip_prefix(&prefix) else {
                continue;
            };
            // Blob names are checked plain paths, so this stays in the workspace.
            let destination = workspace.join(relative);
            if self
                .blobs
                .get_file(&blob.name, &destination)
                .map_err(io(&destination))?
            {
                copied += 1;
            }
        }
        Ok(copied)
    }
}

impl ArtifactStore {
    /// Whether run `run_id` still has what its stages collected (`buildit gc` removes a run's artifacts all at
    /// once): some artifact, or the mark of a collection that found only empty directories.
    pub fn holds_run(&self, run_id: &str) -> Result<bool, ArtifactError> {
        let prefix = format!("{}/", utf8_percent_encode(run_id, NAME_KEEPS));
        if self.blobs.contains(&format!("{prefix}{KEPT_MARK}")) {
            return Ok(true);
        }
        let shown = self
            .run_dir(run_id)
            .unwrap_or_else(|| PathBuf::from(&prefix));
        Ok(!self.blobs.list(&prefix).map_err(io(&shown))?.is_empty())
    }

    /// Notes that run `run_id` kept artifacts, when a collection stored no file: a later rerun can tell an
    /// empty collection from artifacts removed since.
    fn mark_kept(&self, run_id: &str) -> Result<(), ArtifactError> {
        let name = format!("{}/{KEPT_MARK}", utf8_percent_encode(run_id, NAME_KEEPS));
        if self.blobs.contains(&name) {
            return Ok(());
        }
        let shown = self.run_dir(run_id).unwrap_or_else(|| PathBuf::from(&name));
        self.blobs.put(&name, &mut |_| Ok(())).map_err(io(&shown))
    }

    /// Copies the artifacts stage instance `stage` collected in run `from` to run `to`, as if `to` had collected
    /// them: a rerun's reused stage hands its dependents what it handed them before, and the new run keeps them
    /// when the earlier one is deleted. Returns the number of files (0 if it had none).
    pub fn copy_stage(&self, from: &str, to: &str, stage: &str) -> Result<usize, ArtifactError> {
        let source = Self::stage_prefix(from, stage);
        let target = Self::stage_prefix(to, stage);
        let shown = self.stage_dir(from, stage);
        // Through a file of this machine: the blob's permissions (an executable stays one) travel with it.
        let staging = tempfile::tempdir().map_err(io(&shown))?;
        let file = staging.path().join("blob");
        let mut copied = 0;
        for blob in self.blobs.list(&source).map_err(io(&shown))? {
            let Some(relative) = blob.name.strip_prefix(&source) else {
                continue;
            };
            if !self.blobs.get_file(&blob.name, &file).map_err(io(&shown))? {
                continue;
            }
            self.blobs
                .put_file(&format!("{target}{relative}"), &file)
                .map_err(io(&shown))?;
            copied += 1;
        }
        if copied == 0 {
            self.mark_kept(to)?;
        }
        Ok(copied)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn canonical(path: &Path) -> Result<PathBuf, ArtifactError> {
    path.canonicalize().map_err(io(path))
}

/// Collects workspace-relative paths under `dir` that match `glob`, without following directory symlinks.
fn walk(
    workspace: &Path,
    dir: &Path,
    glob: &Glob,
    found: &mut Vec<PathBuf>,
) -> Result<(), ArtifactError> {
    let absolute = workspace.join(dir);
    let mut entries: Vec<_> = std::fs::read_dir(&absolute)
        .map_err(io(&absolute))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        let relative = dir.join(&name);
        let file_type = entry.file_type().map_err(io(&relative))?;
        if file_type.is_dir() {
            if dir.as_os_str().is_empty() && SKIPPED_DIRS.iter().any(|skipped| name == *skipped) {
                continue;
            }
            walk(workspace, &relative, glob, found)?;
        } else if glob.is_match(&relative.to_string_lossy()) {
            found.push(relative);
        }
    }
    Ok(())
}

/// Where collection may read (inside the workspace, outside the skipped directories), and where it writes.
struct Inside<'a> {
    workspace: &'a Path,
    skip: &'a [PathBuf],
    blobs: &'a dyn BlobStore,
}

/// Stores `source` (a file, a directory, or a symlink that stays inside the workspace) as blobs named
/// `prefix` + its path in the workspace (`shown`).
fn copy_inside(
    inside: &Inside<'_>,
    source: &Path,
    prefix: &str,
    shown: &Path,
) -> Result<usize, ArtifactError> {
    let real = canonical(source)?;
    if !real.starts_with(inside.workspace) {
        return Err(ArtifactError::Escape {
            path: shown.display().to_string(),
        });
    }
    if inside.skip.iter().any(|skipped| real.starts_with(skipped)) {
        return Ok(0);
    }
    let metadata = std::fs::metadata(&real).map_err(io(&real))?;
    if metadata.is_dir() {
        let mut copied = 0;
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .map_err(io(source))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            copied += copy_inside(inside, &source.join(&name), prefix, &shown.join(&name))?;
        }
        return Ok(copied);
    }
    if !metadata.is_file() {
        return Err(ArtifactError::NotRegular {
            path: shown.display().to_string(),
        });
    }
    // A path inside the workspace made of names (the walk and the checks above guarantee it).
    let name = format!("{prefix}{}", shown.to_string_lossy());
    inside.blobs.put_file(&name, &real).map_err(io(&real))?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, ArtifactStore) {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let workspace = dir.path().join("ws");
        let _ = std::fs::create_dir_all(workspace.join("out/nested"));
        let _ = std::fs::write(workspace.join("out/a.txt"), "a");
        let _ = std::fs::write(workspace.join("out/nested/b.txt"), "b");
        let _ = std::fs::write(workspace.join("top.bin"), "t");
        let store = ArtifactStore::new(workspace.join(".buildit/artifacts"));
        (dir, workspace, store)
    }

    #[test]
    fn collects_globs_and_directories_and_restores_them() {
        let (dir, workspace, store) = setup();
        let collected = store.collect(
            "r1",
            "build (os=linux)",
            &workspace,
            &["out/**/*.txt".into(), "top.bin".into()],
        );
        assert_eq!(collected.ok(), Some(3));
        assert!(
            store
                .stage_dir("r1", "build (os=linux)")
                .join("out/nested/b.txt")
                .is_file()
        );
        // Every stage's artifacts of a run are under the run's directory.
        let run_dir = store.run_dir("r1");
        assert!(
            run_dir
                .as_ref()
                .is_some_and(|run| store.stage_dir("r1", "build (os=linux)").starts_with(run)),
            "{run_dir:?}"
        );
        let other = dir.path().join("other");
        assert_eq!(
            store.restore("r1", "build (os=linux)", &other).ok(),
            Some(3)
        );
        assert_eq!(
            std::fs::read_to_string(other.join("out/a.txt"))
                .ok()
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            store.collect("r1", "dir", &workspace, &["out".into()]).ok(),
            Some(2)
        );
    }

    #[test]
    fn a_run_that_collected_only_empty_directories_still_holds_its_artifacts() {
        let (dir, workspace, store) = setup();
        let _ = std::fs::create_dir_all(workspace.join("empty"));
        assert!(
            !store.holds_run("r1").unwrap_or(true),
            "nothing collected yet"
        );
        assert_eq!(
            store
                .collect("r1", "build", &workspace, &["empty".into()])
                .ok(),
            Some(0)
        );
        assert!(store.holds_run("r1").unwrap_or(false));
        // Copied on to a rerun, the empty collection is kept there too; nothing is restored from the mark.
        assert_eq!(store.copy_stage("r1", "r2", "build").ok(), Some(0));
        assert!(store.holds_run("r2").unwrap_or(false));
        let other = dir.path().join("other");
        assert_eq!(store.restore("r2", "build", &other).ok(), Some(0));
        assert!(!other.exists());
        // Removed as `buildit gc` removes a run: nothing is held.
        if let Some(run_dir) = store.run_dir("r1") {
            let _ = std::fs::remove_dir_all(run_dir);
        }
        assert!(!store.holds_run("r1").unwrap_or(true));
    }

    #[test]
    fn refuses_escapes_and_reports_empty_matches() {
        let (dir, workspace, store) = setup();
        let _ = std::fs::write(dir.path().join("secret.txt"), "s");
        let _ =
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), workspace.join("link.txt"));
        let error = store.collect("r", "s", &workspace, &["link.txt".into()]);
        assert!(
            matches!(error, Err(ArtifactError::Escape { .. })),
            "{error:?}"
        );
        let error = store.collect("r", "s", &workspace, &["*.txt".into()]);
        assert!(
            matches!(error, Err(ArtifactError::Escape { .. })),
            "{error:?}"
        );
        let error = store.collect("r", "s", &workspace, &["../x".into()]);
        assert!(
            matches!(error, Err(ArtifactError::Escape { .. })),
            "{error:?}"
        );
        let _ = nix::unistd::mkfifo(&workspace.join("out/pipe"), nix::sys::stat::Mode::S_IRWXU);
        let error = store.collect("r", "s", &workspace, &["out/pipe".into()]);
        assert!(
            matches!(error, Err(ArtifactError::NotRegular { .. })),
            "{error:?}"
        );
        let error = store.collect("r", "s", &workspace, &["nothing/*.so".into()]);
        assert_eq!(
            error.map_err(|e| e.to_string()).err().as_deref(),
            Some("artifact `nothing/*.so` matched no files")
        );
    }
}
