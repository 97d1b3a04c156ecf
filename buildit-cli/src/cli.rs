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
    /// Run a pipeline here, with live logs; the run is recorded in the store.
    Run(RunArgs),
    /// Show recorded runs, their stages and attempts, and their logs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Remove the containers that killed runs left behind (never those of live runs, nor anyone else's).
    Gc(GcArgs),
    /// Create, list and revoke the API tokens clients of the daemon present (one tenant each).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Serve the gRPC API: runs triggered remotely are queued, run by in-process workers, and streamed.
    Daemon(DaemonArgs),
    /// Remember a daemon and a token (checked against it) for the remote commands, in a file only you can read.
    Login(RemoteArgs),
    /// Forget what `buildit login` remembered.
    Logout,
    /// Pipelines on a daemon (`--server`): register them, list them, trigger a run (of a file or a registered
    /// pipeline), and follow it as `buildit run` shows a local one.
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
}

/// Where the daemon is and who is calling.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// The daemon's address (`http://HOST:PORT`, or `HOST:PORT`); else `BUILDIT_SERVER`, else `buildit login`'s.
    #[arg(long, env = "BUILDIT_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The API token; else `BUILDIT_TOKEN`, else `buildit login`'s.
    #[arg(
        long,
        env = "BUILDIT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PipelinesCommand {
    /// Send a pipeline to the daemon (or name a registered one) and queue a run of it; with `--follow`, show the
    /// run as it happens.
    Trigger(TriggerArgs),
    /// Validate a pipeline on the daemon and keep it there under the name it declares: `pipelines trigger
    /// --registered NAME` runs it. Registering a name again replaces its text.
    Register(RegisterArgs),
    /// The daemon's registered pipelines, by name.
    List(PipelinesListArgs),
    /// One registered pipeline: its file name, sha256, times, stages and text.
    Show(PipelinesShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// The pipeline file.
    #[arg(default_value = "buildit.kdl")]
    pub(crate) file: PathBuf,
    /// Refuse unless the file declares this pipeline name.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryOutput::Text)]
    pub(crate) format: HistoryOutput,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PipelinesListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryOutput::Text)]
    pub(crate) format: HistoryOutput,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PipelinesShowArgs {
    /// The pipeline's name.
    pub(crate) name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryOutput::Text)]
    pub(crate) format: HistoryOutput,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    /// The pipeline file.
    #[arg(default_value = "buildit.kdl")]
    pub(crate) file: PathBuf,
    /// Run the pipeline registered under this name (`pipelines register`) instead of sending a file.
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub(crate) registered: Option<String>,
    /// Follow the run to its end: its lines live, its summary, and `buildit run`'s exit code.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Output format while following.
    #[arg(long, value_enum, default_value_t = RunOutput::Text)]
    pub(crate) format: RunOutput,
    /// The same key twice gives the same run.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Do not upload the workspace: the run starts in an empty directory on the daemon.
    #[arg(long)]
    pub(crate) no_upload: bool,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
    #[command(flatten)]
    pub(crate) context: ContextArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7777")]
    pub(crate) listen: String,
    /// Where the daemon keeps its store (unless the system configuration names one) and its runs' workspaces.
    #[arg(long, value_name = "DIR", default_value = ".buildit")]
    pub(crate) data_dir: PathBuf,
    /// Runs at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) workers: u32,
    /// How long running runs may go on after SIGTERM before they are cancelled (`30s`, `5m`).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub(crate) drain: String,
    /// A PEM certificate chain: with `--tls-key`, the daemon speaks TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Leave a run that a daemon which died left interrupted as it is, rather than start it again as a new run.
    #[arg(long)]
    pub(crate) no_restart: bool,
    /// How much lower than runs the daemon's serving threads run (API calls, streams to watchers), as a
    /// niceness from 0 (the same as runs) to 19 (the least CPU when runs want it all): on a busy machine,
    /// watchers of a run then fall behind rather than slow it, and catch up as soon as there is room. Linux
    /// only; elsewhere everything runs at the process's priority.
    #[arg(long, value_name = "N", default_value_t = 19, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub(crate) serve_niceness: u8,
    /// How the daemon logs (to stderr): `plain` lines or `json` objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub(crate) log_format: LogFormat,
    /// Also serve uploaded sources over plain HTTP on this address (`0.0.0.0:7778`, with `--source-url`), at
    /// one-time links that expire after 30 minutes: the pods of a Kubernetes run download the run's source
    /// themselves. Meant for the cluster's network only. Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub(crate) source_listen: Option<String>,
    /// The base URL pods reach `--source-listen` at (`http://buildit-daemon.buildit.svc:7778`); default:
    /// `http://` and the address `--source-listen` bound. Needed when that address listens on every interface
    /// (`0.0.0.0`, `[::]`), which no pod can reach by that name.
    #[arg(long, value_name = "URL", requires = "source_listen", value_parser = source_url)]
    pub(crate) source_url: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

