//! Strategic merge patch, as kube-apiserver 1.33 applies it (apimachinery's
//! `strategicpatch.StrategicMergeMapPatch`): maps merge, lists are merged by their merge
//! key or replaced as the type's schema says (`x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`), and the directives `$patch`, `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are honoured.
//!
//! Order matters to `kubectl apply`: it converges only when the server orders a merged
//! list as kube-apiserver does — `$setElementOrder` first, then the patch's order, then
//! the live order, with live-only items (injected sidecars, defaults) kept next to their
//! live neighbours. The error texts are apimachinery's (Go `%v` formatting included),
//! with its HTTP codes: 400 for a malformed directive, 422 for lists of lists, 500 for
//! the rest.

use serde_json::{Map, Value};

use crate::apiserver::openapi::Index;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

#[derive(Debug, PartialEq, Eq)]
pub struct Error {
    pub code: u16,
    pub message: String,
}

impl Error {
    fn bad_request(message: &str) -> Error {
        Error { code: 400, message: message.to_string() }
    }

    fn internal(message: String) -> Error {
        Error { code: 500, message }
    }

    fn bad_argument(expected: &str, got: &Value) -> Error {
        Error::internal(format!("expected a {expected}, but received a {}", go_type(got)))
    }

    fn no_merge_key(item: &Value, key: &str) -> Error {
        Error::internal(format!("map: {} does not contain declared merge key: {key}", go(item)))
    }
}

/// Applies `patch` to `target`, an object of the definition `definition` in `index`.
pub fn apply(index: &Index, definition: &str, target: &Value, patch: &Value) -> Result<Value, Error> {
    let Value::Object(patch) = patch else {
        return Err(Error::bad_request("a strategic merge patch is a JSON object"));
    };
    let target = target.as_object().cloned().unwrap_or_default();
    let merger = Merger { index };
    Ok(Value::Object(merger.merge_map(target, patch.clone(), Schema::Definition(definition))?))
}

/// Where the schema of a map being merged is.
#[derive(Clone, Copy)]
enum Schema<'a> {
    Definition(&'a str),
    /// A map whose values are of this definition (if any).
    MapOf(Option<&'a str>),
    /// Not described: maps merge, lists are replaced.
    Unknown,
}

/// How one field merges.
struct FieldMeta<'a> {
    schema: Schema<'a>,
    merge: bool,
    replace: bool,
    merge_key: Option<&'a str>,
}

struct Merger<'a> {
    index: &'a Index,
}

impl<'a> Merger<'a> {
    fn lookup(&self, schema: Schema<'a>, name: &str) -> FieldMeta<'a> {
        let unknown = FieldMeta { schema: Schema::Unknown, merge: false, replace: false, merge_key: None };
        let field = match schema {
            Schema::Definition(definition) => self.index.field(definition, name),
            Schema::MapOf(values) => {
                return FieldMeta { schema: values.map_or(Schema::Unknown, Schema::Definition), ..unknown };
            }
            Schema::Unknown => None,
        };
        let Some(field) = field else { return unknown };
        let schema = match (field.definition.as_deref(), field.is_map) {
            (values, true) => Schema::MapOf(values),
            (Some(definition), false) => Schema::Definition(definition),
            (None, false) => Schema::Unknown,
        };
        // `retainKeys` only shapes the client's diff: the server honours `$retainKeys`
        // wherever it is.
        let strategies: Vec<&str> = field.patch_strategy.as_deref().unwrap_or("").split(',').collect();
        FieldMeta {
            schema,
            merge: strategies.contains(&"merge"),
            replace: strategies.contains(&"replace"),
            merge_key: field.merge_key.as_deref(),
        }
    }

    /// apimachinery's `mergeMap`: `$patch`, then `$retainKeys`, then every
    /// `$setElementOrder/…`, then the remaining keys.
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        schema: Schema<'a>,
    ) -> Result<Map<String, Value>, Error> {
        if let Some(directive) = patch.get(PATCH) {
            return match directive.as_str() {
                Some("replace") => {
                    patch.remove(PATCH);
                    Ok(patch)
                }
                Some("delete") => Ok(Map::new()),
                _ => Err(unknown_patch_type(directive, &patch)),
            };
        }
        if let Some(retained) = patch.remove(RETAIN_KEYS) {
            let Value::Array(retained) = retained else {
                return Err(Error::bad_request("invalid patch format of retainKeys"));
            };
            let retained: Vec<&str> = retained.iter().filter_map(Value::as_str).collect();
            let unlisted = patch.iter().any(|(key, value)| {
                !value.is_null()
                    && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                    && !key.starts_with(SET_ELEMENT_ORDER)
                    && !retained.contains(&key.as_str())
            });
            if unlisted {
                return Err(Error::bad_request("invalid patch format of retainKeys"));
            }
            original.retain(|key, _| retained.contains(&key.as_str()));
        }
        let orders: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
        for key in orders {
            let order = patch.remove(&key).unwrap_or_default();
            self.set_element_order(&mut original, &mut patch, &key, order, schema)?;
        }
        for (key, value) in patch {
            let (name, deleting_from_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                Some(rest) => {
                    let name = rest
                        .strip_prefix('/')
                        .ok_or_else(|| Error::bad_request("invalid patch format of primitive list"))?;
                    (name.to_string(), true)
                }
                None => (key, false),
            };
            if value.is_null() {
                original.remove(&name);
                continue;
            }
            let current = original.remove(&name);
            let merged = match (current, value) {
                // Deleting from a list that is not there (or is not a list) does nothing.
                (current, _) if deleting_from_list && !matches!(current, Some(Value::Array(_))) => current,
                (Some(Value::Object(current)), Value::Object(patch)) => {
                    let field = self.lookup(schema, &name);
                    match field.replace {
                        true => Some(Value::Object(patch)),
                        false => Some(Value::Object(self.merge_map(current, patch, field.schema)?)),
                    }
                }
                (Some(Value::Array(current)), Value::Array(patch)) => {
                    let field = self.lookup(schema, &name);
                    match field.merge || deleting_from_list {
                        true => Some(Value::Array(self.merge_list(current, patch, &field, deleting_from_list)?.0)),
                        false => Some(Value::Array(patch)),
                    }
                }
                (Some(current), value) if go_type(&current) == go_type(&value) => Some(value),
                // New, or of another type: taken without its nulls and directives.
                (_, value) => remove_directives(discard_nulls(value)),
            };
            if let Some(merged) = merged {
                original.insert(name, merged);
            }
        }
        Ok(original)
    }

