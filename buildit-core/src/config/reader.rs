//! Reading KDL nodes into typed values while collecting every problem, shared by the pipeline and system files.

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::guard::{MAX_PARSER_TOKENS, scan};
use super::model::Spanned;
use super::plain::MAX_NODES;
use super::template::{
    Template, TemplateProblemKind, TemplateScope, references_in_parameter_expansions,
};
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode, Diagnostics};
use crate::suggest::did_you_mean;

/// Largest configuration file accepted: bounds parse time (the `kdl` crate reads about 1 MB/s).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Reads one document, collecting diagnostics.
#[derive(Debug)]
pub(crate) struct Reader<'s> {
    pub(crate) text: &'s str,
    pub(crate) diagnostics: Diagnostics,
}

impl<'s> Reader<'s> {
    pub(crate) fn new(text: &'s str) -> Self {
        Self {
            text,
            diagnostics: Diagnostics::default(),
        }
    }

    pub(crate) fn push(&mut self, diagnostic: ConfigDiagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub(crate) fn error(
        &mut self,
        code: DiagnosticCode,
        message: impl Into<String>,
        span: SourceSpan,
        label: impl Into<String>,
    ) {
        self.push(ConfigDiagnostic::error(code, message, span, label));
    }

    /// Gives the diagnostic just pushed a help line, unless it has one.
    pub(crate) fn help_last(&mut self, help: impl Into<String>) {
        self.diagnostics.help_last(help.into());
    }

    /// Parses the KDL text, or records why it cannot be parsed (size, nesting, syntax).
    pub(crate) fn parse_document(&mut self) -> Option<KdlDocument> {
        if self.text.len() > MAX_FILE_BYTES {
            self.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::Limit,
                    format!(
                        "the file is {} bytes; at most {MAX_FILE_BYTES} bytes (1 MiB) are accepted",
                        self.text.len()
                    ),
                    SourceSpan::from(0..0),
                    "file starts here",
                )
                .with_help("split the pipeline, or generate fewer stages with a `matrix`"),
            );
            return None;
        }
        let scanned = match scan(self.text) {
            Ok(scanned) => scanned,
            Err(diagnostic) => {
                self.push(diagnostic);
                return None;
            }
        };
        match super::plain::read_plain(self.text) {
            Ok(Some(document)) => return Some(document),
            Ok(None) => {}
            Err(at) => {
                let end = self.text[at..]
                    .find('\n')
                    .map_or(self.text.len(), |n| at + n);
                self.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::Limit,
                        format!("the file has more than {MAX_NODES} nodes; at most {MAX_NODES} are read"),
                        SourceSpan::from(at..end),
                        "node limit passed here",
                    )
                    .with_help("check the file for runs of stray lines; a larger pipeline can use a `matrix` for similar stages, or be split"),
                );
                return None;
            }
        }
        if let Some(at) = scanned.token_limit_at {
            self.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::Limit,
                    format!(
                        "the file has more than {MAX_PARSER_TOKENS} tokens and is not plain KDL; the KDL parser reads at most {MAX_PARSER_TOKENS}"
                    ),
                    SourceSpan::from(at..at),
                    "token limit passed here",
                )
                .with_help("check the file for runs of stray characters; a large generated pipeline can be written as plain KDL (see \"Limits\" in docs/pipeline.md), which has no token limit, or be split"),
            );
            return None;
        }
        if let Some(document) = parse_in_two(self.text, &scanned.boundaries) {
            return Some(document);
        }
        let parsed = parse_on_large_stack(self.text);
        match parsed {
            Ok(Ok(document)) => Some(document),
            Ok(Err(error)) => {
                let total = error.diagnostics.len();
                let mut seen = std::collections::HashSet::new();
                for diagnostic in error.diagnostics {
                    if seen.len() == MAX_SYNTAX_DIAGNOSTICS {
                        break;
                    }
                    let message = diagnostic
                        .message
                        .unwrap_or_else(|| "invalid KDL".to_owned());
                    if !seen.insert((diagnostic.span.offset(), message.clone())) {
                        continue;
                    }
                    let span = clamp_span(diagnostic.span, self.text.len());
                    self.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::Syntax,
                            lowercase_first(message.trim_end_matches('.')),
                            span,
                            diagnostic.label.unwrap_or_else(|| "here".to_owned()),
                        )
                        .with_optional_help(diagnostic.help),
                    );
                }
                if seen.is_empty() {
                    self.error(
                        DiagnosticCode::Syntax,
                        "invalid KDL document",
                        SourceSpan::from(0..0),
                        "here",
                    );
                } else if total > seen.len() {
                    // Thousands of errors from one broken file help nobody and cost time to render.
                    self.push(ConfigDiagnostic::error(
                        DiagnosticCode::Syntax,
                        format!(
                            "{} not shown; fix the first ones and validate again",
                            crate::diagnostic::plural(total - seen.len(), "more syntax error")
                        ),
                        SourceSpan::from(self.text.len()..self.text.len()),
                        "end of file",
                    ));
                }
                None
            }
            Err(()) => {
                self.error(
                    DiagnosticCode::Syntax,
                    "the KDL parser failed on this document",
                    SourceSpan::from(0..0),
                    "here",
                );
                None
            }
        }
    }

    /// Records type annotations, which BuildIt files do not use, on a node and its entries.
    pub(crate) fn reject_type_annotations(&mut self, node: &KdlNode) {
        let annotations = node
            .ty()
            .into_iter()
            .chain(node.entries().iter().filter_map(KdlEntry::ty));
        for ty in annotations {
            self.error(
                DiagnosticCode::InvalidValue,
                format!(
                    "type annotation `({})` is not used in BuildIt files",
                    ty.value()
                ),
                ty.span(),
                "remove this annotation",
            );
        }
    }

    /// The node's positional arguments.
    pub(crate) fn args<'n>(&self, node: &'n KdlNode) -> Vec<&'n KdlEntry> {
        node.entries()
            .iter()
            .filter(|entry| entry.name().is_none())
            .collect()
    }

    /// The node's properties. Unknown names are reported (with a suggestion); a repeated name is an error unless
    /// it is in `repeatable`, where it is accepted with a `repeated_property` warning.
    pub(crate) fn props<'n>(
        &mut self,
        node: &'n KdlNode,
        allowed: &[&str],
        repeatable: &[&str],
    ) -> Vec<(&'n str, &'n KdlEntry)> {
        let mut out: Vec<(&'n str, &'n KdlEntry)> = Vec::new();
        let node_name = node.name().value();
        for entry in node.entries() {
            let Some(name) = entry.name() else { continue };
            let key = name.value();
            if !allowed.contains(&key) {
                let help = did_you_mean(key, allowed.iter().copied()).or_else(|| {
                    Some(if allowed.is_empty() {
                        format!("`{node_name}` takes no properties")
                    } else {
                        format!("`{node_name}` takes: {}", allowed.join(", "))
                    })
                });
                self.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::UnknownProperty,
                        format!("unknown property `{key}` on `{node_name}`"),
                        name.span(),
                        "unknown property",
                    )
                    .with_optional_help(help),
                );
                continue;
            }
            if let Some((_, first)) = out.iter().find(|(k, _)| *k == key) {
                let first_span = first.span();
                if repeatable.contains(&key) {
                    self.push(
                        ConfigDiagnostic::warning(
                            DiagnosticCode::RepeatedProperty,
                            format!("property `{key}` is repeated"),
                            entry.span(),
                            "repeated here",
                        )
                        .with_label(first_span, "first given here")
                        .with_help(format!(
                            "BuildIt reads every `{key}=`, but other KDL tools keep only the last one; write `{key} \"a\" \"b\"` as a child node instead"
                        )),
                    );
                } else {
                    self.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::InvalidValue,
                            format!("property `{key}` is given more than once"),
                            entry.span(),
                            "given again here",
                        )
                        .with_label(first_span, "first given here")
                        .with_help("keep one of them"),
                    );
                    continue;
                }
            }
            out.push((key, entry));
        }
        out
    }

    /// Reports a children block on a node that takes none.
    pub(crate) fn no_children(&mut self, node: &KdlNode) {
        if let Some(children) = node.children() {
            self.error(
                DiagnosticCode::InvalidValue,
                format!("`{}` takes no children block", node.name().value()),
                children.span(),
                "unexpected block",
            );
        }
    }

    /// Reports positional arguments on a node that takes none.
    pub(crate) fn no_args(&mut self, node: &KdlNode) {
        if let Some(first) = self.args(node).first() {
            self.error(
                DiagnosticCode::InvalidValue,
                format!("`{}` takes no arguments", node.name().value()),
                first.span(),
                "unexpected argument",
            );
        }
    }

    /// Reports a node this context does not know, with the closest known name.
    pub(crate) fn unknown_node(&mut self, node: &KdlNode, known: &[&str], context: &str) {
        let name = node.name().value();
        let help = did_you_mean(name, known.iter().copied())
            .unwrap_or_else(|| format!("{context} takes: {}", known.join(", ")));
        self.push(
            ConfigDiagnostic::error(
                DiagnosticCode::UnknownNode,
                format!("unknown node `{name}` in {context}"),
                node.name().span(),
                "unknown node",
            )
            .with_help(help),
        );
    }

    /// A node that may appear once appeared again.
    pub(crate) fn duplicate_node(&mut self, node: &KdlNode, first: SourceSpan, context: &str) {
        self.push(
            ConfigDiagnostic::error(
                DiagnosticCode::DuplicateNode,
                format!(
                    "`{}` is given more than once in {context}",
                    node.name().value()
                ),
                node.name().span(),
                "given again here",
            )
            .with_label(first, "first given here")
            .with_help("keep one of them"),
        );
    }

    /// The span of an entry's value: for a property `key=value`, only `value`.
    pub(crate) fn value_span(&self, entry: &KdlEntry) -> SourceSpan {
        let span = entry.span();
        if entry.name().is_none() {
            return span;
        }
        let start = span.offset();
        let end = (start + span.len()).min(self.text.len());
        let Some(raw) = self.text.get(start..end) else {
            return span;
        };
        match raw.find('=') {
            Some(equals) => {
                let value_start = raw[equals + 1..]
                    .find(|c: char| !c.is_whitespace())
                    .map_or(raw.len(), |offset| equals + 1 + offset);
                SourceSpan::from(start + value_start..end)
            }
            None => span,
        }
    }

    /// A string value, or a report that it is not one.
    pub(crate) fn string(&mut self, entry: &KdlEntry, what: &str) -> Option<Spanned<String>> {
        match entry.value() {
            KdlValue::String(text) => Some(Spanned::new(text.clone(), self.value_span(entry))),
            other => {
                self.error(
                    DiagnosticCode::InvalidValue,
                    format!("{what} must be a string, found `{other}`"),
                    self.value_span(entry),
                    "expected a string",
                );
                self.help_last(format!(
                    "write it in quotes: `\"{}\"`",
                    other.to_string().trim_matches('"')
                ));
                None
            }
        }
    }

    /// A keyword value (`push`, `docker`, `always`, ...) parsed into `T`, or a report with the closest of `names`.
    pub(crate) fn keyword<T: std::str::FromStr<Err = String>>(
        &mut self,
        value: &Spanned<String>,
        names: &[&str],
        label: &str,
    ) -> Option<T> {
        match value.value.parse::<T>() {
            Ok(parsed) => Some(parsed),
            Err(problem) => {
                let help = did_you_mean(&value.value, names.iter().copied())
                    .or_else(|| Some(format!("expected one of: {}", names.join(", "))));
                self.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        problem,
                        value.span,
                        label,
                    )
                    .with_optional_help(help),
                );
                None
            }
        }
    }

    /// Exactly one string argument.
    pub(crate) fn one_string(&mut self, node: &KdlNode, what: &str) -> Option<Spanned<String>> {
        let args = self.args(node);
        match args.as_slice() {
            [only] => self.string(only, what),
            [] => {
                self.error(
                    DiagnosticCode::InvalidValue,
                    format!("`{}` needs a value: {what}", node.name().value()),
                    node.name().span(),
                    "value missing",
                );
                None
            }
            [first, .., last] => {
                let span = span_between(first.span(), last.span());
                self.error(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "`{}` takes one value, found {}",
                        node.name().value(),
                        args.len()
                    ),
                    span,
                    "one value expected",
                );
                None
            }
        }
    }

    /// One or more string arguments.
    pub(crate) fn strings(&mut self, node: &KdlNode, what: &str) -> Vec<Spanned<String>> {
        let args = self.args(node);
        if args.is_empty() {
            self.error(
                DiagnosticCode::InvalidValue,
                format!("`{}` needs at least one value: {what}", node.name().value()),
                node.name().span(),
                "values missing",
            );
        }
        args.into_iter()
            .filter_map(|entry| self.string(entry, what))
            .collect()
    }

    /// A flag: no argument means true, or one boolean.
    pub(crate) fn flag(&mut self, node: &KdlNode) -> Option<bool> {
        let args = self.args(node);
        match args.as_slice() {
            [] => Some(true),
            [only] => match only.value() {
                KdlValue::Bool(value) => Some(*value),
                other => {
                    self.error(
                        DiagnosticCode::InvalidValue,
                        format!("`{}` is a flag: write it alone, or with `#true` or `#false`; found `{other}`", node.name().value()),
                        only.span(),
                        "expected `#true` or `#false`",
                    );
                    self.help_last(format!(
                        "write `{}` alone to turn it on",
                        node.name().value()
                    ));
                    None
                }
            },
            [_, second, ..] => {
                self.error(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "`{}` is a flag and takes at most one value",
                        node.name().value()
                    ),
                    second.span(),
                    "unexpected value",
                );
                None
            }
        }
    }

    /// One integer argument within `range`.
    pub(crate) fn integer(
        &mut self,
        node: &KdlNode,
        what: &str,
        range: std::ops::RangeInclusive<i128>,
    ) -> Option<Spanned<i128>> {
        let args = self.args(node);
        let [only] = args.as_slice() else {
            let span = args.get(1).map_or(node.name().span(), |entry| entry.span());
            self.error(
                DiagnosticCode::InvalidValue,
                format!("`{}` takes one number: {what}", node.name().value()),
                span,
                "one number expected",
            );
            return None;
        };
        match only.value() {
            KdlValue::Integer(value) if range.contains(value) => {
                Some(Spanned::new(*value, only.span()))
            }
            KdlValue::Integer(value) => {
                self.error(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "{what} must be from {} to {}, found {value}",
                        range.start(),
                        range.end()
                    ),
                    only.span(),
                    "out of range",
                );
                self.help_last(format!(
                    "use a whole number from {} to {}",
                    range.start(),
                    range.end()
                ));
                None
            }
            other => {
                self.error(
                    DiagnosticCode::InvalidValue,
                    format!("{what} must be a whole number, found `{other}`"),
                    only.span(),
                    "expected a number",
                );
                self.help_last(format!(
                    "write a whole number without quotes, e.g. `{}`",
                    range.start()
                ));
                None
            }
        }
    }

    /// Parses `value` as a template, reporting unknown and secret references at their exact place.
    pub(crate) fn template(
        &mut self,
        value: &Spanned<String>,
        scope: TemplateScope<'_>,
    ) -> Spanned<Template> {
        let (template, problems) = Template::parse(&value.value, scope);
        let mut locator = ValueLocator::new(self.text, value);
        for problem in problems {
            let span = locator.locate(&value.value, problem.range.clone());
            let (code, label) = match problem.kind {
                TemplateProblemKind::Unknown => {
                    (DiagnosticCode::UnknownVariable, "unknown variable")
                }
                TemplateProblemKind::Invalid => (DiagnosticCode::InvalidValue, "invalid pattern"),
                TemplateProblemKind::Secret(_) => (
                    DiagnosticCode::SecretInterpolation,
                    "secret interpolated here",
                ),
            };
            self.push(
                ConfigDiagnostic::error(code, problem.message, span, label)
                    .with_optional_help(problem.help),
            );
        }
        Spanned::new(template, value.span)
    }

    /// Reports each variable of the `run` command `template` (read from `value`) that stands where the shell
    /// would run its value as code.
    pub(crate) fn check_command(
        &mut self,
        value: &Spanned<String>,
        template: &Template,
        scope: TemplateScope<'_>,
    ) {
        for range in references_in_parameter_expansions(&value.value, scope) {
            let span = ValueLocator::new(self.text, value).locate(&value.value, range.clone());
            let written = value.value.get(range).unwrap_or_default();
            let name = Template::parse(written, scope)
                .0
                .variables()
                .find_map(|(variable, _)| variable.env_name())
                .unwrap_or_else(|| "BUILDIT_BRANCH".to_owned());
            self.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::UnsafeVariable,
                    format!("`{written}` is inside a parameter expansion `${{...}}`, which keeps it as written"),
                    span,
                    "not substituted here",
                )
                .with_help(format!(
                    "use the value's environment variable there, e.g. `${{TARGET:-${name}}}`"
                )),
            );
        }
        if template.is_literal() {
            return;
        }
        let mut locator = ValueLocator::new(self.text, value);
        for ((variable, range), landing) in
            template.variables().zip(template.shell_analysis().landings)
        {
            let Err(refusal) = landing else {
                continue;
            };
            let name = variable.env_name().unwrap_or_default();
            let span = locator.locate(&value.value, range.clone());
            let written = value.value.get(range.clone()).unwrap_or_default();
            self.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::UnsafeVariable,
                    format!("`{written}` {}", refusal.reason),
                    span,
                    "no literal form here",
                )
                .with_help(refusal.help_for(&name).replace("{branch}", written)),
            );
        }
    }

    /// The source span of `range` within the string value written at `value.span`.
    pub(crate) fn inner_span(
        &self,
        value: &Spanned<String>,
        range: std::ops::Range<usize>,
    ) -> SourceSpan {
        ValueLocator::new(self.text, value).locate(&value.value, range)
    }
}

