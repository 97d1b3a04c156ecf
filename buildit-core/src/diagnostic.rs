//! Configuration diagnostics: stable codes, spans, help lines, and the error that carries them all at once.

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, Severity, SourceCode, SourceSpan};
use serde::Serialize;

/// The stable identity of a configuration problem. Tools match on [`DiagnosticCode::as_str`], so a code never
/// changes meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum DiagnosticCode {
    /// The text is not valid KDL.
    Syntax,
    /// The document has no `pipeline` node.
    MissingPipeline,
    /// A node that the language does not define here.
    UnknownNode,
    /// A property that the node does not take.
    UnknownProperty,
    /// A value of the wrong type or shape (durations, cron, names, retry range, globs, ...).
    InvalidValue,
    /// A node that may appear once appears again.
    DuplicateNode,
    /// Two stages share a name.
    DuplicateStage,
    /// `needs` names a stage that does not exist.
    UnknownNeeds,
    /// A stage needs itself.
    SelfNeeds,
    /// Stages need each other in a loop.
    Cycle,
    /// A stage without any `run` command.
    EmptyStage,
    /// A `{variable}` that does not exist.
    UnknownVariable,
    /// A stage names a cache the pipeline does not define.
    UnknownCache,
    /// `{secrets.X}` interpolation, which would leak the secret into command lines.
    SecretInterpolation,
    /// A `{variable}` in a `run` command where the shell would run its value as code (arithmetic, `eval`, a
    /// quoted here-document, the script of `sh -c`).
    UnsafeVariable,
    /// A `workdir` that leaves the workspace.
    WorkdirEscape,
    /// A size limit was exceeded (stages, matrix instances, file size, nesting).
    Limit,
    /// A property given more than once, kept for compatibility (warning).
    RepeatedProperty,
    /// An `artifacts` or cache path that is empty, the whole workspace or outside it when a variable it uses
    /// has no value (warning).
    EmptyPath,
    /// Two stages that may run at the same time restore or collect overlapping paths (warning).
    OverlappingPaths,
    /// `template=` names a template the pipeline does not define.
    UnknownTemplate,
    /// A template no stage uses (warning).
    UnusedTemplate,
    /// An `include` that cannot be followed: a file that cannot be read, outside the pipeline's directory, a
    /// cycle, too many or too deep.
    Include,
}

impl DiagnosticCode {
    /// Every code, in documentation order.
    pub const ALL: [DiagnosticCode; 23] = [
        Self::Syntax,
        Self::MissingPipeline,
        Self::UnknownNode,
        Self::UnknownProperty,
        Self::InvalidValue,
        Self::DuplicateNode,
        Self::DuplicateStage,
        Self::UnknownNeeds,
        Self::SelfNeeds,
        Self::Cycle,
        Self::EmptyStage,
        Self::UnknownVariable,
        Self::UnknownCache,
        Self::SecretInterpolation,
        Self::UnsafeVariable,
        Self::WorkdirEscape,
        Self::Limit,
        Self::RepeatedProperty,
        Self::EmptyPath,
        Self::OverlappingPaths,
        Self::UnknownTemplate,
        Self::UnusedTemplate,
        Self::Include,
    ];

    /// The full code, e.g. `buildit::config::unknown_needs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "buildit::config::syntax",
            Self::MissingPipeline => "buildit::config::missing_pipeline",
            Self::UnknownNode => "buildit::config::unknown_node",
            Self::UnknownProperty => "buildit::config::unknown_property",
            Self::InvalidValue => "buildit::config::invalid_value",
            Self::DuplicateNode => "buildit::config::duplicate_node",
            Self::DuplicateStage => "buildit::config::duplicate_stage",
            Self::UnknownNeeds => "buildit::config::unknown_needs",
            Self::SelfNeeds => "buildit::config::self_needs",
            Self::Cycle => "buildit::config::cycle",
            Self::EmptyStage => "buildit::config::empty_stage",
            Self::UnknownVariable => "buildit::config::unknown_variable",
            Self::UnknownCache => "buildit::config::unknown_cache",
            Self::SecretInterpolation => "buildit::config::secret_interpolation",
            Self::UnsafeVariable => "buildit::config::unsafe_variable",
            Self::WorkdirEscape => "buildit::config::workdir_escape",
            Self::Limit => "buildit::config::limit",
            Self::RepeatedProperty => "buildit::config::repeated_property",
            Self::EmptyPath => "buildit::config::empty_path",
            Self::OverlappingPaths => "buildit::config::overlapping_paths",
            Self::UnknownTemplate => "buildit::config::unknown_template",
            Self::UnusedTemplate => "buildit::config::unused_template",
            Self::Include => "buildit::config::include",
        }
    }
}