    /// apimachinery's `mergeSlice`: the merged list, and the live list as the caller's Go
    /// slice of it sees it afterwards (see `set_element_order`).
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        field: &FieldMeta<'a>,
        deleting_from_list: bool,
    ) -> Result<(Vec<Value>, Vec<Value>), Error> {
        if original.is_empty() && patch.is_empty() {
            return Ok((original, Vec::new()));
        }
        if !element_kind(&original, &patch)?.is_object() {
            if deleting_from_list {
                let kept = original.iter().filter(|v| !patch.contains(v)).cloned().collect();
                return Ok((kept, original));
            }
            let mut merged: Vec<Value> = Vec::new();
            for value in original.iter().chain(&patch) {
                if !merged.contains(value) {
                    merged.push(value.clone());
                }
            }
            let (items, server_only) = merged.into_iter().partition(|v| patch.contains(v));
            return Ok((normalize(items, server_only, &patch, &original, None)?, original));
        }
        let key = field
            .merge_key
            .ok_or_else(|| Error::internal("cannot merge lists without merge key for struct".to_string()))?;
        // The live list as Go's slice header of it sees it: deletions shift its items
        // left in place and the first appends land in its free tail (apimachinery reads
        // it afterwards for `$setElementOrder`'s ordering).
        let mut seen = original;
        let mut live = seen.len();
        let mut clean = Vec::new();
        let mut replace = false;
        for item in patch {
            let Some(directive) = item.get(PATCH) else {
                clean.push(item);
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let id = merge_key_of(&item, key)?.clone();
                    while let Some(i) = seen[..live].iter().position(|e| e.get(key) == Some(&id)) {
                        for j in i..live - 1 {
                            seen[j] = seen[j + 1].clone();
                        }
                        live -= 1;
                    }
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(Error::internal("merging lists cannot yet be specified in the patch".to_string()));
                }
                _ => return Err(unknown_patch_type(directive, item.as_object().unwrap_or(&Map::new()))),
            }
        }
        if replace {
            for item in &clean {
                merge_key_of(item, key)?;
            }
            return Ok((clean, seen));
        }
        let after_deletions = seen[..live].to_vec();
        let mut merged = after_deletions.clone();
        for item in &clean {
            let id = merge_key_of(item, key)?;
            match merged.iter().position(|e| e.get(key) == Some(id)) {
                Some(i) => {
                    let current = match merged[i].take() {
                        Value::Object(current) => current,
                        _ => Map::new(),
                    };
                    let patch = item.as_object().cloned().unwrap_or_default();
                    merged[i] = Value::Object(self.merge_map(current, patch, field.schema)?);
                }
                None => {
                    if live < seen.len() {
                        seen[live] = item.clone();
                        live += 1;
                    }
                    merged.push(item.clone());
                }
            }
        }
        let ids: Vec<&Value> = clean.iter().filter_map(|item| item.get(key)).collect();
        let (items, server_only) = merged.into_iter().partition(|e| e.get(key).is_some_and(|id| ids.contains(&id)));
        Ok((normalize(items, server_only, &clean, &after_deletions, Some(key))?, seen))
    }

    /// `$setElementOrder/<list>`: merges the patch's list, if any, then orders the result
    /// as the directive says, live-only items kept after the live item they followed.
    fn set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        key: &str,
        order: Value,
        schema: Schema<'a>,
    ) -> Result<(), Error> {
        let Value::Array(order) = order else { return Err(Error::bad_argument("[]interface {}", &order)) };
        let name = key
            .strip_prefix(SET_ELEMENT_ORDER)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| Error::bad_request("invalid patch format of setElementOrder list"))?;
        let live = match original.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(Error::bad_argument("[]interface {}", other)),
        };
        let patched = match patch.get(name) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(Error::bad_argument("[]interface {}", other)),
        };
        let field = self.lookup(schema, name);
        let kind = element_kind(live.as_deref().unwrap_or_default(), patched.as_deref().unwrap_or_default());
        if live.is_none() && patched.is_none() {
            return Ok(());
        }
        let key = if kind?.is_object() { field.merge_key } else { None };
        if let Some(patched) = &patched {
            check_order(patched, &order, key)?;
        }
        let (merged, seen) = match (live, patched) {
            (Some(live), None) => (live.clone(), live),
            (None, Some(patched)) => (patched.into_iter().filter_map(remove_directives).collect(), Vec::new()),
            (Some(live), Some(patched)) if field.merge => self.merge_list(live, patched, &field, false)?,
            (Some(live), Some(patched)) => (patched, live),
            (None, None) => unreachable!("returned above"),
        };
        let mut ordered = Vec::with_capacity(order.len());
        for item in &order {
            ordered.push(id_of(item, key)?);
        }
        let mut items = Vec::new();
        let mut server_only = Vec::new();
        for item in merged {
            match ordered.contains(&id_of(&item, key)?) {
                true => items.push(item),
                false => server_only.push(item),
            }
        }
        original.insert(name.to_string(), Value::Array(normalize(items, server_only, &order, &seen, key)?));
        patch.remove(name);
        Ok(())
    }
}