/// Finds where pieces of a string value sit in the source: by offset when the value is written plainly
/// (`"..."` without escapes), else by searching the written text, left to right, so that repeated pieces get
/// their own places. Built once per value, so many problems in one value cost linear time.
#[derive(Debug)]
pub(crate) struct ValueLocator<'s> {
    whole: SourceSpan,
    /// Source offset of the value's first byte when written plainly.
    plain_start: Option<usize>,
    /// The written text and how far the search has got, otherwise.
    raw: &'s str,
    raw_start: usize,
    cursor: usize,
}

impl<'s> ValueLocator<'s> {
    pub(crate) fn new(text: &'s str, value: &Spanned<String>) -> Self {
        let start = value.span.offset();
        let end = (start + value.span.len()).min(text.len());
        let raw = text.get(start..end).unwrap_or("");
        let plain = raw.len() == value.value.len() + 2
            && raw.starts_with('"')
            && raw.ends_with('"')
            && raw.get(1..raw.len() - 1) == Some(value.value.as_str());
        Self {
            whole: value.span,
            plain_start: plain.then_some(start + 1),
            raw,
            raw_start: start,
            cursor: 0,
        }
    }

    pub(crate) fn locate(&mut self, value: &str, range: std::ops::Range<usize>) -> SourceSpan {
        if let Some(start) = self.plain_start {
            return SourceSpan::from(start + range.start..start + range.end);
        }
        let Some(needle) = value.get(range) else {
            return self.whole;
        };
        match self
            .raw
            .get(self.cursor..)
            .and_then(|rest| rest.find(needle))
        {
            Some(position) => {
                let found = self.cursor + position;
                self.cursor = found + needle.len();
                SourceSpan::from(self.raw_start + found..self.raw_start + found + needle.len())
            }
            None => self.whole,
        }
    }
}

