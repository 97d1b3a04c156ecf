//! The HTTP API: Kubernetes routes (discovery, objects, watches, logs, exec) and the fake's own control routes.

mod containers;
mod control;
mod delete;
mod discovery;
mod exec;
mod logs;
mod objects;
mod params;
mod patch;
mod record;
pub(crate) mod status;
mod table;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::http::Uri;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::shared::Shared;
use status::ApiError;

async fn no_route(uri: Uri) -> impl IntoResponse {
    ApiError::no_route(uri.path())
}

/// Every route of a fake cluster.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let collection = get(objects::list_or_watch)
        .post(objects::create)
        .delete(delete::delete_collection);
    let object = get(objects::get_one)
        .delete(delete::delete_one)
        .put(objects::not_allowed)
        .patch(patch::patch_one);
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/api/v1/namespaces", get(objects::list_namespaces))
        .route(
            "/api/v1/namespaces/{namespace}",
            get(objects::get_namespace),
        )
        .route("/api/v1/{plural}", get(objects::list_or_watch))
        .route(
            "/apis/{group}/{version}/{plural}",
            get(objects::list_or_watch),
        )
        .route(
            "/api/v1/namespaces/{namespace}/{plural}",
            collection.clone(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
            collection,
        )
        .route(
            "/api/v1/namespaces/{namespace}/{plural}/{name}",
            object.clone(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            object,
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(logs::pod_log),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(exec::pod_exec).post(exec::pod_exec),
        )
        .route("/fake/requests", get(control::requests))
        .route(
            "/fake/faults",
            get(control::list_faults)
                .post(control::inject_fault)
                .delete(control::clear_faults),
        )
        .route("/fake/watch/expire", post(control::expire_watches))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            record::record_request,
        ))
        .with_state(shared)
}
