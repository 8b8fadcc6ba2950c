//! Objects as structured-merge-diff sees them: every field typed by the schema (a
//! built-in type's OpenAPI definitions, or a custom resource's structural schema), lists
//! atomic, sets or maps by key, maps granular or atomic. On that view: the field set of an
//! applied configuration, the comparison of two objects (what an update added, changed and
//! removed), the merge of a configuration into the live object, and the pruning of what an
//! applier stopped applying.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::set::Set;
use crate::apiserver::openapi::{self, Field, Index};
use crate::apiserver::protobuf;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// What a list-map key is when an item leaves it out: the `+default` of the ports'
/// `protocol` (ContainerPort, ServicePort, EndpointPort).
const KEY_DEFAULTS: [(&str, &str); 1] = [("protocol", "TCP")];

/// Where a value sits in the schema.
#[derive(Clone, Copy)]
pub enum Type<'a> {
    /// A built-in OpenAPI definition.
    Definition(&'a str),
    /// A list or map field of a built-in definition.
    Field(&'a Field),
    /// A node of a custom resource's schema; `true` at the object's root, whose metadata
    /// is ObjectMeta.
    Schema(&'a Value, bool),
    /// Nothing declared: objects are granular maps, everything else a leaf.
    Deduced,
}

#[derive(Clone)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

enum Shape<'a> {
    /// A scalar, or anything atomic: owned and replaced whole.
    Leaf,
    /// An object with declared fields.
    Struct,
    /// A map whose entries are values of one type.
    Map(Type<'a>),
    List(Type<'a>, ListKind),
}

/// The schema view of one object kind.
#[derive(Clone, Copy)]
pub struct Typed<'a> {
    index: &'a Index,
    root: Type<'a>,
}

impl<'a> Typed<'a> {
    pub fn new(index: &'a Index, root: Type<'a>) -> Typed<'a> {
        Typed { index, root }
    }

    fn shape(&self, ty: Type<'a>, value: &Value) -> Shape<'a> {
        match ty {
            Type::Definition(name) => match self.index.object(name) {
                Some(false) => Shape::Struct,
                _ => Shape::Leaf,
            },
            Type::Field(field) if field.is_list => {
                let items = field.definition.as_deref().map_or(Type::Deduced, Type::Definition);
                let kind = match (field.list_type.as_deref(), field.patch_strategy.as_deref(), &field.merge_key) {
                    (Some("map"), _, _) => ListKind::Map(field.list_map_keys.clone()),
                    (Some("set"), _, _) => ListKind::Set,
                    (Some(_), _, _) => ListKind::Atomic,
                    (None, Some(s), Some(key)) if s.contains("merge") => ListKind::Map(vec![key.clone()]),
                    (None, Some(s), None) if s.contains("merge") => ListKind::Set,
                    _ => ListKind::Atomic,
                };
                Shape::List(items, kind)
            }
            Type::Field(field) if field.is_map && !field.atomic_map => {
                Shape::Map(field.definition.as_deref().map_or(Type::Deduced, Type::Definition))
            }
            Type::Field(field) if field.is_map => Shape::Leaf,
            Type::Field(field) => match field.definition.as_deref() {
                Some(name) => self.shape(Type::Definition(name), value),
                None => Shape::Leaf,
            },
            Type::Schema(_, true) => Shape::Struct,
            Type::Schema(schema, false) => schema_shape(schema, value),
            Type::Deduced => match value {
                Value::Object(_) => Shape::Map(Type::Deduced),
                _ => Shape::Leaf,
            },
        }
    }

    /// The type of field `name` of a struct or map of type `ty`.
    fn child(&self, ty: Type<'a>, name: &str) -> Type<'a> {
        match ty {
            Type::Definition(definition) => match self.index.field(definition, name) {
                Some(field) if field.is_list || field.is_map => Type::Field(field),
                Some(field) => field.definition.as_deref().map_or(Type::Deduced, Type::Definition),
                None => Type::Deduced,
            },
            Type::Schema(_, true) if name == "metadata" => Type::Definition(OBJECT_META),
            Type::Schema(schema, _) => match (schema["properties"].get(name), schema.get("additionalProperties")) {
                (Some(property), _) => Type::Schema(property, false),
                (None, Some(values)) if values.is_object() => Type::Schema(values, false),
                _ => Type::Deduced,
            },
            Type::Field(_) | Type::Deduced => Type::Deduced,
        }
    }

    /// The type of entry `key` of a struct or map of shape `shape`.
    fn entry(&self, shape: &Shape<'a>, ty: Type<'a>, key: &str) -> Type<'a> {
        match shape {
            Shape::Map(values) => *values,
            _ => self.child(ty, key),
        }
    }

    /// The fields of `ty` Go always writes: structs held as values, not pointers (empty
    /// when nothing in them is set), and required lists and maps (null: Go leaves out
    /// only what is `omitempty`, which required fields are not).
    fn always_present(&self, ty: Type<'a>) -> &'static [String] {
        static FIELDS: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
        let Type::Definition(definition) = ty else { return &[] };
        let fields = FIELDS.get_or_init(|| {
            let index = openapi::index();
            let mut all = HashMap::new();
            for definition in index.object_definitions() {
                let present: Vec<String> = index
                    .fields(definition)
                    .filter(|(name, field)| {
                        if field.is_list || field.is_map {
                            return field.required;
                        }
                        field.definition.as_deref().is_some_and(|d| index.object(d).is_some())
                            && !protobuf::is_go_pointer(definition, name)
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                if !present.is_empty() {
                    all.insert(definition.to_string(), present);
                }
            }
            all
        });
        fields.get(definition).map_or(&[], Vec::as_slice)
    }

    /// The paths a configuration sets (structured-merge-diff's ToFieldSet): every leaf,
    /// every list item, every map entry, and empty objects.
    pub fn field_set(&self, value: &Value) -> Set {
        let mut set = Set::default();
        self.collect_fields(value, self.root, &mut Vec::new(), &mut set);
        set
    }

    fn collect_fields(&self, value: &Value, ty: Type<'a>, path: &mut Vec<String>, set: &mut Set) {
        match (self.shape(ty, value), value) {
            (shape @ (Shape::Struct | Shape::Map(_)), Value::Object(map)) => {
                let is_map = matches!(shape, Shape::Map(_));
                for (key, child) in map {
                    path.push(format!("f:{key}"));
                    self.collect_fields(child, self.entry(&shape, ty, key), path, set);
                    let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                    if empty || is_map {
                        set.insert(path);
                    }
                    path.pop();
                }
            }
            (Shape::List(items, kind @ (ListKind::Set | ListKind::Map(_))), Value::Array(list)) => {
                for item in list {
                    path.push(element(&kind, item));
                    self.collect_fields(item, items, path, set);
                    set.insert(path);
                    path.pop();
                }
            }
            _ if !path.is_empty() => set.insert(path),
            _ => {}
        }
    }

    /// What changed from `old` to `new`.
    pub fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let mut comparison = Comparison::default();
        self.compare_at(Some(old), Some(new), self.root, &mut Vec::new(), &mut comparison);
        comparison
    }

    fn compare_at(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        ty: Type<'a>,
        path: &mut Vec<String>,
        out: &mut Comparison,
    ) {
        let Some(shown) = new.or(old) else { return };
        let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty));
        let shape = self.shape(ty, shown);
        let leaf = match &shape {
            Shape::Leaf | Shape::List(_, ListKind::Atomic) => true,
            // Empty on both sides, an object is a leaf: `{}` and absent differ.
            Shape::Struct | Shape::Map(_) => empty(old) && empty(new),
            Shape::List(..) => false,
        };
        let mismatched = |v: Option<&Value>, object: bool| {
            v.is_some_and(|v| !v.is_null() && if object { !v.is_object() } else { !v.is_array() })
        };
        let is_object = matches!(shape, Shape::Struct | Shape::Map(_));
        if leaf || mismatched(old, is_object) || mismatched(new, is_object) {
            match (old, new) {
                (None, Some(_)) => out.added.insert(path),
                (Some(_), None) => out.removed.insert(path),
                (Some(a), Some(b)) if a != b => out.modified.insert(path),
                _ => {}
            }
            return;
        }
        if !path.is_empty() {
            match (old, new) {
                (None, Some(_)) => out.added.insert(path),
                (Some(_), None) => out.removed.insert(path),
                _ => {}
            }
        }
        let (nothing, null) = (Value::Object(Map::new()), Value::Null);
        match shape {
            Shape::Struct | Shape::Map(_) => {
                let (old_map, new_map) = (old.and_then(Value::as_object), new.and_then(Value::as_object));
                let always = self.always_present(ty);
                let mut keys: Vec<&String> = old_map.into_iter().chain(new_map).flat_map(|m| m.keys()).collect();
                keys.extend(always);
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child_type = self.entry(&shape, ty, key);
                    let present = always.contains(key);
                    let nothing = if matches!(child_type, Type::Field(f) if f.is_list) { &null } else { &nothing };
                    let o = old_map.map(|m| m.get(key.as_str()).or(present.then_some(nothing))).unwrap_or(None);
                    let n = new_map.map(|m| m.get(key.as_str()).or(present.then_some(nothing))).unwrap_or(None);
                    path.push(format!("f:{key}"));
                    self.compare_at(o, n, child_type, path, out);
                    path.pop();
                }
            }
            Shape::List(items, kind) => {
                let index = |v: Option<&Value>| -> Vec<(String, Value)> {
                    v.and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|item| (element(&kind, item), item.clone()))
                        .collect()
                };
                let (old_items, new_items) = (index(old), index(new));
                let mut elements: Vec<&String> = old_items.iter().chain(&new_items).map(|(e, _)| e).collect();
                elements.sort();
                elements.dedup();
                for e in elements {
                    let find = |items: &[(String, Value)]| items.iter().find(|(x, _)| x == e).map(|(_, v)| v.clone());
                    let (o, n) = (find(&old_items), find(&new_items));
                    path.push(e.clone());
                    self.compare_at(o.as_ref(), n.as_ref(), items, path, out);
                    path.pop();
                }
            }
            Shape::Leaf => {}
        }
    }

    /// `config` merged into `live` (structured-merge-diff's Merge): structs and maps field
    /// by field, keyed lists item by item, everything else replaced.
    pub fn merge(&self, live: &Value, config: &Value) -> Value {
        self.merge_at(Some(live), config, self.root)
    }

    fn merge_at(&self, live: Option<&Value>, config: &Value, ty: Type<'a>) -> Value {
        match (self.shape(ty, config), config) {
            (shape @ (Shape::Struct | Shape::Map(_)), Value::Object(fields)) => {
                let mut out = live.and_then(Value::as_object).cloned().unwrap_or_default();
                for (key, value) in fields {
                    let merged = self.merge_at(out.get(key), value, self.entry(&shape, ty, key));
                    out.insert(key.clone(), merged);
                }
                Value::Object(out)
            }
            (Shape::List(items, kind @ (ListKind::Set | ListKind::Map(_))), Value::Array(config_items)) => {
                let live_items = live.and_then(Value::as_array).cloned().unwrap_or_default();
                let keyed = |list: &[Value]| -> Vec<(String, Value)> {
                    list.iter().map(|item| (element(&kind, item), item.clone())).collect()
                };
                let merged = interleave(&keyed(&live_items), &keyed(config_items), |live, config| match live {
                    Some(live) => self.merge_at(Some(live), config, items),
                    None => self.merge_at(None, config, items),
                });
                Value::Array(merged)
            }
            _ => config.clone(),
        }
    }

    /// Removes from `object` what `last` (an applier's previous set) held and no manager
    /// owns any more (`owned`).
    pub fn prune(&self, object: &mut Value, last: &Set, owned: &Set) {
        self.prune_at(object, self.root, last, owned);
    }

    fn prune_at(&self, object: &mut Value, ty: Type<'a>, last: &Set, owned: &Set) {
        let shape = self.shape(ty, object);
        let empty = Set::default();
        match (shape, object) {
            (shape @ (Shape::Struct | Shape::Map(_)), Value::Object(map)) => {
                for (element, was) in last.children() {
                    let Some(key) = element.strip_prefix("f:") else { continue };
                    let still = owned.child(element).unwrap_or(&empty);
                    if was.is_member() && still.is_empty() {
                        map.remove(key);
                    } else if let Some(child) = map.get_mut(key) {
                        let child_type = self.entry(&shape, ty, key);
                        self.prune_at(child, child_type, was, still);
                        // Emptied by the pruning: gone, as Go leaves out an empty map or list.
                        if was.children().next().is_some() && is_empty_container(child) {
                            map.remove(key);
                        }
                    }
                }
            }
            (Shape::List(items, kind @ (ListKind::Set | ListKind::Map(_))), Value::Array(list)) => {
                list.retain_mut(|item| {
                    let e = element(&kind, item);
                    let Some(was) = last.child(&e) else { return true };
                    let still = owned.child(&e).unwrap_or(&empty);
                    if was.is_member() && still.is_empty() {
                        return false;
                    }
                    self.prune_at(item, items, was, still);
                    true
                });
            }
            _ => {}
        }
    }
}

