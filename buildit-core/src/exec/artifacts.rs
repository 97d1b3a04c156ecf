//! Artifacts on the filesystem: collected from the workspace after a stage succeeds, restored into the workspace
//! of the stages that need it, never from or to outside the workspace.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Glob;

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

/// A filesystem artifact store: `<root>/<run>/<stage>/<path in the workspace>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// A store under `root` (the system configuration's `artifacts "filesystem" path=`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where one stage's artifacts of one run are kept. Stage instance names (`test (shard=1)`) are made safe
    /// as directory names.
    pub fn stage_dir(&self, run_id: &str, stage: &str) -> PathBuf {
        // Percent-encoding is reversible, so two instances (`v=a/b`, `v=a:b`) never share a directory.
        let safe = |text: &str| super::mask::percent_encode(text, b"._=-,");
        self.root.join(safe(run_id)).join(safe(stage))
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
        let destination = self.stage_dir(run_id, stage);
        // Never collected, even through `artifacts "."`: BuildIt's own state (the store itself may live there)
        // and version control.
        let mut skip: Vec<PathBuf> = SKIPPED_DIRS
            .iter()
            .map(|dir| workspace_real.join(dir))
            .collect();
        if let Ok(root) = self.root.canonicalize() {
            skip.push(root);
        }
        let mut copied = 0;
        for pattern in patterns {
            if pattern.split('/').all(|c| c.is_empty() || c == ".") {
                return Err(ArtifactError::WholeWorkspace {
                    pattern: pattern.clone(),
                });
            }
            let relative = Path::new(pattern);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| matches!(c, Component::ParentDir))
            {
                return Err(ArtifactError::Escape {
                    path: pattern.clone(),
                });
            }
            let matches = if pattern.contains(['*', '?', '[']) {
                let glob = Glob::new(pattern).map_err(|problem| ArtifactError::Pattern {
                    pattern: pattern.clone(),
                    problem,
                })?;
                let mut found = Vec::new();
                walk(workspace, Path::new(""), &glob, &mut found)?;
                found
            } else if workspace.join(relative).symlink_metadata().is_ok() {
                vec![relative.to_path_buf()]
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
                };
                copied += copy_inside(
                    &inside,
                    &workspace.join(&path),
                    &destination.join(&path),
                    &path,
                )?;
            }
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
        let source = self.stage_dir(run_id, stage);
        if !source.is_dir() {
            return Ok(0);
        }
        copy_tree(&source, workspace)
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

/// Where collection may read: inside the workspace, outside the skipped directories.
struct Inside<'a> {
    workspace: &'a Path,
    skip: &'a [PathBuf],
}

/// Copies `source` (a file, a directory, or a symlink that stays inside the workspace) to `destination`.
fn copy_inside(
    inside: &Inside<'_>,
    source: &Path,
    destination: &Path,
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
            copied += copy_inside(
                inside,
                &source.join(&name),
                &destination.join(&name),
                &shown.join(&name),
            )?;
        }
        return Ok(copied);
    }
    if !metadata.is_file() {
        return Err(ArtifactError::NotRegular {
            path: shown.display().to_string(),
        });
    }
    copy_file(&real, destination)?;
    Ok(1)
}

/// Copies a file through a temporary name, so that a reader never sees half a file.
fn copy_file(source: &Path, destination: &Path) -> Result<(), ArtifactError> {
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Unique per copy: parallel stages may restore the same artifact into a shared workspace at once.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = destination.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".buildit-tmp-{}-{unique}", std::process::id()));
    let temporary = destination.with_file_name(name);
    std::fs::copy(source, &temporary).map_err(io(source))?;
    std::fs::rename(&temporary, destination).map_err(io(destination))
}

fn copy_tree(source: &Path, destination: &Path) -> Result<usize, ArtifactError> {
    let mut copied = 0;
    for entry in std::fs::read_dir(source)
        .map_err(io(source))?
        .filter_map(Result::ok)
    {
        let from = entry.path();
        let to = destination.join(entry.file_name());
        if entry.file_type().map_err(io(&from))?.is_dir() {
            copied += copy_tree(&from, &to)?;
        } else {
            copy_file(&from, &to)?;
            copied += 1;
        }
    }
    Ok(copied)
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
