//! Checking `needs "build" matrix="same"`: both stages have a matrix, of the same axes, and every instance of the
//! stage has the instance of `build` with its values to pair with.

use std::collections::HashMap;

use super::limits::MAX_MATRIX_INSTANCES;
use super::model::{Pipeline, Spanned, Stage};
use super::reader::Reader;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};

/// Reports every paired need that cannot pair (`index`: the stages by name).
pub(crate) fn check_paired_needs(
    reader: &mut Reader<'_>,
    pipeline: &Pipeline,
    index: &HashMap<&str, usize>,
) {
    for stage in &pipeline.stages {
        for need in &stage.paired_needs {
            // A need that is not a stage is reported as such already.
            let Some(&target) = index.get(need.value.as_str()) else {
                continue;
            };
            check_pair(reader, stage, &pipeline.stages[target], need);
        }
    }
}

fn check_pair(reader: &mut Reader<'_>, stage: &Stage, needed: &Stage, need: &Spanned<String>) {
    let refuse = |reader: &mut Reader<'_>, message: String, help: String| {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                message,
                need.span,
                "cannot pair",
            )
            .with_help(help),
        );
    };
    let (Some(matrix), Some(needed_matrix)) = (&stage.matrix, &needed.matrix) else {
        let without = if stage.matrix.is_none() {
            &stage.name.value
        } else {
            &needed.name.value
        };
        refuse(
            reader,
            format!(
                "stage `{}` needs `{}` with `matrix=\"same\"`, but `{without}` has no matrix",
                stage.name.value, need.value
            ),
            "`matrix=\"same\"` pairs the instances of two matrix stages: leave it out to need the stage".to_owned(),
        );
        return;
    };
    let mut axes = matrix.axis_names();
    let mut needed_axes = needed_matrix.axis_names();
    axes.sort();
    needed_axes.sort();
    if axes != needed_axes {
        refuse(
            reader,
            format!(
                "stage `{}` (axes {}) cannot pair with `{}` (axes {}): `matrix=\"same\"` needs the same axes",
                stage.name.value,
                axes.join(", "),
                need.value,
                needed_axes.join(", ")
            ),
            "give both matrices the same axes, or leave out `matrix=\"same\"` to need every instance".to_owned(),
        );
        return;
    }
    // Oversized matrices are reported as such; expanding them here would take long.
    if matrix.instance_count() > MAX_MATRIX_INSTANCES
        || needed_matrix.instance_count() > MAX_MATRIX_INSTANCES
    {
        return;
    }
    let sorted = |mut combination: Vec<(String, String)>| {
        combination.sort();
        combination
    };
    let partners: std::collections::HashSet<Vec<(String, String)>> = needed_matrix
        .combinations()
        .into_iter()
        .map(sorted)
        .collect();
    let unpaired: Vec<String> = matrix
        .combinations()
        .into_iter()
        .filter(|combination| !partners.contains(&sorted(combination.clone())))
        .map(|combination| {
            let values: Vec<String> = combination
                .iter()
                .map(|(axis, value)| format!("{axis}={value}"))
                .collect();
            format!("({})", values.join(", "))
        })
        .collect();
    if let Some(first) = unpaired.first() {
        let more = match unpaired.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        refuse(
            reader,
            format!(
                "instance {first}{more} of `{}` has no instance of `{}` to pair with",
                stage.name.value, need.value
            ),
            format!(
                "give `{}` the same values (an `include`, or one `exclude` less), or leave out `matrix=\"same\"`",
                need.value
            ),
        );
    }
}
