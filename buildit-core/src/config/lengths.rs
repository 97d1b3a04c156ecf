//! Length limits of names and values, so that no identifier or command is larger than its consumers expect.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use miette::SourceSpan;

use super::model::{EnvVar, Pipeline, Stage};
use super::reader::Reader;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};

/// Longest name: pipeline, stages, caches, services, matrix axes, environment variables and secrets.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest matrix value (it becomes part of a stage instance's name and directory).
pub const MAX_MATRIX_VALUE_BYTES: usize = 1024;
/// Longest string that reaches a process as one argument or variable (`run`, `env` values, a service's
/// `command` and `ready`): Linux refuses any single argument or environment string over 128 KiB, and
/// substituted values still have to fit.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Longest concurrency group, as written and as rendered for a run: it is a key of the store, and a longer
/// rendered one (a long branch name) is shortened to this with a hash of the whole, so that it stays distinct.
pub const MAX_GROUP_BYTES: usize = 256;
/// Longest other value (images, paths, cache keys, `workdir`, `shell`).
pub const MAX_VALUE_BYTES: usize = 4096;

/// Reports every name or value longer than its limit.
pub(crate) fn check_lengths(reader: &mut Reader<'_>, pipeline: &Pipeline) {
    let mut check = |what: &str, len: usize, span: SourceSpan, max: usize| {
        if len > max {
            reader.push(
                ConfigDiagnostic::error(
                    DiagnosticCode::Limit,
                    format!("{what} is {len} bytes long; at most {max} bytes are allowed"),
                    span,
                    "too long",
                )
                .with_help(format!("shorten the {what}")),
            );
        }
    };
    let name = &pipeline.name;
    check("pipeline name", name.value.len(), name.span, MAX_NAME_BYTES);
    env_lengths(&mut check, &pipeline.env);
    for cache in &pipeline.caches {
        check(
            "cache name",
            cache.name.value.len(),
            cache.name.span,
            MAX_NAME_BYTES,
        );
        check(
            "cache key",
            cache.key.value.as_str().len(),
            cache.key.span,
            MAX_VALUE_BYTES,
        );
        for path in cache.paths.iter().chain(&cache.restore_keys) {
            check(
                "cache path or key",
                path.value.as_str().len(),
                path.span,
                MAX_VALUE_BYTES,
            );
        }
    }
    let groups = pipeline.group.iter().chain(
        pipeline
            .stages
            .iter()
            .filter_map(|stage| stage.group.as_ref()),
    );
    for group in groups {
        check(
            "concurrency group",
            group.name.value.as_str().len(),
            group.name.span,
            MAX_GROUP_BYTES,
        );
    }
    for stage in &pipeline.stages {
        stage_lengths(&mut check, stage);
    }
}

fn stage_lengths(check: &mut impl FnMut(&str, usize, SourceSpan, usize), stage: &Stage) {
    let name = &stage.name;
    check("stage name", name.value.len(), name.span, MAX_NAME_BYTES);
    for command in &stage.run {
        check(
            "`run` command",
            command.value.as_str().len(),
            command.span,
            MAX_COMMAND_BYTES,
        );
    }
    for secret in &stage.secrets {
        check(
            "secret name",
            secret.value.len(),
            secret.span,
            MAX_NAME_BYTES,
        );
    }
    let values = stage
        .image
        .iter()
        .chain(&stage.workdir)
        .chain(&stage.artifacts)
        .chain(stage.reports.iter().map(|report| &report.junit));
    for value in values {
        check(
            "value",
            value.value.as_str().len(),
            value.span,
            MAX_VALUE_BYTES,
        );
    }
    if let Some(shell) = &stage.shell {
        check("shell", shell.value.len(), shell.span, MAX_VALUE_BYTES);
    }
    env_lengths(check, &stage.env);
    if let Some(matrix) = &stage.matrix {
        for axis in &matrix.axes {
            check(
                "matrix axis name",
                axis.name.value.len(),
                axis.name.span,
                MAX_NAME_BYTES,
            );
            for value in &axis.values {
                check(
                    "matrix value",
                    value.value.len(),
                    value.span,
                    MAX_MATRIX_VALUE_BYTES,
                );
            }
        }
        for entry in matrix.exclude.iter().chain(&matrix.include) {
            for (_, value) in &entry.pairs {
                check(
                    "matrix value",
                    value.value.len(),
                    value.span,
                    MAX_MATRIX_VALUE_BYTES,
                );
            }
        }
    }
    for service in &stage.services {
        check(
            "service name",
            service.name.value.len(),
            service.name.span,
            MAX_NAME_BYTES,
        );
        check(
            "value",
            service.image.value.as_str().len(),
            service.image.span,
            MAX_VALUE_BYTES,
        );
        for argument in service.command.iter().chain(&service.ready) {
            check(
                "service command",
                argument.value.len(),
                argument.span,
                MAX_COMMAND_BYTES,
            );
        }
        env_lengths(check, &service.env);
    }
}

fn env_lengths(check: &mut impl FnMut(&str, usize, SourceSpan, usize), env: &[EnvVar]) {
    for var in env {
        check(
            "environment variable name",
            var.name.value.len(),
            var.name.span,
            MAX_NAME_BYTES,
        );
        check(
            "environment value",
            var.value.value.as_str().len(),
            var.value.span,
            MAX_COMMAND_BYTES,
        );
    }
}
