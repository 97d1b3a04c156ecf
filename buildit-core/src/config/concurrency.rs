//! Reads a `concurrency` node: the pipeline's stage limit and its group, or a stage's group.

use kdl::{KdlNode, KdlValue};

use super::model::{ConcurrencyGroup, Spanned};
use super::reader::Reader;
use super::template::TemplateScope;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};

/// Where a `concurrency` node is written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place<'a> {
    /// At the top of the file: `concurrency 4 group="deploy-{branch}"`.
    Pipeline,
    /// In a stage (or a stage template), whose matrix axes are these: `concurrency group="deploy"`.
    Stage(&'a [String]),
}

/// What a `concurrency` node says; parts with mistakes are left out (and reported).
#[derive(Debug, Default)]
pub(crate) struct Concurrency {
    /// The most stages at once (pipeline only).
    pub(crate) limit: Option<Spanned<u32>>,
    /// The group.
    pub(crate) group: Option<ConcurrencyGroup>,
}

const EXAMPLE: &str = "write `concurrency group=\"deploy-{branch}\" cancel-in-progress=#true`";

/// Reads `node` written at `place`, reporting every mistake.
pub(crate) fn read_concurrency(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    place: Place<'_>,
) -> Concurrency {
    reader.no_children(node);
    let props = reader.props(node, &["group", "cancel-in-progress"], &[]);
    let scope = match place {
        Place::Pipeline => TemplateScope {
            before_run: true,
            no_stage: true,
            ..TemplateScope::default()
        },
        Place::Stage(axes) => TemplateScope {
            matrix_axes: Some(axes),
            before_run: true,
            ..TemplateScope::default()
        },
    };
    let mut name: Option<Spanned<String>> = None;
    // Said once: a group that is there but wrong is not also "missing".
    let mut group_given = false;
    let mut cancel_in_progress: Option<(bool, miette::SourceSpan)> = None;
    for (key, entry) in props {
        let key_span = entry.name().map_or(entry.span(), |name| name.span());
        if key == "group" {
            group_given = true;
            name = reader.string(entry, "`group`");
            continue;
        }
        match entry.value() {
            KdlValue::Bool(value) => cancel_in_progress = Some((*value, key_span)),
            other => {
                reader.error(
                    DiagnosticCode::InvalidValue,
                    format!("`cancel-in-progress` must be `#true` or `#false`, found `{other}`"),
                    reader.value_span(entry),
                    "expected `#true` or `#false`",
                );
                reader.help_last("write `cancel-in-progress=#true` to cancel the run in progress, or leave it out to wait for it");
            }
        }
    }
    let args = reader.args(node);
    let limit = match place {
        Place::Pipeline if !args.is_empty() => reader
            .integer(node, "concurrency", 1..=4096)
            .map(|value| value.map(|v| v as u32)),
        Place::Pipeline => {
            if !group_given {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        "`concurrency` needs a number of stages or a `group`",
                        node.name().span(),
                        "nothing given",
                    )
                    .with_help(
                        "write `concurrency 4` for at most four stages at once, or `concurrency group=\"deploy-{branch}\"` for one run of the group at a time",
                    ),
                );
            }
            None
        }
        Place::Stage(_) => {
            if let Some(first) = args.first() {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        "a stage's `concurrency` takes no number",
                        first.span(),
                        "unexpected number",
                    )
                    .with_help("the most stages at once is the pipeline's: write `concurrency 4` at the top of the file; a stage takes `concurrency group=\"NAME\"`"),
                );
            } else if !group_given {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        "a stage's `concurrency` needs a `group`",
                        node.name().span(),
                        "no group",
                    )
                    .with_help(EXAMPLE),
                );
            }
            None
        }
    };
    if let (Some((_, span)), false) = (cancel_in_progress, group_given) {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "`cancel-in-progress` needs a `group`",
                span,
                "no group to cancel in",
            )
            .with_help(EXAMPLE),
        );
    }
    let group = name.and_then(|name| {
        if name.value.trim().is_empty() {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    "the concurrency group is empty",
                    name.span,
                    "empty group",
                )
                .with_help(EXAMPLE),
            );
            return None;
        }
        Some(ConcurrencyGroup {
            name: reader.template(&name, scope),
            cancel_in_progress: cancel_in_progress.is_some_and(|(value, _)| value),
            span: node.span(),
        })
    });
    Concurrency { limit, group }
}
