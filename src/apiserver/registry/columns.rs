//! The columns of `kubectl get` (kube-apiserver's printers): the cells every kind shares
//! (name, age, labels, containers), and the default table of a kind with none of its own.

use serde_json::{Value, json};

/// One column of a kind's Table.
#[derive(Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `boolean` or `date`, as Table column definitions say.
    pub kind: &'static str,
    /// 0: always shown; 1: with `-o wide`.
    pub priority: u8,
    pub cell: fn(&Value) -> Value,
}

impl Column {
    /// The column's metav1.TableColumnDefinition.
    pub fn definition(&self) -> Value {
        let format = if self.name == "Name" { "name" } else { "" };
        json!({"name": self.name, "type": self.kind, "format": format, "description": "", "priority": self.priority})
    }
}

pub const fn string(name: &'static str, priority: u8, cell: fn(&Value) -> Value) -> Column {
    Column { name, kind: "string", priority, cell }
}

pub const fn integer(name: &'static str, priority: u8, cell: fn(&Value) -> Value) -> Column {
    Column { name, kind: "integer", priority, cell }
}

pub const NAME: Column = Column { name: "Name", kind: "string", priority: 0, cell: name };
pub const AGE: Column = Column { name: "Age", kind: "string", priority: 0, cell: age };

/// A kind with no printer of its own: `NAME  CREATED AT`.
pub fn default() -> Vec<Column> {
    vec![
        NAME,
        Column { name: "Created At", kind: "date", priority: 0, cell: |o| o["metadata"]["creationTimestamp"].clone() },
    ]
}

pub fn name(o: &Value) -> Value {
    o["metadata"]["name"].clone()
}

pub fn age(o: &Value) -> Value {
    o["metadata"]["creationTimestamp"].as_str().map_or("<unknown>".into(), |t| human_age(t).into())
}

/// A string, or `<none>` when empty or absent.
pub fn text(v: &Value) -> Value {
    match v {
        Value::String(s) if !s.is_empty() => v.clone(),
        _ => "<none>".into(),
    }
}

/// An int-or-string field as text, or `absent`.
pub fn int_or_string(v: &Value, absent: &str) -> Value {
    match v {
        Value::Null => absent.into(),
        Value::String(s) => s.clone().into(),
        other => other.to_string().into(),
    }
}

/// A binding's subjects of `kind`, joined by `, ` (service accounts as `namespace/name`).
pub fn subjects(binding: &Value, kind: &str) -> Value {
    let names: Vec<String> = binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == kind)
        .map(|s| match (kind, s["namespace"].as_str()) {
            ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s["name"].as_str().unwrap_or("")),
            _ => s["name"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    names.join(", ").into()
}

/// An integer field, 0 when absent.
pub fn count(v: &Value) -> Value {
    v.as_i64().unwrap_or(0).into()
}

/// A label map as `k=v,k2=v2` (sorted), or `<none>`.
pub fn labels(labels: &Value) -> Value {
    let pairs: Vec<String> =
        labels.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    if pairs.is_empty() { "<none>".into() } else { pairs.join(",").into() }
}

/// A LabelSelector as its selector string (metav1.FormatLabelSelector), or `<none>`.
pub fn selector(selector: &Value) -> Value {
    let text = selector_string(selector);
    if text.is_empty() { "<none>".into() } else { text.into() }
}

/// A LabelSelector as kube-apiserver writes it: `k=v`, `k in (a,b)`, `k notin (a)`, `k`,
/// `!k`, joined by commas, matchLabels first.
pub fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = expression["key"].as_str().unwrap_or("");
        let values: Vec<&str> =
            expression["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match expression["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    parts.join(",")
}

/// `ready/desired` replicas, as deployments and stateful sets show them.
pub const READY_OF_DESIRED: Column = Column {
    name: "Ready",
    kind: "string",
    priority: 0,
    cell: |o| {
        let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
        format!("{ready}/{}", o["spec"]["replicas"].as_i64().unwrap_or(1)).into()
    },
};

/// Desired, Current and Ready replicas, as replica sets and replication controllers show
/// them.
pub const REPLICA_COUNTS: [Column; 3] = [
    Column {
        name: "Desired",
        kind: "integer",
        priority: 0,
        cell: |o| o["spec"]["replicas"].as_i64().unwrap_or(1).into(),
    },
    Column { name: "Current", kind: "integer", priority: 0, cell: |o| count(&o["status"]["replicas"]) },
    Column { name: "Ready", kind: "integer", priority: 0, cell: |o| count(&o["status"]["readyReplicas"]) },
];

/// The wide Containers and Images of a workload's pod template (`spec.template`).
pub const TEMPLATE_CONTAINERS: [Column; 2] = [
    Column {
        name: "Containers",
        kind: "string",
        priority: 1,
        cell: |o| template_containers(&o["spec"]["template"], "name"),
    },
    Column {
        name: "Images",
        kind: "string",
        priority: 1,
        cell: |o| template_containers(&o["spec"]["template"], "image"),
    },
];

/// The wide Selector of a workload (`spec.selector`).
pub const SELECTOR: Column =
    Column { name: "Selector", kind: "string", priority: 1, cell: |o| selector(&o["spec"]["selector"]) };

/// The `field` (name or image) of a pod template's containers, joined by commas.
pub fn template_containers(template: &Value, field: &str) -> Value {
    let values: Vec<&str> =
        template["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c[field].as_str()).collect();
    values.join(",").into()
}

fn parse_time(at: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// How long ago RFC 3339 time `at` was, as kubectl prints it (`45s`, `3m`, `5h`, `2d`).
pub fn human_age(at: &str) -> String {
    match parse_time(at) {
        Some(then) => human_duration((time::OffsetDateTime::now_utc() - then).whole_seconds()),
        None => "<unknown>".into(),
    }
}

/// How long from RFC 3339 time `start` to `end` (a job's run).
pub fn human_duration_between(start: &str, end: &str) -> String {
    match (parse_time(start), parse_time(end)) {
        (Some(start), Some(end)) => human_duration((end - start).whole_seconds()),
        _ => "<unknown>".into(),
    }
}

/// apimachinery's duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 600 && s % 60 == 0 => format!("{}m", s / 60),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 && s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 && s % 86400 / 3600 == 0 => format!("{}d", s / 86400),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        s if s < 2 * 365 * 86400 => format!("{}d", s / 86400),
        s if s < 8 * 365 * 86400 => format!("{}y{}d", s / (365 * 86400), s % (365 * 86400) / 86400),
        s => format!("{}y", s / (365 * 86400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ages_and_selectors() {
        let now = crate::apiserver::objects::now();
        assert!(matches!(human_age(&now).as_str(), "0s" | "1s"), "{}", human_age(&now));
        assert_eq!(human_age("not a time"), "<unknown>");
        let selector = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "x", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&selector), "app=web,tier in (a,b),!x");
        assert_eq!(super::selector(&json!({})), "<none>");
    }
}
