//! Which container of a pod a `log` or `exec` request is for, as the API server picks it.

use serde_json::Value;

use super::status::ApiError;

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|container| Some(container.get("name")?.as_str()?.to_owned()))
        .collect()
}

/// The container named in the request (a main or init container), or the only main container when none is
/// named; a pod with several needs a name.
pub(crate) fn pick_container(
    pod: &Value,
    name: &str,
    asked: Option<&String>,
) -> Result<String, ApiError> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    match asked {
        Some(asked) if containers.contains(asked) || init.contains(asked) => Ok(asked.clone()),
        Some(asked) => Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}] or one of the init \
             containers: [{}]",
            containers.join(" "),
            init.join(" ")
        ))),
    }
}
