//! `buildit runs ... --server`: a daemon's runs, listed, shown, their logs and events streamed, cancelled.

use std::io::Write as _;

use buildit_core::events::{RunEvent, RunView};
use buildit_grpc::event_from_wire;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

use super::remote::{authorized, connect, refused};
use super::runs::{duration, print, table, timestamp};
use crate::cli::{HistoryOutput, RunsCommand};
use crate::exit::Exit;
use crate::reporter::{json_line, summary};

pub(crate) fn run(command: &RunsCommand, server: &str, token: &str) -> Exit {
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let mut client = match connect(server).await {
            Ok(client) => client,
            Err(exit) => return exit,
        };
        let done = match command {
            RunsCommand::List {
                pipeline,
                state,
                branch,
                limit,
                common,
            } => {
                let wanted = proto::ListRunsRequest {
                    pipeline: pipeline.clone().unwrap_or_default(),
                    state: state.clone().unwrap_or_default(),
                    branch: branch.clone().unwrap_or_default(),
                    ..proto::ListRunsRequest::default()
                };
                list(&mut client, token, wanted, *limit, common.format).await
            }
            RunsCommand::Show { run, common, .. } => {
                show(&mut client, token, run, common.format).await
            }
            RunsCommand::Logs {
                run,
                stage,
                attempt,
                follow,
                ..
            } => logs(&mut client, token, run, stage.clone(), *attempt, *follow).await,
            RunsCommand::Events { run, after, .. } => {
                events(&mut client, token, run, *after, |event| {
                    println!("{}", json_line(event));
                })
                .await
                .map(|_| Exit::Success)
            }
            RunsCommand::Cancel { run, common, .. } => {
                let cancelled = client
                    .cancel_run(authorized(
                        proto::CancelRunRequest { run: run.clone() },
                        token,
                    ))
                    .await
                    .map(tonic::Response::into_inner);
                cancelled.map(|run| {
                    print(&describe(&run, common.format));
                    Exit::Success
                })
            }
            // Refused before a daemon is asked: they work on a local store only.
            // Refused before a daemon is asked.
            RunsCommand::Delete { .. } | RunsCommand::Prune { .. } | RunsCommand::Retry { .. } => {
                Ok(Exit::Usage)
            }
        };
        done.unwrap_or_else(|status| refused(&status))
    })
}

/// A run in one line (text) or as a JSON object.
fn describe(run: &proto::Run, format: HistoryOutput) -> String {
    match format {
        HistoryOutput::Json => format!("{}\n", run_json(run)),
        HistoryOutput::Text => {
            let mut line = format!(
                "run {}#{} ({}): {}",
                run.pipeline, run.number, run.id, run.state
            );
            if run.duration_ms > 0 {
                line.push_str(&format!(" in {}", duration(Some(run.duration_ms))));
            }
            if !run.restart_of.is_empty() {
                line.push_str(&format!(", restart of {}", run.restart_of));
            }
            if !run.restarted_as.is_empty() {
                line.push_str(&format!(", started again as {}", run.restarted_as));
            }
            line.push('\n');
            line
        }
    }
}

fn run_json(run: &proto::Run) -> serde_json::Value {
    serde_json::json!({
        "id": run.id,
        "pipeline": run.pipeline,
        "number": run.number,
        "state": run.state,
        "reason": Some(&run.reason).filter(|reason| !reason.is_empty()),
        "stage_count": run.stage_count,
        "created_at_ms": run.created_at_ms,
        "finished_at_ms": Some(run.finished_at_ms).filter(|ms| *ms > 0),
        "duration_ms": Some(run.duration_ms).filter(|ms| *ms > 0),
        "branch": Some(&run.branch).filter(|branch| !branch.is_empty()),
        "sha": Some(&run.sha).filter(|sha| !sha.is_empty()),
        "event": Some(&run.event).filter(|event| !event.is_empty()),
        "restart_of": Some(&run.restart_of).filter(|id| !id.is_empty()),
        "restarted_as": Some(&run.restarted_as).filter(|id| !id.is_empty()),
    })
}

/// The daemon's page size at most: a longer list is read a page at a time.
const MAX_PAGE: u32 = 500;

