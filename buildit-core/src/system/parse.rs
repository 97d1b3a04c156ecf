//! Reads `buildit-system.kdl` into a [`SystemConfig`], reporting every problem with its span.

use std::path::{Path, PathBuf};

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::model::{
    ArtifactStoreConfig, DeployerConfig, ExecutorConfig, PullPolicy, SecretStoreConfig,
    SourceLimits, StoreConfig, SystemConfig, WorkspaceAccess,
};
use crate::config::{ExecutorKind, Reader, Spanned, TemplateScope, is_env_name, is_valid_name};
use crate::diagnostic::{ConfigDiagnostic, ConfigError, ConfigSource, DiagnosticCode};
use crate::suggest::did_you_mean;

const TOP_LEVEL: [&str; 7] = [
    "store",
    "executor",
    "default-executor",
    "artifacts",
    "secrets",
    "deployer",
    "sources",
];

/// Parses and validates a system configuration. Parts it does not set keep their defaults; relative paths are
/// kept as written (see [`SystemConfig::resolve_paths`] and [`super::load_system`], which resolves them against
/// the file's directory).
pub fn parse_system(source: &str, name: &str) -> Result<SystemConfig, ConfigError> {
    let config_source = ConfigSource::new(name, source);
    let mut reader = Reader::new(source);
    let mut config = SystemConfig::defaults(Path::new(""));
    config.file = Some(PathBuf::from(name));
    if let Some(document) = reader.parse_document() {
        read_system(&mut reader, &document, &mut config);
    }
    if reader.diagnostics.has_errors() {
        return Err(ConfigError {
            input: config_source,
            diagnostics: reader.diagnostics.into_sorted(),
        });
    }
    config.warnings = reader.diagnostics.into_sorted();
    Ok(config)
}

/// Tracks nodes that may appear once.
#[derive(Default)]
struct Seen(Vec<(String, SourceSpan)>);

impl Seen {
    /// True the first time; reports a duplicate afterwards.
    fn first(&mut self, reader: &mut Reader<'_>, key: &str, node: &KdlNode) -> bool {
        if let Some((_, span)) = self.0.iter().find(|(k, _)| k == key) {
            reader.duplicate_node(node, *span, "the system configuration");
            return false;
        }
        self.0.push((key.to_owned(), node.name().span()));
        true
    }
}

fn read_system(reader: &mut Reader<'_>, document: &KdlDocument, config: &mut SystemConfig) {
    let mut seen = Seen::default();
    let mut executors: Vec<ExecutorConfig> = Vec::new();
    let mut default_executor: Option<Spanned<ExecutorKind>> = None;
    for node in document.nodes() {
        reader.reject_type_annotations(node);
        let key = node.name().value();
        match key {
            "store" if seen.first(reader, key, node) => {
                config.written_paths.store = true;
                config.store = read_store(reader, node).unwrap_or(config.store.clone())
            }
            "executor" => {
                if let Some(executor) = read_executor(reader, node) {
                    if executors.iter().any(|e| e.kind() == executor.kind()) {
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::DuplicateNode,
                                format!("executor `{}` is configured twice", executor.kind()),
                                node.span(),
                                "configured again here",
                            )
                            .with_help("keep one of them"),
                        );
                    } else {
                        executors.push(executor);
                    }
                }
            }
            "default-executor" if seen.first(reader, key, node) => {
                reader.props(node, &[], &[]);
                reader.no_children(node);
                default_executor = reader
                    .one_string(node, "local, docker or kubernetes")
                    .and_then(|value| {
                        executor_kind(reader, &value).map(|kind| Spanned::new(kind, value.span))
                    });
            }
            "artifacts" if seen.first(reader, key, node) => {
                config.written_paths.artifacts = true;
                if let Some(artifacts) = read_artifacts(reader, node) {
                    config.artifacts = artifacts;
                }
            }
            "secrets" if seen.first(reader, key, node) => {
                if let Some(secrets) = read_secrets(reader, node) {
                    config.secrets = secrets;
                }
            }
            "deployer" => config
                .deployers
                .extend(read_deployer(reader, node, &config.deployers)),
            "sources" if seen.first(reader, key, node) => {
                config.sources = read_sources(reader, node);
            }
            "store" | "default-executor" | "artifacts" | "secrets" | "sources" => {}
            _ => reader.unknown_node(node, &TOP_LEVEL, "the system configuration"),
        }
    }
    if !executors.is_empty() {
        config.executors = executors;
    }
    if let Some(default) = default_executor {
        if default.value == ExecutorKind::Local {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    "`default-executor` must be `docker` or `kubernetes`",
                    default.span,
                    "stages with an image cannot run on the host",
                )
                .with_help("it chooses where stages with an `image` run; stages without one always run locally"),
            );
        } else if config.executor(default.value).is_none() {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "`default-executor` is `{}`, which is not configured",
                        default.value
                    ),
                    default.span,
                    "not configured",
                )
                .with_help(format!("add `executor \"{}\"`", default.value)),
            );
        } else {
            config.default_executor = Some(default.value);
        }
    }
}

