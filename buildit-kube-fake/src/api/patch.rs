//! `PATCH` of one object with a JSON merge patch (RFC 7386, `application/merge-patch+json`), as `kubectl patch
//! --type merge` and kube-rs's `Patch::Merge` send it; other patch types are refused as unsupported.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::params::Target;
use super::status::ApiError;
use crate::shared::Shared;

/// Fields a patch may not change: the object's identity and what the server keeps.
const KEPT: [&str; 4] = ["name", "namespace", "uid", "resourceVersion"];

pub(crate) async fn patch_one(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::from_path(&path, uri.path())?;
    let key = target.key().ok_or_else(|| ApiError::no_route(uri.path()))?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !kind.starts_with("application/merge-patch+json") {
        return Err(ApiError::unsupported_patch(kind));
    }
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("the patch is not JSON: {error}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch is a JSON object"));
    }
    let updated = shared
        .store
        .update(&key, |object| {
            let kept: Vec<(&str, Option<Value>)> = KEPT
                .iter()
                .map(|field| {
                    (
                        *field,
                        object.pointer(&format!("/metadata/{field}")).cloned(),
                    )
                })
                .collect();
            merge(object, &patch);
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                for (field, value) in kept {
                    match value {
                        Some(value) => metadata.insert(field.to_owned(), value),
                        None => metadata.remove(field),
                    };
                }
            }
        })
        .ok_or_else(|| ApiError::not_found(target.resource, &key.name))?;
    Ok(Json(updated).into_response())
}

/// Applies `patch` to `target` as RFC 7386 says: objects merge key by key, `null` removes, anything else
/// replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(fields) = target {
        for (key, change) in changes {
            if change.is_null() {
                fields.remove(key);
            } else {
                merge(fields.entry(key.clone()).or_insert(Value::Null), change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let mut object = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": "x"});
        merge(
            &mut object,
            &serde_json::json!({"a": {"b": null, "f": 3}, "d": [3], "g": {"h": true}}),
        );
        assert_eq!(
            object,
            serde_json::json!({"a": {"c": 2, "f": 3}, "d": [3], "e": "x", "g": {"h": true}})
        );
    }
}
