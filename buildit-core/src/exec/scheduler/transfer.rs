//! Moving a stage's files: caches restored before its first attempt and saved after success, the artifacts of its
//! needs restored and its own collected, through the executor when its workspace is not on the host.

use std::path::PathBuf;
use std::sync::Arc;

use super::super::cache::{CacheHit, ResolvedCache};
use super::super::executor::{Executor, StageSpec};
use super::super::spec::{artifact_patterns, resolve_caches};
use super::stage::StageTask;
use crate::events::FailureKind;
use crate::paths::{inside_workspace, outermost};

impl<E: Executor> StageTask<E> {
    /// Restores the stage's caches before its first attempt; returns them, resolved, for saving afterwards.
    /// With a `remote` workspace, caches are unpacked on the host first and then copied in; only paths inside
    /// the workspace can be cached there (the log says which paths were left out).
    pub(super) async fn restore_caches(
        &self,
        remote: Option<&StageSpec>,
    ) -> Result<Vec<ResolvedCache>, String> {
        let Some(store) = self.options.caches.clone() else {
            return Ok(Vec::new());
        };
        if self
            .plan
            .definition(&self.plan.stages()[self.position])
            .caches
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let plan = self.plan.clone();
        let run = Arc::clone(&self.run);
        let position = self.position;
        let home = self.options.home.clone();
        let (staging, target) = self
            .host_side(remote)
            .map_err(|error| format!("cache restore failed: {error}"))?;
        let in_container = staging.is_some();
        let restored = tokio::task::spawn_blocking(move || {
            let mut caches = resolve_caches(&plan, &plan.stages()[position], &run).map_err(|error| error.0)?;
            let mut notes = Vec::new();
            let mut hits = 0;
            for cache in &mut caches {
                if in_container {
                    cache.paths.retain(|path| {
                        let inside = inside_workspace(std::path::Path::new(path)).is_some();
                        if !inside {
                            notes.push(format!(
                                "buildit: cache `{}`: `{path}` is outside the workspace, which a container stage cannot cache; it is left out",
                                cache.name
                            ));
                        }
                        inside
                    });
                }
                // `~/` means the host's home only when the stage runs on the host.
                let home = if in_container { None } else { home.as_deref() };
                // A cache is an optimisation: one that cannot be restored is reported, and the stage runs
                // without it.
                let hit = match store.restore(cache, &target, home) {
                    Ok(hit) => hit,
                    Err(error) => {
                        notes.push(format!("buildit: cache `{}` not restored: {error}", cache.name));
                        continue;
                    }
                };
                hits += usize::from(hit != CacheHit::Miss);
                notes.push(match hit {
                    CacheHit::Exact => format!("buildit: cache `{}` restored (key `{}`)", cache.name, cache.key),
                    CacheHit::Prefix(prefix) => {
                        format!("buildit: cache `{}` restored from the newest key starting with `{prefix}`", cache.name)
                    }
                    CacheHit::Miss => format!("buildit: cache `{}` not found (key `{}`)", cache.name, cache.key),
                });
            }
            Ok::<_, String>((caches, notes, hits))
        })
        .await
        .unwrap_or_else(|error| Err(format!("cache restore failed: {error}")))?;
        let (caches, notes, hits) = restored;
        for note in notes {
            self.note(1, note).await;
        }
        if let (Some(spec), Some(staging), true) = (remote, &staging, hits > 0)
            && let Err(error) = self.executor.put_files(spec, staging.path()).await
        {
            self.note(1, format!("buildit: caches not restored: {error}"))
                .await;
        }
        Ok(caches)
    }