fn executor_kind(reader: &mut Reader<'_>, value: &Spanned<String>) -> Option<ExecutorKind> {
    reader.keyword(
        value,
        &["local", "docker", "kubernetes"],
        "unknown executor",
    )
}

/// The kind argument of a node like `store "sqlite"`, checked against `kinds`.
fn kind_arg(reader: &mut Reader<'_>, node: &KdlNode, kinds: &[&str]) -> Option<String> {
    let value = reader.one_string(node, &format!("one of: {}", kinds.join(", ")))?;
    if kinds.contains(&value.value.as_str()) {
        return Some(value.value);
    }
    let help = did_you_mean(&value.value, kinds.iter().copied())
        .unwrap_or_else(|| format!("expected one of: {}", kinds.join(", ")));
    reader.push(
        ConfigDiagnostic::error(
            DiagnosticCode::InvalidValue,
            format!("unknown {} kind `{}`", node.name().value(), value.value),
            value.span,
            "unknown kind",
        )
        .with_help(help),
    );
    None
}

/// String properties of a node, by name.
fn string_props(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    allowed: &[&str],
) -> Vec<(String, Spanned<String>)> {
    let props: Vec<(&str, &KdlEntry)> = reader.props(node, allowed, &[]);
    props
        .into_iter()
        .filter_map(|(key, entry)| {
            reader
                .string(entry, &format!("`{key}`"))
                .map(|value| (key.to_owned(), value))
        })
        .collect()
}

/// Reports a property that belongs to another kind of the same node (`url` on a SQLite store).
fn misplaced(
    reader: &mut Reader<'_>,
    props: &mut Vec<(String, Spanned<String>)>,
    key: &str,
    message: impl Into<String>,
) {
    if let Some(value) = take(props, key) {
        reader.error(
            DiagnosticCode::UnknownProperty,
            message,
            value.span,
            "not used by this kind",
        );
    }
}

/// Whether `text` is a Kubernetes quantity of bytes: digits, maybe a fraction, maybe a suffix.
fn is_quantity(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().next().is_some_and(|b| b.is_ascii_digit());
    let suffixes = [
        "", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    number_ok && suffixes.contains(&suffix)
}

fn take(values: &mut Vec<(String, Spanned<String>)>, key: &str) -> Option<Spanned<String>> {
    let position = values.iter().position(|(k, _)| k == key)?;
    Some(values.remove(position).1)
}

fn required(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    value: Option<Spanned<String>>,
    key: &str,
    example: &str,
) -> Option<Spanned<String>> {
    if value.is_none() {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::InvalidValue,
                format!("`{}` needs `{key}`", node.name().value()),
                node.name().span(),
                format!("`{key}` missing"),
            )
            .with_help(format!("write `{example}`")),
        );
    }
    value
}

fn read_store(reader: &mut Reader<'_>, node: &KdlNode) -> Option<StoreConfig> {
    reader.no_children(node);
    let kind = kind_arg(reader, node, &["sqlite", "postgres"]);
    let mut props = string_props(reader, node, &["path", "url"]);
    let kind = kind?;
    if kind == "sqlite" {
        misplaced(
            reader,
            &mut props,
            "url",
            "`url` is for `postgres` stores; SQLite takes `path`",
        );
        let path = take(&mut props, "path").map_or_else(
            || PathBuf::from(super::model::DEFAULT_DATABASE),
            |p| PathBuf::from(p.value),
        );
        return Some(StoreConfig::Sqlite { path });
    }
    misplaced(
        reader,
        &mut props,
        "path",
        "`path` is for `sqlite` stores; PostgreSQL takes `url`",
    );
    let url = required(
        reader,
        node,
        take(&mut props, "url"),
        "url",
        "store \"postgres\" url=\"postgres://user@host/db\"",
    )?;
    let scope = TemplateScope {
        env_only: true,
        ..TemplateScope::default()
    };
    let template = reader.template(&url, scope);
    let scheme_ok = url.value.starts_with("postgres://")
        || url.value.starts_with("postgresql://")
        || url.value.starts_with('{');
    if !scheme_ok {
        reader.push(
            ConfigDiagnostic::error(DiagnosticCode::InvalidValue, "a PostgreSQL url starts with `postgres://`", url.span, "not a PostgreSQL url")
                .with_help("write `url=\"postgres://user:password@host:5432/db\"` or `url=\"{env.DATABASE_URL}\"`"),
        );
    }
    Some(StoreConfig::Postgres {
        url: template.value,
    })
}