/// Every item of the patch's list (bar directives) must be in `order`, in its order.
fn check_order(patched: &[Value], order: &[Value], key: Option<&str>) -> Result<(), Error> {
    if order.is_empty() || patched.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = patched.iter().filter(|item| item.get(PATCH).is_none()).collect();
    let mut next = 0;
    for wanted in order {
        if next < items.len() && id_of(items[next], key)? == id_of(wanted, key)? {
            next += 1;
        }
    }
    match next == items.len() {
        true => Ok(()),
        false => Err(Error::internal(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            go_list(patched),
            go_list(order)
        ))),
    }
}

/// apimachinery's `normalizeElementOrder`: the patch's items sorted by `patch_order`, the
/// live-only items by `server_order`, then merged so that a live-only item stays before a
/// patch item it preceded in `server_order`; items new to the server come as soon as
/// they are reached.
fn normalize(
    mut items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let patch_ids = ids(patch_order, key)?;
    let server_ids = ids(server_order, key)?;
    let position = |ids: &[&Value], item: &Value| -> Option<usize> {
        let id = id_of(item, key).ok()?;
        ids.iter().position(|i| *i == id)
    };
    ids(&items, key)?;
    ids(&server_only, key)?;
    items.sort_by_key(|item| position(&patch_ids, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| position(&server_ids, item).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = items.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        let take_left = match (position(&server_ids, l), position(&server_ids, r)) {
            (Some(li), Some(ri)) => li < ri,
            _ => false,
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out.extend(left);
    out.extend(right);
    Ok(out)
}

fn ids<'v>(list: &'v [Value], key: Option<&str>) -> Result<Vec<&'v Value>, Error> {
    list.iter().map(|item| id_of(item, key)).collect()
}

/// What identifies a list item: its merge key's value, or itself for primitives.
fn id_of<'v>(item: &'v Value, key: Option<&str>) -> Result<&'v Value, Error> {
    match key {
        Some(key) => merge_key_of(item, key),
        None => Ok(item),
    }
}