impl fmt::Display for DiagnosticCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a diagnostic is: errors stop the pipeline from running, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticSeverity {
    /// The configuration cannot be used.
    Error,
    /// The configuration works but probably not as intended.
    Warning,
}

/// One labelled span of a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticLabel {
    /// Byte range in the source.
    pub span: SourceSpan,
    /// Short text shown under the span.
    pub text: String,
}

/// One problem found in a configuration file. The first label is the primary one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDiagnostic {
    /// Stable code.
    pub code: DiagnosticCode,
    /// Error or warning.
    pub severity: DiagnosticSeverity,
    /// Lowercase message fragment, e.g. "unknown stage `biuld` in `needs`".
    pub message: String,
    /// Labelled spans; the first is the primary one.
    pub labels: Vec<DiagnosticLabel>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl ConfigDiagnostic {
    /// A new error with one primary label.
    pub fn error(
        code: DiagnosticCode,
        message: impl Into<String>,
        span: SourceSpan,
        label: impl Into<String>,
    ) -> Self {
        Self {
            code,
            severity: DiagnosticSeverity::Error,
            message: message.into(),
            labels: vec![DiagnosticLabel {
                span,
                text: label.into(),
            }],
            help: None,
        }
    }

    /// A new warning with one primary label.
    pub fn warning(
        code: DiagnosticCode,
        message: impl Into<String>,
        span: SourceSpan,
        label: impl Into<String>,
    ) -> Self {
        Self {
            severity: DiagnosticSeverity::Warning,
            ..Self::error(code, message, span, label)
        }
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line when there is one.
    pub fn with_optional_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: SourceSpan, text: impl Into<String>) -> Self {
        self.labels.push(DiagnosticLabel {
            span,
            text: text.into(),
        });
        self
    }

    /// Whether this diagnostic stops the configuration from being used.
    pub fn is_error(&self) -> bool {
        self.severity == DiagnosticSeverity::Error
    }

    /// The primary span (the first label), if any.
    pub fn primary_span(&self) -> Option<SourceSpan> {
        self.labels.first().map(|label| label.span)
    }

    /// Attaches the source text, for rendering with `miette`. When a label falls on (or next to) a line longer
    /// than [`MAX_EXCERPT_LINE`], no excerpt is shown: the help line says where instead.
    pub fn with_source<'a>(&'a self, source: &'a ConfigSource) -> SourcedDiagnostic<'a> {
        SourcedDiagnostic {
            diagnostic: self,
            source,
            excerpt: excerpt_fits(source.text(), self.labels.iter().map(|label| label.span)),
        }
    }
}

impl fmt::Display for ConfigDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigDiagnostic {}

impl miette::Diagnostic for ConfigDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }

    fn severity(&self) -> Option<Severity> {
        Some(match self.severity {
            DiagnosticSeverity::Error => Severity::Error,
            DiagnosticSeverity::Warning => Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|help| Box::new(help) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().enumerate().map(
            |(i, label)| {
                let text = Some(label.text.clone());
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, label.span)
                } else {
                    LabeledSpan::new_with_span(text, label.span)
                }
            },
        )))
    }
}

/// The named text a configuration was parsed from, shared cheaply between diagnostics. A pipeline that
/// includes files is parsed as one text, its files one after the other: each keeps its own name, and offsets
/// resolve to lines and columns in the file they fall in.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    inner: Arc<NamedSource<String>>,
    /// The files the text joins, in order; empty for a single file.
    files: Arc<[SourceFile]>,
}

/// One file of a joined text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Its display name (a path).
    pub name: String,
    /// Where it starts in the joined text.
    pub start: usize,
    /// Where it ends.
    pub end: usize,
}

