//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for (`Accept: ...;as=Table`), with the
//! columns a real server prints for each resource.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::store::Resource;

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Ages as kubectl prints them: `12s`, `3m4s`, `15m`, `5h`, `3d`.
fn age(since: &str) -> String {
    let Ok(since) = since.parse::<Timestamp>() else {
        return "<unknown>".to_owned();
    };
    let seconds = crate::store::meta::now()
        .as_second()
        .saturating_sub(since.as_second())
        .max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..600 => format!("{}m{}s", seconds / 60, seconds % 60),
        600..10_800 => format!("{}m", seconds / 60),
        10_800..172_800 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn columns(resource: Resource) -> Vec<(&'static str, &'static str)> {
    match resource {
        Resource::Pods => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
        ],
        Resource::Jobs => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Completions", "string"),
            ("Duration", "string"),
            ("Age", "string"),
        ],
        Resource::Secrets => vec![
            ("Name", "string"),
            ("Type", "string"),
            ("Data", "string"),
            ("Age", "string"),
        ],
        Resource::PersistentVolumeClaims => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Volume", "string"),
            ("Capacity", "string"),
            ("Access Modes", "string"),
            ("StorageClass", "string"),
            ("Age", "string"),
        ],
        Resource::Events => vec![
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
    }
}

/// What kubectl shows as a pod's status: a container's waiting or terminated reason, else the phase.
fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".to_owned();
    }
    if let Some(reason) = pod.pointer("/status/reason").and_then(Value::as_str) {
        return reason.to_owned();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for status in statuses.into_iter().flatten() {
        let waiting = text(status, "/state/waiting/reason");
        if !waiting.is_empty() && waiting != "ContainerCreating" {
            return waiting.to_owned();
        }
        let terminated = text(status, "/state/terminated/reason");
        if !terminated.is_empty() && terminated != "Completed" {
            return terminated.to_owned();
        }
    }
    match text(pod, "/status/phase") {
        "Succeeded" => "Completed".to_owned(),
        "" => "Pending".to_owned(),
        phase => phase.to_owned(),
    }
}

fn cells(resource: Resource, object: &Value) -> Vec<Value> {
    let name = text(object, "/metadata/name");
    let created = age(text(object, "/metadata/creationTimestamp"));
    match resource {
        Resource::Pods => {
            let statuses = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let containers = object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses
                .into_iter()
                .flatten()
                .filter(|s| s.get("ready") == Some(&json!(true)))
                .count();
            let restarts: i64 = statuses
                .into_iter()
                .flatten()
                .filter_map(|status| status.get("restartCount")?.as_i64())
                .sum();
            vec![
                json!(name),
                json!(format!("{ready}/{containers}")),
                json!(pod_status(object)),
                json!(restarts.to_string()),
                json!(created),
            ]
        }
        Resource::Jobs => {
            let conditions = object
                .pointer("/status/conditions")
                .and_then(Value::as_array);
            let status = conditions
                .into_iter()
                .flatten()
                .filter(|condition| text(condition, "/status") == "True")
                .map(|condition| text(condition, "/type"))
                .find(|kind| *kind == "Complete" || *kind == "Failed")
                .unwrap_or("Running");
            let succeeded = object
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let completions = object
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let duration = match text(object, "/status/startTime") {
                "" => String::new(),
                start => age(start),
            };
            vec![
                json!(name),
                json!(status),
                json!(format!("{succeeded}/{completions}")),
                json!(duration),
                json!(created),
            ]
        }
        Resource::Secrets => {
            let data = object
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len);
            vec![
                json!(name),
                json!(text(object, "/type")),
                json!(data.to_string()),
                json!(created),
            ]
        }
        Resource::PersistentVolumeClaims => {
            let modes: Vec<&str> = object
                .pointer("/status/accessModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|mode| match mode {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    other => other,
                })
                .collect();
            vec![
                json!(name),
                json!(text(object, "/status/phase")),
                json!(text(object, "/spec/volumeName")),
                json!(text(object, "/status/capacity/storage")),
                json!(modes.join(",")),
                json!(text(object, "/spec/storageClassName")),
                json!(created),
            ]
        }
        Resource::Events => {
            let seen = [text(object, "/lastTimestamp"), text(object, "/eventTime")]
                .into_iter()
                .find(|time| !time.is_empty())
                .map_or_else(|| created.clone(), age);
            let involved = format!(
                "{}/{}",
                text(object, "/involvedObject/kind").to_lowercase(),
                text(object, "/involvedObject/name")
            );
            vec![
                json!(seen),
                json!(text(object, "/type")),
                json!(text(object, "/reason")),
                json!(involved),
                json!(text(object, "/message")),
            ]
        }
    }
}

/// The Table of `objects`, each row carrying the object's metadata.
pub(crate) fn table(resource: Resource, objects: &[Value], revision: u64) -> Value {
    let column_definitions: Vec<Value> = columns(resource)
        .into_iter()
        .map(|(name, kind)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": kind, "format": format, "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({
                "cells": cells(resource, object),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.get("metadata"),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}
