//! Path locks: a stage whose cache paths or artifacts overlap those of a running stage waits until it ends
//! (stages of a run share the workspace; host stages also share the home directory and the file system).

use super::options::RunOptions;
use super::spec::{RunIdentity, artifact_patterns, cache_paths};
use crate::config::ExecutorKind;
use crate::paths::Claim;
use crate::plan::Plan;

/// The paths each stage claims while it runs, and the stages running with a claim. Two stages where one
/// needs the other never run at once anyway, so only the claims of running stages are compared: no pairs are
/// computed ahead, and a pipeline without caches and artifacts has no claims at all.
#[derive(Debug, Default)]
pub(crate) struct PathLocks {
    /// By stage position; empty when no stage claims anything.
    claims: Vec<Vec<Claim>>,
    /// Running stages that claim paths.
    running: Vec<usize>,
}

impl PathLocks {
    /// The claims of every stage that will run: rendered cache paths (when caches are kept) and artifacts
    /// patterns (when artifacts are collected).
    pub(crate) fn new(plan: &Plan, run: &RunIdentity, options: &RunOptions) -> Self {
        let stages = plan.stages();
        let mut claims: Vec<Vec<Claim>> = Vec::new();
        for (position, stage) in stages.iter().enumerate() {
            if stage.is_skipped() {
                continue;
            }
            let definition = plan.definition(stage);
            let caches = options.caches.is_some() && !definition.caches.is_empty();
            let artifacts = options.artifacts.is_some() && !definition.artifacts.is_empty();
            if !caches && !artifacts {
                continue;
            }
            let mut paths = Vec::new();
            if caches {
                paths.extend(cache_paths(plan, stage, run));
            }
            if artifacts {
                paths.extend(artifact_patterns(plan, stage, run));
            }
            // Container stages cache only inside the workspace (the rest is left out), so only there can they
            // meet another stage.
            let on_host = stage.executor() == ExecutorKind::Local;
            let mine: Vec<Claim> = paths
                .iter()
                .filter_map(|path| Claim::parse(path))
                .filter(|claim| on_host || !claim.outside_workspace())
                .collect();
            if mine.is_empty() {
                continue;
            }
            if claims.is_empty() {
                claims = vec![Vec::new(); stages.len()];
            }
            if let Some(slot) = claims.get_mut(position) {
                *slot = mine;
            }
        }
        Self {
            claims,
            running: Vec::new(),
        }
    }

    /// Whether `position` claims paths at all (only such a stage can wait, or make others wait).
    pub(crate) fn claims(&self, position: usize) -> bool {
        self.claims
            .get(position)
            .is_some_and(|mine| !mine.is_empty())
    }

    /// Whether a running stage holds a path that overlaps one of `position`'s.
    pub(crate) fn blocked(&self, position: usize) -> bool {
        let Some(mine) = self.claims.get(position).filter(|mine| !mine.is_empty()) else {
            return false;
        };
        self.running.iter().any(|&other| {
            self.claims.get(other).is_some_and(|theirs| {
                mine.iter()
                    .any(|claim| theirs.iter().any(|their| claim.overlaps(their)))
            })
        })
    }

    /// `position` started: its paths are held.
    pub(crate) fn acquire(&mut self, position: usize) {
        if self.claims(position) {
            self.running.push(position);
        }
    }

    /// `position` ended: its paths are free; whether it held any.
    pub(crate) fn release(&mut self, position: usize) -> bool {
        let before = self.running.len();
        self.running.retain(|&running| running != position);
        self.running.len() != before
    }
}
