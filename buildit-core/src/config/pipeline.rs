//! Reads a `buildit.kdl` document into the [`Pipeline`] model, node by node, reporting every problem.

use std::time::Duration;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::concurrency::{Place, read_concurrency};
use super::cron::validate_cron;
use super::duration::parse_duration;
use super::glob::Glob;
use super::includes::{LoadError, join};
use super::limits::{MAX_RETRY, MAX_STAGES, MAX_TIMEOUT};
use super::matrix_entries::{check_entries, matrix_value, read_entry};
use super::model::{
    CacheDef, Defaults, EnvVar, EventKind, ExecutorKind, Matrix, MatrixAxis, MatrixEntry, Pipeline,
    Resources, Service, Spanned, Stage, TestReport, Trigger, When, WhenStatus, is_valid_name,
};
use super::reader::Reader;
use super::stage_templates::{Inherited, Templates};
use super::template::{Template, TemplateScope, is_env_name};
use super::validate::validate_pipeline;
use crate::diagnostic::{ConfigDiagnostic, ConfigError, ConfigSource, DiagnosticCode};

const TOP_LEVEL: [&str; 10] = [
    "pipeline",
    "include",
    "template",
    "on",
    "trigger",
    "env",
    "cache",
    "defaults",
    "concurrency",
    "stage",
];
const STAGE_NODES: [&str; 21] = [
    "needs",
    "image",
    "run",
    "shell",
    "workdir",
    "env",
    "secrets",
    "cache",
    "artifacts",
    "outputs",
    "reports",
    "timeout",
    "retry",
    "allow-failure",
    "when",
    "manual",
    "matrix",
    "executor",
    "resources",
    "service",
    "concurrency",
];

/// Children of a `service` node.
const SERVICE_NODES: [&str; 4] = ["image", "env", "command", "ready"];
/// Parses and validates a pipeline. `name` is how the source is shown in diagnostics (usually its path).
///
/// Every problem is reported at once in the returned [`ConfigError`]; warnings of a valid pipeline are kept in
/// [`Pipeline::warnings`].
pub fn parse_pipeline(source: &str, name: &str) -> Result<Pipeline, ConfigError> {
    parse_pipeline_with_includes(source, name, &mut |_| {
        Err("files cannot be included here: the pipeline was given as text alone".to_owned())
    })
}

/// [`parse_pipeline`] for a pipeline that may `include` files: `load` gives an included file's text by its
/// `/`-separated path relative to the pipeline's directory (never absolute, never with `..`). Diagnostics in an
/// included file name it (`ci/common.kdl:3:5`). The files read are in [`Pipeline::included`].
pub fn parse_pipeline_with_includes(
    source: &str,
    name: &str,
    load: &mut dyn FnMut(&str) -> Result<String, LoadError>,
) -> Result<Pipeline, ConfigError> {
    let joined = join(source, name, load);
    if joined.files.is_empty() && joined.diagnostics.is_empty() {
        return parse_joined(
            source,
            ConfigSource::new(name, source),
            Vec::new(),
            Vec::new(),
        );
    }
    let config_source = ConfigSource::joined(name, joined.text.clone(), joined.files);
    if !joined.syntax.is_empty() {
        let mut diagnostics = joined.diagnostics;
        diagnostics.extend(joined.syntax);
        diagnostics.sort_by_key(|d| d.primary_span().map_or(0, |span| span.offset()));
        return Err(ConfigError {
            input: config_source,
            diagnostics,
        });
    }
    parse_joined(
        &joined.text,
        config_source,
        joined.diagnostics,
        joined.included,
    )
}

fn parse_joined(
    source: &str,
    config_source: ConfigSource,
    include_problems: Vec<ConfigDiagnostic>,
    included: Vec<(String, String)>,
) -> Result<Pipeline, ConfigError> {
    let mut reader = Reader::new(source);
    for problem in include_problems {
        reader.push(problem);
    }
    let pipeline = reader
        .parse_document()
        .map(|document| read_pipeline(&mut reader, &document, config_source.clone()));
    if let Some(mut pipeline) = pipeline {
        // Cross-stage checks run even after node-level errors, so that every problem is reported at once.
        validate_pipeline(&mut reader, &pipeline);
        pipeline.included = included;
        if !reader.diagnostics.has_errors() {
            pipeline.warnings = std::mem::take(&mut reader.diagnostics).into_sorted();
            return Ok(pipeline);
        }
    }
    Err(ConfigError {
        input: config_source,
        diagnostics: reader.diagnostics.into_sorted(),
    })
}

