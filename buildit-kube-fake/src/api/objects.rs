//! Creating, reading and listing objects (and handing watches to `watch`), as the API server answers them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::params::{ListOptions, Target};
use super::status::ApiError;
use super::{table, watch};
use crate::shared::Shared;
use crate::store::Resource;

type PathParams = Path<HashMap<String, String>>;
type QueryParams = Query<HashMap<String, String>>;

/// Whether the client asked for a `meta.k8s.io` Table (kubectl's server-side printing).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

/// Checks that a body is a well-formed object of `resource` (by its `k8s-openapi` type).
fn check_shape(resource: Resource, body: &Value) -> Result<(), String> {
    use k8s_openapi::api::{batch::v1::Job, core::v1};
    let checked = match resource {
        Resource::Jobs => serde_json::from_value::<Job>(body.clone()).map(drop),
        Resource::Pods => serde_json::from_value::<v1::Pod>(body.clone()).map(drop),
        Resource::Secrets => serde_json::from_value::<v1::Secret>(body.clone()).map(drop),
        Resource::PersistentVolumeClaims => {
            serde_json::from_value::<v1::PersistentVolumeClaim>(body.clone()).map(drop)
        }
        Resource::Events => serde_json::from_value::<v1::Event>(body.clone()).map(drop),
    };
    checked.map_err(|error| error.to_string())
}

/// `POST` to a collection: creates the object.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Path(path): PathParams,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::from_path(&path, uri.path())?;
    let namespace = target.namespace.unwrap_or_default();
    let mut object: Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {error}"
        ))
    })?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != target.resource.kind() {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) does not match the resource ({})",
            target.resource.plural()
        )));
    }
    check_shape(target.resource, &object).map_err(|error| {
        ApiError::bad_request(format!("the object is not a valid {kind}: {error}"))
    })?;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        // Set by the server only.
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            metadata.remove(field);
        }
    }
    let created = shared
        .store
        .create(target.resource, &namespace, object)
        .map_err(|error| ApiError::from_store(target.resource, &name, error))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET` of one object.
pub(crate) async fn get_one(
    State(shared): State<Arc<Shared>>,
    Path(path): PathParams,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = Target::from_path(&path, uri.path())?;
    let key = target.key().ok_or_else(|| ApiError::no_route(uri.path()))?;
    let object = shared
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(target.resource, &key.name))?;
    if wants_table(&headers) {
        let revision = shared.store.revision();
        return Ok(Json(table::table(target.resource, &[object], revision)).into_response());
    }
    Ok(Json(object).into_response())
}

/// `GET` of a collection: a list, or a watch with `?watch=1`.
pub(crate) async fn list_or_watch(
    State(shared): State<Arc<Shared>>,
    Path(path): PathParams,
    Query(query): QueryParams,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = Target::from_path(&path, uri.path())?;
    let options = ListOptions::from_query(&query)?;
    if options.watch {
        return watch::watch(shared, target, options);
    }
    let (objects, revision) = shared
        .store
        .list(target.resource, target.namespace.as_deref());
    let items: Vec<Value> = objects
        .into_iter()
        .filter(|object| options.selects(object))
        .collect();
    if wants_table(&headers) {
        return Ok(Json(table::table(target.resource, &items, revision)).into_response());
    }
    Ok(Json(json!({
        "kind": format!("{}List", target.resource.kind()),
        "apiVersion": target.resource.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    }))
    .into_response())
}

/// `PUT`: the fake does not replace objects on behalf of clients.
pub(crate) async fn not_allowed(method: Method) -> ApiError {
    ApiError::method_not_allowed(method.as_str())
}

fn namespace_object(name: &str) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn known_namespaces(shared: &Shared) -> Vec<String> {
    let mut names = shared.store.namespaces();
    names.extend(["default".to_owned(), "kube-system".to_owned()]);
    names.sort();
    names.dedup();
    names
}

/// `GET /api/v1/namespaces`: `default`, `kube-system` and every namespace that holds an object (namespaces
/// are not stored: any name can be used).
pub(crate) async fn list_namespaces(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let items: Vec<Value> = known_namespaces(&shared)
        .iter()
        .map(|name| namespace_object(name))
        .collect();
    Json(json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": shared.store.revision().to_string()},
        "items": items,
    }))
}

/// `GET /api/v1/namespaces/{name}`: every namespace exists.
pub(crate) async fn get_namespace(Path(name): Path<String>) -> Json<Value> {
    Json(namespace_object(&name))
}
