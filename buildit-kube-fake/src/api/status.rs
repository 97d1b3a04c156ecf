//! Errors as the API server answers them: a `meta/v1` `Status` with a code, a reason and a message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::{Resource, StoreError};

/// An error answer.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// `404 NotFound`: `pods "x" not found`.
    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", resource.qualified()),
            details: None,
        }
        .with_details(json!({"name": name, "group": resource.group(), "kind": resource.plural()}))
    }

    /// `404 NotFound` for a path the fake does not serve.
    pub fn no_route(path: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({path})"),
            details: None,
        }
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// `500 InternalError`: `Internal error occurred: ...`, the cause in `details`.
    pub fn internal(cause: impl Into<String>) -> ApiError {
        let cause = cause.into();
        ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {cause}"),
            details: None,
        }
        .with_details(json!({"causes": [{"message": cause}]}))
    }

    /// `422 Invalid`.
    pub fn invalid(resource: Resource, name: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: message.into(),
            details: None,
        }
        .with_details(json!({"name": name, "group": resource.group(), "kind": resource.kind()}))
    }

    /// `405 MethodNotAllowed`, for the verbs the fake does not implement.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "the server does not allow this method on the requested resource ({method})"
            ),
            details: None,
        }
    }

    /// `415 UnsupportedMediaType`, for a patch type the fake does not apply (only merge patches).
    pub fn unsupported_patch(content_type: &str) -> ApiError {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got `{content_type}`)"
            ),
            details: None,
        }
    }

    /// `410 Expired`, for a watch from a forgotten version.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError {
            code: 410,
            reason: "Expired",
            message: message.into(),
            details: None,
        }
    }

    /// A write the store refused.
    pub fn from_store(resource: Resource, name: &str, error: StoreError) -> ApiError {
        match error {
            StoreError::AlreadyExists { .. } => ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: error.to_string(),
                details: None,
            }
            .with_details(
                json!({"name": name, "group": resource.group(), "kind": resource.plural()}),
            ),
            StoreError::Invalid(message) => ApiError::invalid(resource, name, message),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(object)) = (&self.details, status.as_object_mut()) {
            object.insert("details".to_owned(), details.clone());
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.to_status())).into_response()
    }
}

/// The `Success` status a deletion answers with when the object went at once.
pub(crate) fn deleted_status(resource: Resource, object: &Value) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": metadata.get("name"),
            "group": resource.group(),
            "kind": resource.plural(),
            "uid": metadata.get("uid"),
        }
    })
}