/// Reads every node; parts with errors are left out (and reported), so the result is only usable when no
/// error was recorded.
fn read_pipeline(
    reader: &mut Reader<'_>,
    document: &KdlDocument,
    source: ConfigSource,
) -> Pipeline {
    let mut header: Option<(Spanned<String>, Option<String>, Option<String>)> = None;
    let mut header_span: Option<SourceSpan> = None;
    let mut triggers = Vec::new();
    let mut env = Vec::new();
    let mut caches = Vec::new();
    let mut defaults: Option<(Defaults, SourceSpan)> = None;
    let mut concurrency: Option<Spanned<u32>> = None;
    let mut group = None;
    let mut concurrency_span: Option<SourceSpan> = None;
    let mut stages = Vec::new();
    let mut stage_nodes = 0usize;
    // Stages may use templates defined after them, or in an included file (read after this one).
    let mut templates = Templates::collect(reader, document);

    for node in document.nodes() {
        reader.reject_type_annotations(node);
        match node.name().value() {
            // Read by `Templates::collect`.
            "template" => {}
            // Followed before the document was parsed; here only its shape is checked.
            "include" => {
                reader.props(node, &[], &[]);
                reader.no_children(node);
                reader.one_string(
                    node,
                    "the path of the file to include, relative to this one",
                );
            }
            "pipeline" => {
                if let Some(first) = header_span {
                    reader.duplicate_node(node, first, "the file");
                    continue;
                }
                header_span = Some(node.name().span());
                header = read_header(reader, node);
            }
            "on" | "trigger" => triggers.extend(read_trigger(reader, node)),
            "env" => read_env(reader, node, TemplateScope::default(), &mut env),
            "cache" => {
                if let Some(cache) = read_cache(reader, node) {
                    match caches
                        .iter()
                        .find(|c: &&CacheDef| c.name.value == cache.name.value)
                    {
                        Some(first) => reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::DuplicateNode,
                                format!("cache `{}` is defined twice", cache.name.value),
                                cache.name.span,
                                "defined again here",
                            )
                            .with_label(first.name.span, "first defined here")
                            .with_help("rename one of the caches"),
                        ),
                        None => caches.push(cache),
                    }
                }
            }
            "defaults" => {
                if let Some((_, first)) = &defaults {
                    reader.duplicate_node(node, *first, "the file");
                    continue;
                }
                defaults = Some((read_defaults(reader, node), node.name().span()));
            }
            "concurrency" => {
                if let Some(first) = concurrency_span {
                    reader.duplicate_node(node, first, "the file");
                    continue;
                }
                concurrency_span = Some(node.name().span());
                let read = read_concurrency(reader, node, Place::Pipeline);
                concurrency = read.limit;
                group = read.group;
            }
            "stage" => {
                // Every stage node gives at least one stage, and a stage's model takes a few kilobytes: past
                // the limit on stages, the rest are not read at all.
                stage_nodes += 1;
                if stage_nodes == MAX_STAGES + 1 {
                    reader.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::Limit,
                            format!("the pipeline has more than {MAX_STAGES} stages; at most {MAX_STAGES} are allowed"),
                            node.name().span(),
                            "stage limit passed here",
                        )
                        .with_help("use a `matrix` for similar stages, or split the pipeline"),
                    );
                }
                if stage_nodes <= MAX_STAGES {
                    stages.extend(read_stage(reader, node, &mut templates));
                }
            }
            _ => reader.unknown_node(node, &TOP_LEVEL, "a pipeline file"),
        }
    }

    templates.warn_unused(reader);
    if header_span.is_none() {
        let span = document
            .nodes()
            .first()
            .map_or(SourceSpan::from(0..0), |node| node.name().span());
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::MissingPipeline,
                "the file has no `pipeline` node",
                span,
                "expected `pipeline \"name\"` before the stages",
            )
            .with_help("start the file with `pipeline \"my-pipeline\"`"),
        );
    }
    let has_stage_nodes = document
        .nodes()
        .iter()
        .any(|node| node.name().value() == "stage");
    if !has_stage_nodes && header_span.is_some() {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::EmptyStage,
                "the pipeline has no stages",
                header_span.unwrap_or(SourceSpan::from(0..0)),
                "this pipeline",
            )
            .with_help("add `stage \"build\" { run \"make\" }`"),
        );
    }
    let (name, description, repository) = header.unwrap_or_else(|| {
        (
            Spanned::new(String::new(), header_span.unwrap_or(SourceSpan::from(0..0))),
            None,
            None,
        )
    });
    Pipeline {
        name,
        description,
        repository,
        triggers,
        env,
        caches,
        defaults: defaults.map(|(defaults, _)| defaults).unwrap_or_default(),
        concurrency,
        group,
        stages,
        source,
        included: Vec::new(),
        warnings: Vec::new(),
    }
}

/// A name following the `[A-Za-z0-9][A-Za-z0-9._-]*` rule, or a report.
fn name(reader: &mut Reader<'_>, value: Spanned<String>, what: &str) -> Option<Spanned<String>> {
    if is_valid_name(&value.value) {
        return Some(value);
    }
    let suggestion: String = value
        .value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_start_matches(['-', '.', '_'])
        .to_owned();
    let help = if suggestion.is_empty() {
        format!(
            "a {what} name starts with a letter or digit, then letters, digits, `.`, `_` or `-`"
        )
    } else {
        format!(
            "a {what} name uses letters, digits, `.`, `_` and `-`, starting with a letter or digit: try `{suggestion}`"
        )
    };
    reader.push(
        ConfigDiagnostic::error(
            DiagnosticCode::InvalidValue,
            format!("invalid {what} name `{}`", value.value),
            value.span,
            "invalid name",
        )
        .with_help(help),
    );
    None
}

fn read_header(
    reader: &mut Reader<'_>,
    node: &KdlNode,
) -> Option<(Spanned<String>, Option<String>, Option<String>)> {
    let pipeline_name = reader.one_string(node, "the pipeline name");
    let mut description = None;
    let mut repository = None;
    let mut description_span: Option<SourceSpan> = None;
    let mut repository_span: Option<SourceSpan> = None;
    for (key, entry) in reader.props(node, &["description", "repository"], &[]) {
        let value = reader.string(entry, &format!("`{key}`")).map(|v| v.value);
        let span = entry.name().map_or(entry.span(), |name| name.span());
        match key {
            "description" => (description, description_span) = (value, Some(span)),
            _ => (repository, repository_span) = (value, Some(span)),
        }
    }
    if let Some(children) = node.children() {
        for child in children.nodes() {
            reader.reject_type_annotations(child);
            let key = child.name().value();
            if !matches!(key, "description" | "repository") {
                reader.unknown_node(child, &["description", "repository"], "`pipeline`");
                continue;
            }
            reader.props(child, &[], &[]);
            reader.no_children(child);
            let value = reader
                .one_string(child, &format!("the {key}"))
                .map(|v| v.value);
            let (slot, first) = if key == "description" {
                (&mut description, &mut description_span)
            } else {
                (&mut repository, &mut repository_span)
            };
            if let Some(first) = first {
                reader.duplicate_node(child, *first, "`pipeline`");
                continue;
            }
            *first = Some(child.name().span());
            *slot = value;
        }
    }
    let pipeline_name = name(reader, pipeline_name?, "pipeline")?;
    Some((pipeline_name, description, repository))
}

fn read_glob(reader: &mut Reader<'_>, value: Spanned<String>) -> Option<Spanned<Glob>> {
    match Glob::new(&value.value) {
        Ok(glob) => Some(Spanned::new(glob, value.span)),
        Err(problem) => {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!("invalid pattern `{}`: {problem}", value.value),
                value.span,
                "invalid pattern",
            );
            reader.help_last("globs use `*` (within a path segment), `**`, `?` and `[a-z]`; see the pipeline reference");
            None
        }
    }
}

const EVENT_NAMES: [&str; 5] = ["push", "pull-request", "tag", "schedule", "manual"];
const EXECUTOR_NAMES: [&str; 3] = ["local", "docker", "kubernetes"];

fn read_event(reader: &mut Reader<'_>, value: Spanned<String>) -> Option<Spanned<EventKind>> {
    let kind = reader.keyword(&value, &EVENT_NAMES, "unknown event")?;
    Some(Spanned::new(kind, value.span))
}

fn read_cron(reader: &mut Reader<'_>, value: Spanned<String>) -> Option<Spanned<String>> {
    match validate_cron(&value.value) {
        Ok(()) => Some(value),
        Err(problem) => {
            let span = reader.inner_span(&value, problem.range);
            reader.push(
                ConfigDiagnostic::error(DiagnosticCode::InvalidValue, problem.message, span, "invalid cron field")
                    .with_help("cron takes five fields: minute hour day-of-month month day-of-week, e.g. `0 3 * * *`"),
            );
            None
        }
    }
}