impl ConfigSource {
    /// Wraps a file's text and its display name.
    pub fn new(name: impl AsRef<str>, text: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(NamedSource::new(name, text.into())),
            files: Arc::new([]),
        }
    }

    /// A text joining several files (the first one named `name`), each at its place.
    pub fn joined(name: impl AsRef<str>, text: impl Into<String>, files: Vec<SourceFile>) -> Self {
        Self {
            inner: Arc::new(NamedSource::new(name, text.into())),
            files: files.into(),
        }
    }

    /// The files the text joins (empty for a single file).
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// The file an offset falls in (the last one starting at or before it), when the text joins files.
    fn file_at(&self, offset: usize) -> Option<&SourceFile> {
        let after = self.files.partition_point(|file| file.start <= offset);
        after.checked_sub(1).and_then(|index| self.files.get(index))
    }

    /// The name of the file an offset falls in.
    pub fn name_at(&self, offset: usize) -> &str {
        self.file_at(offset)
            .map_or_else(|| self.name(), |file| file.name.as_str())
    }

    /// 1-based line and column (in characters) of a byte offset, in the file it falls in.
    pub fn file_line_column(&self, offset: usize) -> (usize, usize) {
        match self.file_at(offset) {
            Some(file) => {
                let text = self.text().get(file.start..file.end).unwrap_or_default();
                line_column(text, offset.saturating_sub(file.start))
            }
            None => self.line_column(offset),
        }
    }

    /// The display name (usually the path).
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        self.inner.inner()
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        line_column(self.text(), offset)
    }

    /// An index of line starts, for resolving many offsets without rescanning the text each time.
    pub fn line_index(&self) -> LineIndex<'_> {
        let text = self.text();
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, starts }
    }
}

/// Line starts of a text: resolves offsets to lines and columns in logarithmic time.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl LineIndex<'_> {
    /// 1-based line and column (in characters) of a byte offset, as [`line_column`] computes it.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }
}

/// 1-based line and column (counted in characters) of a byte offset into `text`; offsets past the end or
/// inside a character are clamped.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Longest line shown in a source excerpt. `miette` panics when it underlines past column 65,535, and nobody
/// reads a line this long anyway (a minified or hostile file can be one line of a megabyte).
pub const MAX_EXCERPT_LINE: usize = 1000;

/// Whether the lines around `spans` (each spanned line and the one before and after it) are short enough to show.
fn excerpt_fits(text: &str, spans: impl Iterator<Item = SourceSpan>) -> bool {
    spans.into_iter().all(|span| {
        let start = span.offset().min(text.len());
        let end = span.offset().saturating_add(span.len()).min(text.len());
        let before = text.get(..start).unwrap_or_default();
        let after = text.get(end..).unwrap_or_default();
        // Back over the label's line and the one before it; forward over its last line and the one after.
        let from = before
            .rmatch_indices('\n')
            .nth(1)
            .map_or(0, |(at, _)| at + 1);
        let to = after
            .match_indices('\n')
            .nth(1)
            .map_or(text.len(), |(at, _)| end + at);
        text.get(from..to)
            .unwrap_or_default()
            .split('\n')
            .all(|line| line.len() <= MAX_EXCERPT_LINE)
    })
}

/// A diagnostic together with its source, ready for a `miette` report handler.
#[derive(Debug)]
pub struct SourcedDiagnostic<'a> {
    diagnostic: &'a ConfigDiagnostic,
    source: &'a ConfigSource,
    /// Whether the excerpt can be shown (see [`ConfigDiagnostic::with_source`]).
    excerpt: bool,
}

impl fmt::Display for SourcedDiagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.diagnostic, f)
    }
}

impl std::error::Error for SourcedDiagnostic<'_> {}

impl miette::Diagnostic for SourcedDiagnostic<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic.code()
    }
    fn severity(&self) -> Option<Severity> {
        self.diagnostic.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        if self.excerpt {
            let elsewhere = self.labels_elsewhere();
            if elsewhere.is_empty() {
                return self.diagnostic.help();
            }
            let mut help = self.diagnostic.help.clone().unwrap_or_default();
            for (text, file, line, column) in elsewhere {
                if !help.is_empty() {
                    help.push_str("; ");
                }
                help.push_str(&format!("{text}: {file}:{line}:{column}"));
            }
            return Some(Box::new(help));
        }
        let offset = self
            .diagnostic
            .primary_span()
            .map_or(0, |span| span.offset());
        let (line, column) = self.source.file_line_column(offset);
        let mut help = format!("at line {line}, column {column} (the line is too long to show)");
        if let Some(more) = &self.diagnostic.help {
            help.push_str("; ");
            help.push_str(more);
        }
        Some(Box::new(help))
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.excerpt {
            return None;
        }
        if self.source.files.is_empty() {
            return self.diagnostic.labels();
        }
        // One excerpt shows one file: labels in another file are said in the help line instead.
        let file = self.primary_file();
        let labels: Vec<LabeledSpan> = self
            .diagnostic
            .labels
            .iter()
            .enumerate()
            .filter(|(_, label)| self.source.name_at(label.span.offset()) == file)
            .map(|(i, label)| {
                let text = Some(label.text.clone());
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, label.span)
                } else {
                    LabeledSpan::new_with_span(text, label.span)
                }
            })
            .collect();
        Some(Box::new(labels.into_iter()))
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        if !self.excerpt {
            return None;
        }
        if self.source.files.is_empty() {
            Some(self.source.inner.as_ref() as &dyn SourceCode)
        } else {
            Some(self.source as &dyn SourceCode)
        }
    }
}

