//! The defaults the API server fills in at creation, as a real one does: a Secret's `stringData` folded into
//! `data`, a Job's selector and template labels, a Pod's restart policy and grace period, a claim bound at
//! once.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::Resource;
use super::meta::meta_str;

/// Inserts `value` at `field` of `object` unless it has one.
fn default_field(object: &mut Map<String, Value>, field: &str, value: Value) {
    object.entry(field).or_insert(value);
}

fn object_at<'a>(value: &'a mut Value, field: &str) -> Option<&'a mut Map<String, Value>> {
    let parent = value.as_object_mut()?;
    parent
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

/// Fills in the defaults of a new object of `resource` (its metadata already has a name and uid).
pub(crate) fn apply(resource: Resource, object: &mut Value) {
    match resource {
        Resource::Secrets => secret(object),
        Resource::Jobs => job(object),
        Resource::Pods => {
            if let Some(spec) = object_at(object, "spec") {
                pod_spec(spec);
            }
            if let Some(status) = object_at(object, "status") {
                default_field(status, "phase", json!("Pending"));
            }
        }
        Resource::PersistentVolumeClaims => claim(object),
        Resource::Events => {}
    }
}

fn secret(object: &mut Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    default_field(root, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = root.remove("stringData") else {
        return;
    };
    let data = root
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(data) = data.as_object_mut() {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, Value::String(encoded));
        }
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = container
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let policy = if tag.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                "IfNotPresent"
            } else {
                "Always"
            };
            default_field(container, "imagePullPolicy", json!(policy));
            default_field(
                container,
                "terminationMessagePath",
                json!("/dev/termination-log"),
            );
            default_field(container, "terminationMessagePolicy", json!("File"));
            // Requests default to limits when only limits are given.
            if let Some(resources) = container
                .get_mut("resources")
                .and_then(Value::as_object_mut)
                && let Some(limits) = resources.get("limits").cloned()
            {
                let requests = resources
                    .entry("requests")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let (Some(requests), Some(limits)) =
                    (requests.as_object_mut(), limits.as_object())
                {
                    for (name, quantity) in limits {
                        default_field(requests, name, quantity.clone());
                    }
                }
            }
        }
    }
}

fn job(object: &mut Value) {
    let uid = meta_str(object, "uid").unwrap_or_default().to_owned();
    let name = meta_str(object, "name").unwrap_or_default().to_owned();
    let Some(spec) = object_at(object, "spec") else {
        return;
    };
    default_field(spec, "backoffLimit", json!(6));
    default_field(spec, "completions", json!(1));
    default_field(spec, "parallelism", json!(1));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let controller_labels = json!({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    });
    if !spec
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        spec.insert(
            "selector".to_owned(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    let Some(template) = spec
        .entry("template")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
    else {
        return;
    };
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let (Some(labels), Some(extra)) = (labels.as_object_mut(), controller_labels.as_object())
        {
            labels.extend(extra.clone());
        }
    }
    if let Some(pod_spec_value) = template.get_mut("spec").and_then(Value::as_object_mut) {
        pod_spec(pod_spec_value);
    }
    if let Some(root) = object.as_object_mut() {
        default_field(root, "status", json!({}));
    }
}

fn claim(object: &mut Value) {
    let uid = meta_str(object, "uid").unwrap_or_default().to_owned();
    let (modes, capacity) = {
        let Some(spec) = object_at(object, "spec") else {
            return;
        };
        default_field(spec, "volumeMode", json!("Filesystem"));
        default_field(spec, "storageClassName", json!("standard"));
        spec.insert("volumeName".to_owned(), json!(format!("pvc-{uid}")));
        let modes = spec
            .get("accessModes")
            .cloned()
            .unwrap_or(json!(["ReadWriteOnce"]));
        let capacity = spec
            .get("resources")
            .and_then(|resources| resources.get("requests"))
            .cloned()
            .unwrap_or(json!({}));
        (modes, capacity)
    };
    if let Some(root) = object.as_object_mut() {
        root.insert(
            "status".to_owned(),
            json!({"phase": "Bound", "accessModes": modes, "capacity": capacity}),
        );
    }
    if let Some(metadata) = object_at(object, "metadata") {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert("pv.kubernetes.io/bind-completed".to_owned(), json!("yes"));
        }
    }
}