fn is_empty_container(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty) || value.as_array().is_some_and(Vec::is_empty)
}

fn schema_shape<'a>(schema: &'a Value, value: &Value) -> Shape<'a> {
    match schema["type"].as_str() {
        Some("object") if schema["x-kubernetes-map-type"] == "atomic" => Shape::Leaf,
        Some("object") if schema["properties"].is_object() => Shape::Struct,
        Some("object") if schema["additionalProperties"].is_object() => {
            Shape::Map(Type::Schema(&schema["additionalProperties"], false))
        }
        Some("object") => Shape::Map(Type::Deduced),
        Some("array") => {
            let kind = match schema["x-kubernetes-list-type"].as_str() {
                Some("set") => ListKind::Set,
                Some("map") => ListKind::Map(
                    schema["x-kubernetes-list-map-keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect(),
                ),
                _ => ListKind::Atomic,
            };
            Shape::List(Type::Schema(&schema["items"], false), kind)
        }
        None if value.is_object() && schema["x-kubernetes-preserve-unknown-fields"] == true => {
            Shape::Map(Type::Deduced)
        }
        _ => Shape::Leaf,
    }
}

/// A list item's path element: `k:{...}` of its keys in a map-list, `v:...` in a set.
fn element(kind: &ListKind, item: &Value) -> String {
    match kind {
        ListKind::Map(keys) => {
            let mut fields = Map::new();
            for key in keys {
                let value = match item.get(key) {
                    Some(v) if !v.is_null() => v.clone(),
                    _ => match KEY_DEFAULTS.iter().find(|(k, _)| k == key) {
                        Some((_, default)) => Value::from(*default),
                        None => continue,
                    },
                };
                fields.insert(key.clone(), value);
            }
            format!("k:{}", Value::Object(fields))
        }
        _ => format!("v:{item}"),
    }
}

