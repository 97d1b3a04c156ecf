//! A Job's `podFailurePolicy`: which rule a failed pod matches (by exit codes or pod conditions) and what
//! the rule says to do, with the messages the real job controller writes.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;

/// What to do with a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fail the Job at once, with this message.
    FailJob(String),
    /// Do not count the pod; create another.
    Ignore,
    /// Count the pod towards `backoffLimit` (also: no rule matched).
    Count,
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The first failed container (by name and exit code) the rule's `onExitCodes` matches.
fn exit_code_match(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<(String, i32)> {
    let requirement = rule.on_exit_codes.as_ref()?;
    let status = pod.status.as_ref()?;
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    for container in statuses {
        if requirement
            .container_name
            .as_ref()
            .is_some_and(|name| *name != container.name)
        {
            continue;
        }
        let Some(code) = container
            .state
            .as_ref()
            .and_then(|state| state.terminated.as_ref())
            .map(|terminated| terminated.exit_code)
        else {
            continue;
        };
        // Only failures count: exit code 0 never matches.
        if code == 0 {
            continue;
        }
        let listed = requirement.values.contains(&code);
        let matches = match requirement.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if matches {
            return Some((container.name.clone(), code));
        }
    }
    None
}

/// The pod condition type the rule's `onPodConditions` matches.
fn condition_match(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let patterns = rule.on_pod_conditions.as_ref()?;
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    patterns.iter().find_map(|pattern| {
        let wanted = if pattern.status.is_empty() {
            "True"
        } else {
            pattern.status.as_str()
        };
        conditions
            .iter()
            .any(|condition| condition.type_ == pattern.type_ && condition.status == wanted)
            .then(|| pattern.type_.clone())
    })
}

/// Judges a failed pod by the policy's rules, in order.
pub(crate) fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    for (index, rule) in policy.rules.iter().enumerate() {
        let message = if let Some((container, code)) = exit_code_match(rule, pod) {
            format!(
                "Container {container} for pod {} failed with exit code {code} matching {} rule at index {index}",
                pod_name(pod),
                rule.action
            )
        } else if let Some(condition) = condition_match(rule, pod) {
            format!(
                "Pod {} has condition {condition} matching {} rule at index {index}",
                pod_name(pod),
                rule.action
            )
        } else {
            continue;
        };
        return match rule.action.as_str() {
            "FailJob" => Verdict::FailJob(message),
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}
