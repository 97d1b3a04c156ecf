//! A stage's matrix expanded: every combination of its axes' values, in the order the planner names them, less
//! those an `exclude` matches, plus each `include`.

use super::model::{Matrix, Stage};

/// Every combination of the stage's matrix (see [`Matrix::combinations`]); one empty combination without.
pub(crate) fn combinations(stage: &Stage) -> Vec<Vec<(String, String)>> {
    match &stage.matrix {
        Some(matrix) => matrix.combinations(),
        None => vec![Vec::new()],
    }
}

impl Matrix {
    /// Every combination of the axes' values (the last axis varies fastest) that no `exclude` matches, then
    /// each `include` that is not among them already, with its values in the order of the axes.
    pub fn combinations(&self) -> Vec<Vec<(String, String)>> {
        let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for axis in &self.axes {
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
        if !self.exclude.is_empty() {
            combinations.retain(|combination| {
                !self
                    .exclude
                    .iter()
                    .any(|exclude| exclude.matches(combination))
            });
        }
        for include in &self.include {
            let combination: Option<Vec<(String, String)>> = self
                .axes
                .iter()
                .map(|axis| {
                    include
                        .pairs
                        .iter()
                        .find(|(name, _)| name.value == axis.name.value)
                        .map(|(_, value)| (axis.name.value.clone(), value.value.clone()))
                })
                .collect();
            // An include without a value for every axis was reported when the file was read.
            if let Some(combination) = combination
                && !combinations.contains(&combination)
            {
                combinations.push(combination);
            }
        }
        combinations
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_pipeline;

    fn matrix(body: &str) -> crate::config::Matrix {
        let text = format!(
            "pipeline \"p\"\nstage \"s\" {{\n    matrix {{\n{body}\n    }}\n    run \"true\"\n}}\n"
        );
        let pipeline =
            parse_pipeline(&text, "buildit.kdl").unwrap_or_else(|error| panic!("{error:?}"));
        pipeline.stages[0]
            .matrix
            .clone()
            .unwrap_or_else(|| panic!("no matrix"))
    }

    fn names(matrix: &crate::config::Matrix) -> Vec<String> {
        matrix
            .combinations()
            .iter()
            .map(|combination| {
                combination
                    .iter()
                    .map(|(axis, value)| format!("{axis}={value}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn excludes_remove_what_they_match_and_includes_come_after_in_axis_order() {
        let matrix = matrix(
            r#"os "linux" "macos" "bsd"
            rust "1.80" "1.82"
            exclude { os "macos"; rust "1.80"; }
            exclude { os "bsd"; }
            include { rust "1.83"; os "windows"; }
            include { os "macos"; rust "1.80"; }"#,
        );
        assert_eq!(
            names(&matrix),
            [
                "os=linux,rust=1.80",
                "os=linux,rust=1.82",
                "os=macos,rust=1.82",
                "os=windows,rust=1.83",
                "os=macos,rust=1.80",
            ]
        );
        assert_eq!(matrix.instance_count(), 5);
        assert_eq!(matrix.exact_instance_count(), Some(5));
    }
}