fn read_trigger(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Trigger> {
    const FILTERS: [&str; 4] = ["branches", "paths", "pattern", "cron"];
    let kind = reader
        .one_string(
            node,
            "the event kind (push, pull-request, tag, schedule, manual)",
        )
        .and_then(|value| read_event(reader, value));
    let mut values: Vec<(String, Spanned<String>, SourceSpan)> = Vec::new();
    for (key, entry) in reader.props(node, &FILTERS, &[]) {
        if let Some(value) = reader.string(entry, &format!("`{key}`")) {
            values.push((
                key.to_owned(),
                value,
                entry.name().map_or(entry.span(), |n| n.span()),
            ));
        }
    }
    if let Some(children) = node.children() {
        for child in children.nodes() {
            reader.reject_type_annotations(child);
            let key = child.name().value();
            if !FILTERS.contains(&key) {
                reader.unknown_node(child, &FILTERS, &format!("`{}`", node.name().value()));
                continue;
            }
            reader.props(child, &[], &[]);
            reader.no_children(child);
            for value in reader.strings(child, &format!("`{key}` patterns")) {
                values.push((key.to_owned(), value, child.name().span()));
            }
        }
    }
    let kind = kind?;
    let mut trigger = Trigger {
        kind: kind.value,
        branches: Vec::new(),
        paths: Vec::new(),
        patterns: Vec::new(),
        cron: None,
        span: node.span(),
    };
    let cron_given = values.iter().any(|(key, _, _)| key == "cron");
    for (key, value, key_span) in values {
        let allowed = matches!(
            (key.as_str(), kind.value),
            (
                "branches" | "paths",
                EventKind::Push | EventKind::PullRequest
            ) | ("pattern", EventKind::Tag)
                | ("cron", EventKind::Schedule)
        );
        if !allowed {
            reader.error(
                DiagnosticCode::UnknownProperty,
                format!("`{key}` does not apply to `{}` events", kind.value),
                key_span,
                "not used by this event",
            );
            reader.help_last("branches and paths filter push and pull-request events, pattern filters tag events, cron is for schedule");
            continue;
        }
        match key.as_str() {
            "branches" => trigger.branches.extend(read_glob(reader, value)),
            "paths" => trigger.paths.extend(read_path_glob(reader, value)),
            "pattern" => trigger.patterns.extend(read_glob(reader, value)),
            _ => {
                if trigger.cron.is_some() {
                    reader.error(
                        DiagnosticCode::InvalidValue,
                        "`cron` is given more than once",
                        value.span,
                        "second schedule",
                    );
                    reader.help_last("give one `cron` per `on \"schedule\"`; add another `on \"schedule\"` for a second schedule");
                    continue;
                }
                trigger.cron = read_cron(reader, value);
            }
        }
    }
    if kind.value == EventKind::Schedule && !cron_given {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "a `schedule` trigger needs a `cron` expression",
                kind.span,
                "no schedule given",
            )
            .with_help("write `on \"schedule\" cron=\"0 3 * * *\"`"),
        );
    }
    Some(trigger)
}

/// `env { NAME "value" }` or `env "NAME" "value"`, appended to `out`; duplicate names are errors.
fn read_env(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    scope: TemplateScope<'_>,
    out: &mut Vec<EnvVar>,
) {
    reader.props(node, &[], &[]);
    let args = reader.args(node);
    let mut pairs: Vec<(Spanned<String>, Spanned<String>)> = Vec::new();
    match (args.as_slice(), node.children()) {
        ([], Some(children)) => {
            for child in children.nodes() {
                reader.reject_type_annotations(child);
                reader.props(child, &[], &[]);
                reader.no_children(child);
                let key = Spanned::new(child.name().value().to_owned(), child.name().span());
                let child_args = reader.args(child);
                match child_args.as_slice() {
                    [value] => pairs.extend(env_value(reader, value).map(|value| (key, value))),
                    _ => {
                        reader.error(
                            DiagnosticCode::InvalidValue,
                            format!("environment variable `{}` takes one value", key.value),
                            key.span,
                            "one value expected",
                        );
                        reader.help_last("write `NAME \"value\"`");
                    }
                }
            }
        }
        ([name, value], None) => {
            if let (Some(name), Some(value)) = (reader.string(name, "the variable name"), env_value(reader, value)) {
                pairs.push((name, value));
            }
        }
        _ => reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "`env` takes a block `env { NAME \"value\" }` or two values `env \"NAME\" \"value\"`",
                node.name().span(),
                "malformed env",
            )
            .with_help("write `env { RUST_LOG \"info\" }`"),
        ),
    }
    for (name, value) in pairs {
        if !is_env_name(&name.value) {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!("invalid environment variable name `{}`", name.value),
                name.span,
                "use letters, digits and `_`, not starting with a digit",
            );
            reader.help_last(
                "use letters, digits and `_`, not starting with a digit, e.g. `RUST_LOG`",
            );
            continue;
        }
        if let Some(first) = out.iter().find(|var| var.name.value == name.value) {
            let first_span = first.name.span;
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::DuplicateNode,
                    format!("environment variable `{}` is set twice", name.value),
                    name.span,
                    "set again here",
                )
                .with_label(first_span, "first set here")
                .with_help("keep one of them"),
            );
            continue;
        }
        let value = reader.template(&value, scope);
        out.push(EnvVar { name, value });
    }
}

/// Environment values are strings; numbers and booleans are accepted and written as KDL prints them.
fn env_value(reader: &mut Reader<'_>, entry: &KdlEntry) -> Option<Spanned<String>> {
    match entry.value() {
        KdlValue::String(text) => Some(Spanned::new(text.clone(), entry.span())),
        KdlValue::Integer(number) => Some(Spanned::new(number.to_string(), entry.span())),
        KdlValue::Bool(flag) => Some(Spanned::new(flag.to_string(), entry.span())),
        other => {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!("an environment value must be a string, found `{other}`"),
                entry.span(),
                "expected a string",
            );
            reader.help_last("write the value in quotes");
            None
        }
    }
}