/// Items of two keyed lists in one: both orders kept, items in both merged and placed
/// as the second list orders them (structured-merge-diff's list merge).
fn interleave(
    live: &[(String, Value)],
    config: &[(String, Value)],
    merge: impl Fn(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    let in_config = |e: &str| config.iter().any(|(c, _)| c == e);
    let in_live = |e: &str| live.iter().find(|(l, _)| l == e).map(|(_, v)| v);
    let mut shared = config.iter().filter(|(e, _)| in_live(e).is_some()).map(|(e, _)| e.as_str());
    let mut next_shared = shared.next();
    let mut out = Vec::with_capacity(live.len() + config.len());
    let mut merged: Vec<&str> = Vec::new();
    let (mut l, mut r) = (0, 0);
    while l < live.len() || r < config.len() {
        if l < live.len() && r < config.len() {
            let (e, _) = &live[l];
            if *e == config[r].0 {
                out.push(merge(in_live(e), &config[r].1));
                merged.push(e);
                l += 1;
                r += 1;
                if next_shared == Some(e.as_str()) {
                    next_shared = shared.next();
                }
                continue;
            }
            if in_config(e) && next_shared.is_some_and(|n| n != e) {
                l += 1;
                continue;
            }
        }
        if l < live.len() {
            let (e, item) = &live[l];
            if !in_config(e) {
                out.push(item.clone());
                l += 1;
                continue;
            }
            if merged.contains(&e.as_str()) {
                l += 1;
                continue;
            }
        }
        if r < config.len() {
            let (e, item) = &config[r];
            out.push(merge(in_live(e), item));
            merged.push(e);
            r += 1;
            if next_shared == Some(e.as_str()) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// What an update did: the paths it added, changed and removed.
#[derive(Default, Debug)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::openapi;

    fn deployments() -> Typed<'static> {
        let index = openapi::index();
        Typed::new(index, Type::Definition(index.kind("apps", "v1", "Deployment").unwrap()))
    }

    fn deployment(image: &str, containers: &[&str]) -> Value {
        let containers: Vec<Value> = containers.iter().map(|n| json!({"name": n, "image": image})).collect();
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "d"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    }

    #[test]
    fn an_updates_comparison_marks_new_maps_and_items_but_not_go_value_structs() {
        let typed = deployments();
        let created = typed.compare(&json!({}), &deployment("nginx", &["web"]));
        let fields = created.added.to_fields_v1();
        assert_eq!(fields["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
        assert_eq!(fields["f:spec"]["f:selector"], json!({}), "a LabelSelector is atomic");
        assert!(fields["f:spec"].get(".").is_none(), "spec is a Go value: always there");
        assert!(fields["f:spec"]["f:template"].get(".").is_none());
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}}),
            "a container's resources are a Go value: there, empty"
        );
        let changed = typed.compare(&deployment("nginx", &["web", "side"]), &deployment("httpd", &["web"]));
        let web =
            ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"].map(String::from);
        assert!(changed.modified.contains(&web));
        let side = ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"side\"}"].map(String::from);
        assert!(changed.removed.contains(&side));
        assert!(changed.added.is_empty());
    }

    #[test]
    fn go_value_structs_of_new_items_are_owned_empty() {
        let index = openapi::index();
        let pods = Typed::new(index, Type::Definition(index.kind("", "v1", "Pod").unwrap()));
        let created = pods.compare(&json!({}), &json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}));
        let container = &created.added.to_fields_v1()["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert_eq!(container["f:resources"], json!({}), "{container}");
    }

    #[test]
    fn an_applied_configuration_owns_its_leaves_items_and_map_entries() {
        let set = deployments().field_set(&json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}}}}));
        let paths: Vec<String> = set.paths().iter().map(|p| super::super::set::display(p)).collect();
        assert_eq!(
            paths,
            [
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"web\"]",
                ".spec.template.spec.containers[name=\"web\"].name",
                ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"]",
                ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ]
        );
    }

    #[test]
    fn merging_keeps_both_orders_and_merges_items_by_key() {
        let typed = deployments();
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "1"}, {"name": "c", "image": "1"}]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "2"}, {"name": "d", "image": "2"}, {"name": "a"}]}}}});
        let merged = typed.merge(&live, &config);
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "d", "a"]);
        assert_eq!(merged["spec"]["template"]["spec"]["containers"][3]["image"], "1", "a's image kept");
        assert_eq!(merged["spec"]["template"]["spec"]["containers"][1]["image"], "2");
    }

    #[test]
    fn pruning_removes_what_nobody_owns_any_more() {
        let typed = deployments();
        let mut object = deployment("nginx", &["web", "side"]);
        let last = typed.field_set(&deployment("nginx", &["web", "side"]));
        let owned = typed.field_set(&deployment("nginx", &["web"]));
        typed.prune(&mut object, &last, &owned);
        assert_eq!(object["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        let mut object = deployment("nginx", &["web"]);
        let mut without_replicas = deployment("nginx", &["web"]);
        without_replicas["spec"].as_object_mut().unwrap().remove("replicas");
        typed.prune(&mut object, &typed.field_set(&deployment("nginx", &["web"])), &typed.field_set(&without_replicas));
        assert!(object["spec"].get("replicas").is_none());
        assert_eq!(object["spec"]["template"]["spec"]["containers"][0]["image"], "nginx");
    }
}