/// Most KDL syntax errors reported for one file; the rest are counted.
const MAX_SYNTAX_DIAGNOSTICS: usize = 100;

/// Stack given to the parser per byte of input, and its bounds.
const PARSER_STACK_PER_BYTE: usize = 1536;
const PARSER_STACK_MIN: usize = 16 << 20;
const PARSER_STACK_MAX: usize = PARSER_STACK_PER_BYTE * MAX_FILE_BYTES + PARSER_STACK_MIN;

/// Files at least this large are parsed in two halves on two threads.
const PARALLEL_PARSE_BYTES: usize = 32 * 1024;

/// Parses a large, valid document in two halves at once, cut at the top-level node boundary nearest its middle:
/// the `kdl` parser reads about 1 MB/s, and reading the pipeline is most of what `buildit run` does before the
/// first stage starts. `None` when the file is small, one core is all there is, or either half does not parse
/// as KDL v2 on its own; the caller then parses the whole file, which also gives exact errors and the KDL v1
/// fallback.
fn parse_in_two(text: &str, boundaries: &[usize]) -> Option<KdlDocument> {
    if text.len() < PARALLEL_PARSE_BYTES
        || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    {
        return None;
    }
    let middle = text.len() / 2;
    let after = boundaries.partition_point(|&boundary| boundary < middle);
    let cut = [after.checked_sub(1), Some(after)]
        .into_iter()
        .flatten()
        .filter_map(|index| boundaries.get(index).copied())
        .filter(|&cut| cut > 0 && cut < text.len())
        .min_by_key(|&cut| cut.abs_diff(middle))?;
    let (first, second) = text.split_at(cut);
    let stack = |len: usize| {
        len.saturating_mul(PARSER_STACK_PER_BYTE)
            .clamp(PARSER_STACK_MIN, PARSER_STACK_MAX)
    };
    let (head, tail) = std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("buildit-kdl-parser".into())
            .stack_size(stack(second.len()))
            .spawn_scoped(scope, || KdlDocument::parse_v2(second))
            .ok()?;
        let head = std::panic::catch_unwind(|| {
            stacker::grow(stack(first.len()), || KdlDocument::parse_v2(first))
        });
        Some((head, other.join()))
    })?;
    let (Ok(Ok(mut head)), Ok(Ok(mut tail))) = (head, tail) else {
        return None;
    };
    let nodes: Vec<KdlNode> = tail.nodes_mut().drain(..).collect();
    for mut node in nodes {
        shift_node(&mut node, cut);
        head.nodes_mut().push(node);
    }
    head.set_span(SourceSpan::from(0..text.len()));
    Some(head)
}

