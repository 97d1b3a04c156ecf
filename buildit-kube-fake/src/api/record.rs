//! Records every Kubernetes request (not the fake's own `/fake/` ones) before it is handled.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::status::ApiError;
use crate::requests::RecordedRequest;
use crate::shared::Shared;

/// The largest body the fake accepts.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

pub(crate) async fn record_request(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/fake/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return ApiError::bad_request(format!("cannot read the request body: {error}"))
                .into_response();
        }
    };
    shared.requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
