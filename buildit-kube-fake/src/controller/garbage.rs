//! The garbage collector: deletes objects whose owners are gone, deletes the dependents of owners in
//! foreground deletion, and removes such owners once their dependents are gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::deletion::{DeleteRequest, Propagation, delete, dependents_of};
use super::reconcile::reconcile_loop;
use crate::shared::Shared;
use crate::store::meta::meta_str;
use crate::store::{ObjectKey, Resource};

const FOREGROUND: &str = "foregroundDeletion";

fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn in_foreground_deletion(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(object).contains(&FOREGROUND)
}

fn key_of(resource: Resource, object: &Value) -> Option<ObjectKey> {
    Some(ObjectKey::new(
        resource,
        meta_str(object, "namespace")?,
        meta_str(object, "name")?,
    ))
}

fn collect(shared: &Shared) {
    let mut everything: Vec<(Resource, Value)> = Vec::new();
    for resource in Resource::ALL {
        everything.extend(
            shared
                .store
                .list(resource, None)
                .0
                .into_iter()
                .map(|object| (resource, object)),
        );
    }
    let by_uid: HashMap<&str, &Value> = everything
        .iter()
        .filter_map(|(_, object)| Some((meta_str(object, "uid")?, object)))
        .collect();
    let background = DeleteRequest {
        grace_seconds: None,
        propagation: Some(Propagation::Background),
    };
    for (resource, object) in &everything {
        let owners: Vec<&str> = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|reference| reference.get("uid")?.as_str())
            .collect();
        if owners.is_empty() || object.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let live: Vec<&&Value> = owners.iter().filter_map(|uid| by_uid.get(uid)).collect();
        let orphaned = live.is_empty();
        let owner_leaving = live.iter().any(|owner| in_foreground_deletion(owner));
        if (orphaned || owner_leaving)
            && let Some(key) = key_of(*resource, object)
        {
            delete(shared, &key, background);
        }
    }
    for (resource, object) in everything
        .iter()
        .filter(|(_, object)| in_foreground_deletion(object))
    {
        let (Some(key), Some(uid)) = (key_of(*resource, object), meta_str(object, "uid")) else {
            continue;
        };
        if !dependents_of(shared, &key.namespace, uid).is_empty() {
            continue;
        }
        let updated = shared.store.update(&key, |object| {
            if let Some(list) = object
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|finalizer| finalizer != FOREGROUND);
            }
        });
        if updated.is_some_and(|object| finalizers(&object).is_empty()) {
            shared.store.remove(&key);
        }
    }
}

/// Collects garbage until the fake stops.
pub(crate) async fn run_garbage_collector(shared: Arc<Shared>) {
    reconcile_loop(shared, Duration::from_millis(500), collect).await;
}
