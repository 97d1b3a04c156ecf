//! Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/batch/v1`, in the legacy (unaggregated) form,
//! which kubectl and kube-rs fall back to when the answer is plain `application/json`.

use axum::Json;
use axum::extract::Path;
use axum::http::Uri;
use serde_json::{Value, json};

use super::status::ApiError;
use crate::store::Resource;

const VERBS: [&str; 6] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "watch",
];

fn resource_entry(resource: Resource) -> Value {
    let mut entry = json!({
        "name": resource.plural(),
        "singularName": resource.singular(),
        "namespaced": true,
        "kind": resource.kind(),
        "verbs": VERBS,
    });
    if let Some(object) = entry.as_object_mut() {
        if !resource.short_names().is_empty() {
            object.insert("shortNames".to_owned(), json!(resource.short_names()));
        }
        if !resource.categories().is_empty() {
            object.insert("categories".to_owned(), json!(resource.categories()));
        }
    }
    entry
}

fn resource_list(group: &str) -> Value {
    let group_version = match group {
        "" => "v1".to_owned(),
        group => format!("{group}/v1"),
    };
    let mut resources: Vec<Value> = Resource::ALL
        .into_iter()
        .filter(|resource| resource.group() == group)
        .map(resource_entry)
        .collect();
    if group.is_empty() {
        resources.push(json!({
            "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"],
        }));
        resources.push(json!({
            "name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions",
            "verbs": ["create", "get"],
        }));
        resources.push(json!({
            "name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
            "verbs": ["get", "list"], "shortNames": ["ns"],
        }));
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// `GET /version`.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-buildit-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

/// `GET /api`.
pub(crate) async fn core_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }))
}

/// `GET /api/v1`.
pub(crate) async fn core_resources() -> Json<Value> {
    Json(resource_list(""))
}

/// `GET /apis`: the `batch` group.
pub(crate) async fn groups() -> Json<Value> {
    let version = json!({"groupVersion": "batch/v1", "version": "v1"});
    Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{"name": "batch", "versions": [version], "preferredVersion": version}],
    }))
}

/// `GET /apis/{group}/{version}`.
pub(crate) async fn group_resources(
    Path((group, version)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    if group != "batch" || version != "v1" {
        return Err(ApiError::no_route(uri.path()));
    }
    Ok(Json(resource_list("batch")))
}
