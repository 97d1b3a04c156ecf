//! A stage's matrix expanded: every combination of its axes' values, in the order the planner names them.

use super::model::Stage;

/// Every combination of the stage's matrix axes (the last axis varies fastest); one empty combination without.
pub(crate) fn combinations(stage: &Stage) -> Vec<Vec<(String, String)>> {
    let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for axis in stage.matrix.iter().flat_map(|matrix| &matrix.axes) {
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push((axis.name.value.clone(), value.value.clone()));
                    next
                })
            })
            .collect();
    }
    combinations
}
