//! Every request the fake received (method, path, query, body as text), so tests can check what a client
//! sent, e.g. that no secret value appears where it should not.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?` (empty when none).
    pub query: String,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
}

/// The requests received so far, in order.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    requests: Mutex<Vec<RecordedRequest>>,
}

impl RequestLog {
    pub(crate) fn push(&self, request: RecordedRequest) {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request);
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
