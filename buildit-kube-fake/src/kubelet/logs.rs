//! Copies a container's output from Docker (stdout and stderr interleaved as the engine logged them, each
//! line with its timestamp) into the fake's log book.

use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bytes::Bytes;
use futures_util::StreamExt as _;
use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;

use crate::logbook::LogLine;
use crate::shared::Shared;

/// Splits Docker's `2026-12-07T13:05:40.123456789Z text` into the time and the text.
fn split_timestamp(message: &Bytes) -> LogLine {
    if let Some(space) = message.iter().position(|byte| *byte == b' ')
        && let Ok(text) = std::str::from_utf8(&message[..space])
        && let Ok(time) = text.parse::<Timestamp>()
    {
        return LogLine {
            time,
            text: message.slice(space + 1..),
        };
    }
    LogLine {
        time: crate::store::meta::now(),
        text: message.clone(),
    }
}

/// Starts copying the output of the container `id` (named `container` in the pod); the task ends when the
/// container stops and its log is complete.
pub(crate) fn capture(
    shared: &Arc<Shared>,
    pod_uid: &str,
    container: &str,
    id: &str,
) -> JoinHandle<()> {
    let log = shared.logs.start(pod_uid, container);
    let docker = shared.docker.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: "all".to_owned(),
            ..LogsOptions::default()
        };
        let mut output = docker.logs(&id, Some(options));
        while let Some(Ok(chunk)) = output.next().await {
            match chunk {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => {
                    log.append(split_timestamp(&message));
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        log.complete();
    })
}
