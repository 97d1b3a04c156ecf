//! Label selectors (`k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and field selectors
//! (`metadata.name=x`, `involvedObject.kind!=Pod`), as list and watch requests and faults use them.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        }
    }
}

/// A label selector: every requirement must hold (the empty selector matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./".contains(&byte))
}

fn parse_set(key: &str, rest: &str, whole: &str) -> Result<(String, Vec<String>), SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| SelectorError(whole.to_owned()))?;
    let values = inner
        .split(',')
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    Ok((key.to_owned(), values))
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let error = || SelectorError(part.to_owned());
    let part = part.trim();
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement::NotExists(key.to_owned()))
            .ok_or_else(error);
    }
    if let Some((key, value)) = part.split_once("!=") {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement::NotEquals(key.to_owned(), value.trim().to_owned()))
            .ok_or_else(error);
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement::Equals(key.to_owned(), value.trim().to_owned()))
            .ok_or_else(error);
    }
    if let Some((key, rest)) = part.split_once(" notin ") {
        let (key, values) = parse_set(key.trim(), rest, part)?;
        return Ok(Requirement::NotIn(key, values));
    }
    if let Some((key, rest)) = part.split_once(" in ") {
        let (key, values) = parse_set(key.trim(), rest, part)?;
        return Ok(Requirement::In(key, values));
    }
    valid_key(part)
        .then(|| Requirement::Exists(part.to_owned()))
        .ok_or_else(error)
}

impl LabelSelector {
    /// Parses a selector as `?labelSelector=` gives it.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        let requirements = split_top_level(text)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }

    /// Whether an object's labels satisfy it.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.requirements.is_empty() || self.matches(&crate::store::meta::labels(object))
    }
}

/// A field selector: `path=value`, `path==value`, `path!=value`, joined by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

fn field_text(object: &Value, path: &str) -> String {
    let found = path
        .split('.')
        .try_fold(object, |value, field| value.get(field));
    match found {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses a selector as `?fieldSelector=` gives it.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (path, equal, value) = if let Some((path, value)) = part.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                (path, true, value)
            } else {
                return Err(SelectorError(part.to_owned()));
            };
            requirements.push((path.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the object's fields satisfy every requirement.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.requirements
            .iter()
            .all(|(path, equal, value)| (field_text(object, path) == *value) == *equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(text: &str) -> LabelSelector {
        LabelSelector::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn every_label_operator_matches_as_kubernetes_does() {
        let build = labels(&[("buildit.run", "7"), ("buildit.stage", "build")]);
        assert!(parse("buildit.run").matches(&build));
        assert!(!parse("!buildit.run").matches(&build));
        assert!(parse("buildit.stage=build").matches(&build));
        assert!(parse("buildit.stage==build").matches(&build));
        assert!(!parse("buildit.stage!=build").matches(&build));
        assert!(parse("buildit.stage in (test, build)").matches(&build));
        assert!(!parse("buildit.stage notin (test,build)").matches(&build));
        assert!(parse("buildit.run=7,buildit.stage in (build)").matches(&build));
        assert!(!parse("buildit.run=7,buildit.stage=test").matches(&build));
        assert!(parse("missing notin (a)").matches(&build));
        assert!(parse("").matches(&build));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
    }

    #[test]
    fn field_selectors_read_nested_fields() {
        let event = serde_json::json!({
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "p"}
        });
        let selector = FieldSelector::parse("involvedObject.name=p,involvedObject.kind=Pod");
        assert!(selector.is_ok_and(|selector| selector.matches_object(&event)));
        let selector = FieldSelector::parse("metadata.name!=e1");
        assert!(selector.is_ok_and(|selector| !selector.matches_object(&event)));
    }
}