fn read_cache(reader: &mut Reader<'_>, node: &KdlNode) -> Option<CacheDef> {
    const CACHE_NODES: [&str; 3] = ["path", "key", "restore-keys"];
    reader.props(node, &[], &[]);
    let cache_name = reader
        .one_string(node, "the cache name")
        .and_then(|value| name(reader, value, "cache"));
    // `{matrix.AXIS}` is checked against each stage that uses the cache; `{hash:GLOB}` belongs in the key only.
    let scope = TemplateScope {
        any_matrix_axis: true,
        ..TemplateScope::default()
    };
    let key_scope = TemplateScope {
        allow_hash: true,
        ..scope
    };
    let mut paths = Vec::new();
    let mut key: Option<Spanned<Template>> = None;
    let mut restore_keys = Vec::new();
    let Some(children) = node.children() else {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "a cache needs a block with `path` and `key`",
                node.name().span(),
                "no block",
            )
            .with_help(
                "write `cache \"cargo\" { path \"target\"; key \"cargo-{hash:Cargo.lock}\" }`",
            ),
        );
        return None;
    };
    for child in children.nodes() {
        reader.reject_type_annotations(child);
        reader.props(child, &[], &[]);
        reader.no_children(child);
        match child.name().value() {
            "path" => {
                for value in reader.strings(child, "paths to cache") {
                    paths.push(reader.template(&value, scope));
                }
            }
            "key" => {
                if let Some(first) = &key {
                    reader.duplicate_node(child, first.span, "a cache");
                    continue;
                }
                key = reader
                    .one_string(child, "the cache key")
                    .map(|value| reader.template(&value, key_scope));
            }
            "restore-keys" => {
                for value in reader.strings(child, "key prefixes") {
                    restore_keys.push(reader.template(&value, scope));
                }
            }
            _ => reader.unknown_node(child, &CACHE_NODES, "`cache`"),
        }
    }
    let missing = |reader: &mut Reader<'_>, what: &str| {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("the cache has no `{what}`"),
                node.name().span(),
                format!("`{what}` missing"),
            )
            .with_help(
                "write `cache \"cargo\" { path \"target\"; key \"cargo-{hash:Cargo.lock}\" }`",
            ),
        );
    };
    if paths.is_empty() {
        missing(reader, "path");
    }
    if key.is_none() {
        missing(reader, "key");
    }
    Some(CacheDef {
        name: cache_name?,
        paths,
        key: key?,
        restore_keys,
        span: node.span(),
    })
}

fn read_duration(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Spanned<Duration>> {
    let value = reader.one_string(node, "a duration such as \"90s\", \"10m\" or \"1h30m\"")?;
    match parse_duration(&value.value) {
        Ok(duration) if duration <= MAX_TIMEOUT => Some(Spanned::new(duration, value.span)),
        Ok(_) => {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!("timeout `{}` is longer than 30 days", value.value),
                    value.span,
                    "too long",
                )
                .with_help("leave `timeout` out for no limit, or use at most \"30d\""),
            );
            None
        }
        Err(problem) => {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!("invalid duration: {problem}"),
                    value.span,
                    "invalid duration",
                )
                .with_help("write durations like \"90s\", \"10m\" or \"1h30m\""),
            );
            None
        }
    }
}

fn read_retry(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Spanned<u8>> {
    reader
        .integer(node, "`retry`", 0..=i128::from(MAX_RETRY))
        .map(|value| value.map(|v| v as u8))
}

fn read_shell(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Spanned<String>> {
    let value = reader.one_string(node, "the shell program, e.g. \"bash\"")?;
    if value.value.is_empty() || value.value.contains(char::is_whitespace) {
        reader.error(
            DiagnosticCode::InvalidValue,
            format!(
                "invalid shell `{}`: give one program name or path",
                value.value
            ),
            value.span,
            "invalid shell",
        );
        reader.help_last("write `shell \"bash\"`; put options in the commands instead");
        return None;
    }
    Some(value)
}

fn read_defaults(reader: &mut Reader<'_>, node: &KdlNode) -> Defaults {
    const DEFAULT_NODES: [&str; 4] = ["image", "timeout", "retry", "shell"];
    reader.props(node, &[], &[]);
    reader.no_args(node);
    let mut defaults = Defaults::default();
    let mut seen: Vec<(&str, SourceSpan)> = Vec::new();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        reader.reject_type_annotations(child);
        let key = child.name().value();
        if !DEFAULT_NODES.contains(&key) {
            reader.unknown_node(child, &DEFAULT_NODES, "`defaults`");
            continue;
        }
        reader.props(child, &[], &[]);
        reader.no_children(child);
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            reader.duplicate_node(child, *first, "`defaults`");
            continue;
        }
        seen.push((key, child.name().span()));
        match key {
            "image" => {
                defaults.image = reader
                    .one_string(child, "the container image")
                    .map(|value| reader.template(&value, TemplateScope::default()))
            }
            "timeout" => defaults.timeout = read_duration(reader, child),
            "retry" => defaults.retry = read_retry(reader, child),
            _ => defaults.shell = read_shell(reader, child),
        }
    }
    defaults
}

fn read_matrix(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Matrix> {
    reader.props(node, &[], &[]);
    reader.no_args(node);
    let mut axes: Vec<MatrixAxis> = Vec::new();
    let mut exclude: Vec<MatrixEntry> = Vec::new();
    let mut include: Vec<MatrixEntry> = Vec::new();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        reader.reject_type_annotations(child);
        match child.name().value() {
            "exclude" => {
                exclude.push(read_entry(reader, child));
                continue;
            }
            "include" => {
                include.push(read_entry(reader, child));
                continue;
            }
            _ => {}
        }
        reader.props(child, &[], &[]);
        reader.no_children(child);
        let axis_name = Spanned::new(child.name().value().to_owned(), child.name().span());
        let Some(axis_name) = name(reader, axis_name, "matrix axis") else {
            continue;
        };
        if let Some(first) = axes.iter().find(|axis| axis.name.value == axis_name.value) {
            let first_span = first.name.span;
            reader.duplicate_node(child, first_span, "`matrix`");
            continue;
        }
        let env_name = super::template::matrix_env_name(&axis_name.value);
        if let Some(first) = axes
            .iter()
            .find(|axis| super::template::matrix_env_name(&axis.name.value) == env_name)
        {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "matrix axes `{}` and `{}` would share the environment variable `{env_name}`",
                        first.name.value, axis_name.value
                    ),
                    axis_name.span,
                    "same variable",
                )
                .with_label(first.name.span, "first axis")
                .with_help("name the axes so that they differ in more than case and punctuation"),
            );
            continue;
        }
        let mut values: Vec<Spanned<String>> = Vec::new();
        for entry in reader.args(child) {
            let Some(Spanned { value, .. }) = matrix_value(reader, entry) else {
                continue;
            };
            if let Some(first) = values.iter().find(|v| v.value == value) {
                let first_span = first.span;
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!(
                            "matrix value `{value}` is listed twice in axis `{}`",
                            axis_name.value
                        ),
                        entry.span(),
                        "listed again here",
                    )
                    .with_label(first_span, "first listed here"),
                );
                continue;
            }
            values.push(Spanned::new(value, entry.span()));
        }
        if reader.args(child).is_empty() {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!("matrix axis `{}` has no values", axis_name.value),
                axis_name.span,
                "no values",
            );
            reader.help_last("list the values after the axis name: `rust \"1.80\" \"1.82\"`");
            continue;
        }
        axes.push(MatrixAxis {
            name: axis_name,
            values,
        });
    }
    if axes.is_empty() {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "the matrix has no axes",
                node.name().span(),
                "empty matrix",
            )
            .with_help("write `matrix { rust \"1.80\" \"1.82\" }`"),
        );
        return None;
    }
    let mut matrix = Matrix {
        axes,
        exclude,
        include,
        counted: None,
        span: node.name().span(),
    };
    check_entries(reader, &mut matrix);
    Some(matrix)
}

