//! `template "NAME" { ...stage children... }` and `stage "x" template="NAME"`: which of a template's children a
//! stage that uses it gets.

use std::collections::HashMap;

use kdl::{KdlDocument, KdlNode};
use miette::SourceSpan;

use super::reader::Reader;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};
use crate::suggest::did_you_mean;

/// Children a stage's own node replaces rather than adds to: those given once, and `run` (a stage's commands
/// are its own, as GitLab's `extends` replaces `script`).
const REPLACED: [&str; 13] = [
    "concurrency",
    "image",
    "run",
    "shell",
    "workdir",
    "timeout",
    "retry",
    "allow-failure",
    "manual",
    "matrix",
    "executor",
    "resources",
    "when",
];

/// The pipeline's templates by name (the first of a name; later ones are reported).
#[derive(Debug, Default)]
pub(crate) struct Templates<'d> {
    by_name: HashMap<String, &'d KdlNode>,
    /// Which were used, to warn of the others.
    used: HashMap<String, ()>,
}

impl<'d> Templates<'d> {
    /// Reads every top-level `template` node of `document`: a valid name, no properties, a children block.
    pub(crate) fn collect(reader: &mut Reader<'_>, document: &'d KdlDocument) -> Self {
        let mut templates = Self::default();
        let mut first_spans: HashMap<String, SourceSpan> = HashMap::new();
        for node in document.nodes() {
            if node.name().value() != "template" {
                continue;
            }
            reader.reject_type_annotations(node);
            reader.props(node, &[], &[]);
            let Some(name) = reader.one_string(node, "the template name") else {
                continue;
            };
            if !super::model::is_valid_name(&name.value) {
                reader.error(
                    DiagnosticCode::InvalidValue,
                    format!("invalid template name `{}`", name.value),
                    name.span,
                    "invalid name",
                );
                reader.help_last("template names use letters, digits, `.`, `_` and `-`, starting with a letter or digit");
                continue;
            }
            if node.children().is_none() {
                reader.error(
                    DiagnosticCode::InvalidValue,
                    format!("template `{}` has no children block", name.value),
                    node.name().span(),
                    "empty template",
                );
                reader.help_last("write the stage children it gives: `template \"rust\" { image \"rust:1.82\"; }`");
                continue;
            }
            if let Some(first) = first_spans.get(&name.value) {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::DuplicateNode,
                        format!("template `{}` is defined twice", name.value),
                        name.span,
                        "defined again here",
                    )
                    .with_label(*first, "first defined here")
                    .with_help("rename one of the templates"),
                );
                continue;
            }
            first_spans.insert(name.value.clone(), name.span);
            templates.by_name.insert(name.value, node);
        }
        templates
    }

    /// The children a stage using `template` reads, in order: the template's that its own do not replace, then
    /// its own. `None` (reported) when there is no such template.
    pub(crate) fn children_for(
        &mut self,
        reader: &mut Reader<'_>,
        template: &crate::config::Spanned<String>,
        own: &'d [KdlNode],
    ) -> Option<Vec<Inherited<'d>>> {
        let Some(node) = self.by_name.get(&template.value).copied() else {
            // The template it probably meant is not also said to be unused.
            if let Some(meant) =
                crate::suggest::closest(&template.value, self.by_name.keys().map(String::as_str))
            {
                self.used.insert(meant.to_owned(), ());
            }
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::UnknownTemplate,
                    format!("no template named `{}`", template.value),
                    template.span,
                    "unknown template",
                )
                .with_optional_help(
                    did_you_mean(&template.value, self.by_name.keys().map(String::as_str)).or_else(|| {
                        Some("define it with `template \"NAME\" { ... }` in this file or an included one".to_owned())
                    }),
                ),
            );
            return None;
        };
        self.used.insert(template.value.clone(), ());
        let inherited = node.children().map(KdlDocument::nodes).unwrap_or_default();
        let mut children: Vec<Inherited<'d>> = inherited
            .iter()
            .filter(|child| {
                let key = child.name().value();
                !(REPLACED.contains(&key) && own.iter().any(|mine| mine.name().value() == key))
            })
            .map(|node| Inherited {
                node,
                from_template: true,
            })
            .collect();
        children.extend(own.iter().map(|node| Inherited {
            node,
            from_template: false,
        }));
        Some(children)
    }

    /// Warns of templates no stage uses (their children are never checked).
    pub(crate) fn warn_unused(&self, reader: &mut Reader<'_>) {
        let mut unused: Vec<(&String, &&KdlNode)> = self
            .by_name
            .iter()
            .filter(|(name, _)| !self.used.contains_key(*name))
            .collect();
        unused.sort_by_key(|(_, node)| node.span().offset());
        for (name, node) in unused {
            reader.push(
                ConfigDiagnostic::warning(
                    DiagnosticCode::UnusedTemplate,
                    format!("template `{name}` is not used by any stage"),
                    node.name().span(),
                    "never used",
                )
                .with_help(format!(
                    "use it with `stage \"x\" template=\"{name}\"`, or remove it"
                )),
            );
        }
    }
}

/// One child a stage reads, and whether it came from its template.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inherited<'d> {
    pub(crate) node: &'d KdlNode,
    pub(crate) from_template: bool,
}
