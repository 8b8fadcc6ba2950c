//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field selectors
//! (`metadata.name=x,spec.nodeName!=y`), as list and watch take them.

use serde_json::Value;

use std::sync::Arc;

use super::errors::ApiError;
use super::registry::{FieldLabel, Strategy};

#[derive(Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Default)]
pub struct Selector {
    labels: Vec<Requirement>,
    /// (field, value, equal): `field=value` or `field!=value`.
    fields: Vec<(Field, String, bool)>,
}

/// What a field selector reads.
enum Field {
    Label(FieldLabel),
    /// A custom resource's selectable field: the field names on the way to it.
    Path(Vec<String>),
}

impl Field {
    /// The value as a selector compares it: a string, an integer or a boolean in text;
    /// an absent field is the empty string.
    fn value(&self, object: &Value) -> String {
        match self {
            Field::Label(label) => (label.value)(object),
            Field::Path(names) => match names.iter().try_fold(object, |at, name| at.get(name)) {
                Some(Value::String(s)) => s.clone(),
                Some(value @ (Value::Number(_) | Value::Bool(_))) => value.to_string(),
                _ => String::new(),
            },
        }
    }

    fn is_metadata(&self) -> bool {
        matches!(self, Field::Label(label) if label.name.starts_with("metadata."))
    }
}

/// What a field label reads: the object's metadata, or one its kind names.
const METADATA: [FieldLabel; 2] = [
    FieldLabel { name: "metadata.name", value: |o| o["metadata"]["name"].as_str().unwrap_or_default().into() },
    FieldLabel {
        name: "metadata.namespace",
        value: |o| o["metadata"]["namespace"].as_str().unwrap_or_default().into(),
    },
];

impl Selector {
    pub fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        strategy: &Arc<dyn Strategy>,
    ) -> Result<Selector, ApiError> {
        let mut selector = Selector::default();
        if let Some(labels) = labels.filter(|l| !l.trim().is_empty()) {
            for part in split_top_level(labels) {
                selector.labels.push(parse_requirement(part.trim())?);
            }
        }
        for part in fields.unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector: {part:?}")));
            };
            let field = field.trim();
            let label = METADATA.iter().chain(strategy.field_labels()).find(|l| l.name == field);
            let selectable = strategy.selectable_fields().iter().find(|(name, _)| name == field);
            let found = match (label, selectable) {
                (Some(label), _) => Some(Field::Label(*label)),
                (None, Some((_, names))) => Some(Field::Path(names.clone())),
                (None, None) => None,
            };
            let Some(found) = found else {
                if strategy.field_labels().is_empty() && strategy.selectable_fields().is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )));
                }
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            };
            selector.fields.push((found, value.trim().to_string(), equal));
        }
        Ok(selector)
    }

    /// A metav1.LabelSelector object (matchLabels, matchExpressions); None for one that
    /// selects nothing (empty, or not understood).
    pub fn of_label_selector(selector: &Value) -> Option<Selector> {
        let text = super::registry::columns::selector_string(selector);
        if text.is_empty() {
            return None;
        }
        let mut parsed = Selector::default();
        for part in split_top_level(&text) {
            parsed.labels.push(parse_requirement(part.trim()).ok()?);
        }
        Some(parsed)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether the selector decides from an object's name and namespace alone (nothing but
    /// field selectors on its metadata): a watch then needs not read the object.
    pub fn on_identity_only(&self) -> bool {
        self.labels.is_empty() && self.fields.iter().all(|(field, _, _)| field.is_metadata())
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        labels_match && self.fields.iter().all(|(field, value, equal)| (field.value(object) == *value) == *equal)
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {part:?}"));
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().into()));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key.trim().into(), value.trim().into()));
    }
    let set = |rest: &str| -> Result<Vec<String>, ApiError> {
        let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
        Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
    };
    if let Some((key, rest)) = part.split_once(" notin ") {
        return Ok(Requirement::NotIn(key.trim().into(), set(rest)?));
    }
    if let Some((key, rest)) = part.split_once(" in ") {
        return Ok(Requirement::In(key.trim().into(), set(rest)?));
    }
    if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) && !part.is_empty() {
        return Ok(Requirement::Exists(part.into()));
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::Registry;
    use serde_json::json;

    #[test]
    fn label_requirements() {
        let pod = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front"}}});
        let pods = Registry::builtin().find("", "v1", "pods").unwrap();
        let matches = |l: &str| Selector::parse(Some(l), None, &pods).unwrap().matches(&pod);
        assert!(matches("app=web"));
        assert!(matches("app==web,tier"));
        assert!(matches("app in (web, db),!gone"));
        assert!(matches("tier notin (back)"));
        assert!(!matches("app!=web"));
        assert!(!matches("app in (db)"));
        assert!(!matches("tier,!app"));
        assert!(Selector::parse(Some("app in web"), None, &pods).is_err());
    }

    #[test]
    fn field_selectors_by_kind() {
        let pod = json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let registry = Registry::builtin();
        let pods = registry.find("", "v1", "pods").unwrap();
        let matches = |f: &str| Selector::parse(None, Some(f), &pods).unwrap().matches(&pod);
        assert!(matches("metadata.name=a,spec.nodeName=n1"));
        assert!(matches("status.phase!=Pending"));
        assert!(!matches("spec.nodeName="));
        let e = Selector::parse(None, Some("spec.image=x"), &pods).err().unwrap();
        assert_eq!(e.message, "field label not supported: spec.image");
        let events = registry.find("", "v1", "events").unwrap();
        let event = json!({"involvedObject": {"kind": "Pod", "name": "a"}});
        assert!(
            Selector::parse(None, Some("involvedObject.name=a,involvedObject.kind=Pod"), &events)
                .unwrap()
                .matches(&event)
        );
        let config_maps = registry.find("", "v1", "configmaps").unwrap();
        let e = Selector::parse(None, Some("data.x=y"), &config_maps).err().unwrap();
        assert_eq!(
            e.message,
            "\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }
}