fn read_when(reader: &mut Reader<'_>, node: &KdlNode) -> Option<When> {
    reader.no_args(node);
    let props = reader.props(node, &["branch", "tag", "event", "status", "changes"], &[]);
    // `changes` may also be a child node listing several globs: `when { changes "src/**" "Cargo.*"; }`.
    let mut change_values: Vec<Spanned<String>> = Vec::new();
    if let Some(children) = node.children() {
        for child in children.nodes() {
            reader.reject_type_annotations(child);
            if child.name().value() != "changes" {
                reader.unknown_node(child, &["changes"], "`when`");
                continue;
            }
            reader.props(child, &[], &[]);
            reader.no_children(child);
            change_values.extend(reader.strings(child, "`changes` patterns"));
        }
    }
    // Children that were all mistakes have been reported; an empty `when` (or `when {}`) is said here.
    let has_children = node
        .children()
        .is_some_and(|children| !children.nodes().is_empty());
    if props.is_empty() && !has_children && reader.args(node).is_empty() {
        reader.push(
            ConfigDiagnostic::error(DiagnosticCode::InvalidValue, "`when` has no condition", node.name().span(), "empty condition")
                .with_help("write `when branch=\"main\"`, `when tag=\"v*\"`, `when event=\"push\"`, `when changes=\"src/**\"` or `when status=\"always\"`"),
        );
        return None;
    }
    let mut when = When {
        branch: None,
        tag: None,
        event: None,
        changes: Vec::new(),
        status: WhenStatus::Success,
        span: node.span(),
    };
    let mut ok = true;
    let props_given = props.len();
    for (key, entry) in props {
        let Some(value) = reader.string(entry, &format!("`{key}`")) else {
            ok = false;
            continue;
        };
        match key {
            "branch" => when.branch = read_glob(reader, value),
            "tag" => when.tag = read_glob(reader, value),
            "event" => when.event = read_event(reader, value),
            "changes" => change_values.push(value),
            _ => {
                match reader.keyword(&value, &["success", "failure", "always"], "unknown status") {
                    Some(status) => when.status = status,
                    None => ok = false,
                }
            }
        }
    }
    // A block whose every child was a mistake gives no condition: the `when` is dropped with its errors.
    ok &= !(props_given == 0 && change_values.is_empty());
    for value in change_values {
        match read_path_glob(reader, value) {
            Some(glob) => when.changes.push(glob),
            None => ok = false,
        }
    }
    ok.then_some(when)
}

/// A glob of paths in the repository (`changes`, `paths`): relative to its root, without `..`.
fn read_path_glob(reader: &mut Reader<'_>, value: Spanned<String>) -> Option<Spanned<Glob>> {
    let text = value.value.as_str();
    let problem = if text.starts_with('/') {
        Some("it starts with `/`")
    } else if text.starts_with("./") {
        Some("it starts with `./`")
    } else if text.split('/').any(|part| part == "..") {
        Some("it has a `..` component")
    } else {
        None
    };
    if let Some(problem) = problem {
        let help = if text.split('/').any(|part| part == "..") {
            "changed paths are relative to the repository's root, as git names them, with no `..`"
                .to_owned()
        } else {
            format!(
                "changed paths are relative to the repository's root, as git names them: write `{}`",
                text.trim_start_matches("./").trim_start_matches('/')
            )
        };
        reader.error(
            DiagnosticCode::InvalidValue,
            format!("path pattern `{text}` can never match: {problem}"),
            value.span,
            "not a repository path",
        );
        reader.help_last(&help);
        return None;
    }
    read_glob(reader, value)
}

fn read_executor(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Spanned<ExecutorKind>> {
    let value = reader.one_string(node, "local, docker or kubernetes")?;
    let kind = reader.keyword(&value, &EXECUTOR_NAMES, "unknown executor")?;
    Some(Spanned::new(kind, value.span))
}

/// A Kubernetes-style quantity: CPU (`500m`, `2`, `0.5`) in millicores, memory (`512Mi`, `1G`, `1000`) in bytes.
fn parse_quantity(text: &str, cpu: bool) -> Option<u64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale: f64 = match (suffix, cpu) {
        ("", true) => 1000.0,
        ("m", true) => 1.0,
        ("", false) => 1.0,
        ("k", false) => 1e3,
        ("M", false) => 1e6,
        ("G", false) => 1e9,
        ("T", false) => 1e12,
        ("Ki", false) => 1024.0,
        ("Mi", false) => 1024.0 * 1024.0,
        ("Gi", false) => 1024.0 * 1024.0 * 1024.0,
        ("Ti", false) => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let scaled = value * scale;
    (1.0..1e19)
        .contains(&scaled)
        .then_some(scaled.round() as u64)
}

fn read_resources(reader: &mut Reader<'_>, node: &KdlNode) -> Option<Resources> {
    reader.no_args(node);
    reader.no_children(node);
    let mut resources = Resources::default();
    for (key, entry) in reader.props(node, &["cpu", "memory"], &[]) {
        let text = match entry.value() {
            KdlValue::String(text) => text.clone(),
            KdlValue::Integer(number) => number.to_string(),
            other => {
                reader.error(
                    DiagnosticCode::InvalidValue,
                    format!("`{key}` must be a string, found `{other}`"),
                    entry.span(),
                    "expected a string",
                );
                reader.help_last("write the quantity in quotes, e.g. `cpu=\"500m\"`");
                continue;
            }
        };
        let cpu = key == "cpu";
        match parse_quantity(&text, cpu) {
            Some(amount) if cpu => {
                resources.cpu = Some(text);
                resources.cpu_millis = Some(amount);
            }
            Some(amount) => {
                resources.memory = Some(text);
                resources.memory_bytes = Some(amount);
            }
            None => reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!("invalid {key} quantity `{text}`"),
                    entry.span(),
                    "invalid quantity",
                )
                .with_help(if cpu {
                    "write CPU as cores (\"2\", \"0.5\") or millicores (\"500m\")"
                } else {
                    "write memory as bytes with a unit: \"512Mi\", \"2Gi\", \"1G\""
                }),
            ),
        }
    }
    Some(resources)
}