fn read_executor(reader: &mut Reader<'_>, node: &KdlNode) -> Option<ExecutorConfig> {
    reader.props(node, &[], &[]);
    let kind = kind_arg(reader, node, &["local", "docker", "kubernetes"])?;
    let allowed: &[&str] = match kind.as_str() {
        "local" => &[],
        "docker" => &["host", "pull", "network"],
        _ => &[
            "namespace",
            "kubeconfig",
            "context",
            "service-account",
            "storage-class",
            "workspace-size",
            "workspace-access",
            "helper-image",
            "git-image",
            "image-pull-secrets",
            "image-pull-grace",
            "unschedulable-limit",
        ],
    };
    let mut pull_secrets: Vec<String> = Vec::new();
    let mut values: Vec<(String, Spanned<String>)> = Vec::new();
    let mut seen = Seen::default();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        reader.reject_type_annotations(child);
        let key = child.name().value();
        if !allowed.contains(&key) {
            if allowed.is_empty() {
                reader.error(
                    DiagnosticCode::UnknownNode,
                    format!("unknown node `{key}`: executor `{kind}` takes no settings"),
                    child.name().span(),
                    "unknown node",
                );
            } else {
                reader.unknown_node(child, allowed, &format!("executor `{kind}`"));
            }
            continue;
        }
        reader.props(child, &[], &[]);
        reader.no_children(child);
        if !seen.first(reader, key, child) {
            continue;
        }
        if key == "image-pull-secrets" {
            pull_secrets.extend(
                reader
                    .strings(child, key)
                    .into_iter()
                    .map(|name| name.value),
            );
        } else if let Some(value) = reader.one_string(child, key) {
            values.push((key.to_owned(), value));
        }
    }
    Some(match kind.as_str() {
        "local" => ExecutorConfig::Local,
        "docker" => {
            let host = take(&mut values, "host");
            if let Some(host) = &host {
                let schemes = [
                    "unix://", "tcp://", "http://", "https://", "npipe://", "ssh://",
                ];
                if !schemes.iter().any(|scheme| host.value.starts_with(scheme)) {
                    reader.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::InvalidValue,
                            format!("invalid Docker host `{}`", host.value),
                            host.span,
                            "unknown scheme",
                        )
                        .with_help("write `unix:///var/run/docker.sock` or `tcp://host:2375`"),
                    );
                }
            }
            let pull = match take(&mut values, "pull") {
                None => PullPolicy::default(),
                Some(value) => match value.value.as_str() {
                    "always" => PullPolicy::Always,
                    "if-not-present" => PullPolicy::IfNotPresent,
                    "never" => PullPolicy::Never,
                    other => {
                        let help = did_you_mean(other, ["always", "if-not-present", "never"])
                            .unwrap_or_else(|| {
                                "expected one of: always, if-not-present, never".to_owned()
                            });
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::InvalidValue,
                                format!("unknown pull policy `{other}`"),
                                value.span,
                                "unknown policy",
                            )
                            .with_help(help),
                        );
                        PullPolicy::default()
                    }
                },
            };
            ExecutorConfig::Docker {
                host: host.map(|h| h.value),
                pull,
                network: take(&mut values, "network").map(|n| n.value),
            }
        }
        _ => {
            let mut duration = |key: &str| {
                let value = take(&mut values, key)?;
                match crate::config::parse_duration(&value.value) {
                    Ok(duration) => Some(duration),
                    Err(problem) => {
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::InvalidValue,
                                format!("invalid `{key}`: {problem}"),
                                value.span,
                                "not a duration",
                            )
                            .with_help("write `30s`, `5m`"),
                        );
                        None
                    }
                }
            };
            let image_pull_grace = duration("image-pull-grace");
            let unschedulable_limit = duration("unschedulable-limit");
            let workspace_size = take(&mut values, "workspace-size").and_then(|size| {
                if is_quantity(&size.value) {
                    Some(size.value)
                } else {
                    reader.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::InvalidValue,
                            format!("invalid `workspace-size` `{}`", size.value),
                            size.span,
                            "not a size",
                        )
                        .with_help("write a Kubernetes quantity: `10Gi`, `500Mi`"),
                    );
                    None
                }
            });
            let workspace_access = match take(&mut values, "workspace-access") {
                None => WorkspaceAccess::default(),
                Some(value) => WorkspaceAccess::parse(&value.value).unwrap_or_else(|| {
                    let modes = ["ReadWriteOnce", "ReadWriteMany"];
                    let help = did_you_mean(&value.value, modes).unwrap_or_else(|| {
                        "expected one of: ReadWriteOnce, ReadWriteMany".to_owned()
                    });
                    reader.push(
                        ConfigDiagnostic::error(
                            DiagnosticCode::InvalidValue,
                            format!("unknown workspace access mode `{}`", value.value),
                            value.span,
                            "unknown access mode",
                        )
                        .with_help(help),
                    );
                    WorkspaceAccess::default()
                }),
            };
            ExecutorConfig::Kubernetes {
                namespace: take(&mut values, "namespace").map(|n| n.value),
                kubeconfig: take(&mut values, "kubeconfig").map(|k| PathBuf::from(k.value)),
                context: take(&mut values, "context").map(|c| c.value),
                service_account: take(&mut values, "service-account").map(|s| s.value),
                storage_class: take(&mut values, "storage-class").map(|s| s.value),
                workspace_size,
                workspace_access,
                helper_image: take(&mut values, "helper-image").map(|i| i.value),
                git_image: take(&mut values, "git-image").map(|i| i.value),
                image_pull_secrets: pull_secrets,
                image_pull_grace,
                unschedulable_limit,
            }
        }
    })
}