/// Moves every span of `node` (and of everything in it) `by` bytes later.
fn shift_node(node: &mut KdlNode, by: usize) {
    let shift = |span: SourceSpan| SourceSpan::new((span.offset() + by).into(), span.len());
    node.set_span(shift(node.span()));
    let name_span = shift(node.name().span());
    node.name_mut().set_span(name_span);
    if let Some(ty) = node.ty_mut() {
        ty.set_span(shift(ty.span()));
    }
    for entry in node.entries_mut() {
        entry.set_span(shift(entry.span()));
        if let Some(name) = entry.name_mut() {
            name.set_span(shift(name.span()));
        }
        if let Some(ty) = entry.ty_mut() {
            ty.set_span(shift(ty.span()));
        }
    }
    if let Some(children) = node.children_mut() {
        children.set_span(shift(children.span()));
        for child in children.nodes_mut() {
            shift_node(child, by);
        }
    }
}

/// Runs the `kdl` parser on a fresh stack sized to the input.
///
/// Its error recovery recurses once per misplaced token (`= = = ...`, a line of `\` continuations), so a
/// 20 KB file can overflow a 2 MB thread stack and abort the process. Measured need is under 1 KiB of stack per
/// input byte. The stack is switched on the same thread (no thread hand-off, so allocations stay in the
/// caller's arena and the parse costs the same as a direct call); the reservation is virtual, and only what
/// the recursion touches is ever committed. A panic in the parser (third-party code fed with user input)
/// becomes an `Err` instead of unwinding into the caller.
fn parse_on_large_stack(text: &str) -> Result<Result<KdlDocument, kdl::KdlError>, ()> {
    let stack = text
        .len()
        .saturating_mul(PARSER_STACK_PER_BYTE)
        .clamp(PARSER_STACK_MIN, PARSER_STACK_MAX);
    std::panic::catch_unwind(|| stacker::grow(stack, || KdlDocument::parse(text))).map_err(|_| ())
}

