//! The pipeline language: parsing KDL into an owned model with spans, and validating it.

mod ancestors;
mod concurrency;
mod cron;
mod duration;
mod file;
mod glob;
mod guard;
mod includes;
mod lengths;
mod limits;
mod matrix;
mod matrix_entries;
mod model;
mod output_refs;
mod paired_needs;
mod pipeline;
mod plain;
mod reader;
mod shell;
mod stage_templates;
mod template;
mod validate;

pub use duration::{format_duration, parse_duration};
pub use file::{ReadFileError, read_config_file, read_included_file};
pub use glob::Glob;
pub use includes::{LoadError, MAX_INCLUDE_DEPTH, MAX_INCLUDED_FILES};
pub use lengths::{
    MAX_COMMAND_BYTES, MAX_GROUP_BYTES, MAX_MATRIX_VALUE_BYTES, MAX_NAME_BYTES, MAX_VALUE_BYTES,
};
pub use limits::{MAX_MATRIX_INSTANCES, MAX_RETRY, MAX_STAGES, MAX_TIMEOUT};
pub use model::{
    CacheDef, ConcurrencyGroup, Defaults, EnvVar, EventKind, ExecutorKind, Matrix, MatrixAxis,
    MatrixEntry, Pipeline, Resources, Service, Spanned, Stage, TestReport, Trigger, When,
    WhenStatus,
};
pub use pipeline::{parse_pipeline, parse_pipeline_with_includes};
pub use reader::MAX_FILE_BYTES;
pub use shell::{Analysis, Landing, Refusal};
pub use template::{
    CommandRefusal, Template, TemplatePart, Variable, matrix_env_name, quote_for_shell,
};

pub(crate) use matrix::combinations;
pub(crate) use model::is_valid_name;
pub(crate) use reader::Reader;
pub(crate) use template::{TemplateScope, is_env_name};