fn merge_key_of<'v>(item: &'v Value, key: &str) -> Result<&'v Value, Error> {
    match item {
        Value::Object(map) => map.get(key).ok_or_else(|| Error::no_merge_key(item, key)),
        other => Err(Error::bad_argument("map[string]interface {}", other)),
    }
}

/// The kind of the items of two lists, which must all be of one kind and not lists.
fn element_kind<'v>(original: &'v [Value], patch: &'v [Value]) -> Result<&'v Value, Error> {
    let mut items = original.iter().chain(patch);
    let first = items.next().ok_or_else(|| Error::internal("no elements in any of the given slices".to_string()))?;
    if first.is_array() {
        return Err(Error { code: 422, message: "lists of lists are not supported".to_string() });
    }
    if items.any(|item| go_type(item) != go_type(first)) {
        let lists = format!("[{} {}]", go_list(original), go_list(patch));
        return Err(Error::internal(format!("list element types are not identical: {lists}")));
    }
    Ok(first)
}

fn unknown_patch_type(directive: &Value, map: &Map<String, Value>) -> Error {
    Error::internal(format!("unknown patch type: {} in map: {}", go(directive), go_map(map)))
}

/// The value without the maps that hold a `$patch` (dropped from their maps and lists).
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(PATCH) => None,
        Value::Object(map) => {
            Some(Value::Object(map.into_iter().filter_map(|(k, v)| Some((k, remove_directives(v)?))).collect()))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(remove_directives).collect())),
        other => Some(other),
    }
}

/// The value without null map entries, at any depth (null list items stay).
fn discard_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, discard_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(discard_nulls).collect()),
        other => other,
    }
}

/// Go's dynamic type of a decoded JSON value: integers and floats differ.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's `%v` of a decoded JSON value, as apimachinery's messages print it.
fn go(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => go_list(items),
        Value::Object(map) => go_map(map),
        other => other.to_string(),
    }
}

fn go_list(items: &[Value]) -> String {
    format!("[{}]", items.iter().map(go).collect::<Vec<_>>().join(" "))
}