/// A span from the start of `first` to the end of `last`.
pub(crate) fn span_between(first: SourceSpan, last: SourceSpan) -> SourceSpan {
    let end = last.offset() + last.len();
    SourceSpan::from(first.offset()..end.max(first.offset()))
}

fn clamp_span(span: SourceSpan, len: usize) -> SourceSpan {
    let start = span.offset().min(len);
    let end = (span.offset() + span.len()).min(len);
    SourceSpan::from(start..end)
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every node, entry, type annotation and span of a document's nodes, in order (children blocks with their
/// spans): what two parses must agree on. The document's own span is left to the caller.
#[cfg(test)]
pub(crate) fn flatten_nodes(document: &KdlDocument, out: &mut Vec<String>) {
    for node in document.nodes() {
        out.push(format!(
            "node {} {:?} {:?} {:?}",
            node.name().value(),
            node.span(),
            node.name().span(),
            node.ty().map(|ty| (ty.value().to_owned(), ty.span()))
        ));
        for entry in node.entries() {
            let name = entry.name().map(|n| (n.value().to_owned(), n.span()));
            out.push(format!(
                "entry {name:?} {:?} {:?} {:?}",
                entry.value(),
                entry.span(),
                entry.ty().map(|ty| (ty.value().to_owned(), ty.span()))
            ));
        }
        if let Some(children) = node.children() {
            out.push(format!("children {:?}", children.span()));
            flatten_nodes(children, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_parse_exactly_like_the_whole() {
        let mut text = String::new();
        for i in 0..800 {
            text.push_str(&format!(
                "stage \"s{i}\" {{\n    run \"echo {{ }} \\\" ; x\"\n    // a comment }} {{\n    run \"\"\"\n    multi {{\n    \"\"\"\n    needs \"a\" \\\n        \"b\"\n}}\n/-\nstage \"gone{i}\" {{ run \"x\" }}\n/* block\n}} */\nenv K{i}=\"v\" ; on \"push\"\n"
            ));
        }
        assert!(text.len() > PARALLEL_PARSE_BYTES);
        let boundaries = match scan(&text) {
            Ok(scanned) => scanned.boundaries,
            Err(diagnostic) => panic!("{diagnostic:?}"),
        };
        let Some(halves) = parse_in_two(&text, &boundaries) else {
            // One core: nothing to compare.
            assert!(std::thread::available_parallelism().map_or(1, |n| n.get()) < 2);
            return;
        };
        let whole = match KdlDocument::parse_v2(&text) {
            Ok(whole) => whole,
            Err(error) => panic!("{error:?}"),
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        flatten_nodes(&halves, &mut a);
        flatten_nodes(&whole, &mut b);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y);
        }
    }

    #[test]
    fn a_broken_half_falls_back_to_the_whole_file() {
        let mut text = "stage \"a\" { run \"x\" }\n".repeat(2000);
        text.push_str("stage \"b\" { run \"unclosed }\n");
        let boundaries = scan(&text).unwrap_or_default().boundaries;
        assert!(parse_in_two(&text, &boundaries).is_none());
    }
}