/// An `http://` or `https://` URL with a host, as `--source-url` takes it; a trailing `/` is dropped.
fn source_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or("write `http://HOST:PORT` (the URL pods reach the daemon's sources at)")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host".to_owned());
    }
    if text.contains(['?', '#']) || text.chars().any(char::is_whitespace) {
        return Err("the URL is a base: no query, fragment or spaces".to_owned());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// Options every `tokens` command takes.
#[derive(Debug, Args)]
pub(crate) struct TokensCommon {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// The workspace (or daemon data directory's parent) whose default store (`.buildit/buildit.db`) to use
    /// (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create a token for a tenant (created if missing) and print it, once: the store keeps only its hash.
    Create {
        /// The tenant the token gives access to: 1 to 64 characters of a-z, 0-9, `-` and `_`.
        #[arg(long, value_name = "NAME")]
        tenant: String,
        /// A label, to tell tokens apart in `tokens list`.
        #[arg(long, value_name = "LABEL", default_value = "")]
        name: String,
        #[command(flatten)]
        common: TokensCommon,
    },
    /// The tokens (never a token or its hash): id, tenant, label, creation, last use, revocation.
    List {
        /// Only this tenant's tokens.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = HistoryOutput::Text)]
        format: HistoryOutput,
        #[command(flatten)]
        common: TokensCommon,
    },
    /// Revoke a token by its id (from `tokens list`): it is refused from then on.
    Revoke {
        /// The token's id.
        id: i64,
        #[command(flatten)]
        common: TokensCommon,
    },
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// The system configuration file (where Docker is, where artifacts are kept).
    #[arg(long, value_name = "FILE")]
    pub(crate) system: Option<PathBuf>,
    /// Remove caches and runs' artifacts not written for this long (`30d`, `12h`).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub(crate) max_age: String,
    /// Then remove the oldest caches until they hold at most this much, and the same for artifacts (`10G`, `500M`).
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_size: Option<String>,
}

/// Which store to use: the system configuration's `store` unless a URL is given.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The store's URL (`postgres://...` or `sqlite:PATH`), instead of the system configuration's.
    #[arg(
        long,
        value_name = "URL",
        env = "BUILDIT_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,
    /// The system configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) system: Option<PathBuf>,
}

