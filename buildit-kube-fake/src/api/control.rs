//! The fake's own routes under `/fake/` (not Kubernetes): recorded requests, faults, forced watch expiry.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::status::ApiError;
use crate::faults::Fault;
use crate::requests::RecordedRequest;
use crate::shared::Shared;

/// `GET /fake/requests`: every request received so far.
pub(crate) async fn requests(State(shared): State<Arc<Shared>>) -> Json<Vec<RecordedRequest>> {
    Json(shared.requests.all())
}

/// `GET /fake/faults`: the armed faults.
pub(crate) async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Vec<Fault>> {
    Json(shared.faults.list())
}

/// `POST /fake/faults` with one fault.
pub(crate) async fn inject_fault(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let fault: Fault = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid fault: {error}")))?;
    shared
        .faults
        .inject(fault)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(StatusCode::CREATED)
}

/// `DELETE /fake/faults`: disarms every fault.
pub(crate) async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}

/// `POST /fake/watch/expire`: every open watch ends with `410`, and older versions can no longer be watched.
pub(crate) async fn expire_watches(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.store.expire_watches();
    StatusCode::NO_CONTENT
}
