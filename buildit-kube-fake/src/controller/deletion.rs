//! Deleting an object as the API server does, for every client (HTTP, the garbage collector, the job
//! controller, faults): graceful pod deletion, finalizers, and the propagation policies.

use serde_json::{Value, json};

use crate::shared::Shared;
use crate::store::meta::{format_seconds, meta_str};
use crate::store::{ObjectKey, Resource};

/// What happens to an object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// The object goes now; the garbage collector deletes its dependents afterwards.
    Background,
    /// The object stays (with `deletionTimestamp` and the `foregroundDeletion` finalizer) until its
    /// dependents are gone.
    Foreground,
    /// The dependents stay, without their owner reference.
    Orphan,
}

impl Propagation {
    pub(crate) fn parse(text: &str) -> Option<Propagation> {
        match text {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

/// A deletion's options (`DeleteOptions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeleteRequest {
    pub grace_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Deleted {
    /// The object is gone; as it was.
    Gone(Value),
    /// The object is being deleted (graceful pod termination, finalizers); as it is now.
    Pending(Value),
}

fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|reference| reference.get("uid")?.as_str())
}

/// The keys of the objects that name `uid` as an owner.
pub(crate) fn dependents_of(shared: &Shared, namespace: &str, uid: &str) -> Vec<ObjectKey> {
    Resource::ALL
        .into_iter()
        .flat_map(|resource| {
            shared
                .store
                .list(resource, Some(namespace))
                .0
                .into_iter()
                .filter(|object| owner_uids(object).any(|owner| owner == uid))
                .filter_map(move |object| {
                    Some(ObjectKey::new(
                        resource,
                        namespace,
                        meta_str(&object, "name")?,
                    ))
                })
        })
        .collect()
}

fn orphan_dependents(shared: &Shared, namespace: &str, uid: &str) {
    for dependent in dependents_of(shared, namespace, uid) {
        shared.store.update(&dependent, |object| {
            if let Some(references) = object
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                references
                    .retain(|reference| reference.get("uid").and_then(Value::as_str) != Some(uid));
            }
        });
    }
}

fn mark_deleting(
    shared: &Shared,
    key: &ObjectKey,
    grace_seconds: i64,
    finalizer: Option<&str>,
) -> Option<Value> {
    let when = crate::store::meta::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(grace_seconds))
        .unwrap_or_else(|_| crate::store::meta::now());
    shared.store.update(key, |object| {
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        metadata.insert("deletionTimestamp".to_owned(), json!(format_seconds(when)));
        metadata.insert(
            "deletionGracePeriodSeconds".to_owned(),
            json!(grace_seconds),
        );
        if let Some(finalizer) = finalizer {
            let finalizers = metadata.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(finalizers) = finalizers.as_array_mut()
                && !finalizers.iter().any(|existing| existing == finalizer)
            {
                finalizers.push(json!(finalizer));
            }
        }
    })
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|finalizers| !finalizers.is_empty())
}

/// Deletes the object at `key`; `None` if there is none.
pub(crate) fn delete(shared: &Shared, key: &ObjectKey, request: DeleteRequest) -> Option<Deleted> {
    let object = shared.store.get(key)?;
    let uid = meta_str(&object, "uid").unwrap_or_default().to_owned();
    let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
    if key.resource == Resource::Pods {
        return Some(delete_pod(shared, key, object, deleting, request));
    }
    if deleting {
        return Some(Deleted::Pending(object));
    }
    // batch/v1 Jobs orphan their pods unless told otherwise, for compatibility: as the real server does.
    let default = match key.resource {
        Resource::Jobs => Propagation::Orphan,
        _ => Propagation::Background,
    };
    match request.propagation.unwrap_or(default) {
        Propagation::Orphan => orphan_dependents(shared, &key.namespace, &uid),
        Propagation::Foreground => {
            return mark_deleting(shared, key, 0, Some("foregroundDeletion")).map(Deleted::Pending);
        }
        Propagation::Background => {}
    }
    if has_finalizers(&object) {
        return mark_deleting(shared, key, 0, None).map(Deleted::Pending);
    }
    shared.store.remove(key).map(Deleted::Gone)
}

fn delete_pod(
    shared: &Shared,
    key: &ObjectKey,
    object: Value,
    deleting: bool,
    request: DeleteRequest,
) -> Deleted {
    let spec_grace = object
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let grace = request.grace_seconds.unwrap_or(spec_grace).max(0);
    let scheduled = object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|node| !node.is_empty());
    let phase = object
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let finished = phase == "Succeeded" || phase == "Failed";
    // No kubelet has to stop anything: the pod goes at once (as the real server does).
    if grace == 0 || !scheduled || finished {
        return shared
            .store
            .remove(key)
            .map_or(Deleted::Pending(object), Deleted::Gone);
    }
    if deleting {
        return Deleted::Pending(object);
    }
    let marked = mark_deleting(shared, key, grace, None);
    Deleted::Pending(marked.unwrap_or(object))
}
