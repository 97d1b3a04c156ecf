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
        let mut present: std::collections::HashSet<Vec<(String, String)>> =
            combinations.iter().cloned().collect();
        for include in &self.include {
            let combination = include.combination(&self.axes);
            // An include without a value for every axis was reported when the file was read.
            if let Some(combination) = combination
                && present.insert(combination.clone())
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
        assert_eq!(matrix.combinations().len(), 5);
        assert_eq!(matrix.exact_instance_count(), Some(5));
    }

    /// A matrix with entries is expanded to apply them: one too large to expand is refused at once, however
    /// many entries it has.
    #[test]
    fn a_matrix_too_large_to_expand_is_refused_quickly() {
        let axes: String = (0..13).map(|i| format!("a{i} \"x\" \"y\"\n")).collect();
        let excludes: String = (0..2000).map(|_| "exclude { a0 \"x\"; }\n").collect();
        let text = format!(
            "pipeline \"p\"\nstage \"s\" {{\n    matrix {{\n{axes}{excludes}    }}\n    run \"true\"\n}}\n"
        );
        let started = std::time::Instant::now();
        let Err(error) = parse_pipeline(&text, "buildit.kdl") else {
            panic!("accepted");
        };
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let messages: Vec<String> = error
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("at most 4096 combinations")),
            "{messages:?}"
        );
    }
}
