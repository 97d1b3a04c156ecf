//! Recording `v1` Events about an object, as the scheduler, the kubelet and the job controller do.

use serde_json::{Value, json};

use crate::shared::{NODE_NAME, Shared};
use crate::store::Resource;
use crate::store::meta::{meta_str, now_rfc3339, random_suffix};

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Normal,
    Warning,
}

/// Who reports an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reporter {
    Scheduler,
    Kubelet,
    JobController,
}

impl Reporter {
    fn component(self) -> &'static str {
        match self {
            Reporter::Scheduler => "default-scheduler",
            Reporter::Kubelet => "kubelet",
            Reporter::JobController => "job-controller",
        }
    }
}

/// Records an event about `object` (a Pod or a Job) in its namespace; `field_path` names a container
/// (`spec.containers{main}`).
pub(crate) fn record_event(
    shared: &Shared,
    object: &Value,
    event_type: EventType,
    reporter: Reporter,
    reason: &str,
    message: &str,
    field_path: Option<String>,
) {
    let namespace = meta_str(object, "namespace").unwrap_or("default");
    let name = meta_str(object, "name").unwrap_or_default();
    let now = now_rfc3339();
    let mut involved = json!({
        "kind": object.get("kind").and_then(Value::as_str).unwrap_or("Pod"),
        "namespace": namespace,
        "name": name,
        "uid": meta_str(object, "uid"),
        "apiVersion": object.get("apiVersion").and_then(Value::as_str).unwrap_or("v1"),
        "resourceVersion": meta_str(object, "resourceVersion"),
    });
    if let (Some(path), Some(involved)) = (field_path, involved.as_object_mut()) {
        involved.insert("fieldPath".to_owned(), json!(path));
    }
    // The same event again (a back-off loop) is counted on the first one, as the real event recorder does.
    let uid = meta_str(object, "uid").unwrap_or_default();
    let repeated = shared
        .store
        .list(Resource::Events, Some(namespace))
        .0
        .into_iter()
        .find(|event| {
            event.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid)
                && event.get("reason").and_then(Value::as_str) == Some(reason)
                && event.get("message").and_then(Value::as_str) == Some(message)
        });
    if let Some(event) = repeated.as_ref().and_then(|event| meta_str(event, "name")) {
        let key = crate::store::ObjectKey::new(Resource::Events, namespace, event);
        shared.store.update(&key, |event| {
            let count = event.get("count").and_then(Value::as_i64).unwrap_or(1);
            if let Some(event) = event.as_object_mut() {
                event.insert("count".to_owned(), json!(count + 1));
                event.insert("lastTimestamp".to_owned(), json!(now));
            }
        });
        return;
    }
    let host = match reporter {
        Reporter::Kubelet => NODE_NAME,
        _ => "",
    };
    let event = json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": format!("{name}.{}", random_suffix(16)), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": match event_type { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "source": {"component": reporter.component(), "host": host},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": reporter.component(),
        "reportingInstance": host,
    });
    // An event that cannot be stored is lost, as with a real API server under pressure.
    let _ = shared.store.create(Resource::Events, namespace, event);
}
