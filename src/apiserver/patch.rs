//! The three patch types kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch (`strategic`), which merges lists by the merge keys the
//! types' schemas declare.

mod strategic;

use serde_json::Value;

use super::errors::ApiError;
use super::openapi;

const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";

pub enum PatchType {
    Merge,
    Json,
    StrategicMerge,
}

impl PatchType {
    /// Whether a PATCH is a server-side apply (`managed`), not a patch.
    pub fn is_apply(content_type: &str) -> bool {
        content_type.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml"
    }

    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            STRATEGIC_MERGE_PATCH => Ok(PatchType::StrategicMerge),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// `patch` applied to `target`, an object of `kind` in `group`/`version` (whose OpenAPI
/// definition strategic merge patch needs: custom resources have none).
pub fn apply(
    target: &Value,
    patch: &Value,
    patch_type: PatchType,
    (group, version, kind): (&str, &str, &str),
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Merge => Ok(merge_patch(target, patch)),
        PatchType::Json => json_patch(target, patch),
        PatchType::StrategicMerge => {
            let index = openapi::index();
            let definition = index
                .kind(group, version, kind)
                .ok_or_else(|| ApiError::unsupported_media_type(STRATEGIC_MERGE_PATCH))?;
            strategic::apply(index, definition, target, patch).map_err(|e| match e.code {
                400 => ApiError::bad_request(e.message),
                422 => ApiError::unprocessable_patch(e.message),
                _ => ApiError::internal(e.message),
            })
        }
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

fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let operations = patch.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch is a list of operations"))?;
    let mut doc = target.clone();
    for (i, op) in operations.iter().enumerate() {
        let bad =
            |m: &str| ApiError::unprocessable_patch(format!("the JSON patch could not be applied: operation {i}: {m}"));
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
        ApiError { code: 422, reason: "Invalid", message, details: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let target = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let patched =
            apply(&target, &json!({"b": {"c": null, "e": 4}, "l": [3]}), PatchType::Merge, ("", "v1", "ConfigMap"))
                .unwrap();
        assert_eq!(patched, json!({"a": 1, "b": {"d": 3, "e": 4}, "l": [3]}));
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
            apply(&target, &patch, PatchType::Json, ("", "v1", "ConfigMap")).unwrap(),
            json!({"metadata": {"labels": {"b": "2"}}, "l": [9, 2, 3]})
        );
        let failing = json!([{"op": "remove", "path": "/nope"}]);
        let e = apply(&target, &failing, PatchType::Json, ("", "v1", "ConfigMap")).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("operation 0: /nope does not exist"), "{}", e.message);
    }
}
