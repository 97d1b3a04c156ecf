//! Watches: `?watch=1` on a collection streams one JSON event a line (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`), from a resource version, through selectors; a forgotten version or a forced expiry ends with an
//! `ERROR` event carrying `410 Expired`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::params::{ListOptions, Target};
use super::status::ApiError;
use crate::shared::Shared;
use crate::store::{Change, ChangeType, Subscription};

/// How long a watch with bookmarks stays quiet before it sends one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// How long a watch lasts when the client gives no `timeoutSeconds` (the real server picks 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn expired_line(message: &str) -> Bytes {
    event_line("ERROR", &ApiError::expired(message).to_status())
}

struct WatchState {
    shared: Arc<Shared>,
    target: Target,
    options: ListOptions,
    pending: VecDeque<Bytes>,
    subscription: Option<Subscription>,
    deadline: Instant,
    finished: bool,
}

impl WatchState {
    /// The event this change is for this watch, if any: an object that starts or stops matching the
    /// selectors is `ADDED` or `DELETED` for it.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        if change.key.resource != self.target.resource
            || self
                .target
                .namespace
                .as_deref()
                .is_some_and(|namespace| namespace != change.key.namespace)
        {
            return None;
        }
        let now = self.options.selects(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|previous| self.options.selects(previous));
        let event_type = match (change.change_type, before, now) {
            (ChangeType::Added, _, true) => ChangeType::Added,
            (ChangeType::Deleted, _, true) => ChangeType::Deleted,
            (ChangeType::Modified, true, true) => ChangeType::Modified,
            (ChangeType::Modified, false, true) => ChangeType::Added,
            (ChangeType::Modified, true, false) => ChangeType::Deleted,
            _ => return None,
        };
        Some(event_line(event_type.as_str(), &change.object))
    }

    fn bookmark(&self) -> Bytes {
        let resource = self.target.resource;
        event_line(
            "BOOKMARK",
            &json!({
                "kind": resource.kind(),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": self.shared.store.revision().to_string()},
            }),
        )
    }

    /// The next line to send, or `None` when the watch is over.
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.finished {
                return None;
            }
            let subscription = self.subscription.as_mut()?;
            let quiet_until = Instant::now() + BOOKMARK_EVERY;
            let woken = tokio::select! {
                received = subscription.live.recv() => Woken::Change(received),
                _ = subscription.expiry.changed() => Woken::Expired,
                () = tokio::time::sleep_until(quiet_until), if self.options.bookmarks => Woken::Quiet,
                () = tokio::time::sleep_until(self.deadline) => Woken::Over,
                () = self.shared.shutdown.cancelled() => Woken::Over,
            };
            match woken {
                Woken::Change(Ok(change)) => {
                    if let Some(line) = self.event_for(&change) {
                        return Some(line);
                    }
                }
                Woken::Change(Err(RecvError::Lagged(_))) => {
                    self.finished = true;
                    return Some(expired_line(
                        "the watch fell too far behind: too old resource version",
                    ));
                }
                Woken::Expired => {
                    self.finished = true;
                    return Some(expired_line(
                        "too old resource version: the watch was expired",
                    ));
                }
                Woken::Quiet => return Some(self.bookmark()),
                Woken::Change(Err(RecvError::Closed)) | Woken::Over => return None,
            }
        }
    }
}

/// What a waiting watch was woken by.
enum Woken {
    Change(Result<Arc<Change>, RecvError>),
    Expired,
    Quiet,
    Over,
}

/// Answers `?watch=1` on a collection.
pub(crate) fn watch(
    shared: Arc<Shared>,
    target: Target,
    options: ListOptions,
) -> Result<Response, ApiError> {
    let revision = match options.resource_version.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {text}")))?,
        ),
    };
    let timeout = options
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let subscription = shared.store.watch_from(target.resource, revision);
    let mut state = WatchState {
        shared: Arc::clone(&shared),
        target,
        options,
        pending: VecDeque::new(),
        subscription: None,
        deadline: Instant::now() + timeout,
        finished: false,
    };
    match subscription {
        Some(mut subscription) => {
            // Only expiries after this watch began end it.
            subscription.expiry.mark_unchanged();
            let initial: Vec<Bytes> = subscription
                .initial
                .iter()
                .filter_map(|change| state.event_for(change))
                .collect();
            state.pending.extend(initial);
            state.subscription = Some(subscription);
        }
        None => {
            let current = shared.store.revision();
            state.pending.push_back(expired_line(&format!(
                "too old resource version: {} ({current})",
                revision.unwrap_or_default()
            )));
            state.finished = true;
        }
    }
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let line = state.next_line().await?;
        Some((Ok::<Bytes, std::io::Error>(line), state))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}