fn read_artifacts(reader: &mut Reader<'_>, node: &KdlNode) -> Option<ArtifactStoreConfig> {
    reader.no_children(node);
    let kind = kind_arg(reader, node, &["filesystem", "s3"]);
    let mut props = string_props(
        reader,
        node,
        &["path", "bucket", "prefix", "endpoint", "region"],
    );
    let kind = kind?;
    let foreign: &[&str] = if kind == "filesystem" {
        &["bucket", "prefix", "endpoint", "region"]
    } else {
        &["path"]
    };
    for key in foreign {
        misplaced(
            reader,
            &mut props,
            key,
            format!("`{key}` does not apply to `{kind}` artifact stores"),
        );
    }
    if kind == "filesystem" {
        let path = take(&mut props, "path").map_or_else(
            || PathBuf::from(super::model::DEFAULT_ARTIFACTS),
            |p| PathBuf::from(p.value),
        );
        return Some(ArtifactStoreConfig::Filesystem { path });
    }
    let bucket = required(
        reader,
        node,
        take(&mut props, "bucket"),
        "bucket",
        "artifacts \"s3\" bucket=\"my-bucket\"",
    )?;
    Some(ArtifactStoreConfig::S3 {
        bucket: bucket.value,
        prefix: take(&mut props, "prefix").map(|v| v.value),
        endpoint: take(&mut props, "endpoint").map(|v| v.value),
        region: take(&mut props, "region").map(|v| v.value),
    })
}

fn read_secrets(reader: &mut Reader<'_>, node: &KdlNode) -> Option<SecretStoreConfig> {
    reader.no_children(node);
    let kind = kind_arg(reader, node, &["env", "file"]);
    let mut props = string_props(reader, node, &["prefix", "path"]);
    let kind = kind?;
    if kind == "env" {
        misplaced(
            reader,
            &mut props,
            "path",
            "`path` is for `file` secret stores",
        );
        let prefix = take(&mut props, "prefix").map_or_else(
            || super::model::DEFAULT_SECRET_PREFIX.to_owned(),
            |p| p.value,
        );
        if !prefix.is_empty() && !is_env_name(&prefix) {
            reader.error(
                DiagnosticCode::InvalidValue,
                format!("invalid environment variable prefix `{prefix}`"),
                node.span(),
                "use letters, digits and `_`",
            );
        }
        return Some(SecretStoreConfig::Env { prefix });
    }
    misplaced(
        reader,
        &mut props,
        "prefix",
        "`prefix` is for `env` secret stores",
    );
    let path = required(
        reader,
        node,
        take(&mut props, "path"),
        "path",
        "secrets \"file\" path=\"secrets.kdl\"",
    )?;
    Some(SecretStoreConfig::File {
        path: PathBuf::from(path.value),
    })
}