fn read_stage<'d>(
    reader: &mut Reader<'_>,
    node: &'d KdlNode,
    templates: &mut Templates<'d>,
) -> Option<Stage> {
    // An invalid name is reported, but the stage keeps it: stages that need it are not told it does not exist.
    let stage_name = reader
        .one_string(node, "the stage name")
        .map(|value| name(reader, value.clone(), "stage").unwrap_or(value));
    let mut needs: Vec<Spanned<String>> = Vec::new();
    let mut template: Option<Spanned<String>> = None;
    for (key, entry) in reader.props(node, &["needs", "template"], &["needs"]) {
        match key {
            "template" => template = reader.string(entry, "`template`"),
            _ => needs.extend(reader.string(entry, "`needs`")),
        }
    }
    let own: &[KdlNode] = node.children().map(KdlDocument::nodes).unwrap_or_default();
    let own_children = || {
        own.iter()
            .map(|node| Inherited {
                node,
                from_template: false,
            })
            .collect::<Vec<_>>()
    };
    let mut unknown_template = false;
    let children: Vec<Inherited<'d>> = match &template {
        Some(template) => templates
            .children_for(reader, template, own)
            .unwrap_or_else(|| {
                unknown_template = true;
                own_children()
            }),
        None => own_children(),
    };
    // The matrix decides which `{matrix.AXIS}` references are valid, so it is read first.
    let mut matrix: Option<Matrix> = None;
    let mut first_matrix: Option<SourceSpan> = None;
    for child in children
        .iter()
        .map(|child| child.node)
        .filter(|child| child.name().value() == "matrix")
    {
        reader.reject_type_annotations(child);
        match first_matrix {
            Some(first) => reader.duplicate_node(child, first, "a stage"),
            None => {
                first_matrix = Some(child.name().span());
                matrix = read_matrix(reader, child);
            }
        }
    }
    let axes = matrix.as_ref().map(Matrix::axis_names).unwrap_or_default();
    let scope = TemplateScope {
        matrix_axes: Some(&axes),
        ..TemplateScope::default()
    };

    let mut stage = Stage {
        name: stage_name
            .clone()
            .unwrap_or_else(|| Spanned::new(String::new(), node.span())),
        needs,
        paired_needs: Vec::new(),
        image: None,
        run: Vec::new(),
        shell: None,
        workdir: None,
        env: Vec::new(),
        secrets: Vec::new(),
        caches: Vec::new(),
        artifacts: Vec::new(),
        outputs: Vec::new(),
        reports: Vec::new(),
        timeout: None,
        retry: None,
        allow_failure: false,
        when: Vec::new(),
        manual: false,
        matrix,
        executor: None,
        resources: None,
        services: Vec::new(),
        group: None,
        span: node.span(),
    };
    let context = match &stage_name {
        Some(name) => format!("stage `{}`", name.value),
        None => "a stage".to_owned(),
    };
    let mut singles: Vec<(&str, SourceSpan)> = Vec::new();
    // A template's environment and services, which the stage's own of the same names replace.
    let mut template_env: Vec<EnvVar> = Vec::new();
    let mut template_services: Vec<Service> = Vec::new();
    for Inherited {
        node: child,
        from_template,
    } in children
    {
        let key = child.name().value();
        if key == "matrix" {
            continue;
        }
        reader.reject_type_annotations(child);
        let Some(known) = STAGE_NODES.iter().copied().find(|k| *k == key) else {
            // Said of the template, once for all the stages that use it.
            let place = match (&template, from_template) {
                (Some(template), true) => format!("template `{}`", template.value),
                _ => context.clone(),
            };
            reader.unknown_node(child, &STAGE_NODES, &place);
            continue;
        };
        let single = !matches!(
            known,
            "needs"
                | "run"
                | "env"
                | "secrets"
                | "cache"
                | "artifacts"
                | "outputs"
                | "reports"
                | "when"
                | "service"
        );
        if single {
            if let Some((_, first)) = singles.iter().find(|(k, _)| *k == known) {
                reader.duplicate_node(child, *first, &context);
                continue;
            }
            singles.push((known, child.name().span()));
        }
        match known {
            "env" => {
                let into = if from_template {
                    &mut template_env
                } else {
                    &mut stage.env
                };
                read_env(reader, child, scope, into);
                continue;
            }
            "when" => {
                stage.when.extend(read_when(reader, child));
                continue;
            }
            "resources" => {
                stage.resources = read_resources(reader, child);
                continue;
            }
            "concurrency" => {
                stage.group = read_concurrency(reader, child, Place::Stage(&axes)).group;
                continue;
            }
            "service" => {
                if let Some(service) = read_service(reader, child, scope, &context) {
                    let into = if from_template {
                        &mut template_services
                    } else {
                        &mut stage.services
                    };
                    if let Some(first) = into
                        .iter()
                        .find(|other| other.name.value == service.name.value)
                    {
                        reader.duplicate_node(child, first.name.span, &context);
                    } else {
                        into.push(service);
                    }
                }
                continue;
            }
            _ => {}
        }
        if known == "needs" {
            read_needs(reader, child, &mut stage);
            continue;
        }
        if known == "reports" {
            stage.reports.extend(read_reports(reader, child, scope));
            continue;
        }
        reader.props(child, &[], &[]);
        reader.no_children(child);
        match known {
            "image" => {
                stage.image = reader
                    .one_string(child, "the container image")
                    .map(|value| reader.template(&value, scope))
            }
            "run" => match reader.one_string(child, "a shell command") {
                Some(value) => {
                    let command = reader.template(&value, scope);
                    reader.check_command(&value, &command.value, scope);
                    stage.run.push(command);
                }
                // Reported already; a placeholder keeps "has no `run` command" from being reported too.
                None => stage
                    .run
                    .push(Spanned::new(Template::literal(""), child.span())),
            },
            "shell" => stage.shell = read_shell(reader, child),
            "workdir" => {
                if let Some(value) =
                    reader.one_string(child, "a directory relative to the workspace")
                {
                    if crate::paths::relative_path_escapes(&value.value) {
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::WorkdirEscape,
                                format!("workdir `{}` leaves the workspace", value.value),
                                value.span,
                                "outside the workspace",
                            )
                            .with_help(
                                "`workdir` is relative to the workspace and cannot go above it",
                            ),
                        );
                    } else {
                        stage.workdir = Some(reader.template(&value, scope));
                    }
                }
            }
            "secrets" => {
                for value in reader.strings(child, "names of secrets") {
                    if is_env_name(&value.value) {
                        stage.secrets.push(value);
                    } else {
                        reader.error(
                            DiagnosticCode::InvalidValue,
                            format!("invalid secret name `{}`", value.value),
                            value.span,
                            "secrets are injected as environment variables: use letters, digits and `_`",
                        );
                        reader.help_last("secrets are injected as environment variables; name them like `DEPLOY_TOKEN`");
                    }
                }
            }
            "cache" => stage
                .caches
                .extend(reader.strings(child, "names of pipeline caches")),
            "artifacts" => {
                for value in reader.strings(child, "paths or globs relative to the workspace") {
                    if crate::paths::relative_path_escapes(&value.value) {
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::InvalidValue,
                                format!("artifact path `{}` leaves the workspace", value.value),
                                value.span,
                                "outside the workspace",
                            )
                            .with_help("artifacts are collected from inside the workspace: use a relative path without `..`"),
                        );
                        continue;
                    }
                    stage.artifacts.push(reader.template(&value, scope));
                }
            }
            "outputs" => {
                for value in reader.strings(
                    child,
                    "names of the values the stage writes to `$BUILDIT_OUTPUT`",
                ) {
                    if !is_env_name(&value.value) {
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::InvalidValue,
                                format!("invalid output name `{}`", value.value),
                                value.span,
                                "not an output name",
                            )
                            .with_help("output names use letters, digits and `_`, not starting with a digit: `version`, `image_digest`"),
                        );
                    } else if let Some(first) =
                        stage.outputs.iter().find(|o| o.value == value.value)
                    {
                        let first = first.span;
                        reader.push(
                            ConfigDiagnostic::warning(
                                DiagnosticCode::DuplicateNode,
                                format!("output `{}` is declared twice", value.value),
                                value.span,
                                "declared again here",
                            )
                            .with_label(first, "first declared here")
                            .with_help("declare it once"),
                        );
                    } else {
                        stage.outputs.push(value);
                    }
                }
            }
            "timeout" => stage.timeout = read_duration(reader, child),
            "retry" => stage.retry = read_retry(reader, child),
            "allow-failure" => stage.allow_failure = reader.flag(child).unwrap_or(false),
            "manual" => stage.manual = reader.flag(child).unwrap_or(false),
            _ => stage.executor = read_executor(reader, child),
        }
    }
    if unknown_template && stage.run.is_empty() {
        // Reported already; a placeholder keeps "has no `run` command" from being reported too.
        stage
            .run
            .push(Spanned::new(Template::literal(""), node.span()));
    }
    // The stage's own variables and services win over its template's of the same name.
    template_env.retain(|var| !stage.env.iter().any(|own| own.name.value == var.name.value));
    template_env.append(&mut stage.env);
    stage.env = template_env;
    template_services.retain(|service| {
        !stage
            .services
            .iter()
            .any(|own| own.name.value == service.name.value)
    });
    template_services.append(&mut stage.services);
    stage.services = template_services;
    keep_paired_needs(&mut stage);
    if template.is_some() {
        // Named by both the template and the stage: once (a cache restored and saved twice, a secret set twice
        // or a need counted twice help nobody). After the pairing, which counts how each need was written.
        dedup_by_value(&mut stage.caches);
        dedup_by_value(&mut stage.secrets);
        dedup_by_value(&mut stage.needs);
        dedup_by_value(&mut stage.paired_needs);
    }
    check_commands_finish(reader, &stage);
    stage_name?;
    Some(stage)
}

