//! Reading a matrix's `exclude` and `include` entries (`exclude { os "macos"; rust "1.80" }`) and checking them
//! against its axes: every axis named exists, an excluded value is one of the axis's, an include gives every
//! axis a value and adds a combination the matrix does not have.

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

use super::model::{
    MAX_ENTRY_MATRIX_AXES, MAX_ENTRY_MATRIX_COMBINATIONS, MAX_MATRIX_ENTRIES, Matrix, MatrixAxis,
    MatrixEntry, Spanned, is_valid_matrix_value,
};
use super::reader::Reader;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};
use crate::suggest::did_you_mean;

/// A matrix value: a string, or an integer taken as written (`rust "1.80"`, `shard 3`).
pub(crate) fn matrix_value(reader: &mut Reader<'_>, entry: &KdlEntry) -> Option<Spanned<String>> {
    let value = match entry.value() {
        KdlValue::String(text) => text.clone(),
        KdlValue::Integer(number) => number.to_string(),
        other => {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!("matrix values are strings, found `{other}`"),
                entry.span(),
                "expected a string",
            );
            reader.help_last("write matrix values in quotes, e.g. `rust \"1.80\"`");
            return None;
        }
    };
    if !is_valid_matrix_value(&value) {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("invalid matrix value `{value}`"),
                entry.span(),
                "invalid value",
            )
            .with_help("matrix values use letters, digits, `.`, `_`, `-`, `/`, `:` and `+`, starting with a letter or digit"),
        );
        return None;
    }
    Some(Spanned::new(value, entry.span()))
}

/// Reads one `exclude` or `include` node: its children, one axis and one value each.
pub(crate) fn read_entry(reader: &mut Reader<'_>, node: &KdlNode) -> MatrixEntry {
    reader.props(node, &[], &[]);
    reader.no_args(node);
    let kind = node.name().value();
    let mut pairs: Vec<(Spanned<String>, Spanned<String>)> = Vec::new();
    let mut seen: std::collections::HashMap<&str, miette::SourceSpan> =
        std::collections::HashMap::new();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        reader.reject_type_annotations(child);
        reader.props(child, &[], &[]);
        reader.no_children(child);
        let axis = Spanned::new(child.name().value().to_owned(), child.name().span());
        if let Some(&first) = seen.get(axis.value.as_str()) {
            reader.duplicate_node(child, first, &format!("a matrix's `{kind}`"));
            continue;
        }
        seen.insert(child.name().value(), axis.span);
        let args = reader.args(child);
        let [entry] = args.as_slice() else {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!(
                    "`{}` in `{kind}` takes one value, found {}",
                    axis.value,
                    args.len()
                ),
                child.span(),
                "one value expected",
            );
            reader.help_last(format!("write `{kind} {{ {} \"VALUE\" }}`", axis.value));
            continue;
        };
        if let Some(value) = matrix_value(reader, entry) {
            pairs.push((axis, value));
        }
    }
    if pairs.is_empty()
        && node
            .children()
            .is_none_or(|children| children.nodes().is_empty())
    {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("this `{kind}` names no values"),
                node.name().span(),
                "empty",
            )
            .with_help(format!("write `{kind} {{ os \"macos\"; rust \"1.80\" }}`")),
        );
    }
    MatrixEntry {
        pairs,
        span: node.name().span(),
    }
}

