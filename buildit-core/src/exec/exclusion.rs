//! Stages that must not run at the same time: their cache paths or artifacts overlap in a place they share
//! (the run's workspace; for host stages also the home directory and the file system).

use super::scheduler::RunOptions;
use super::spec::{RunIdentity, artifact_patterns, cache_paths};
use crate::config::ExecutorKind;
use crate::plan::Plan;
use crate::plan::overlap::{Claim, ancestors_among, has_bit, overlapping_pairs};

/// For each stage position, the positions it must not run alongside; empty when no two stages may collide
/// (always so for a pipeline without caches and artifacts, which pays for one pass over its stages).
pub(crate) fn exclusions(plan: &Plan, run: &RunIdentity, options: &RunOptions) -> Vec<Vec<usize>> {
    let stages = plan.stages();
    let mut claimed: Vec<(usize, Vec<Claim>)> = Vec::new();
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
        // Container stages cache only inside the workspace (the rest is left out), so only there can they meet.
        let on_host = stage.executor() == ExecutorKind::Local;
        let claims: Vec<Claim> = paths
            .iter()
            .filter_map(|path| Claim::parse(path))
            .filter(|claim| on_host || !claim.outside_workspace())
            .collect();
        if !claims.is_empty() {
            claimed.push((position, claims));
        }
    }
    if claimed.len() < 2 {
        return Vec::new();
    }
    let marked: Vec<usize> = claimed.iter().map(|(position, _)| *position).collect();
    let ancestors = ancestors_among(
        stages.len(),
        plan.order_positions(),
        |position| stages[position].needs().to_vec(),
        &marked,
    );
    let flat: Vec<(usize, &Claim)> = claimed
        .iter()
        .enumerate()
        .flat_map(|(owner, (_, claims))| claims.iter().map(move |claim| (owner, claim)))
        .collect();
    let refs: Vec<&Claim> = flat.iter().map(|(_, claim)| *claim).collect();
    let mut owners: Vec<(usize, usize)> = overlapping_pairs(&refs)
        .into_iter()
        .map(|(a, b)| (flat[a].0, flat[b].0))
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a.min(b), a.max(b)))
        .collect();
    owners.sort_unstable();
    owners.dedup();
    let mut exclusive = vec![Vec::new(); stages.len()];
    for (i, j) in owners {
        let (first, second) = (claimed[i].0, claimed[j].0);
        // One needs the other (directly or not): they never run at the same time anyway.
        if has_bit(&ancestors[second], i) || has_bit(&ancestors[first], j) {
            continue;
        }
        exclusive[first].push(second);
        exclusive[second].push(first);
    }
    exclusive
}