    /// Saves caches whose key is new, after the stage succeeded. A cache that cannot be saved is reported, not
    /// fatal: the stage's own work succeeded.
    pub(super) async fn save_caches(
        &self,
        mut caches: Vec<ResolvedCache>,
        attempt: u32,
        remote: Option<&StageSpec>,
    ) {
        let Some(store) = self.options.caches.clone() else {
            return;
        };
        // A key that is saved already is never saved again: nothing to copy out for it.
        caches.retain(|cache| !store.contains(&cache.key));
        if caches.is_empty() {
            return;
        }
        let mut notes = Vec::new();
        // Each cache with the directory its paths are found in: the workspace, or (with a `remote` workspace)
        // a staging directory of its own, so that one cache that cannot be copied out does not stop the others.
        let mut sources: Vec<(ResolvedCache, PathBuf)> = Vec::new();
        let mut staging = None;
        match remote {
            None => sources.extend(
                caches
                    .into_iter()
                    .map(|cache| (cache, self.run.workspace.clone())),
            ),
            Some(spec) => {
                let dir = match staging_dir() {
                    Ok(dir) => dir,
                    Err(error) => {
                        self.note(attempt, format!("buildit: caches not saved: {error}"))
                            .await;
                        return;
                    }
                };
                for (index, cache) in caches.into_iter().enumerate() {
                    let into = dir.path().join(index.to_string());
                    // Restoring left only paths inside the workspace; the executor copies nested ones once.
                    let paths: Vec<PathBuf> = cache.paths.iter().map(PathBuf::from).collect();
                    match self.executor.get_files(spec, &paths, &into).await {
                        Ok(()) => sources.push((cache, into)),
                        Err(error) => notes.push(format!(
                            "buildit: cache `{}` not saved: {error}",
                            cache.name
                        )),
                    }
                }
                staging = Some(dir);
            }
        }
        let home = if staging.is_some() {
            None
        } else {
            self.options.home.clone()
        };
        let saved = tokio::task::spawn_blocking(move || {
            sources
                .iter()
                .filter_map(
                    |(cache, root)| match store.save(cache, root, home.as_deref()) {
                        Ok(true) => Some(format!(
                            "buildit: cache `{}` saved (key `{}`)",
                            cache.name, cache.key
                        )),
                        Ok(false) => None,
                        Err(error) => Some(format!(
                            "buildit: cache `{}` not saved: {error}",
                            cache.name
                        )),
                    },
                )
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        drop(staging);
        for note in notes.into_iter().chain(saved) {
            self.note(attempt, note).await;
        }
    }

    /// Copies the artifacts of every stage this one needs into the workspace (with a `remote` workspace:
    /// into a host directory first, then in through the executor).
    pub(super) async fn restore_artifacts(&self, remote: Option<&StageSpec>) -> Result<(), String> {
        let Some(store) = self.options.artifacts.clone() else {
            return Ok(());
        };
        // Only needs that declare artifacts have any to restore; skipping the others keeps file-system work (and
        // a blocking-pool hop) off the path of the many stages that have none.
        let needs: Vec<String> = self.plan.stages()[self.position]
            .needs()
            .iter()
            .map(|&need| &self.plan.stages()[need])
            .filter(|need| !self.plan.definition(need).artifacts.is_empty())
            .map(|need| need.name().to_owned())
            .collect();
        if needs.is_empty() {
            return Ok(());
        }
        let (staging, target) = self
            .host_side(remote)
            .map_err(|error| format!("artifact restore failed: {error}"))?;
        let run = Arc::clone(&self.run);
        let restored = tokio::task::spawn_blocking(move || {
            let mut files = 0;
            for need in needs {
                files += store
                    .restore(&run.run_id, &need, &target)
                    .map_err(|error| {
                        format!("cannot restore the artifacts of `{need}`: {error}")
                    })?;
            }
            Ok(files)
        })
        .await
        .unwrap_or_else(|error| Err(format!("artifact restore failed: {error}")))?;
        if let (Some(spec), Some(staging), true) = (remote, &staging, restored > 0) {
            self.executor
                .put_files(spec, staging.path())
                .await
                .map_err(|error| format!("cannot restore artifacts: {error}"))?;
        }
        Ok(())
    }

    /// Collects the stage's artifacts after it succeeded; a pattern that matches nothing fails the stage. With a
    /// `remote` workspace, what the patterns can match is copied out first (the part of each pattern before
    /// its first wildcard), and collected from there with the same rules.
    pub(super) async fn collect_artifacts(
        &self,
        remote: Option<&StageSpec>,
    ) -> Result<(), (FailureKind, String)> {
        let Some(store) = self.options.artifacts.clone() else {
            return Ok(());
        };
        let stage = &self.plan.stages()[self.position];
        let patterns = artifact_patterns(&self.plan, stage, &self.run);
        if patterns.is_empty() {
            return Ok(());
        }
        // Before anything is copied out: an empty pattern would otherwise collect the whole workspace.
        let written = &self.plan.definition(stage).artifacts;
        if let Some(problem) = written
            .iter()
            .zip(&patterns)
            .find_map(|(written, rendered)| {
                crate::paths::artifact_path_problem(written.value.as_str(), rendered)
            })
        {
            return Err((FailureKind::Config, problem));
        }
        let (_staging, workspace) = self.host_side(remote).map_err(|error| {
            (
                FailureKind::Infrastructure,
                format!("artifact collection failed: {error}"),
            )
        })?;
        if let Some(spec) = remote {
            self.executor
                .get_files(spec, &pattern_roots(&patterns), &workspace)
                .await
                .map_err(|error| {
                    (
                        error.failure_kind(),
                        format!("artifact collection failed: {error}"),
                    )
                })?;
        }
        let run = Arc::clone(&self.run);
        let name = stage.name().to_owned();
        let collected = tokio::task::spawn_blocking(move || {
            store
                .collect(&run.run_id, &name, &workspace, &patterns)
                .map(|_| ())
                .map_err(|error| {
                    // What the stage wrote (or did not) is the pipeline's matter; a copy that failed is not.
                    let kind = match error {
                        super::super::artifacts::ArtifactError::Io { .. } => {
                            FailureKind::Infrastructure
                        }
                        _ => FailureKind::Config,
                    };
                    (kind, error.to_string())
                })
        })
        .await;
        collected.unwrap_or_else(|error| {
            Err((
                FailureKind::Infrastructure,
                format!("artifact collection failed: {error}"),
            ))
        })
    }
}

impl<E: Executor> StageTask<E> {
    /// Where a transfer's files are on the host: the workspace itself, or, for a `remote` workspace, a staging
    /// directory (returned too: it is removed when dropped).
    pub(super) fn host_side(
        &self,
        remote: Option<&StageSpec>,
    ) -> Result<(Option<tempfile::TempDir>, PathBuf), String> {
        match remote {
            None => Ok((None, self.run.workspace.clone())),
            Some(_) => {
                let dir = staging_dir()?;
                let path = dir.path().to_path_buf();
                Ok((Some(dir), path))
            }
        }
    }
}

/// A host directory where files pass between a workspace the host cannot see and the artifact or cache store;
/// removed when dropped.
fn staging_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("buildit-staging-")
        .tempdir()
        .map_err(|error| format!("cannot create a staging directory: {error}"))
}

/// The directories (or files) that artifact (or report) patterns can match in: each pattern up to its first
/// wildcard.
/// Patterns that leave the workspace get nothing copied (collection then refuses them as it always does).
pub(super) fn pattern_roots(patterns: &[String]) -> Vec<PathBuf> {
    let roots = patterns
        .iter()
        .filter_map(|pattern| inside_workspace(std::path::Path::new(pattern)))
        .map(|path| {
            path.components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect()
        })
        .collect();
    outermost(roots)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::pattern_roots;

    #[test]
    fn artifact_patterns_are_copied_out_from_before_their_first_wildcard() {
        let roots = |patterns: &[&str]| {
            pattern_roots(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            roots(&[
                "dist/**/*.js",
                "dist/sub/a.txt",
                "report.xml",
                "../up",
                "/etc/x"
            ]),
            [PathBuf::from("dist"), PathBuf::from("report.xml")]
        );
        assert_eq!(roots(&["build/*/out", "**/*.log"]), [PathBuf::new()]);
        assert_eq!(roots(&["a/b[0-9]/c", "a/bc"]), [PathBuf::from("a")]);
        assert_eq!(
            roots(&["./dist/*.js", "dist/a.txt", "~/x"]),
            [PathBuf::from("dist")]
        );
    }
}
