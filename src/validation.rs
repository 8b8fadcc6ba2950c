//! apimachinery's validation of names, labels and annotations (k8s.io/apimachinery
//! `pkg/util/validation` and `pkg/api/validation`), with its messages: what the API server
//! checks on every object and what `podctl run -f` checks before a name reaches a path.
//!
//! Each check returns the problems found as causes: the field's path, and
//! `Invalid value: "…": why`, as kube-apiserver's field errors read.

use std::collections::BTreeMap;

/// A problem with one field: its path and what is wrong.
pub type Cause = (String, String);

const DNS_LABEL_MAX: usize = 63;
const DNS_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// kube-apiserver's TotalAnnotationSizeLimitB.
const ANNOTATIONS_MAX_BYTES: usize = 256 << 10;

const DNS_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const QUALIFIED_NAME_SHAPE: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and \
must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. \
'example.com/MyName')";
const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', \
'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// What is wrong with `name` as an RFC 1123 label (namespace, service and container
/// names); empty when nothing is.
pub fn dns_label(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if name.len() > DNS_LABEL_MAX {
        problems.push(too_long(DNS_LABEL_MAX));
    }
    if !label_shaped(name) {
        problems.push(DNS_LABEL_RULE.to_string());
    }
    problems
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn label_shaped(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// What is wrong with `name` as a path segment (RBAC object names, `system:foo` among
/// them): not `.` or `..`, no `/` or `%`.
pub fn path_segment_name(name: &str) -> Vec<String> {
    match name {
        "." | ".." => vec![format!("may not be '{name}'")],
        _ if name.contains('/') => vec!["may not contain '/'".into()],
        _ if name.contains('%') => vec!["may not contain '%'".into()],
        _ => vec![],
    }
}

/// What is wrong with `name` as an RFC 1123 subdomain (most object names).
pub fn dns_subdomain(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if name.len() > DNS_SUBDOMAIN_MAX {
        problems.push(too_long(DNS_SUBDOMAIN_MAX));
    }
    if !name.split('.').all(label_shaped) {
        problems.push(DNS_SUBDOMAIN_RULE.to_string());
    }
    problems
}

fn qualified_name_part(name: &str) -> bool {
    let inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|&b| inner(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// What is wrong with `key` as a qualified name (label and annotation keys): an optional
/// DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub fn qualified_name(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (prefix, name) = match parts[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => return vec![QUALIFIED_NAME_SHAPE.to_string()],
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else {
            problems.extend(dns_subdomain(prefix).into_iter().map(|p| format!("prefix part {p}")));
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        problems.push(format!("name part {}", too_long(QUALIFIED_NAME_MAX)));
    }
    if !name.is_empty() && !qualified_name_part(name) {
        problems.push(QUALIFIED_NAME_RULE.to_string());
    }
    problems
}

/// What is wrong with `value` as a label value: empty, or a qualified name's name part.
pub fn label_value(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        problems.push(too_long(LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !qualified_name_part(value) {
        problems.push(LABEL_VALUE_RULE.to_string());
    }
    problems
}

fn invalid(path: &str, value: &str, problems: Vec<String>) -> Vec<Cause> {
    let shown = value.replace('\\', "\\\\").replace('"', "\\\"");
    problems.into_iter().map(|why| (path.to_string(), format!("Invalid value: \"{shown}\": {why}"))).collect()
}

/// The causes for `value` at `path` under `check` (one of the checks above).
pub fn check(path: &str, value: &str, check: fn(&str) -> Vec<String>) -> Vec<Cause> {
    invalid(path, value, check(value))
}

/// `metadata.labels`: every key a qualified name, every value a label value.
pub fn labels(labels: &BTreeMap<String, String>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (key, value) in labels {
        causes.extend(invalid(path, key, qualified_name(key)));
        causes.extend(invalid(&format!("{path}[{key}]"), value, label_value(value)));
    }
    causes
}

/// `metadata.annotations`: every key a qualified name (case aside), and 256 KiB in all.
pub fn annotations(annotations: &BTreeMap<String, String>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut size = 0;
    for (key, value) in annotations {
        causes.extend(invalid(path, key, qualified_name(&key.to_lowercase())));
        size += key.len() + value.len();
    }
    if size > ANNOTATIONS_MAX_BYTES {
        causes.push((path.to_string(), format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes")));
    }
    causes
}

/// The names in a pod spec that become paths, cgroups and log directories: container and
/// volume names are RFC 1123 labels, each used once.
pub fn pod_spec_names(spec: &k8s_openapi::api::core::v1::PodSpec, path: &str) -> Vec<Cause> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("{path}.initContainers[{i}]"), &c.name));
    let main = spec.containers.iter().enumerate().map(|(i, c)| (format!("{path}.containers[{i}]"), &c.name));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("{path}.ephemeralContainers[{i}]"), &c.name));
    let volumes = spec.volumes.iter().flatten().enumerate().map(|(i, v)| (format!("{path}.volumes[{i}]"), &v.name));
    let mut causes = unique_labels(init.chain(main).chain(ephemeral));
    causes.extend(unique_labels(volumes));
    causes
}

/// Each `(field, name)`'s `.name` an RFC 1123 label, none twice.
fn unique_labels<'a>(names: impl Iterator<Item = (String, &'a String)>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (field, name) in names {
        let field = format!("{field}.name");
        let problems = dns_label(name);
        if problems.is_empty() && seen.contains(&name.as_str()) {
            causes.push((field, format!("Duplicate value: \"{name}\"")));
        } else {
            causes.extend(invalid(&field, name, problems));
        }
        seen.push(name);
    }
    causes
}

