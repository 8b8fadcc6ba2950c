//! The three patch types kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch, which merges lists of objects by their merge key
//! (containers by name, ports by port, volumeMounts by mountPath, …) and takes `$patch`
//! directives.

use serde_json::{Map, Value};

use super::errors::ApiError;

pub enum PatchType {
    Merge,
    Json,
    StrategicMerge,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            // Server-side apply is not served.
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

pub fn apply(target: &Value, patch: &Value, kind: PatchType) -> Result<Value, ApiError> {
    match kind {
        PatchType::Merge => Ok(merge_patch(target, patch)),
        PatchType::Json => json_patch(target, patch),
        PatchType::StrategicMerge => Ok(strategic_merge(target, patch, "")),
    }
}

fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else { return patch.clone() };
    let mut result = target.as_object().cloned().unwrap_or_default();
    for (key, value) in patch {
        if value.is_null() {
            result.remove(key);
        } else {
            let merged = merge_patch(result.get(key).unwrap_or(&Value::Null), value);
            result.insert(key.clone(), merged);
        }
    }
    Value::Object(result)
}

/// The merge key of a list field, by the field's name (and, for `ports`, which kind of
/// port its items are).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

fn strategic_merge(target: &Value, patch: &Value, field: &str) -> Value {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            match patch.get("$patch").and_then(Value::as_str) {
                Some("replace") => return Value::Object(without_directives(patch)),
                Some("delete") => return Value::Null,
                _ => {}
            }
            let mut result = target.clone();
            for (key, value) in patch {
                if key.starts_with('$') {
                    continue;
                }
                if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(items)), Value::Array(gone)) = (result.get_mut(list), value) {
                        items.retain(|i| !gone.contains(i));
                    }
                    continue;
                }
                if value.is_null() {
                    result.remove(key);
                    continue;
                }
                let merged = match result.get(key) {
                    Some(current) => strategic_merge(current, value, key),
                    None => strip_directives(value),
                };
                result.insert(key.clone(), merged);
            }
            Value::Object(result)
        }
        (Value::Array(target), Value::Array(patch)) => {
            match merge_key(field, patch).or_else(|| merge_key(field, target)) {
                Some(key) => {
                    let mut result = target.clone();
                    for item in patch {
                        let id = item.get(key);
                        let position = id.and_then(|id| result.iter().position(|t| t.get(key) == Some(id)));
                        let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (position, deleting) {
                            (Some(i), true) => {
                                result.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => result[i] = strategic_merge(&result[i], item, ""),
                            (None, false) => result.push(strip_directives(item)),
                        }
                    }
                    Value::Array(result)
                }
                None => Value::Array(patch.iter().map(strip_directives).collect()),
            }
        }
        (_, patch) => strip_directives(patch),
    }
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect()
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(without_directives(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let operations = patch.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch is a list of operations"))?;
    let mut doc = target.clone();
    for (i, op) in operations.iter().enumerate() {
        let bad = |m: &str| ApiError::unprocessable_patch(format!("operation {i}: {m}"));
        let path = op["path"].as_str().ok_or_else(|| bad("path missing"))?;
        match op["op"].as_str().unwrap_or_default() {
            "add" => add(&mut doc, path, op.get("value").cloned().ok_or_else(|| bad("value missing"))?)
                .map_err(|m| bad(&m))?,
            "remove" => {
                remove(&mut doc, path).map_err(|m| bad(&m))?;
            }
            "replace" => {
                remove(&mut doc, path).map_err(|m| bad(&m))?;
                add(&mut doc, path, op.get("value").cloned().ok_or_else(|| bad("value missing"))?)
                    .map_err(|m| bad(&m))?;
            }
            "move" => {
                let from = op["from"].as_str().ok_or_else(|| bad("from missing"))?;
                let value = remove(&mut doc, from).map_err(|m| bad(&m))?;
                add(&mut doc, path, value).map_err(|m| bad(&m))?;
            }
            "copy" => {
                let from = op["from"].as_str().ok_or_else(|| bad("from missing"))?;
                let value = doc.pointer(from).cloned().ok_or_else(|| bad(&format!("{from} does not exist")))?;
                add(&mut doc, path, value).map_err(|m| bad(&m))?;
            }
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(bad(&format!("test of {path} failed")));
                }
            }
            other => return Err(bad(&format!("unknown op {other:?}"))),
        }
    }
    Ok(doc)
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| format!("bad path {path:?}"))?;
    Ok((parent.to_string(), last.replace("~1", "/").replace("~0", "~")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index =
                if last == "-" { items.len() } else { last.parse().map_err(|_| format!("bad index {last:?}"))? };
            if index > items.len() {
                return Err(format!("index {index} out of range"));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("{parent} does not exist")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(|| format!("{path} does not exist")),
        Some(Value::Array(items)) => {
            let index: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
            if index >= items.len() {
                return Err(format!("{path} does not exist"));
            }
            Ok(items.remove(index))
        }
        _ => Err(format!("{parent} does not exist")),
    }
}

impl ApiError {
    fn unprocessable_patch(message: String) -> ApiError {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the JSON patch could not be applied: {message}"),
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let target = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let patched = apply(&target, &json!({"b": {"c": null, "e": 4}, "l": [3]}), PatchType::Merge).unwrap();
        assert_eq!(patched, json!({"a": 1, "b": {"d": 3, "e": 4}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_by_key() {
        let target = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "y"}
        ], "tolerations": [{"key": "t"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [
                {"name": "a", "image": "x2", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 81}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "z"}
            ],
            "tolerations": [{"key": "u"}]
        }});
        let patched = apply(&target, &patch, PatchType::StrategicMerge).unwrap();
        assert_eq!(
            patched,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80}, {"containerPort": 81}]},
                {"name": "c", "image": "z"}
            ], "tolerations": [{"key": "u"}]}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let target = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 2]});
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/l/0", "value": 9},
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "test", "path": "/l/1", "value": 2}
        ]);
        assert_eq!(
            apply(&target, &patch, PatchType::Json).unwrap(),
            json!({"metadata": {"labels": {"b": "2"}}, "l": [9, 2, 3]})
        );
        let failing = json!([{"op": "remove", "path": "/nope"}]);
        let e = apply(&target, &failing, PatchType::Json).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("operation 0: /nope does not exist"), "{}", e.message);
    }
}
