//! What the API server refuses at creation, with its messages: names, label keys and values, Secret keys,
//! container names. A client that builds these from user input learns here what a real cluster would refuse.

use serde_json::Value;

use super::Resource;
use super::meta::invalid_subdomain;

const LABEL_VALUE_ADVICE: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
    '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  \
    or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_ADVICE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and \
    must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used \
    for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY_ADVICE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
    (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const DNS_LABEL_ADVICE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
    or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used \
    for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const ENV_NAME_ADVICE: &str = "a valid environment variable name must consist of alphabetic characters, \
    digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or \
    'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

fn is_env_name(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(|byte| !byte.is_ascii_digit())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._".contains(&byte))
}

fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
            && value
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_alphanumeric)
            && value
                .as_bytes()
                .last()
                .is_some_and(u8::is_ascii_alphanumeric))
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn label_errors(path: &str, labels: Option<&Value>, errors: &mut Vec<String>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        let (prefix, name) = key
            .rsplit_once('/')
            .map_or((None, key.as_str()), |(p, n)| (Some(p), n));
        if name.is_empty() || name.len() > 63 || !is_label_value(name) {
            errors.push(format!(
                "{path}: Invalid value: \"{key}\": {QUALIFIED_NAME_ADVICE}"
            ));
        }
        if let Some(problem) = prefix.and_then(invalid_subdomain) {
            errors.push(format!(
                "{path}: Invalid value: \"{key}\": prefix part {problem}"
            ));
        }
        let text = value.as_str().unwrap_or_default();
        if text.len() > 63 {
            errors.push(format!(
                "{path}: Invalid value: \"{text}\": must be no more than 63 characters"
            ));
        } else if !is_label_value(text) {
            errors.push(format!(
                "{path}: Invalid value: \"{text}\": {LABEL_VALUE_ADVICE}"
            ));
        }
    }
}

fn pod_spec_errors(path: &str, spec: Option<&Value>, errors: &mut Vec<String>) {
    let Some(spec) = spec else {
        errors.push(format!("{path}: Required value"));
        return;
    };
    if spec
        .get("containers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        errors.push(format!("{path}.containers: Required value"));
    }
    for list in ["initContainers", "containers"] {
        let containers = spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (index, container) in containers.enumerate() {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !is_dns_label(name) {
                errors.push(format!(
                    "{path}.{list}[{index}].name: Invalid value: \"{name}\": {DNS_LABEL_ADVICE}"
                ));
            }
            let variables = container
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for (position, variable) in variables.enumerate() {
                let variable = variable
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !is_env_name(variable) {
                    errors.push(format!(
                        "{path}.{list}[{index}].env[{position}].name: Invalid value: \"{variable}\": {ENV_NAME_ADVICE}"
                    ));
                }
            }
        }
    }
}

/// The field errors of a new object, in the API server's words (empty: valid).
pub(crate) fn field_errors(resource: Resource, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if resource == Resource::Jobs && name.len() > 63 {
        errors.push(format!(
            "metadata.name: Invalid value: \"{name}\": must be no more than 63 characters"
        ));
    }
    label_errors(
        "metadata.labels",
        object.pointer("/metadata/labels"),
        &mut errors,
    );
    match resource {
        Resource::Secrets => {
            for field in ["data", "stringData"] {
                let keys = object
                    .get(field)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten();
                for (key, _) in keys {
                    let valid = !key.is_empty()
                        && key
                            .bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || b"-._".contains(&byte));
                    if !valid {
                        errors.push(format!(
                            "{field}[{key}]: Invalid value: \"{key}\": {CONFIG_KEY_ADVICE}"
                        ));
                    }
                }
            }
        }
        Resource::Pods => pod_spec_errors("spec", object.get("spec"), &mut errors),
        Resource::Jobs => {
            label_errors(
                "spec.template.labels",
                object.pointer("/spec/template/metadata/labels"),
                &mut errors,
            );
            pod_spec_errors(
                "spec.template.spec",
                object.pointer("/spec/template/spec"),
                &mut errors,
            );
        }
        Resource::PersistentVolumeClaims | Resource::Events => {}
    }
    errors
}

/// The 422 message: `Job.batch "x" is invalid: ...`.
pub(crate) fn invalid_message(resource: Resource, name: &str, errors: &[String]) -> String {
    let kind = match resource.group() {
        "" => resource.kind().to_owned(),
        group => format!("{}.{group}", resource.kind()),
    };
    match errors {
        [one] => format!("{kind} \"{name}\" is invalid: {one}"),
        many => format!("{kind} \"{name}\" is invalid: [{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_secret_keys_and_long_job_names_are_refused_as_a_real_server_does() {
        let secret = json!({"metadata": {"name": "s", "labels": {"stage": "build step"}}, "data": {"a b": ""}});
        let errors = field_errors(Resource::Secrets, &secret);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("metadata.labels: Invalid value: \"build step\""));
        assert!(errors[1].starts_with("data[a b]: Invalid value"));
        let long = "j".repeat(64);
        let containers = json!([{"name": "Main", "env": [{"name": "OK_1"}, {"name": "1 BAD"}]}]);
        let job = json!({"metadata": {"name": long}, "spec": {"template": {"spec": {"containers": containers}}}});
        let errors = field_errors(Resource::Jobs, &job);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[2].starts_with(
                "spec.template.spec.containers[0].env[1].name: Invalid value: \"1 BAD\""
            )
        );
        assert!(
            invalid_message(Resource::Jobs, &long, &errors)
                .starts_with(&format!("Job.batch \"{long}\" is invalid: ["))
        );
        let fine =
            json!({"metadata": {"name": "ok", "labels": {"buildit.run/x": "7", "empty": ""}}});
        assert!(field_errors(Resource::Secrets, &fine).is_empty());
    }
}
