//! `buildit pipelines trigger`: send a pipeline to the daemon (or name a registered one), queue a run of it, and
//! with `--follow` show it as a local `buildit run` would: the same lines, the same summary, the same exit codes,
//! drawn from streamed events. `register`, `list` and `show` are the `registered` module's.

use std::time::Duration;

use buildit_core::events::{EventBatch, RunView};
use buildit_grpc::event_from_wire;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

use super::plan::run_context;
use super::remote::{authorized, connect, refused};
use crate::cli::{PipelinesCommand, RunOutput, TriggerArgs};
use crate::exit::Exit;
use crate::printer::print_events;
use crate::report::error_line;
use crate::reporter::{LineReporter, print_text, summary};

/// Times a follower reconnects after the stream broke (the daemon restarting, a network hiccup) before it gives up.
const RECONNECTS: u32 = 5;

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
    let context = match run_context(&args.context, &workspace) {
        Ok(context) => context,
        Err(exit) => return exit,
    };
    let request = proto::TriggerRunRequest {
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

/// Streams the run's events into the same printer as a local run, resuming after the last event received when
/// the stream breaks; then the summary and `buildit run`'s exit code.
async fn follow(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run_id: &str,
    format: RunOutput,
) -> Exit {
    let (events, received) = tokio::sync::mpsc::channel::<EventBatch>(64);
    let printer = tokio::spawn(print_events(
        received,
        LineReporter::new(false),
        format,
        std::io::stdout(),
    ));
    let mut after_seq = 0;
    let mut reconnects = 0;
    let mut failure = None;
    'stream: loop {
        let opened = client
            .watch_run(authorized(
                proto::WatchRunRequest {
                    run: run_id.to_owned(),
                    after_seq,
                },
                token,
            ))
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            // The daemon restarting: try again, from the last event received.
            Err(status) if status.code() == tonic::Code::Unavailable && reconnects < RECONNECTS => {
                reconnects += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(reconnects))).await;
                continue;
            }
            Err(status) => {
                failure = Some(status);
                break;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let Some(Item::Events(batch)) = message.item else {
                        continue;
                    };
                    let batch: Vec<_> = batch
                        .events
                        .iter()
                        .filter_map(|event| event_from_wire(run_id, event))
                        .collect();
                    if let Some(last) = batch.last() {
                        after_seq = last.seq;
                    }
                    if events.send(std::sync::Arc::new(batch)).await.is_err() {
                        break 'stream;
                    }
                }
                Ok(None) => break 'stream,
                Err(status)
                    if status.code() == tonic::Code::Unavailable && reconnects < RECONNECTS =>
                {
                    reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(reconnects))).await;
                    continue 'stream;
                }
                Err(status) => {
                    failure = Some(status);
                    break 'stream;
                }
            }
        }
    }
    drop(events);
    let view = printer.await.unwrap_or_else(|_| RunView::new());
    if view.ending.is_none() {
        // A run that never started (cancelled while queued, or its workspace or executor could not be set up)
        // has no events: its record says why.
        let got = client
            .get_run(authorized(
                proto::GetRunRequest {
                    run: run_id.to_owned(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner);
        if let Ok(run) = got
            && matches!(run.state.as_str(), "failed" | "cancelled")
        {
            error_line(
                &format!("the run {} before it started: {}", run.state, run.reason),
                None,
            );
            return if run.state == "cancelled" {
                Exit::Interrupted
            } else {
                Exit::Infrastructure
            };
        }
    }
    if let Some(status) = failure {
        return refused(&status);
    }
    let text = summary(&view);
    match format {
        RunOutput::Text => print_text(&text),
        RunOutput::Json => eprint!("{text}"),
    }
    match &view.ending {
        Some(ending) => Exit::of_run(ending.status, Some(ending)),
        None => {
            error_line("the run's events ended before it did", None);
            Exit::Infrastructure
        }
    }
}