/// `sources max-upload="100MiB" max-entries=100000`: limits on uploaded workspace sources; each property is
/// optional and keeps its default when absent or invalid.
fn read_sources(reader: &mut Reader<'_>, node: &KdlNode) -> SourceLimits {
    reader.no_args(node);
    reader.no_children(node);
    let mut limits = SourceLimits::default();
    for (key, entry) in reader.props(node, &["max-upload", "max-entries"], &[]) {
        let span = reader.value_span(entry);
        if key == "max-upload" {
            let parsed = match entry.value() {
                KdlValue::String(text) => parse_size(text),
                KdlValue::Integer(bytes) => u64::try_from(*bytes).ok().filter(|b| *b > 0),
                _ => None,
            };
            match parsed {
                Some(bytes) => limits.max_upload = bytes,
                None => reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!("invalid upload size `{}`", bare(entry.value())),
                        span,
                        "invalid size",
                    )
                    .with_help(
                        "write a size of at least 1 byte: a number of bytes (`1048576`) or one with a unit \
                         `B`, `KiB`, `MiB`, `GiB` or `TiB` (`\"100MiB\"`)",
                    ),
                ),
            }
        } else {
            match entry.value() {
                KdlValue::Integer(count) if *count >= 1 && *count <= i128::from(u32::MAX) => {
                    limits.max_entries = u64::try_from(*count).unwrap_or(limits.max_entries);
                }
                other => reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!("invalid entry count `{}`", bare(other)),
                        span,
                        "invalid count",
                    )
                    .with_help(format!(
                        "write a whole number from 1 to {} without quotes, e.g. `max-entries=100000`",
                        u32::MAX
                    )),
                ),
            }
        }
    }
    limits
}

/// A value as written, without the quotes KDL adds to strings.
fn bare(value: &KdlValue) -> String {
    match value {
        KdlValue::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A size: a whole number of bytes, optionally followed by `B`, `KiB`, `MiB`, `GiB` or `TiB` (powers of 1024;
/// `MB` and `M` are refused rather than guessed, as they mean 1000 or 1024 depending on the tool). Zero and
/// sizes that do not fit in 64 bits are `None`.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(scale).filter(|bytes| *bytes > 0)
}

fn read_deployer(
    reader: &mut Reader<'_>,
    node: &KdlNode,
    existing: &[DeployerConfig],
) -> Option<DeployerConfig> {
    let kind = kind_arg(reader, node, &["kubernetes"]);
    let mut props = string_props(reader, node, &["name"]);
    let name = required(
        reader,
        node,
        take(&mut props, "name"),
        "name",
        "deployer \"kubernetes\" name=\"production\" { namespace \"prod\" }",
    );
    let mut values: Vec<(String, Spanned<String>)> = Vec::new();
    let mut seen = Seen::default();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        reader.reject_type_annotations(child);
        let key = child.name().value();
        if !matches!(key, "namespace" | "context") {
            reader.unknown_node(child, &["namespace", "context"], "a deployer");
            continue;
        }
        reader.props(child, &[], &[]);
        reader.no_children(child);
        if seen.first(reader, key, child)
            && let Some(value) = reader.one_string(child, key)
        {
            values.push((key.to_owned(), value));
        }
    }
    let name = name?;
    if !is_valid_name(&name.value) {
        reader.error(
            DiagnosticCode::InvalidValue,
            format!("invalid deployer name `{}`", name.value),
            name.span,
            "use letters, digits, `.`, `_` and `-`",
        );
        return None;
    }
    if existing.iter().any(|d| d.name == name.value) {
        reader.error(
            DiagnosticCode::DuplicateNode,
            format!("deployer `{}` is defined twice", name.value),
            name.span,
            "defined again here",
        );
        return None;
    }
    Some(DeployerConfig {
        kind: kind?,
        name: name.value,
        namespace: take(&mut values, "namespace").map(|v| v.value),
        context: take(&mut values, "context").map(|v| v.value),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units_and_refuse_ambiguous_ones() {
        for (text, bytes) in [
            ("1", 1),
            ("100MiB", 100 << 20),
            ("2 GiB", 2 << 30),
            ("512B", 512),
            ("1TiB", 1 << 40),
        ] {
            assert_eq!(parse_size(text), Some(bytes), "{text}");
        }
        for text in [
            "",
            "0",
            "0MiB",
            "100MB",
            "100M",
            "1.5GiB",
            "-1",
            "MiB",
            "99999999999TiB",
        ] {
            assert_eq!(parse_size(text), None, "{text}");
        }
    }
}