/// Up to `limit` runs `wanted` selects, a page at a time.
async fn list(
    client: &mut BuildItClient<Channel>,
    token: &str,
    wanted: proto::ListRunsRequest,
    limit: u32,
    format: HistoryOutput,
) -> Result<Exit, tonic::Status> {
    let mut runs: Vec<proto::Run> = Vec::new();
    let mut page_token = String::new();
    while runs.len() < limit as usize {
        let left = limit.saturating_sub(u32::try_from(runs.len()).unwrap_or(u32::MAX));
        let page = client
            .list_runs(authorized(
                proto::ListRunsRequest {
                    page_size: left.min(MAX_PAGE),
                    page_token,
                    ..wanted.clone()
                },
                token,
            ))
            .await?
            .into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    runs.truncate(limit as usize);
    let text = match format {
        HistoryOutput::Json => format!(
            "{}\n",
            serde_json::Value::Array(runs.iter().map(run_json).collect())
        ),
        HistoryOutput::Text => {
            let mut rows = vec![[
                "RUN".to_owned(),
                "ID".to_owned(),
                "STATE".to_owned(),
                "STARTED".to_owned(),
                "DURATION".to_owned(),
                "BRANCH".to_owned(),
            ]];
            rows.extend(runs.iter().map(|run| {
                [
                    format!("{}#{}", run.pipeline, run.number),
                    run.id.clone(),
                    run.state.clone(),
                    timestamp(run.created_at_ms),
                    duration(Some(run.duration_ms).filter(|ms| *ms > 0)),
                    run.branch.clone(),
                ]
            }));
            table(&rows)
        }
    };
    print(&text);
    Ok(Exit::Success)
}

/// The run, then (once it has ended) its summary, drawn from its events as `buildit run` drew it.
async fn show(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run_id: &str,
    format: HistoryOutput,
) -> Result<Exit, tonic::Status> {
    let run = client
        .get_run(authorized(
            proto::GetRunRequest {
                run: run_id.to_owned(),
            },
            token,
        ))
        .await?
        .into_inner();
    let mut text = describe(&run, format);
    let over = !matches!(run.state.as_str(), "queued" | "running");
    if over && format == HistoryOutput::Text {
        let mut view = RunView::new();
        events(client, token, run_id, 0, |event| view.apply(event)).await?;
        text.push_str(&summary(&view));
        // As a local `runs show` lists them: what each instance handed on.
        let mut written = view
            .instances
            .iter()
            .filter(|instance| !instance.outputs.is_empty())
            .peekable();
        if written.peek().is_some() {
            text.push_str("\noutputs\n");
        }
        for instance in written {
            text.push_str(&format!(
                "  {}: {}\n",
                instance.name,
                crate::reporter::outputs_line(&instance.outputs)
            ));
        }
    }
    print(&text);
    Ok(Exit::Success)
}

/// Every event after `after_seq` (to the run's end: a running run is followed), handed to `each`.
async fn events(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run_id: &str,
    after_seq: u64,
    mut each: impl FnMut(&RunEvent),
) -> Result<(), tonic::Status> {
    let mut stream = client
        .watch_run(authorized(
            proto::WatchRunRequest {
                run: run_id.to_owned(),
                after_seq,
            },
            token,
        ))
        .await?
        .into_inner();
    while let Some(message) = stream.message().await? {
        if let Some(Item::Events(batch)) = message.item {
            for event in batch
                .events
                .iter()
                .filter_map(|event| event_from_wire(run_id, event))
            {
                each(&event);
            }
        }
    }
    Ok(())
}

/// The run's log lines, prefixed with their stage unless one stage was asked for (as `buildit runs logs`).
async fn logs(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run_id: &str,
    stage: Option<String>,
    attempt: Option<u32>,
    follow: bool,
) -> Result<Exit, tonic::Status> {
    let prefixed = stage.is_none();
    let mut stream = client
        .stream_logs(authorized(
            proto::StreamLogsRequest {
                run: run_id.to_owned(),
                stage: stage.unwrap_or_default(),
                attempt: attempt.unwrap_or(0),
                follow,
                after_seq: 0,
            },
            token,
        ))
        .await?
        .into_inner();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(message) = stream.message().await? {
        for line in &message.lines {
            let text = String::from_utf8_lossy(&line.text);
            let written = match (prefixed, line.attempt > 1) {
                (true, true) => writeln!(out, "{}#{} | {text}", line.stage, line.attempt),
                (true, false) => writeln!(out, "{} | {text}", line.stage),
                (false, _) => writeln!(out, "{text}"),
            };
            // A closed pipe (`| head`) is the reader's choice.
            if written.is_err() {
                return Ok(Exit::Success);
            }
        }
        let _ = out.flush();
    }
    Ok(Exit::Success)
}
