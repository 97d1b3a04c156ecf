//! `GET`/`POST /api/v1/namespaces/{namespace}/pods/{name}/exec`: checks the query, the pod and its
//! container as the API server does (answering a `Status` before any upgrade), creates the Docker exec,
//! then upgrades to a WebSocket in the subprotocol both sides speak.

use std::sync::Arc;

use axum::extract::{FromRequestParts as _, Path, Request, State, WebSocketUpgrade};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use super::options::ExecOptions;
use super::protocol::{Protocol, SUPPORTED};
use super::session::{ExecSession, serve};
use super::target::running_container_id;
use crate::api::containers::pick_container;
use crate::api::status::ApiError;
use crate::kubelet::{ExecError, create_exec};
use crate::shared::Shared;
use crate::store::{ObjectKey, Resource};

/// What a request that is not a WebSocket upgrade is told (kubectl before 1.30 asks for SPDY).
fn upgrade_required(request: &axum::http::request::Parts) -> ApiError {
    let asked = request
        .headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("nothing");
    ApiError::bad_request(format!(
        "Upgrade request required: pods/exec is served over WebSocket ({}), the request asked for {asked}",
        SUPPORTED.join(", ")
    ))
}

pub(crate) async fn pod_exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    match upgrade(shared, &namespace, &name, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn upgrade(
    shared: Arc<Shared>,
    namespace: &str,
    name: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    let options = ExecOptions::from_query(parts.uri.query().unwrap_or_default())?;
    let key = ObjectKey::new(Resource::Pods, namespace, name);
    let pod = shared
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
    let container = pick_container(&pod, name, options.container.as_ref())?;
    let container_id = running_container_id(&pod, name, &container)?;
    // The API server takes exec as GET or POST; axum's WebSocket extractor checks for GET only.
    if parts.method == Method::POST {
        parts.method = Method::GET;
    }
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| upgrade_required(&parts))?
        .protocols(SUPPORTED);
    let Some(protocol) = upgrade.selected_protocol().and_then(Protocol::from_header) else {
        let requested: Vec<String> = upgrade
            .requested_protocols()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        return Err(ApiError::bad_request(format!(
            "requested protocol(s) are not supported: [{}]; supports [{}]",
            requested.join(" "),
            SUPPORTED.join(" ")
        )));
    };
    let exec = create_exec(
        &shared.docker,
        &container_id,
        &options.command,
        options.streams(),
    )
    .await
    .map_err(|error| match error {
        ExecError::NotRunning { .. } => {
            ApiError::bad_request(format!("container not found (\"{container}\")"))
        }
        other => ApiError::internal(other.to_string()),
    })?;
    let session = ExecSession {
        shared,
        protocol,
        options,
        exec,
    };
    Ok(upgrade.on_upgrade(move |socket| serve(session, socket)))
}
