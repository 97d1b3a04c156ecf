//! `buildit pipelines trigger`: send a pipeline to the daemon (or name a registered one), queue a run of it, and
//! with `--follow` show it as a local `buildit run` would: the same lines, the same summary, the same exit codes,
//! drawn from streamed events. `register`, `list` and `show` are the `registered` module's.

use buildit_grpc::proto;
use buildit_grpc::proto::build_it_client::BuildItClient;
use tonic::transport::Channel;

use super::follow_remote::follow;
use super::plan::run_context;
use super::remote::{authorized, connect, refused};
use crate::cli::{PipelinesCommand, TriggerArgs};
use crate::exit::Exit;
use crate::report::error_line;
use crate::reporter::print_text;

pub(crate) fn run(command: &PipelinesCommand) -> Exit {
    match command {
        PipelinesCommand::Trigger(args) => trigger(args),
        PipelinesCommand::Register(args) => super::registered::register(args),
        PipelinesCommand::List(args) => super::registered::list(args),
        PipelinesCommand::Show(args) => super::registered::show(args),
    }
}

fn trigger(args: &TriggerArgs) -> Exit {
    // A registered pipeline's text is the daemon's: no file is read.
    let (pipeline, file_name) = match &args.registered {
        Some(_) => (String::new(), String::new()),
        None => match buildit_core::config::read_config_file(&args.file) {
            Ok(text) => (text, args.file.display().to_string()),
            Err(error) => {
                error_line(&format!("pipeline file {error}"), None);
                return Exit::InvalidConfig;
            }
        },
    };
    let workspace = std::env::current_dir().unwrap_or_default();
    let (includes, uses_changes) = included_files(&args.file, &pipeline);
    // A registered pipeline's text is the daemon's: changes are only sent when a base is named.
    let context = match run_context(&args.context, &workspace, uses_changes) {
        Ok(context) => context,
        Err(exit) => return exit,
    };
    let request = proto::TriggerRunRequest {
        includes,
        pipeline,
        file_name,
        branch: context.branch.unwrap_or_default(),
        sha: context.sha.unwrap_or_default(),
        tag: context.tag.unwrap_or_default(),
        event: context
            .event
            .map(|event| event.as_str().to_owned())
            .unwrap_or_default(),
        env: context.env.into_iter().collect(),
        stages: context.selected,
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        source_sha256: String::new(),
        registered: args.registered.clone().unwrap_or_default(),
        match_triggers: context.match_triggers,
        changes: context.changes.map(|changes| proto::ChangedFiles {
            base: changes.base,
            paths: changes.paths,
        }),
    };
    let (server, token) = match super::login::resolve(&args.remote) {
        Ok(remote) => remote,
        Err(exit) => return exit,
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let mut client = match connect(&server).await {
            Ok(client) => client,
            Err(exit) => return exit,
        };
        let mut request = request;
        if !args.no_upload {
            match upload_workspace(&mut client, &token, &workspace).await {
                Ok(digest) => request.source_sha256 = digest,
                Err(exit) => return exit,
            }
        }
        let triggered = match client.trigger_run(authorized(request, &token)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return refused(&status),
        };
        if !triggered.not_triggered.is_empty() {
            print_text(&format!("{}: nothing runs\n", triggered.not_triggered));
            return Exit::Success;
        }
        let Some(run) = triggered.run else {
            error_line("the daemon answered without a run", None);
            return Exit::Infrastructure;
        };
        if !args.follow {
            print_text(&format!(
                "{} run {} of `{}` ({})\n",
                if triggered.existing {
                    "existing"
                } else {
                    "queued"
                },
                run.id,
                run.pipeline,
                run.state
            ));
            return Exit::Success;
        }
        follow(&mut client, &token, &run.id, args.format).await
    })
}

/// Uploads the workspace's archive (see [`crate::workspace_archive`]); its sha256.
async fn upload_workspace(
    client: &mut BuildItClient<Channel>,
    token: &str,
    workspace: &std::path::Path,
) -> Result<String, Exit> {
    let (file, files) = match crate::workspace_archive::build(workspace) {
        Ok(built) => built,
        Err(problem) => {
            error_line(&problem, None);
            return Err(Exit::Usage);
        }
    };
    let chunks =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024);
    // A read error ends the upload early: the daemon then refuses the truncated archive.
    let requests = upload_messages(chunks);
    match client.upload_source(authorized(requests, token)).await {
        Ok(uploaded) => {
            let uploaded = uploaded.into_inner();
            eprintln!(
                "uploaded the workspace: {files} files, {} bytes",
                uploaded.size
            );
            Ok(uploaded.sha256)
        }
        Err(status) => Err(refused(&status)),
    }
}

/// The archive's chunks as upload messages.
fn upload_messages(
    chunks: tokio_util::io::ReaderStream<tokio::fs::File>,
) -> impl futures_util::Stream<Item = proto::UploadSourceRequest> + Send + 'static {
    use futures_util::StreamExt as _;
    chunks
        .take_while(|chunk| std::future::ready(chunk.is_ok()))
        .filter_map(|chunk| std::future::ready(chunk.ok()))
        .map(|chunk| proto::UploadSourceRequest {
            chunk: chunk.to_vec(),
        })
}

/// The files the pipeline at `path` (with text `text`) includes, by their paths relative to its directory, as
/// the daemon reads them: every file it could read, whether or not the pipeline is valid (the daemon says
/// what is wrong with it); and whether the pipeline uses changed files.
fn included_files(
    path: &std::path::Path,
    text: &str,
) -> (std::collections::HashMap<String, String>, bool) {
    let mut files = std::collections::HashMap::new();
    if text.is_empty() {
        return (files, false);
    }
    let base = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let parsed = buildit_core::config::parse_pipeline_with_includes(
        text,
        &path.display().to_string(),
        &mut |relative| {
            let text = buildit_core::config::read_included_file(&base, relative)?;
            files.insert(relative.to_owned(), text.clone());
            Ok(text)
        },
    );
    let uses_changes = parsed.is_ok_and(|pipeline| pipeline.uses_changes());
    (files, uses_changes)
}
