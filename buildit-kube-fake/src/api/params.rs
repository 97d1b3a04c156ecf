//! What a request names: the resource, namespace and object from its path, and the list options from its
//! query.

use std::collections::HashMap;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ObjectKey, Resource};

use super::status::ApiError;

/// The resource and namespace a path names, and the object if it names one.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub resource: Resource,
    /// `None`: across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    /// Reads the path parameters of any object route.
    pub fn from_path(path: &HashMap<String, String>, uri: &str) -> Result<Target, ApiError> {
        let group = path.get("group").map_or("", String::as_str);
        let version = path.get("version").map_or("v1", String::as_str);
        let plural = path.get("plural").map_or("", String::as_str);
        let resource =
            Resource::from_path(group, version, plural).ok_or_else(|| ApiError::no_route(uri))?;
        Ok(Target {
            resource,
            namespace: path.get("namespace").cloned(),
            name: path.get("name").cloned(),
        })
    }

    /// The key of the named object.
    pub fn key(&self) -> Option<ObjectKey> {
        Some(ObjectKey::new(
            self.resource,
            self.namespace.as_deref()?,
            self.name.as_deref()?,
        ))
    }
}

/// The query of a list, watch or delete.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub watch: bool,
    /// `resourceVersion`, when given and not empty.
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub bookmarks: bool,
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}

impl ListOptions {
    pub fn from_query(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        let timeout_seconds =
            match query.get("timeoutSeconds") {
                Some(text) => Some(text.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid timeoutSeconds: {text}"))
                })?),
                None => None,
            };
        Ok(ListOptions {
            labels,
            fields,
            watch: is_true(query.get("watch")),
            resource_version: query
                .get("resourceVersion")
                .filter(|rv| !rv.is_empty())
                .cloned(),
            timeout_seconds,
            bookmarks: is_true(query.get("allowWatchBookmarks")),
        })
    }

    /// Whether an object is selected by both selectors.
    pub fn selects(&self, object: &serde_json::Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches_object(object)
    }
}