impl SourcedDiagnostic<'_> {
    /// The file of the primary label.
    fn primary_file(&self) -> &str {
        self.source.name_at(
            self.diagnostic
                .primary_span()
                .map_or(0, |span| span.offset()),
        )
    }

    /// Labels in another file than the primary one: their text, file, line and column.
    fn labels_elsewhere(&self) -> Vec<(&str, &str, usize, usize)> {
        if self.source.files.is_empty() {
            return Vec::new();
        }
        let file = self.primary_file();
        self.diagnostic
            .labels
            .iter()
            .filter(|label| self.source.name_at(label.span.offset()) != file)
            .map(|label| {
                let (line, column) = self.source.file_line_column(label.span.offset());
                (
                    label.text.as_str(),
                    self.source.name_at(label.span.offset()),
                    line,
                    column,
                )
            })
            .collect()
    }
}

/// Excerpts of a joined text come from the file they fall in, under its name, with its lines.
impl SourceCode for ConfigSource {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let Some(file) = self.file_at(span.offset()) else {
            return self
                .inner
                .read_span(span, context_lines_before, context_lines_after);
        };
        let text = self
            .text()
            .get(file.start..file.end)
            .ok_or(miette::MietteError::OutOfBounds)?;
        let local_offset = span.offset() - file.start;
        let local = SourceSpan::from(local_offset..(local_offset + span.len()).min(text.len()));
        let contents = text.read_span(&local, context_lines_before, context_lines_after)?;
        let global = SourceSpan::from(
            contents.span().offset() + file.start
                ..contents.span().offset() + file.start + contents.span().len(),
        );
        Ok(Box::new(miette::MietteSpanContents::new_named(
            file.name.clone(),
            contents.data(),
            global,
            contents.line(),
            contents.column(),
            contents.line_count(),
        )))
    }
}

/// A diagnostic flattened for machines: what `buildit validate --format json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagnosticRecord {
    /// The file the diagnostic is about.
    pub file: String,
    /// Stable code.
    pub code: &'static str,
    /// `error` or `warning`.
    pub severity: DiagnosticSeverity,
    /// The message.
    pub message: String,
    /// 1-based line of the primary label.
    pub line: usize,
    /// 1-based column (in characters) of the primary label.
    pub column: usize,
    /// The help line, if any.
    pub help: Option<String>,
}

impl DiagnosticRecord {
    /// Flattens `diagnostic`, resolving its primary span against `source`.
    pub fn new(diagnostic: &ConfigDiagnostic, source: &ConfigSource) -> Self {
        Self::with_index(diagnostic, source, &source.line_index())
    }

    /// Like [`DiagnosticRecord::new`], with a line index built once for many diagnostics.
    pub fn with_index(
        diagnostic: &ConfigDiagnostic,
        source: &ConfigSource,
        index: &LineIndex<'_>,
    ) -> Self {
        let offset = diagnostic.primary_span().map_or(0, |s| s.offset());
        let (line, column) = if source.files().is_empty() {
            index.line_column(offset)
        } else {
            source.file_line_column(offset)
        };
        Self {
            file: source.name_at(offset).to_owned(),
            code: diagnostic.code.as_str(),
            severity: diagnostic.severity,
            message: diagnostic.message.clone(),
            line,
            column,
            help: diagnostic.help.clone(),
        }
    }
}

/// A configuration that cannot be used: every diagnostic found (errors and warnings), with the source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration in `{}`: {}", input.name(), summary(diagnostics))]
pub struct ConfigError {
    /// The text that was parsed.
    pub input: ConfigSource,
    /// Every problem found, in source order; at least one is an error.
    pub diagnostics: Vec<ConfigDiagnostic>,
}

