//! Conversions between the core's types and the wire's: runs, events, and diagnostics as status details.

use buildit_core::DiagnosticRecord;
use buildit_core::events::{LogStreamKind, RunEvent, RunEventKind};
use buildit_core::store::RunRecord;
use prost::Message as _;

use crate::proto;

/// A recorded run on the wire.
pub(crate) fn run(record: &RunRecord) -> proto::Run {
    proto::Run {
        id: record.id.clone(),
        pipeline: record.pipeline.clone(),
        number: record.number,
        state: record.state.as_str().to_owned(),
        reason: record.reason.clone().unwrap_or_default(),
        stage_count: record
            .stage_count
            .map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX)),
        created_at_ms: record.created_at_ms,
        finished_at_ms: record.finished_at_ms.unwrap_or(0),
        duration_ms: record.duration_ms.unwrap_or(0),
        branch: record.branch.clone().unwrap_or_default(),
        sha: record.sha.clone().unwrap_or_default(),
        event: record.event.clone().unwrap_or_default(),
        // Restarts are the daemon's: its run requests know them.
        restart_of: String::new(),
        restarted_as: String::new(),
    }
}

/// A run that has not started (queued, cancelled before it started, failed to start) on the wire.
pub(crate) fn request(request: &buildit_core::store::RunRequest) -> proto::Run {
    use buildit_core::store::RunRequestState;
    // Started without a record yet: a worker is setting it up (or a restart waits for its worker).
    let waiting = matches!(
        request.state,
        RunRequestState::Queued | RunRequestState::Started
    );
    proto::Run {
        id: request.run_id.clone(),
        pipeline: request.pipeline.clone(),
        state: request.state.as_str().to_owned(),
        reason: request.reason.clone().unwrap_or_default(),
        created_at_ms: request.created_at_ms,
        finished_at_ms: if waiting { 0 } else { request.updated_at_ms },
        branch: request.branch.clone().unwrap_or_default(),
        restart_of: request.restart_of.clone().unwrap_or_default(),
        restarted_as: request.restarted_as.clone().unwrap_or_default(),
        ..proto::Run::default()
    }
}

/// A registered pipeline on the wire, with its stages' names read from its text (none if it no longer parses:
/// the text was valid when registered, a later BuildIt may read it differently).
pub(crate) fn pipeline(record: &buildit_core::store::PipelineRecord) -> proto::Pipeline {
    let stages: Vec<String> = buildit_core::parse_pipeline(&record.source, &record.file_name)
        .map(|pipeline| {
            pipeline
                .stages
                .into_iter()
                .map(|stage| stage.name.value)
                .collect()
        })
        .unwrap_or_default();
    proto::Pipeline {
        name: record.name.clone(),
        file_name: record.file_name.clone(),
        source: record.source.clone(),
        sha256: record.sha256.clone(),
        registered_at_ms: record.registered_at_ms,
        updated_at_ms: record.updated_at_ms,
        stage_count: u32::try_from(stages.len()).unwrap_or(u32::MAX),
        stages,
        registered_by: record.registered_by.clone().unwrap_or_default(),
    }
}

/// An event on the wire: log lines as bytes, every other event as the JSON `buildit run --format json` prints.
pub(crate) fn event(event: &RunEvent) -> proto::Event {
    let kind = match &event.kind {
        RunEventKind::LogLine {
            stage,
            attempt,
            stream,
            text,
        } => proto::event::Kind::LogLine(proto::LogLine {
            stage: stage.clone(),
            attempt: *attempt,
            stream: match stream {
                LogStreamKind::Stdout => "stdout",
                LogStreamKind::Stderr => "stderr",
            }
            .to_owned(),
            text: text.clone().into_bytes(),
        }),
        other => {
            proto::event::Kind::Json(serde_json::to_string(other).unwrap_or_else(|error| {
                format!("{{\"type\":\"unencodable\",\"error\":\"{error}\"}}")
            }))
        }
    };
    proto::Event {
        seq: event.seq,
        at_ms: event.at_ms,
        kind: Some(kind),
    }
}

/// The event a wire event stands for (what a client does with what `WatchRun` sends); `None` for one it cannot
/// read (a newer server's event).
pub fn event_from_wire(run_id: &str, event: &proto::Event) -> Option<RunEvent> {
    let kind = match event.kind.as_ref()? {
        proto::event::Kind::LogLine(line) => RunEventKind::LogLine {
            stage: line.stage.clone(),
            attempt: line.attempt,
            stream: if line.stream == "stderr" {
                LogStreamKind::Stderr
            } else {
                LogStreamKind::Stdout
            },
            text: String::from_utf8_lossy(&line.text).into_owned(),
        },
        proto::event::Kind::Json(json) => serde_json::from_str(json).ok()?,
    };
    Some(RunEvent {
        seq: event.seq,
        run_id: run_id.into(),
        at_ms: event.at_ms,
        kind,
    })
}

/// INVALID_ARGUMENT with every diagnostic in the details: a `google.rpc.Status` whose one detail is a
/// `buildit.v1.Diagnostics`, as `buildit validate --format json` would list them.
pub(crate) fn invalid_pipeline(message: &str, records: &[DiagnosticRecord]) -> tonic::Status {
    let diagnostics = proto::Diagnostics {
        diagnostics: records
            .iter()
            .map(|record| proto::Diagnostic {
                file: record.file.clone(),
                code: record.code.to_owned(),
                severity: match record.severity {
                    buildit_core::DiagnosticSeverity::Error => "error",
                    buildit_core::DiagnosticSeverity::Warning => "warning",
                }
                .to_owned(),
                message: record.message.clone(),
                line: u32::try_from(record.line).unwrap_or(u32::MAX),
                column: u32::try_from(record.column).unwrap_or(u32::MAX),
                help: record.help.clone().unwrap_or_default(),
            })
            .collect(),
    };
    let status = proto::RpcStatus {
        code: tonic::Code::InvalidArgument as i32,
        message: message.to_owned(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/buildit.v1.Diagnostics".to_owned(),
            value: diagnostics.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::InvalidArgument,
        message,
        status.encode_to_vec().into(),
    )
}

/// The diagnostics an INVALID_ARGUMENT from `TriggerRun` carries; empty for any other status.
pub fn diagnostics_of(status: &tonic::Status) -> Vec<proto::Diagnostic> {
    proto::RpcStatus::decode(status.details())
        .ok()
        .into_iter()
        .flat_map(|rpc| rpc.details)
        .filter(|detail| detail.type_url.ends_with("/buildit.v1.Diagnostics"))
        .filter_map(|detail| proto::Diagnostics::decode(detail.value.as_slice()).ok())
        .flat_map(|diagnostics| diagnostics.diagnostics)
        .collect()
}