/// The paths in `given` that the typed round trip `known` dropped. Values the type keeps
/// as free-form (labels, data) come back whole, so only real unknown fields show.
pub fn collect_unknown(given: &serde_json::Value, known: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (given, known) {
        (Value::Object(given), Value::Object(known)) => {
            for (key, value) in given {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match known.get(key) {
                    None if !value.is_null() => out.push(here),
                    None => {}
                    Some(k) => collect_unknown(value, k, &here, out),
                }
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (g, k)) in given.iter().zip(known).enumerate() {
                collect_unknown(g, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns_label("web-1").is_empty());
        for bad in ["", "Web", "-a", "a-", "a.b", "../../x", &"a".repeat(64)] {
            assert!(!dns_label(bad).is_empty(), "{bad:?}");
        }
        assert!(dns_subdomain("a.b-c.d").is_empty());
        for bad in ["a..b", ".a", "a/b", "A"] {
            assert!(!dns_subdomain(bad).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for good in ["app", "app.kubernetes.io/name", "a_b.c-d", "example.com/X"] {
            assert!(qualified_name(good).is_empty(), "{good:?}");
        }
        assert_eq!(qualified_name("a/b/c"), [QUALIFIED_NAME_SHAPE]);
        assert_eq!(qualified_name("/x"), ["prefix part must be non-empty"]);
        assert!(qualified_name("Example.com/x")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
        assert!(qualified_name(&"n".repeat(64))[0].contains("no more than 63"));
        assert!(!qualified_name("_x").is_empty());
        assert!(label_value("").is_empty() && label_value("v1.2_x").is_empty());
        assert!(!label_value("a\0b").is_empty() && !label_value("a b").is_empty() && !label_value("-a").is_empty());
        let map = BTreeMap::from([("a/b/c".to_string(), "ok".to_string()), ("k".to_string(), "x\0".to_string())]);
        let causes = labels(&map, "metadata.labels");
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(causes[0].0, "metadata.labels");
        assert!(causes[0].1.starts_with("Invalid value: \"a/b/c\": a qualified name"), "{causes:?}");
        assert_eq!(causes[1].0, "metadata.labels[k]");
    }

    #[test]
    fn annotations_are_bounded() {
        let big = BTreeMap::from([("a".to_string(), "x".repeat(ANNOTATIONS_MAX_BYTES))]);
        assert!(annotations(&big, "metadata.annotations")[0].1.contains("at most 262144 bytes"));
        let upper = BTreeMap::from([("Example.com/Key".to_string(), String::new())]);
        assert!(annotations(&upper, "metadata.annotations").is_empty());
    }

    #[test]
    fn pod_spec_names_become_paths() {
        let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(serde_json::json!({
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "../../x"}, {"name": "setup"}],
            "volumes": [{"name": "Data"}],
        }))
        .unwrap();
        let causes = pod_spec_names(&spec, "spec");
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["spec.containers[0].name", "spec.containers[1].name", "spec.volumes[0].name"]);
        assert!(causes[1].1.starts_with("Duplicate value"));
    }
}