/// `reports junit="GLOB"`: JUnit XML files the stage's attempts write, relative to the workspace.
fn read_reports(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    scope: TemplateScope<'_>,
) -> Option<TestReport> {
    reader.no_children(node);
    if let Some(first) = node.entries().iter().find(|entry| entry.name().is_none()) {
        // `reports "junit.xml"`: the format is missing, not the files.
        let help = match first.value() {
            KdlValue::String(glob) => format!("name the format: `reports junit=\"{glob}\"`"),
            _ => "name the format and the files: `reports junit=\"GLOB\"`".to_owned(),
        };
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "`reports` takes no arguments",
                first.span(),
                "unexpected argument",
            )
            .with_help(help),
        );
        return None;
    }
    let mut junit = None;
    for (_, entry) in reader.props(node, &["junit"], &[]) {
        junit = reader.string(entry, "a glob of JUnit XML files");
    }
    let Some(junit) = junit else {
        // A property that was given but refused has been reported already, with the name it should have.
        if node.entries().is_empty() {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    "`reports` needs the files to read: `junit=\"GLOB\"`",
                    node.name().span(),
                    "no report format given",
                )
                .with_help(
                    "name the JUnit XML files the stage writes, relative to the workspace: \
                     `reports junit=\"target/nextest/ci/junit.xml\"`",
                ),
            );
        }
        return None;
    };
    if junit.value.trim().is_empty() {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                "report pattern is empty",
                junit.span,
                "empty",
            )
            .with_help(
                "name the JUnit XML files the stage writes, relative to the workspace: \
                 `target/nextest/ci/junit.xml` or `reports/*.xml`",
            ),
        );
        return None;
    }
    if crate::paths::relative_path_escapes(&junit.value) {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("report pattern `{}` leaves the workspace", junit.value),
                junit.span,
                "outside the workspace",
            )
            .with_help(
                "reports are read from inside the workspace: write a path relative to it, without a leading \
                 `/` or `~` and without `..`",
            ),
        );
        return None;
    }
    if let Err(problem) = Glob::new(&junit.value) {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("report pattern `{}` is not a glob: {problem}", junit.value),
                junit.span,
                "invalid pattern",
            )
            .with_help(
                "`*` matches within a directory, `**` across directories: `target/**/junit.xml`",
            ),
        );
        return None;
    }
    Some(TestReport {
        junit: reader.template(&junit, scope),
        span: node.span(),
    })
}

/// `needs "a" "b"`, or `needs "build" matrix="same"`: each instance then needs only the instance of `build` with the
/// same matrix values.
fn read_needs(reader: &mut Reader<'_>, node: &KdlNode, stage: &mut Stage) {
    reader.no_children(node);
    let mut paired = false;
    for (_, entry) in reader.props(node, &["matrix"], &[]) {
        let Some(value) = reader.string(entry, "`same`") else {
            continue;
        };
        if value.value == "same" {
            paired = true;
        } else {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!("unknown `matrix` pairing `{}`", value.value),
                    value.span,
                    "expected `same`",
                )
                .with_help(
                    "`matrix=\"same\"` pairs each instance with the needed stage's instance of the same values; \
                     leave it out to need every instance",
                ),
            );
        }
    }
    let names = reader.strings(node, "names of stages this one needs");
    if paired {
        stage.paired_needs.extend(names.iter().cloned());
    }
    stage.needs.extend(names);
}

