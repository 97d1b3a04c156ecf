//! `buildit pipelines register|list|show`: a daemon's registered pipelines, which `pipelines trigger
//! --registered NAME` runs.

use buildit_grpc::proto;

use super::remote::{authorized, connect, refused};
use super::runs::{print, table, timestamp};
use crate::cli::{HistoryOutput, PipelinesListArgs, PipelinesShowArgs, RegisterArgs, RemoteArgs};
use crate::exit::Exit;
use crate::report::error_line;

/// Pipelines asked for per page.
const PAGE: u32 = 500;

/// Validates the file on the daemon and registers it under the name it declares.
pub(crate) fn register(args: &RegisterArgs) -> Exit {
    let pipeline = match buildit_core::config::read_config_file(&args.file) {
        Ok(text) => text,
        Err(error) => {
            error_line(&format!("pipeline file {error}"), None);
            return Exit::InvalidConfig;
        }
    };
    let request = proto::RegisterPipelineRequest {
        name: args.name.clone().unwrap_or_default(),
        pipeline,
        file_name: args.file.display().to_string(),
    };
    let format = args.format;
    remote(&args.remote, |mut client, token| async move {
        let registered = client
            .register_pipeline(authorized(request, &token))
            .await?
            .into_inner();
        let Some(pipeline) = registered.pipeline else {
            error_line("the daemon answered without the pipeline", None);
            return Ok(Exit::Infrastructure);
        };
        let text = match format {
            HistoryOutput::Json => {
                let mut json = pipeline_json(&pipeline, false);
                json["changed"] = serde_json::Value::Bool(registered.changed);
                format!("{json}\n")
            }
            HistoryOutput::Text if registered.changed => format!(
                "registered pipeline `{}` from {}: {}, sha256 {}\n",
                pipeline.name,
                pipeline.file_name,
                stages(&pipeline),
                short(&pipeline.sha256),
            ),
            HistoryOutput::Text => format!(
                "pipeline `{}` unchanged: the same text is registered ({}, sha256 {})\n",
                pipeline.name,
                stages(&pipeline),
                short(&pipeline.sha256),
            ),
        };
        print(&text);
        Ok(Exit::Success)
    })
}

/// Every registered pipeline of the caller's tenant, by name.
pub(crate) fn list(args: &PipelinesListArgs) -> Exit {
    let format = args.format;
    remote(&args.remote, |mut client, token| async move {
        let mut pipelines = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_pipelines(authorized(
                    proto::ListPipelinesRequest {
                        page_size: PAGE,
                        page_token,
                    },
                    &token,
                ))
                .await?
                .into_inner();
            pipelines.extend(page.pipelines);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let text = match format {
            HistoryOutput::Json => format!(
                "{}\n",
                serde_json::Value::Array(
                    pipelines
                        .iter()
                        .map(|pipeline| pipeline_json(pipeline, false))
                        .collect()
                )
            ),
            HistoryOutput::Text if pipelines.is_empty() => "no registered pipelines\n".to_owned(),
            HistoryOutput::Text => {
                let mut rows = vec![[
                    "NAME".to_owned(),
                    "STAGES".to_owned(),
                    "UPDATED".to_owned(),
                    "BY".to_owned(),
                    "SHA256".to_owned(),
                    "FILE".to_owned(),
                ]];
                rows.extend(pipelines.iter().map(|pipeline| {
                    [
                        pipeline.name.clone(),
                        pipeline.stage_count.to_string(),
                        timestamp(pipeline.updated_at_ms),
                        pipeline.registered_by.clone(),
                        short(&pipeline.sha256).to_owned(),
                        pipeline.file_name.clone(),
                    ]
                }));
                table(&rows)
            }
        };
        print(&text);
        Ok(Exit::Success)
    })
}

/// One registered pipeline: what the daemon knows of it, then its text.
pub(crate) fn show(args: &PipelinesShowArgs) -> Exit {
    let format = args.format;
    let name = args.name.clone();
    remote(&args.remote, |mut client, token| async move {
        let pipeline = client
            .get_pipeline(authorized(proto::GetPipelineRequest { name }, &token))
            .await?
            .into_inner();
        let text = match format {
            HistoryOutput::Json => format!("{}\n", pipeline_json(&pipeline, true)),
            HistoryOutput::Text => {
                let mut text = format!(
                    "pipeline {}\n  file:        {}\n  sha256:      {}\n  registered:  {}\n  updated:     {}{}\n  \
                     stages:      {}\n\n",
                    pipeline.name,
                    pipeline.file_name,
                    pipeline.sha256,
                    timestamp(pipeline.registered_at_ms),
                    timestamp(pipeline.updated_at_ms),
                    if pipeline.registered_by.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", pipeline.registered_by)
                    },
                    pipeline.stages.join(", "),
                );
                text.push_str(&pipeline.source);
                if !pipeline.source.ends_with('\n') {
                    text.push('\n');
                }
                text
            }
        };
        print(&text);
        Ok(Exit::Success)
    })
}

/// Connects to the daemon `remote` names and runs `call` with a client and the token; a refused call is
/// reported with its exit code.
fn remote<F, Fut>(remote: &RemoteArgs, call: F) -> Exit
where
    F: FnOnce(
        buildit_grpc::proto::build_it_client::BuildItClient<tonic::transport::Channel>,
        String,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<Exit, tonic::Status>>,
{
    let (server, token) = match super::login::resolve(remote) {
        Ok(remote) => remote,
        Err(exit) => return exit,
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let client = match connect(&server).await {
            Ok(client) => client,
            Err(exit) => return exit,
        };
        call(client, token)
            .await
            .unwrap_or_else(|status| refused(&status))
    })
}

/// `2 stages (compile, test)`.
fn stages(pipeline: &proto::Pipeline) -> String {
    format!(
        "{} stage{} ({})",
        pipeline.stage_count,
        if pipeline.stage_count == 1 { "" } else { "s" },
        pipeline.stages.join(", ")
    )
}

/// The first 12 characters of a digest: enough to tell texts apart at a glance.
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn pipeline_json(pipeline: &proto::Pipeline, with_source: bool) -> serde_json::Value {
    let mut json = serde_json::json!({
        "name": pipeline.name,
        "file_name": pipeline.file_name,
        "sha256": pipeline.sha256,
        "registered_at_ms": pipeline.registered_at_ms,
        "updated_at_ms": pipeline.updated_at_ms,
        "registered_by": Some(&pipeline.registered_by).filter(|by| !by.is_empty()),
        "stage_count": pipeline.stage_count,
        "stages": pipeline.stages,
    });
    if with_source {
        json["source"] = serde_json::Value::String(pipeline.source.clone());
    }
    json
}