fn go_map(map: &Map<String, Value>) -> String {
    let mut entries: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{}", go(v))).collect();
    entries.sort();
    format!("map[{}]", entries.join(" "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// apimachinery's test type `MergeItem` (patch_test.go), as OpenAPI definitions.
    fn merge_item_index() -> Index {
        let item = json!({"$ref": "#/components/schemas/MergeItem"});
        let merging = |items: Value, strategy: &str| json!({"type": "array", "items": items, "x-kubernetes-patch-strategy": strategy, "x-kubernetes-patch-merge-key": "name"});
        let ints = json!({"type": "integer"});
        let definitions = json!({
            "MergeItem": {"properties": {
                "name": {"type": "string"}, "value": {"type": "string"}, "other": {"type": "string"},
                "mergingList": merging(item.clone(), "merge"),
                "nonMergingList": {"type": "array", "items": item},
                "mergingIntList": {"type": "array", "items": ints, "x-kubernetes-patch-strategy": "merge"},
                "nonMergingIntList": {"type": "array", "items": ints},
                "mergeItemPtr": merging(item.clone(), "merge"),
                "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
                "replacingItem": {"type": "object", "x-kubernetes-patch-strategy": "replace"},
                "retainKeysMap": {"allOf": [{"$ref": "#/components/schemas/RetainKeysMergeItem"}],
                                  "x-kubernetes-patch-strategy": "retainKeys"},
                "retainKeysMergingList": merging(item.clone(), "merge,retainKeys"),
            }},
            "RetainKeysMergeItem": {"properties": {
                "name": {"type": "string"}, "value": {"type": "string"}, "other": {"type": "string"},
                "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
                "mergingIntList": {"type": "array", "items": ints, "x-kubernetes-patch-strategy": "merge"},
                "mergingList": merging(item.clone(), "merge"),
                "nonMergingList": {"type": "array", "items": item},
            }},
        });
        Index::build(definitions.as_object().unwrap())
    }

    /// apimachinery's own cases (patch_test.go, in order-sensitive form) and a few worked
    /// from its algorithm: each `orig` patched with `patch` gives `want`, or fails with
    /// `error` (in part).
    const CASES: &str = r#"[
      {"name": "T1 new items placed by $setElementOrder",
       "orig": {"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
                 "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]},
       "want": {"mergingList": [{"name": 4, "value": 4}, {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}},
      {"name": "T2 add and delete in one list (Go slice aliasing)",
       "orig": {"mergingList": [{"name": 1}, {"name": 2, "other": "b"}, {"name": 4, "other": "c"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}], "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]},
       "want": {"mergingList": [{"name": 2, "other": "b"}, {"name": 4, "other": "c"}, {"name": 3}]}},
      {"name": "T3 add and delete, order kept",
       "orig": {"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
                 "mergingList": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}]},
       "want": {"mergingList": [{"name": 4, "value": 4}, {"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}]}},
      {"name": "T4 delete, order kept",
       "orig": {"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}], "mergingList": [{"name": 3, "$patch": "delete"}]},
       "want": {"mergingList": [{"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}]}},
      {"name": "T5 order only, a server-only item keeps its place",
       "orig": {"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 9}, {"name": 3, "value": 3}, {"name": 4, "value": 4}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]},
       "want": {"mergingList": [{"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 9}, {"name": 4, "value": 4}, {"name": 3, "value": 3}]}},
      {"name": "T6 order only, several server-only items",
       "orig": {"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 7}, {"name": 9}, {"name": 8}, {"name": 3, "value": 3}, {"name": 4, "value": 4}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]},
       "want": {"mergingList": [{"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 7}, {"name": 9}, {"name": 8}, {"name": 4, "value": 4}, {"name": 3, "value": 3}]}},
      {"name": "T6b server-only item last",
       "orig": {"mergingList": [{"name": 1}, {"name": 3}, {"name": 4}, {"name": 2}, {"name": 9}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}]},
       "want": {"mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}, {"name": 9}]}},
      {"name": "T7 primitives: add, order kept",
       "orig": {"mergingIntList": [1, 4, 2]},
       "patch": {"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]},
       "want": {"mergingIntList": [3, 1, 4, 2]}},
      {"name": "T8 primitives: order only",
       "orig": {"mergingIntList": [1, 2, 9, 3, 4]}, "patch": {"$setElementOrder/mergingIntList": [2, 1, 4, 3]},
       "want": {"mergingIntList": [2, 1, 9, 4, 3]}},
      {"name": "T8b primitives: order only, several server-only",
       "orig": {"mergingIntList": [1, 2, 7, 9, 8, 3, 4]}, "patch": {"$setElementOrder/mergingIntList": [2, 1, 4, 3]},
       "want": {"mergingIntList": [2, 1, 7, 9, 8, 4, 3]}},
      {"name": "T9 primitives: add and delete",
       "orig": {"mergingIntList": [1, 2, 3]},
       "patch": {"$setElementOrder/mergingIntList": [4, 2, 1], "mergingIntList": [4], "$deleteFromPrimitiveList/mergingIntList": [3]},
       "want": {"mergingIntList": [4, 2, 1]}},
      {"name": "T10 primitives: every duplicate deleted",
       "orig": {"mergingIntList": [1, 2, 3, 3, 4]},
       "patch": {"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]},
       "want": {"mergingIntList": [1, 2, 4]}},
      {"name": "T10b primitives: merged",
       "orig": {"mergingIntList": [1, 2, 4]}, "patch": {"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3]},
       "want": {"mergingIntList": [1, 2, 3, 4]}},
      {"name": "T11 duplicates ordered",
       "orig": {"mergingList": [{"name": 1}, {"name": 2, "value": "dup1"}, {"name": 3}, {"name": 2, "value": "dup2"}, {"name": 4}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}, {"name": 2}]},
       "want": {"mergingList": [{"name": 2, "value": "dup1"}, {"name": 2, "value": "dup2"}, {"name": 1}, {"name": 4}, {"name": 3}]}},
      {"name": "T11b primitive duplicates ordered",
       "orig": {"mergingIntList": [1, 2, 3, 2, 4]}, "patch": {"$setElementOrder/mergingIntList": [2, 1, 4, 3, 2]},
       "want": {"mergingIntList": [2, 2, 1, 4, 3]}},
      {"name": "T12 $setElementOrder names items that are nowhere",
       "orig": {"mergingList": [{"name": 1}, {"name": 3}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}], "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]},
       "want": {"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}},
      {"name": "T12b primitives named nowhere",
       "orig": {"mergingIntList": [1, 3]}, "patch": {"$setElementOrder/mergingIntList": [3, 2, 1]},
       "want": {"mergingIntList": [3, 1]}},
      {"name": "T13 order mismatch",
       "orig": {"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}], "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]},
       "error": "The order in patch list:\n[map[name:3 value:3] map[name:1 value:1]]\n doesn't match $setElementOrder list:\n[map[name:1] map[name:2] map[name:3]]\n"},
      {"name": "T13b primitive order mismatch",
       "orig": {"mergingIntList": [1, 3, 2]}, "patch": {"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]},
       "error": "doesn't match"},
      {"name": "T14 missing merge key",
       "orig": {"mergingList": [{"name": 1, "value": "a"}]}, "patch": {"mergingList": [{"value": "b"}]},
       "error": "map: map[value:b] does not contain declared merge key: name"},
      {"name": "T15 delete a value that is not there",
       "orig": {"mergingIntList": [1, 2]}, "patch": {"$deleteFromPrimitiveList/mergingIntList": [3]}, "want": {"mergingIntList": [1, 2]}},
      {"name": "T15b delete from a null list",
       "orig": {"mergingIntList": null}, "patch": {"$deleteFromPrimitiveList/mergingIntList": [3]}, "want": {"mergingIntList": null}},
      {"name": "T15c delete from an absent list",
       "orig": {"foo": ["bar"]}, "patch": {"$deleteFromPrimitiveList/mergingIntList": [3]}, "want": {"foo": ["bar"]}},
      {"name": "T15d delete a value",
       "orig": {"mergingIntList": [1, 2, 3]}, "patch": {"$deleteFromPrimitiveList/mergingIntList": [2]}, "want": {"mergingIntList": [1, 3]}},
      {"name": "T15e delete from a list that is not merged",
       "orig": {"nonMergingIntList": [1, 2, 3]}, "patch": {"$deleteFromPrimitiveList/nonMergingIntList": [2]}, "want": {"nonMergingIntList": [1, 3]}},
      {"name": "T16 a merge list in a merge list",
       "orig": {"mergingList": [{"name": 1, "other": "a", "mergingList": [{"name": 1}, {"name": 2, "value": 2}]}, {"name": 2, "other": "b"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                 "mergingList": [{"name": 1, "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}], "mergingList": [{"name": 1, "value": 1}]}]},
       "want": {"mergingList": [{"name": 1, "other": "a", "mergingList": [{"name": 1, "value": 1}, {"name": 2, "value": 2}]}, {"name": 2, "other": "b"}]}},
      {"name": "T17 a list that is not merged, in a merge list",
       "orig": {"mergingList": [{"name": 1, "other": "a", "nonMergingList": [{"name": 1}, {"name": 2, "value": 2}]}, {"name": 2, "other": "b"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}], "mergingList": [{"name": 1, "nonMergingList": [{"name": 1, "value": 1}]}]},
       "want": {"mergingList": [{"name": 1, "other": "a", "nonMergingList": [{"name": 1, "value": 1}]}, {"name": 2, "other": "b"}]}},
      {"name": "T18 $retainKeys clears a defaulted field",
       "orig": {"retainKeysMap": {"value": "foo"}}, "patch": {"retainKeysMap": {"$retainKeys": ["other"], "other": "bar"}},
       "want": {"retainKeysMap": {"other": "bar"}}},
      {"name": "T18b $retainKeys with a change",
       "orig": {"retainKeysMap": {"name": "type1", "value": "foo"}},
       "patch": {"retainKeysMap": {"$retainKeys": ["name", "other"], "name": "type2", "other": "bar"}},
       "want": {"retainKeysMap": {"name": "type2", "other": "bar"}}},
      {"name": "T18c $retainKeys only",
       "orig": {"retainKeysMap": {"name": "foo", "value": "bar", "other": "a"}}, "patch": {"retainKeysMap": {"$retainKeys": ["name", "value"]}},
       "want": {"retainKeysMap": {"name": "foo", "value": "bar"}}},
      {"name": "T18d $retainKeys and a deletion",
       "orig": {"retainKeysMap": {"name": "foo", "value": "bar", "other": "a"}}, "patch": {"retainKeysMap": {"$retainKeys": ["name"], "value": null}},
       "want": {"retainKeysMap": {"name": "foo"}}},
      {"name": "T18e a key missing from $retainKeys",
       "orig": {"retainKeysMap": {"name": "foo"}}, "patch": {"retainKeysMap": {"$retainKeys": ["name"], "value": "x"}},
       "error": "invalid patch format of retainKeys"},
      {"name": "T18f no $retainKeys: a normal merge",
       "orig": {"retainKeysMap": {"name": "foo", "value": "a"}}, "patch": {"retainKeysMap": {"value": null}},
       "want": {"retainKeysMap": {"name": "foo"}}},
      {"name": "T19 $retainKeys in a merge list item",
       "orig": {"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a", "other": "x"}]},
       "patch": {"$setElementOrder/retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}],
                 "retainKeysMergingList": [{"$retainKeys": ["name", "value"], "name": "foo"}]},
       "want": {"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}},
      {"name": "T19b $retainKeys and a deletion in a merge list item",
       "orig": {"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a", "other": "x"}]},
       "patch": {"$setElementOrder/retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}],
                 "retainKeysMergingList": [{"$retainKeys": ["name"], "name": "foo", "value": null}]},
       "want": {"retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}]}},
      {"name": "T20 $patch delete of a map",
       "orig": {"simpleMap": {"key1": 1, "key2": 1}}, "patch": {"simpleMap": {"$patch": "delete"}}, "want": {"simpleMap": {}}},
      {"name": "T20b $patch replace of a list",
       "orig": {"mergingList": [{"name": 1}, {"name": 2}]}, "patch": {"mergingList": [{"$patch": "replace"}]}, "want": {"mergingList": []}},
      {"name": "T20c $patch replace at the top",
       "orig": {"name": 1, "value": 1}, "patch": {"$patch": "replace"}, "want": {}},
      {"name": "T20d $patch replace at the top with content",
       "orig": {"name": 1, "value": 1}, "patch": {"$patch": "replace", "other": "a"}, "want": {"other": "a"}},
      {"name": "T20e $patch delete of duplicates",
       "orig": {"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]},
       "patch": {"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]},
       "want": {"mergingList": [{"name": 2, "value": "a"}]}},
      {"name": "T20f empty lists",
       "orig": {"mergingList": []}, "patch": {"mergingList": []}, "want": {"mergingList": []}},
      {"name": "T20g primitives: a set union",
       "orig": {"mergingIntList": [1, 2]}, "patch": {"mergingIntList": [2, 3]}, "want": {"mergingIntList": [1, 2, 3]}},
      {"name": "T20h an unknown $patch",
       "orig": {"simpleMap": {"a": "b"}}, "patch": {"simpleMap": {"$patch": "foo", "name": 1}},
       "error": "unknown patch type: foo in map: map[$patch:foo name:1]"},
      {"name": "T20i $patch merge in a list",
       "orig": {"mergingList": [{"name": 1}]}, "patch": {"mergingList": [{"name": 1, "$patch": "merge"}]},
       "error": "merging lists cannot yet be specified in the patch"},
      {"name": "T21 directives on an absent list",
       "orig": {"name": "hi"}, "patch": {"mergingList": [{"name": "hello"}, {"$patch": "delete", "name": "doesntexist"}]},
       "want": {"name": "hi", "mergingList": [{"name": "hello"}]}},
      {"name": "T21b order names an item that is nowhere",
       "orig": {"name": "hi", "mergingList": [{"name": "hello2"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": "hello"}, {"name": "doesntexist"}], "mergingList": [{"name": "hello"}]},
       "want": {"name": "hi", "mergingList": [{"name": "hello"}, {"name": "hello2"}]}},
      {"name": "T22 delete and reorder in one list, reorder in another",
       "orig": {"mergingList": [{"name": "a", "value": "a"}, {"name": "b", "value": "b"}], "mergeItemPtr": [{"name": "c", "value": "c"}, {"name": "d", "value": "d"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": "b"}], "$setElementOrder/mergeItemPtr": [{"name": "d"}, {"name": "c"}],
                 "mergingList": [{"$patch": "delete", "name": "a"}]},
       "want": {"mergingList": [{"name": "b", "value": "b"}], "mergeItemPtr": [{"name": "d", "value": "d"}, {"name": "c", "value": "c"}]}},
      {"name": "T23 nulls delete, set and are dropped",
       "orig": {"name": 2}, "patch": {"name": 1, "value": 1, "other": null}, "want": {"name": 1, "value": 1}},
      {"name": "T23b a null deletes",
       "orig": {"name": "original-name", "value": "original-value", "other": "current-other"},
       "patch": {"name": "modified-name", "value": null}, "want": {"name": "modified-name", "other": "current-other"}},
      {"name": "T23c nulls dropped from a new subtree",
       "orig": {}, "patch": {"complex_nullable": [{"inner_one": {"key_one": "foo", "key_two": null}}]},
       "want": {"complex_nullable": [{"inner_one": {"key_one": "foo"}}]}},
      {"name": "T23d null list items stay",
       "orig": {}, "patch": {"complex_nullable": ["key1", null, "key2"]}, "want": {"complex_nullable": ["key1", null, "key2"]}},
      {"name": "T23e an unrelated null stays",
       "orig": {"thing": null}, "patch": {"nested": {"value": 5}}, "want": {"nested": {"value": 5}, "thing": null}},
      {"name": "T23f nulls delete maps and scalars",
       "orig": {"name": "foo", "scalar": true, "complex": {"nested": true}, "array": [1, 2, 3]}, "patch": {"complex": null, "scalar": null},
       "want": {"array": [1, 2, 3], "name": "foo"}},
      {"name": "T24 replace strategy",
       "orig": {"name": "my-object", "replacingItem": {"Some": "Generic", "Yaml": "Inside", "The": "RawExtension", "Field": "Period"}},
       "patch": {"replacingItem": {"Newly": "Modified", "Yaml": "Inside", "The": "RawExtension"}},
       "want": {"name": "my-object", "replacingItem": {"Newly": "Modified", "Yaml": "Inside", "The": "RawExtension"}}},
      {"name": "D1 without $setElementOrder new items come first",
       "orig": {"mergingList": [{"name": "a"}, {"name": "b"}]}, "patch": {"mergingList": [{"name": "c"}]},
       "want": {"mergingList": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}},
      {"name": "D2 without $setElementOrder the patch orders its items",
       "orig": {"mergingList": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
       "patch": {"mergingList": [{"name": "c", "value": "1"}, {"name": "a", "value": "2"}]},
       "want": {"mergingList": [{"name": "b"}, {"name": "c", "value": "1"}, {"name": "a", "value": "2"}]}},
      {"name": "D3 replacing an item next to a sidecar (aliasing)",
       "orig": {"mergingList": [{"name": "a"}, {"name": "s"}]},
       "patch": {"$setElementOrder/mergingList": [{"name": "b"}], "mergingList": [{"name": "b"}, {"name": "a", "$patch": "delete"}]},
       "want": {"mergingList": [{"name": "s"}, {"name": "b"}]}},
      {"name": "bad $setElementOrder key",
       "orig": {}, "patch": {"$setElementOrder": [1]}, "error": "invalid patch format of setElementOrder list"},
      {"name": "bad $deleteFromPrimitiveList key",
       "orig": {}, "patch": {"$deleteFromPrimitiveListx": [1]}, "error": "invalid patch format of primitive list"},
      {"name": "lists of lists",
       "orig": {"mergingIntList": [[1]]}, "patch": {"mergingIntList": [[2]]}, "error": "lists of lists are not supported"}
    ]"#;

    #[test]
    fn apimachinerys_cases() {
        let index = merge_item_index();
        let cases: Vec<Value> = serde_json::from_str(CASES).unwrap();
        let mut failures = Vec::new();
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            match (apply(&index, "MergeItem", &case["orig"], &case["patch"]), case.get("want")) {
                (Ok(got), Some(want)) if got == *want => {}
                (Err(e), None) if e.message.contains(case["error"].as_str().unwrap()) => {}
                (got, _) => failures.push(format!("{name}: got {got:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn error_codes() {
        let index = merge_item_index();
        let code = |orig: Value, patch: Value| apply(&index, "MergeItem", &orig, &patch).unwrap_err().code;
        assert_eq!(code(json!({}), json!({"$setElementOrder": []})), 400);
        assert_eq!(code(json!({"mergingIntList": [[1]]}), json!({"mergingIntList": [[2]]})), 422);
        assert_eq!(code(json!({"mergingList": [{"name": 1}]}), json!({"mergingList": [{"value": 1}]})), 500);
    }

    /// `kubectl apply` of a Deployment whose containers were reordered sends only the
    /// order; the live list, with an injected sidecar, follows it.
    #[test]
    fn containers_follow_the_applied_order() {
        let index = crate::apiserver::openapi::index();
        let deployment = index.kind("apps", "v1", "Deployment").unwrap();
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"name": "sidecar", "image": "s"},
            {"name": "b", "image": "y"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "$setElementOrder/ports": [{"containerPort": 81}, {"containerPort": 80}],
                            "ports": [{"containerPort": 81}]}]
        }}}});
        let patched = apply(index, deployment, &live, &patch).unwrap();
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "sidecar", "image": "s"},
                {"name": "b", "image": "y"},
                {"name": "a", "image": "x", "ports": [{"containerPort": 81}, {"containerPort": 80, "protocol": "TCP"}]}
            ])
        );
        let strategy = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let live = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}});
        assert_eq!(
            apply(index, deployment, &live, &strategy).unwrap(),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
    }
}