/// A stage named in `needs` both with and without `matrix="same"` needs every instance: only stages every
/// mention of which pairs stay paired, once each.
fn keep_paired_needs(stage: &mut Stage) {
    if stage.paired_needs.is_empty() {
        return;
    }
    let mut mentions: std::collections::HashMap<&str, (usize, usize)> =
        std::collections::HashMap::new();
    for need in &stage.needs {
        mentions.entry(need.value.as_str()).or_default().0 += 1;
    }
    for need in &stage.paired_needs {
        mentions.entry(need.value.as_str()).or_default().1 += 1;
    }
    let always_paired: std::collections::HashSet<String> = mentions
        .into_iter()
        .filter(|(_, (all, paired))| all == paired)
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut kept = std::collections::HashSet::new();
    stage
        .paired_needs
        .retain(|need| always_paired.contains(&need.value) && kept.insert(need.value.clone()));
}

/// In a stage whose commands use variables, each `run` must end where it began: the next command, and the line
/// that echoes it with its values, would otherwise land inside what it left open (a here-document, a quote).
fn check_commands_finish(reader: &mut Reader<'_>, stage: &Stage) {
    if stage.run.iter().all(|command| command.value.is_literal()) {
        return;
    }
    let analyses: Vec<_> = stage
        .run
        .iter()
        .map(|command| command.value.shell_analysis())
        .collect();
    // `declare -i n` in one command makes `n={x}` in another arithmetic.
    if analyses.iter().any(|analysis| analysis.declares_attributes) {
        for (command, alone) in stage.run.iter().zip(&analyses) {
            let in_stage = command.value.shell_analysis_in_stage(true);
            let newly_refused = alone
                .landings
                .iter()
                .zip(&in_stage.landings)
                .any(|(alone, in_stage)| alone.is_ok() && in_stage.is_err());
            if newly_refused {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::UnsafeVariable,
                        "a variable is assigned in a stage where a declaration gave a variable an attribute (`declare -i`), which bash may evaluate",
                        command.span,
                        "assignment of a value",
                    )
                    .with_help("check the value first, then use its environment variable (`$BUILDIT_BRANCH`, ...)"),
                );
            }
        }
    }
    for (command, analysis) in stage.run.iter().zip(&analyses) {
        if let Some(open) = analysis.unfinished {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::UnsafeVariable,
                    format!("the command leaves {open} open, and the stage's commands use variables"),
                    command.span,
                    "unfinished command",
                )
                .with_help("each `run` must be a whole shell command: close it in the same `run`, or join the commands into one"),
            );
        }
    }
}

/// `service "db" { image "postgres:16"; env { ... }; command "postgres" "-c" "fsync=off"; ready "pg_isready" }`
/// (`ready "pg_isready" "-U" "postgres"`: a program and its arguments, without a shell).
fn read_service(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    scope: TemplateScope<'_>,
    stage: &str,
) -> Option<Service> {
    reader.props(node, &[], &[]);
    let name = reader.one_string(node, "the service's name (its host name)")?;
    if !is_valid_name(&name.value) {
        reader.error(
            DiagnosticCode::InvalidValue,
            format!("invalid service name `{}`", name.value),
            name.span,
            "not a host name",
        );
        reader.help_last(
            "the name is the service's host name: use letters, digits, `.`, `_` and `-`",
        );
        return None;
    }
    let context = format!("service `{}` of {stage}", name.value);
    let mut image = None;
    let mut env = Vec::new();
    let mut command = Vec::new();
    let mut ready = Vec::new();
    let mut ready_timeout = None;
    let mut seen: Vec<(&str, SourceSpan)> = Vec::new();
    for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
        reader.reject_type_annotations(child);
        let key = child.name().value();
        let Some(known) = SERVICE_NODES.iter().copied().find(|k| *k == key) else {
            reader.unknown_node(child, &SERVICE_NODES, &context);
            continue;
        };
        if known != "env" {
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == known) {
                reader.duplicate_node(child, *first, &context);
                continue;
            }
            seen.push((known, child.name().span()));
        }
        match known {
            "env" => read_env(reader, child, scope, &mut env),
            "image" => {
                reader.props(child, &[], &[]);
                reader.no_children(child);
                image = reader
                    .one_string(child, "the service's image")
                    .map(|value| reader.template(&value, scope));
            }
            "command" => {
                reader.props(child, &[], &[]);
                reader.no_children(child);
                command = reader.strings(child, "the program and its arguments");
            }
            _ => {
                reader.no_children(child);
                for (_, entry) in reader.props(child, &["timeout"], &[]) {
                    let Some(text) = reader.string(entry, "a duration such as \"30s\"") else {
                        continue;
                    };
                    match parse_duration(&text.value) {
                        Ok(duration) if duration <= MAX_TIMEOUT => {
                            ready_timeout = Some(Spanned::new(duration, text.span));
                        }
                        _ => reader.error(
                            DiagnosticCode::InvalidValue,
                            format!("invalid readiness timeout `{}`", text.value),
                            text.span,
                            "not a duration",
                        ),
                    }
                }
                ready = reader.strings(
                    child,
                    "a shell command, or a program and its arguments, that succeeds once the service is ready",
                );
            }
        }
    }
    let Some(image) = image else {
        reader.error(
            DiagnosticCode::InvalidValue,
            format!("{context} has no `image`"),
            name.span,
            "no image",
        );
        reader.help_last("add `image \"NAME\"` inside the service");
        return None;
    };
    Some(Service {
        name,
        image,
        env,
        command,
        ready,
        ready_timeout,
        span: node.span(),
    })
}

/// Keeps the first of each value, in order.
fn dedup_by_value(values: &mut Vec<Spanned<String>>) {
    let mut seen = std::collections::HashSet::new();
    values.retain(|value| seen.insert(value.value.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m", true), Some(500));
        assert_eq!(parse_quantity("2", true), Some(2000));
        assert_eq!(parse_quantity("0.5", true), Some(500));
        assert_eq!(parse_quantity("512Mi", false), Some(512 * 1024 * 1024));
        assert_eq!(parse_quantity("1G", false), Some(1_000_000_000));
        for bad in ["", "m", "1x", "1.", ".5", "1..2", "500m"] {
            assert_eq!(parse_quantity(bad, false), None, "{bad}");
        }
        assert_eq!(parse_quantity("0", true), None);
    }
}
