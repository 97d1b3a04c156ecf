//! `pods/{name}/log`: a container's output as `text/plain`, from the fake's own copy, with `follow`,
//! `timestamps`, `tailLines`, `sinceTime`/`sinceSeconds`; the `cut-logs` fault ends a follow early, without
//! the final chunk.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::sync::watch;

use super::containers::pick_container;
use super::status::ApiError;
use crate::faults::FaultKind;
use crate::logbook::{ContainerLog, LogProgress};
use crate::shared::Shared;
use crate::store::meta::{format_nanos, labels, meta_str};
use crate::store::{ObjectKey, Resource};

/// Why a container has no log yet, as the real kubelet says it.
fn waiting_reason(pod: &Value, container: &str) -> String {
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .into_iter()
        .filter_map(|list| pod.pointer(&format!("/status/{list}"))?.as_array())
        .flatten();
    for status in statuses {
        if status.get("name").and_then(Value::as_str) != Some(container) {
            continue;
        }
        match status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
        {
            Some("ErrImagePull" | "ImagePullBackOff") => {
                return "trying and failing to pull image".to_owned();
            }
            Some(reason) => return reason.to_owned(),
            None => {}
        }
    }
    "ContainerCreating".to_owned()
}

struct LogStream {
    log: Arc<ContainerLog>,
    progress: watch::Receiver<LogProgress>,
    next: usize,
    follow: bool,
    timestamps: bool,
    since: Option<Timestamp>,
    /// For the `cut-logs` fault: lines left before the connection is cut.
    cut_after: Option<u64>,
    shared: Arc<Shared>,
}

impl LogStream {
    /// The next chunk, or `None` at the end; an error cuts the connection.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.cut_after == Some(0) {
                self.cut_after = None;
                // Let the lines before the cut leave first: an error aborts the connection at once.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                self.follow = false;
                self.next = usize::MAX;
                return Some(Err(std::io::Error::other("the log stream was cut (fault)")));
            }
            let progress = *self.progress.borrow_and_update();
            let mut lines = self.log.lines_from(self.next);
            if let Some(left) = self.cut_after {
                lines.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            }
            if !lines.is_empty() {
                self.next += lines.len();
                if let Some(left) = self.cut_after.as_mut() {
                    *left -= lines.len() as u64;
                }
                let mut chunk = Vec::new();
                for line in lines
                    .iter()
                    .filter(|line| self.since.is_none_or(|since| line.time >= since))
                {
                    if self.timestamps {
                        chunk.extend_from_slice(format_nanos(line.time).as_bytes());
                        chunk.push(b' ');
                    }
                    chunk.extend_from_slice(&line.text);
                }
                if chunk.is_empty() {
                    continue;
                }
                return Some(Ok(Bytes::from(chunk)));
            }
            if !self.follow || progress.complete {
                return None;
            }
            tokio::select! {
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = self.shared.shutdown.cancelled() => return None,
            }
        }
    }
}

/// `GET /api/v1/namespaces/{namespace}/pods/{name}/log`.
pub(crate) async fn pod_log(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = ObjectKey::new(Resource::Pods, &namespace, &name);
    let pod = shared
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(Resource::Pods, &name))?;
    let container = pick_container(&pod, &name, query.get("container"))?;
    let flag = |field: &str| {
        query
            .get(field)
            .is_some_and(|value| value == "true" || value == "1")
    };
    if flag("previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let uid = meta_str(&pod, "uid").unwrap_or_default().to_owned();
    let Some(log) = shared.logs.get(&uid, &container) else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {}",
            waiting_reason(&pod, &container)
        )));
    };
    let follow = flag("follow");
    let mut since = match query.get("sinceTime") {
        Some(text) => Some(text.parse::<Timestamp>().map_err(|error| {
            ApiError::bad_request(format!("invalid sinceTime {text}: {error}"))
        })?),
        None => None,
    };
    if let Some(seconds) = query
        .get("sinceSeconds")
        .and_then(|text| text.parse::<i64>().ok())
    {
        since = crate::store::meta::now()
            .checked_sub(SignedDuration::from_secs(seconds))
            .ok();
    }
    let mut next = 0;
    if let Some(tail) = query
        .get("tailLines")
        .and_then(|text| text.parse::<usize>().ok())
    {
        next = log.lines_from(0).len().saturating_sub(tail);
    }
    let cut_after = if follow {
        shared
            .faults
            .take(FaultKind::CutLogs, &uid, &labels(&pod))
            .map(|fault| fault.after_lines)
    } else {
        None
    };
    let stream = LogStream {
        progress: log.progress(),
        log,
        next,
        follow,
        timestamps: flag("timestamps"),
        since,
        cut_after,
        shared: Arc::clone(&shared),
    };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((chunk, stream))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}
