//! The Docker container an exec runs in: the running container of that name in the pod's status, or the
//! error a real API server and kubelet answer before any upgrade.

use serde_json::Value;

use crate::api::status::ApiError;

/// The Docker id of the pod's running container `container` (main or init, such as a native sidecar).
pub(crate) fn running_container_id(
    pod: &Value,
    pod_name: &str,
    container: &str,
) -> Result<String, ApiError> {
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    if node.is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "pod {pod_name} does not have a host assigned"
        )));
    }
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .into_iter()
        .filter_map(|list| pod.pointer(&format!("/status/{list}"))?.as_array())
        .flatten();
    statuses
        .filter(|status| status.get("name").and_then(Value::as_str) == Some(container))
        .filter(|status| status.pointer("/state/running").is_some())
        .find_map(|status| {
            let id = status.get("containerID")?.as_str()?;
            Some(id.strip_prefix("docker://")?.to_owned())
        })
        // The kubelet knows only running containers: a waiting or ended one is "not found".
        .ok_or_else(|| ApiError::bad_request(format!("container not found (\"{container}\")")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_running_container_of_a_bound_pod_is_found() {
        let running = json!({
            "spec": {"nodeName": "buildit-fake-node"},
            "status": {
                "containerStatuses": [
                    {"name": "main", "containerID": "docker://abc", "state": {"running": {}}},
                    {"name": "done", "containerID": "docker://def", "state": {"terminated": {"exitCode": 0}}},
                ],
                "initContainerStatuses": [
                    {"name": "sidecar", "containerID": "docker://123", "state": {"running": {}}},
                ],
            },
        });
        assert_eq!(
            running_container_id(&running, "p", "main").ok().as_deref(),
            Some("abc")
        );
        assert_eq!(
            running_container_id(&running, "p", "sidecar")
                .ok()
                .as_deref(),
            Some("123")
        );
        let ended = running_container_id(&running, "p", "done")
            .err()
            .map(|error| error.to_status());
        assert_eq!(
            ended.map(|status| status["message"].clone()),
            Some(json!("container not found (\"done\")"))
        );
        let pending = json!({"spec": {}, "status": {}});
        let unbound = running_container_id(&pending, "p", "main")
            .err()
            .map(|error| error.to_status());
        assert_eq!(
            unbound.map(|status| status["message"].clone()),
            Some(json!("pod p does not have a host assigned"))
        );
    }
}