/// Options every `runs` command takes.
#[derive(Debug, Args)]
pub(crate) struct RunsCommon {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Ask this daemon instead of a local store (`http://HOST:PORT` or `HOST:PORT`).
    #[arg(long, env = "BUILDIT_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The API token for `--server`.
    #[arg(
        long,
        env = "BUILDIT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// The workspace whose default store (`.buildit/buildit.db`) to read (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryOutput::Text)]
    pub(crate) format: HistoryOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HistoryOutput {
    /// Tables and lines for people.
    Text,
    /// JSON (`logs`: one object per line).
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Recorded runs (a daemon's: its queued ones too), newest first.
    List {
        /// Only this pipeline's runs.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only runs in this state (`queued` and `started`: a daemon's runs not recorded yet, `--server`).
        #[arg(long, value_parser = RUN_STATES)]
        state: Option<String>,
        /// Only runs of this branch.
        #[arg(long)]
        branch: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// One run: its stages, attempts, outcomes, exit codes and durations.
    Show {
        /// The run: its id, its number (`3`), or `PIPELINE#3`.
        run: String,
        /// The pipeline a bare number belongs to.
        #[arg(long)]
        pipeline: Option<String>,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// A run's log lines, exactly as recorded, in order.
    Logs {
        /// The run: its id, its number (`3`), or `PIPELINE#3`.
        run: String,
        /// The pipeline a bare number belongs to.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this stage instance's lines (then printed without a prefix).
        #[arg(long)]
        stage: Option<String>,
        /// Only this attempt's lines.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..))]
        attempt: Option<u32>,
        /// Go on with live lines until the run ends (a daemon's run with `--server`, else one that another
        /// `buildit run` records in the store).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// Stop a run: one a `buildit run` of this store is running (another process, on any machine sharing the
    /// store), or a daemon's (`--server`). Running stages get their grace period, as on Ctrl-C; a run that has
    /// ended stays as it is (and the command succeeds, saying so).
    Cancel {
        /// The run: its id (a daemon's run: its id only), its number (`3`), or `PIPELINE#3`.
        run: String,
        /// The pipeline a bare number belongs to (a local store).
        #[arg(long)]
        pipeline: Option<String>,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// Delete an ended run from a local store: its record, stages, logs and events, its artifacts and its
    /// outputs files. A running run is refused (cancel it first).
    Delete {
        /// The run: its id, its number (`3`), or `PIPELINE#3`.
        run: String,
        /// The pipeline a bare number belongs to.
        #[arg(long)]
        pipeline: Option<String>,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// Delete every run of a local store that ended more than a while ago, as `runs delete` does, and the
    /// workspace's caches not written for as long.
    Prune {
        /// How long ago a run must have ended to go (`30d`, `12h`, `90m`).
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// Start a run again: the same pipeline file (refused if it changed), workspace, commit and flags, as a new
    /// run that records which run it retries. With `--failed`, only the stages that failed or were cancelled, and
    /// what depends on them, run; the others count as succeeded, their artifacts and outputs taken from the
    /// earlier run. A local store only.
    Retry {
        /// The run: its id, its number (`3`), or `PIPELINE#3`.
        run: String,
        /// The pipeline a bare number belongs to.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only the failed and cancelled stages and what depends on them.
        #[arg(long)]
        failed: bool,
        /// Plain prefixed lines without colors or progress, even on a terminal.
        #[arg(long)]
        plain: bool,
        #[command(flatten)]
        common: RunsCommon,
    },
    /// A run's stored events as JSON lines, oldest first, each with its sequence number (`seq`).
    Events {
        /// The run: its id, its number (`3`), or `PIPELINE#3`.
        run: String,
        /// The pipeline a bare number belongs to.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only the events after this sequence number (0: all).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        common: RunsCommon,
    },
}

/// The states `runs list --state` takes: a `Run`'s, as the daemon shows them.
pub(crate) const RUN_STATES: [&str; 7] = [
    "queued",
    "started",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
];

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
    /// What started the run (default: `tag` with --tag, else `push`). Given, it is matched against the
    /// pipeline's `on` triggers: when none matches, nothing runs.
    #[arg(long, value_enum)]
    pub(crate) event: Option<EventArg>,
    /// What `when changes=` and `on ... paths=` compare with: the files changed since this commit, branch or
    /// tag (default: the merge base with the default branch; on the default branch, the last commit's parent).
    #[arg(long, value_name = "REF")]
    pub(crate) base: Option<String>,
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
pub(crate) enum LogFormat {
    /// One line of text a record.
    Plain,
    /// One JSON object a record.
    Json,
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
    /// Mount the workspace into container stages instead of copying it into a volume for the run: no copy,
    /// and stages write straight into it (as the container's user, often root).
    #[arg(long)]
    pub(crate) bind: bool,
    /// Run this stage (every instance of it, or the one instance named) and what depends on it; what it needs is
    /// taken from the latest earlier run of the pipeline that has it succeeded (artifacts and outputs), the
    /// other stages are left out.
    #[arg(long, value_name = "STAGE", conflicts_with = "stages")]
    pub(crate) from: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) context: ContextArgs,
}
