//! A container's environment as the kubelet builds it: literal values, `secretKeyRef` from the stored
//! Secret, `fieldRef` to the pod's own fields, and `$(VAR)` references to earlier variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use serde_json::Value;

use crate::shared::Shared;
use crate::store::{ObjectKey, Resource};

/// Expands `$(NAME)` from `variables` (an unknown name stays as written; `$$` escapes a `$`), as Kubernetes
/// does in `env`, `command` and `args`.
pub(crate) fn expand(text: &str, variables: &BTreeMap<String, String>) -> String {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        expanded.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            expanded.push('$');
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix('(')
            && let Some(end) = reference.find(')')
        {
            let name = &reference[..end];
            match variables.get(name) {
                Some(value) => expanded.push_str(value),
                None => {
                    expanded.push_str("$(");
                    expanded.push_str(name);
                    expanded.push(')');
                }
            }
            rest = &reference[end + 1..];
        } else {
            expanded.push('$');
            rest = after;
        }
    }
    expanded.push_str(rest);
    expanded
}

fn secret_value(
    shared: &Shared,
    namespace: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    let secret_key = ObjectKey::new(Resource::Secrets, namespace, name);
    let Some(secret) = shared.store.get_as::<Secret>(&secret_key) else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("secret \"{name}\" not found"))
        };
    };
    let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key)) else {
        return if optional {
            Ok(None)
        } else {
            Err(format!(
                "couldn't find key {key} in Secret {namespace}/{name}"
            ))
        };
    };
    Ok(Some(String::from_utf8_lossy(&bytes.0).into_owned()))
}

fn field_value(pod: &Value, path: &str) -> String {
    let pointer = format!("/{}", path.replace('.', "/"));
    match pod.pointer(&pointer) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The container's variables, in order; an error is the kubelet's `CreateContainerConfigError` message.
pub(crate) fn resolve_env(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pod_value = serde_json::to_value(pod).unwrap_or_default();
    let mut variables = BTreeMap::new();
    let mut ordered = Vec::new();
    for variable in container.env.iter().flatten() {
        let value = if let Some(source) = &variable.value_from {
            if let Some(reference) = &source.secret_key_ref {
                let optional = reference.optional.unwrap_or(false);
                match secret_value(shared, namespace, &reference.name, &reference.key, optional)? {
                    Some(value) => value,
                    None => continue,
                }
            } else if let Some(reference) = &source.field_ref {
                field_value(&pod_value, &reference.field_path)
            } else {
                return Err(format!(
                    "unsupported valueFrom for variable {}",
                    variable.name
                ));
            }
        } else {
            expand(variable.value.as_deref().unwrap_or_default(), &variables)
        };
        variables.insert(variable.name.clone(), value.clone());
        ordered.push((variable.name.clone(), value));
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_as_kubernetes_does() {
        let variables: BTreeMap<String, String> =
            [("A".to_owned(), "1".to_owned())].into_iter().collect();
        assert_eq!(expand("x$(A)y", &variables), "x1y");
        assert_eq!(expand("$(B)", &variables), "$(B)");
        assert_eq!(expand("$$(A)", &variables), "$(A)");
        assert_eq!(expand("cost $5", &variables), "cost $5");
    }
}