/// Checks the entries against the axes (see the module) and counts the matrix's instances once. An entry with
/// anything wrong is dropped whole (a part of an exclude would exclude more), so that what is left expands as
/// written.
pub(crate) fn check_entries(reader: &mut Reader<'_>, matrix: &mut Matrix) {
    if matrix.exclude.is_empty() && matrix.include.is_empty() {
        return;
    }
    if !within_entry_limits(reader, matrix) {
        matrix.exclude.clear();
        matrix.include.clear();
        return;
    }
    let axes = &matrix.axes;
    matrix.exclude.retain(|entry| {
        !entry.pairs.is_empty()
            && entry
                .pairs
                .iter()
                .all(|(axis, value)| known_pair(reader, axes, axis, value, true))
    });
    let mut complete = Vec::with_capacity(matrix.include.len());
    for entry in std::mem::take(&mut matrix.include) {
        if entry.pairs.is_empty()
            || !entry
                .pairs
                .iter()
                .all(|(axis, value)| known_pair(reader, &matrix.axes, axis, value, false))
        {
            continue;
        }
        let missing: Vec<String> = matrix
            .axes
            .iter()
            .map(|axis| axis.name.value.as_str())
            .filter(|name| !entry.pairs.iter().any(|(axis, _)| axis.value == *name))
            .map(|name| format!("`{name}`"))
            .collect();
        if missing.is_empty() {
            complete.push(entry);
        } else {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!("this `include` has no value for {}", missing.join(", ")),
                    entry.span,
                    "incomplete combination",
                )
                .with_help("an `include` adds one whole combination: give every axis of the matrix a value"),
            );
        }
    }
    // An include the matrix has already (not excluded, or included before) adds nothing: a mistake.
    let kept = Matrix {
        include: Vec::new(),
        counted: None,
        ..matrix.clone()
    };
    let mut present: std::collections::HashSet<Vec<(String, String)>> =
        kept.combinations().into_iter().collect();
    let mut count = present.len();
    let mut added = Vec::with_capacity(complete.len());
    for entry in complete {
        let Some(combination) = entry.combination(&matrix.axes) else {
            continue;
        };
        if present.contains(&combination) {
            let values: Vec<String> = combination
                .iter()
                .map(|(axis, value)| format!("{axis}={value}"))
                .collect();
            reader.push(
                ConfigDiagnostic::warning(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "this `include` adds ({}), which the matrix has already",
                        values.join(", ")
                    ),
                    entry.span,
                    "adds nothing",
                )
                .with_help("remove it, or change one of its values"),
            );
            continue;
        }
        present.insert(combination);
        count += 1;
        added.push(entry);
    }
    matrix.include = added;
    if count == 0 {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "the matrix's `exclude`s leave no combination",
                matrix.span,
                "no instance",
            )
            .with_help("exclude fewer combinations, or remove the matrix"),
        );
    }
    matrix.counted = Some(count);
}

/// Whether a matrix with entries is small enough to expand: at most [`MAX_ENTRY_MATRIX_AXES`] axes,
/// [`MAX_ENTRY_MATRIX_COMBINATIONS`] combinations and [`MAX_MATRIX_ENTRIES`] of each kind; says why not.
fn within_entry_limits(reader: &mut Reader<'_>, matrix: &Matrix) -> bool {
    let cross = matrix
        .axes
        .iter()
        .try_fold(1usize, |count, axis| count.checked_mul(axis.values.len()));
    let problem = if matrix.axes.len() > MAX_ENTRY_MATRIX_AXES {
        Some(format!(
            "a matrix with `exclude` or `include` may have at most {MAX_ENTRY_MATRIX_AXES} axes; this one has {}",
            matrix.axes.len()
        ))
    } else if cross.is_none_or(|cross| cross > MAX_ENTRY_MATRIX_COMBINATIONS) {
        Some(format!(
            "a matrix with `exclude` or `include` may have at most {MAX_ENTRY_MATRIX_COMBINATIONS} combinations of \
             its axes before exclusions"
        ))
    } else if matrix.exclude.len() > MAX_MATRIX_ENTRIES || matrix.include.len() > MAX_MATRIX_ENTRIES
    {
        Some(format!(
            "a matrix may have at most {MAX_MATRIX_ENTRIES} `exclude`s and {MAX_MATRIX_ENTRIES} `include`s"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            reader.push(
                ConfigDiagnostic::error(DiagnosticCode::Limit, message, matrix.span, "too large")
                    .with_help(
                        "split the stage, or list the combinations it runs as axes of their own",
                    ),
            );
            false
        }
        None => true,
    }
}

/// Whether `axis` is one of `axes` and, for an exclude (`listed`), `value` one of its values; reports what is not.
fn known_pair(
    reader: &mut Reader<'_>,
    axes: &[MatrixAxis],
    axis: &Spanned<String>,
    value: &Spanned<String>,
    listed: bool,
) -> bool {
    let Some(found) = axes.iter().find(|known| known.name.value == axis.value) else {
        let help = did_you_mean(
            &axis.value,
            axes.iter().map(|known| known.name.value.as_str()),
        )
        .unwrap_or_else(|| {
            let names: Vec<String> = axes
                .iter()
                .map(|known| format!("`{}`", known.name.value))
                .collect();
            format!("the matrix's axes are {}", names.join(", "))
        });
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::UnknownVariable,
                format!("the matrix has no axis `{}`", axis.value),
                axis.span,
                "unknown axis",
            )
            .with_help(help),
        );
        return false;
    };
    if listed && !found.values.iter().any(|known| known.value == value.value) {
        let help = did_you_mean(
            &value.value,
            found.values.iter().map(|known| known.value.as_str()),
        )
        .unwrap_or_else(|| {
            let values: Vec<String> = found
                .values
                .iter()
                .map(|known| format!("`{}`", known.value))
                .collect();
            format!("axis `{}` has {}", axis.value, values.join(", "))
        });
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!(
                    "axis `{}` has no value `{}` to exclude",
                    axis.value, value.value
                ),
                value.span,
                "not one of the axis's values",
            )
            .with_help(help),
        );
        return false;
    }
    true
}
