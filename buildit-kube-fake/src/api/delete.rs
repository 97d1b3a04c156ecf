//! `DELETE` of one object and of a collection (`deletecollection`), with `DeleteOptions` from the body or the
//! query.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::params::{ListOptions, Target};
use super::status::{ApiError, deleted_status};
use crate::controller::deletion::{DeleteRequest, Deleted, Propagation, delete};
use crate::shared::Shared;
use crate::store::meta::meta_str;
use crate::store::{ObjectKey, Resource};

/// Reads `DeleteOptions` (`gracePeriodSeconds`, `propagationPolicy`, the old `orphanDependents`) from the body,
/// then the query.
fn delete_request(body: &[u8], query: &HashMap<String, String>) -> Result<DeleteRequest, ApiError> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("invalid DeleteOptions: {error}")))?
    };
    let field = |name: &str| -> Option<String> {
        match options.get(name) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Null) | None => query.get(name).cloned(),
            Some(other) => Some(other.to_string()),
        }
    };
    let grace_seconds =
        match field("gracePeriodSeconds") {
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds: {text}"))
            })?),
            None => None,
        };
    let mut propagation = match field("propagationPolicy") {
        Some(text) => Some(Propagation::parse(&text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{text}\": supported values: \"Foreground\", \
                 \"Background\", \"Orphan\""
            ))
        })?),
        None => None,
    };
    match field("orphanDependents").as_deref() {
        Some("true") if propagation.is_none() => propagation = Some(Propagation::Orphan),
        Some("false") if propagation.is_none() => propagation = Some(Propagation::Background),
        _ => {}
    }
    Ok(DeleteRequest {
        grace_seconds,
        propagation,
    })
}

/// What a deletion answers: pods answer with the object; others with a `Success` status when they went at
/// once, or with the object while finalizers hold it.
fn answer(resource: Resource, deleted: Deleted) -> Value {
    match deleted {
        Deleted::Gone(object) if resource != Resource::Pods => deleted_status(resource, &object),
        Deleted::Gone(object) | Deleted::Pending(object) => object,
    }
}

/// `DELETE` of one object.
pub(crate) async fn delete_one(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::from_path(&path, uri.path())?;
    let key = target.key().ok_or_else(|| ApiError::no_route(uri.path()))?;
    let request = delete_request(&body, &query)?;
    let deleted = delete(&shared, &key, request)
        .ok_or_else(|| ApiError::not_found(target.resource, &key.name))?;
    Ok(Json(answer(target.resource, deleted)).into_response())
}

/// `DELETE` of a collection: every object the selectors match; answers with the list of them.
pub(crate) async fn delete_collection(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::from_path(&path, uri.path())?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let selection = ListOptions::from_query(&query)?;
    let request = delete_request(&body, &query)?;
    let (objects, _) = shared.store.list(target.resource, Some(&namespace));
    let mut items = Vec::new();
    for object in objects.iter().filter(|object| selection.selects(object)) {
        let Some(name) = meta_str(object, "name") else {
            continue;
        };
        let key = ObjectKey::new(target.resource, &namespace, name);
        if let Some(Deleted::Gone(item) | Deleted::Pending(item)) = delete(&shared, &key, request) {
            items.push(item);
        }
    }
    Ok(Json(json!({
        "kind": format!("{}List", target.resource.kind()),
        "apiVersion": target.resource.api_version(),
        "metadata": {"resourceVersion": shared.store.revision().to_string()},
        "items": items,
    }))
    .into_response())
}
