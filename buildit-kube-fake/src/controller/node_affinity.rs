//! Whether a pod may go to the one node: its `nodeSelector` and its required node affinity matched against
//! the node's name and labels, as the scheduler's `NodeAffinity` filter matches them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod};

use crate::shared::NODE_NAME;

/// The only field a `matchFields` requirement may name.
const NAME_FIELD: &str = "metadata.name";

/// The labels a kubelet registers its node with.
fn node_labels() -> BTreeMap<&'static str, &'static str> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    BTreeMap::from([
        ("kubernetes.io/hostname", NODE_NAME),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
    ])
}

/// Whether a requirement holds for `value` (the label's or field's value, `None` when the node lacks it).
fn requirement_holds(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let listed = |value: &str| values.iter().any(|candidate| candidate == value);
    // `Gt` and `Lt` compare integers and take exactly one value.
    let compare = |wanted: std::cmp::Ordering| {
        let (Some(value), [bound]) = (value, values) else {
            return false;
        };
        match (value.parse::<i64>(), bound.parse::<i64>()) {
            (Ok(value), Ok(bound)) => value.cmp(&bound) == wanted,
            _ => false,
        }
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(listed),
        // A node without the label is not in any set of values.
        "NotIn" => value.is_none_or(|value| !listed(value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// Whether every requirement of the term holds; a term without any matches no node, as in Kubernetes.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<&str, &str>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels_hold = expressions.iter().all(|requirement| {
        requirement_holds(requirement, labels.get(requirement.key.as_str()).copied())
    });
    // Fields support only the node's name, with `In` or `NotIn`.
    let fields_hold = fields.iter().all(|requirement| {
        requirement.key == NAME_FIELD
            && matches!(requirement.operator.as_str(), "In" | "NotIn")
            && requirement_holds(requirement, Some(NODE_NAME))
    });
    labels_hold && fields_hold
}

/// Whether the pod's `nodeSelector` and its required node affinity (terms ORed, the requirements of a term
/// ANDed) allow the node.
pub(crate) fn allows_node(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node_labels();
    let selector_holds = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key.as_str()) == Some(&value.as_str()));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_holds = required.is_none_or(|selector| {
        selector
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, &labels))
    });
    selector_holds && affinity_holds
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(spec: Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "main"}]);
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec}))
            .unwrap_or_else(|error| panic!("a pod: {error}"))
    }

    fn required(terms: Value) -> Pod {
        pod(json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms},
        }}}))
    }

    fn hostname(operator: &str, values: &[&str]) -> Value {
        json!({"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": operator, "values": values}]})
    }

    fn name_field(operator: &str, values: &[&str]) -> Value {
        json!({"matchFields": [{"key": "metadata.name", "operator": operator, "values": values}]})
    }

    #[test]
    fn a_pod_without_constraints_fits() {
        assert!(allows_node(&pod(json!({}))));
    }

    #[test]
    fn the_node_selector_matches_the_node_labels() {
        assert!(allows_node(&pod(
            json!({"nodeSelector": {"kubernetes.io/hostname": NODE_NAME}})
        )));
        assert!(allows_node(&pod(
            json!({"nodeSelector": {"kubernetes.io/os": "linux"}})
        )));
        assert!(!allows_node(&pod(
            json!({"nodeSelector": {"kubernetes.io/hostname": "other"}})
        )));
        assert!(!allows_node(&pod(
            json!({"nodeSelector": {"kubernetes.io/os": "linux", "disk": "ssd"}})
        )));
    }

    #[test]
    fn hostname_expressions_use_in_not_in_and_exists() {
        assert!(allows_node(&required(json!([hostname(
            "In",
            &["a", NODE_NAME]
        )]))));
        assert!(!allows_node(&required(json!([hostname("In", &["other"])]))));
        assert!(allows_node(&required(json!([hostname(
            "NotIn",
            &["other"]
        )]))));
        assert!(!allows_node(&required(json!([hostname(
            "NotIn",
            &[NODE_NAME]
        )]))));
        assert!(allows_node(&required(json!([hostname("Exists", &[])]))));
        assert!(!allows_node(&required(json!([hostname(
            "DoesNotExist",
            &[]
        )]))));
        let missing =
            json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["a"]}]});
        assert!(allows_node(&required(json!([missing]))));
    }

    #[test]
    fn name_fields_use_in_and_not_in() {
        assert!(allows_node(&required(json!([name_field(
            "In",
            &[NODE_NAME]
        )]))));
        assert!(!allows_node(&required(json!([name_field(
            "In",
            &["other"]
        )]))));
        assert!(allows_node(&required(json!([name_field(
            "NotIn",
            &["other"]
        )]))));
        assert!(!allows_node(&required(json!([name_field(
            "NotIn",
            &[NODE_NAME]
        )]))));
        let other_field = json!({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": [NODE_NAME]}]});
        assert!(!allows_node(&required(json!([other_field]))));
    }

    #[test]
    fn terms_are_ored_and_requirements_anded() {
        let no = hostname("In", &["other"]);
        let yes = name_field("In", &[NODE_NAME]);
        assert!(allows_node(&required(json!([no.clone(), yes.clone()]))));
        assert!(!allows_node(&required(json!([no.clone()]))));
        let both = json!({
            "matchExpressions": no["matchExpressions"].clone(),
            "matchFields": yes["matchFields"].clone(),
        });
        assert!(!allows_node(&required(json!([both]))));
        assert!(!allows_node(&required(json!([{}]))), "an empty term");
        assert!(!allows_node(&required(json!([]))), "no term");
    }
}
