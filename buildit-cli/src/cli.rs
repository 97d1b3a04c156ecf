//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// BuildIt: run the same pipeline on a laptop, on Docker and on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "buildit", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check a pipeline (and the system configuration) and report every problem at once.
    Validate(ValidateArgs),
    /// Show the stages a run would execute, in order, with what would be skipped.
    Plan(PlanArgs),
    /// Run a pipeline here, with live logs.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DiagnosticFormat {
    /// Rendered diagnostics with source excerpts.
    Text,
    /// A JSON array of diagnostics.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The pipeline file.
    #[arg(default_value = "buildit.kdl")]
    pub(crate) file: PathBuf,
    /// The system configuration file (default: $BUILDIT_SYSTEM, ./buildit-system.kdl, ~/.config/buildit/system.kdl).
    #[arg(long, value_name = "FILE")]
    pub(crate) system: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
    pub(crate) format: DiagnosticFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanOutput {
    /// Levels and stages.
    Text,
    /// One JSON object.
    Json,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EventArg {
    Push,
    PullRequest,
    Tag,
    Schedule,
    Manual,
}

/// What the run is about: evaluated by `when` conditions and `{git.*}` variables.
#[derive(Debug, Args)]
pub(crate) struct ContextArgs {
    /// Branch being built (default: the git repository's current branch).
    #[arg(long)]
    pub(crate) branch: Option<String>,
    /// Tag being built.
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// Commit sha (default: the git repository's HEAD).
    #[arg(long)]
    pub(crate) sha: Option<String>,
    /// What started the run (default: `tag` with --tag, else `push`).
    #[arg(long, value_enum)]
    pub(crate) event: Option<EventArg>,
    /// Extra environment, available as `{env.K}`; repeatable.
    #[arg(long = "env", value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Only these stages and what they need; manual stages run only when named. Repeatable.
    #[arg(long = "stage", value_name = "NAME")]
    pub(crate) stages: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The pipeline file.
    #[arg(default_value = "buildit.kdl")]
    pub(crate) file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
    pub(crate) format: PlanOutput,
    /// The system configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) system: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) context: ContextArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RunOutput {
    /// Prefixed log lines and a summary for people.
    Text,
    /// Every event as one JSON object per line, for tools.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The pipeline file.
    #[arg(default_value = "buildit.kdl")]
    pub(crate) file: PathBuf,
    /// Most stages running at once (default: the pipeline's `concurrency`, else the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) jobs: Option<u32>,
    /// Cancel everything still running at the first failure.
    #[arg(long)]
    pub(crate) fail_fast: bool,
    /// The directory stages run in (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunOutput::Text)]
    pub(crate) format: RunOutput,
    /// Plain prefixed lines without colors or progress, even on a terminal.
    #[arg(long)]
    pub(crate) plain: bool,
    /// The system configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) system: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) context: ContextArgs,
}