/// `1 error`, `2 errors`: a count and a noun (made plural by an `s`) that agree.
pub fn plural(count: usize, noun: &str) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{s}")
}

fn summary(diagnostics: &[ConfigDiagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if warnings == 0 {
        plural(errors, "error")
    } else {
        format!(
            "{}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        )
    }
}

impl ConfigError {
    /// The diagnostics as machine records.
    pub fn records(&self) -> Vec<DiagnosticRecord> {
        let index = self.input.line_index();
        self.diagnostics
            .iter()
            .map(|d| DiagnosticRecord::with_index(d, &self.input, &index))
            .collect()
    }
}

impl miette::Diagnostic for ConfigError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("buildit::config"))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        // Without source, `miette` shows no excerpt: an excerpt of a too-long line would make it panic.
        let text = self.input.text();
        excerpt_fits(
            text,
            self.diagnostics
                .iter()
                .flat_map(|d| d.labels.iter().map(|label| label.span)),
        )
        .then_some(if self.input.files.is_empty() {
            self.input.inner.as_ref() as &dyn SourceCode
        } else {
            &self.input as &dyn SourceCode
        })
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.diagnostics
                .iter()
                .map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}

/// Most diagnostics kept for one file. A generated file can have a problem per line; past this many nobody
/// reads them, and rendering each one costs time.
pub const MAX_DIAGNOSTICS: usize = 500;

/// Collects diagnostics while a document is read, in the order they are found.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    items: Vec<ConfigDiagnostic>,
    dropped: usize,
    dropped_errors: bool,
    /// What was said where, so that a template's mistake, found once per stage that uses it, is kept once
    /// (and does not fill the limit).
    said: std::collections::HashSet<(usize, DiagnosticCode, String)>,
    /// Whether the last push was such a repeat: its help line goes nowhere.
    last_repeated: bool,
}

impl Diagnostics {
    pub(crate) fn push(&mut self, diagnostic: ConfigDiagnostic) {
        let key = (
            diagnostic.primary_span().map_or(0, |span| span.offset()),
            diagnostic.code,
            diagnostic.message.clone(),
        );
        self.last_repeated = !self.said.insert(key);
        if self.last_repeated {
            return;
        }
        if self.items.len() >= MAX_DIAGNOSTICS {
            self.dropped += 1;
            self.dropped_errors |= diagnostic.is_error();
            return;
        }
        self.items.push(diagnostic);
    }

    /// Gives the last diagnostic a help line, unless it has one (or was not kept).
    pub(crate) fn help_last(&mut self, help: String) {
        if self.dropped == 0
            && !self.last_repeated
            && let Some(last) = self.items.last_mut()
            && last.help.is_none()
        {
            last.help = Some(help);
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.dropped_errors || self.items.iter().any(ConfigDiagnostic::is_error)
    }

    /// Whether more diagnostics are being dropped: expensive hints can be skipped.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= MAX_DIAGNOSTICS
    }

    /// Sorted by position so that a reader meets them in file order; a last one counts those not kept.
    pub(crate) fn into_sorted(mut self) -> Vec<ConfigDiagnostic> {
        self.items
            .sort_by_key(|d| d.primary_span().map_or(0, |s| s.offset()));
        if self.dropped > 0 {
            let code = self.items.last().map_or(DiagnosticCode::Syntax, |d| d.code);
            let span = self
                .items
                .last()
                .and_then(ConfigDiagnostic::primary_span)
                .unwrap_or(SourceSpan::from(0..0));
            let make = if self.dropped_errors {
                ConfigDiagnostic::error
            } else {
                ConfigDiagnostic::warning
            };
            self.items.push(make(
                code,
                format!(
                    "{} not shown; fix these and validate again",
                    plural(self.dropped, "more problem")
                ),
                span,
                "last problem shown",
            ));
        }
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_agrees_with_the_direct_scan() {
        let source = ConfigSource::new("x", "ab\né\n\nxyz");
        let index = source.line_index();
        for offset in 0..=source.text().len() + 2 {
            assert_eq!(
                index.line_column(offset),
                source.line_column(offset),
                "offset {offset}"
            );
        }
        assert_eq!(index.line_column(4), (2, 1));
        assert_eq!(index.line_column(5), (2, 2));
    }
}
