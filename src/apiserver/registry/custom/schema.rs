//! A CustomResourceDefinition version's structural schema (its `openAPIV3Schema`), as
//! apiextensions-apiserver applies it to custom resources: fields the schema does not
//! name are pruned, `default`s filled in, and values validated with the OpenAPI
//! validator's messages. [`check_definition`] is what a definition's schema must be to
//! be structural.

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::super::Cause;

pub struct Schema {
    root: Value,
    /// Whether any node holds CEL rules.
    has_rules: bool,
    compiled: Compiled,
}

/// The schema's patterns and CEL rules, compiled once when the definition is read rather
/// than at every write (`None`: it does not compile; the definition's validation said so).
#[derive(Default)]
pub struct Compiled {
    patterns: HashMap<String, Option<Regex>>,
    pub(super) programs: HashMap<String, Option<cel::Program>>,
}

impl Compiled {
    pub fn of(schema: &Value) -> Compiled {
        let mut compiled = Compiled::default();
        let mut stack = vec![schema];
        while let Some(node) = stack.pop() {
            match node {
                Value::Object(map) => {
                    if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
                        compiled.patterns.entry(pattern.to_string()).or_insert_with(|| Regex::new(pattern).ok());
                    }
                    for rule in map.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
                        for text in [&rule["rule"], &rule["messageExpression"]].into_iter().filter_map(Value::as_str) {
                            compiled
                                .programs
                                .entry(text.to_string())
                                .or_insert_with(|| cel::Program::compile(text).ok());
                        }
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        compiled
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema[name] == true
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// An object's first fields that every object keeps, whatever its schema says.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl Schema {
    pub fn new(root: Value) -> Schema {
        let has_rules = super::rules::any(&root);
        let compiled = Compiled::of(&root);
        Schema { root, has_rules, compiled }
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Removes every field the schema does not name (unless it preserves unknown
    /// fields) and returns their paths. The object's apiVersion, kind and metadata stay.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        prune(object, &self.root, "", true, &mut unknown);
        unknown
    }

    /// Fills in the schema's defaults where fields are absent (or null and not nullable),
    /// then drops the nulls that are neither nullable nor defaulted.
    pub fn default(&self, object: &mut Value) {
        default(object, &self.root);
        drop_nulls(object, &self.root);
    }

    /// What is wrong with `object` (an update of `old`, if given), field by field: the
    /// schema's validations, then its CEL rules.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        let mut root = object.clone();
        // The metadata is validated as ObjectMeta, not by the schema.
        if let Some(map) = root.as_object_mut() {
            for field in OBJECT_FIELDS {
                map.remove(field);
            }
        }
        validate(&root, &self.root, "", &self.compiled, &mut causes);
        if self.has_rules {
            super::rules::run(&root, old, &self.root, "", &self.compiled, &mut causes);
        }
        causes
    }
}

fn prune(value: &mut Value, schema: &Value, path: &str, keeps_object_fields: bool, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let keeps_object_fields = keeps_object_fields || flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let here = join(path, &key);
                if keeps_object_fields && OBJECT_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let child = map.get_mut(&key).expect("a key just listed");
                if let Some(property) = properties.and_then(|p| p.get(&key)) {
                    prune(child, property, &here, false, unknown);
                } else if additional.is_object() {
                    prune(child, additional, &here, false, unknown);
                } else if !preserve && *additional != true {
                    map.remove(&key);
                    unknown.push(here);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_schema, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

fn non_nullable_null(value: &Value, schema: &Value) -> bool {
    value.is_null() && !flag(schema, "nullable")
}

/// apiextensions-apiserver's structural defaulting: top down, so the defaults of fields
/// inside a defaulted object apply too.
fn default(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (key, property) in properties {
                    if let Some(default) = property.get("default")
                        && map.get(key).is_none_or(|v| non_nullable_null(v, property))
                    {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            let additional = &schema["additionalProperties"];
            for (key, child) in map.iter_mut() {
                if let Some(property) = schema["properties"].get(key) {
                    default(child, property);
                } else if additional.is_object() {
                    if non_nullable_null(child, additional)
                        && let Some(default) = additional.get("default")
                    {
                        *child = default.clone();
                    }
                    default(child, additional);
                }
            }
        }
        Value::Array(items) => {
            let item_schema = &schema["items"];
            for item in items.iter_mut() {
                if non_nullable_null(item, item_schema)
                    && let Some(default) = item_schema.get("default")
                {
                    *item = default.clone();
                }
                default(item, item_schema);
            }
        }
        _ => {}
    }
}

fn drop_nulls(value: &mut Value, schema: &Value) {
    let Value::Object(map) = value else {
        if let Value::Array(items) = value {
            items.iter_mut().for_each(|item| drop_nulls(item, &schema["items"]));
        }
        return;
    };
    let child_schema = |key: &str| match schema["properties"].get(key) {
        Some(property) => property.clone(),
        None => schema["additionalProperties"].clone(),
    };
    map.retain(|key, child| {
        let schema = child_schema(key);
        !(schema.is_object() && non_nullable_null(child, &schema) && schema.get("default").is_none())
    });
    for (key, child) in map.iter_mut() {
        drop_nulls(child, &child_schema(key));
    }
}

/// The OpenAPI type of a JSON value (an integral number is an integer).
pub(super) fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as field errors show it.
fn shown(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

/// A number as Go's %v prints it (integral values without a fraction).
fn go_number(value: &Value) -> String {
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => value.to_string(),
    }
}

fn invalid(causes: &mut Vec<Cause>, path: &str, value: &Value, message: String) {
    causes.push((path.to_string(), format!("Invalid value: {}: {message}", shown(value))));
}

fn validate(value: &Value, schema: &Value, path: &str, compiled: &Compiled, causes: &mut Vec<Cause>) {
    let body = if path.is_empty() { "body".to_string() } else { format!("{path} in body") };
    if value.is_null() {
        if !flag(schema, "nullable")
            && let Some(wanted) = schema["type"].as_str()
        {
            causes.push((path.into(), format!("Invalid value: \"null\": {body} must be of type {wanted}: \"null\"")));
        }
        return;
    }
    let actual = type_of(value);
    if flag(schema, "x-kubernetes-int-or-string") {
        if !matches!(actual, "integer" | "string") {
            causes.push((
                path.into(),
                format!("Invalid value: \"{actual}\": {body} must be of type integer,string: \"{actual}\""),
            ));
            return;
        }
    } else if let Some(wanted) = schema["type"].as_str()
        && wanted != actual
        && !(wanted == "number" && actual == "integer")
    {
        causes
            .push((path.into(), format!("Invalid value: \"{actual}\": {body} must be of type {wanted}: \"{actual}\"")));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(shown).collect();
        causes.push((
            path.into(),
            format!("Unsupported value: {}: supported values: {}", shown(value), listed.join(", ")),
        ));
    }
    match value {
        Value::Number(_) => validate_number(value, schema, path, &body, causes),
        Value::String(text) => validate_string(value, text, schema, path, &body, compiled, causes),
        Value::Array(items) => validate_array(items, schema, path, &body, compiled, causes),
        Value::Object(map) => validate_object(map, schema, path, &body, compiled, causes),
        _ => {}
    }
    validate_combinations(value, schema, path, compiled, causes);
}

fn validate_number(value: &Value, schema: &Value, path: &str, body: &str, causes: &mut Vec<Cause>) {
    let n = number(value);
    if let Some(min) = schema.get("minimum").filter(|m| m.is_number()) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if n < number(min) || (exclusive && n == number(min)) {
            let than = if exclusive { "greater than" } else { "greater than or equal to" };
            invalid(causes, path, value, format!("{body} should be {than} {}", go_number(min)));
        }
    }
    if let Some(max) = schema.get("maximum").filter(|m| m.is_number()) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if n > number(max) || (exclusive && n == number(max)) {
            let than = if exclusive { "less than" } else { "less than or equal to" };
            invalid(causes, path, value, format!("{body} should be {than} {}", go_number(max)));
        }
    }
    if let Some(factor) = schema.get("multipleOf").filter(|m| number(m) > 0.0)
        && (n / number(factor)).fract() != 0.0
    {
        invalid(causes, path, value, format!("{body} should be a multiple of {}", go_number(factor)));
    }
}

fn validate_string(
    value: &Value,
    text: &str,
    schema: &Value,
    path: &str,
    body: &str,
    compiled: &Compiled,
    causes: &mut Vec<Cause>,
) {
    let length = text.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64()
        && length > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        causes.push((path.into(), format!("Too long: may not be more than {max} {unit}")));
    }
    if let Some(min) = schema["minLength"].as_u64()
        && length < min
    {
        invalid(causes, path, value, format!("{body} should be at least {min} chars long"));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        match compiled.patterns.get(pattern) {
            Some(Some(regex)) if !regex.is_match(text) => {
                invalid(causes, path, value, format!("{body} should match '{pattern}'"));
            }
            Some(Some(_)) => {}
            _ => invalid(causes, path, value, format!("{body} has an unusable pattern '{pattern}'")),
        }
    }
}

fn validate_array(
    items: &[Value],
    schema: &Value,
    path: &str,
    body: &str,
    compiled: &Compiled,
    causes: &mut Vec<Cause>,
) {
    let count = items.len() as u64;
    if let Some(max) = schema["maxItems"].as_u64()
        && count > max
    {
        causes.push((path.into(), format!("Too many: {count}: must have at most {max} items")));
    }
    if let Some(min) = schema["minItems"].as_u64()
        && count < min
    {
        invalid(causes, path, &Value::from(count), format!("{body} should have at least {min} items"));
    }
    // A set's items, and a map-list's keys, are each there once.
    let keys: Option<Vec<&str>> = match schema["x-kubernetes-list-type"].as_str() {
        Some("set") => Some(vec![]),
        Some("map") => Some(
            schema["x-kubernetes-list-map-keys"].as_array().into_iter().flatten().filter_map(Value::as_str).collect(),
        ),
        _ if flag(schema, "uniqueItems") => Some(vec![]),
        _ => None,
    };
    if let Some(keys) = keys {
        let identity = |item: &Value| -> Value {
            if keys.is_empty() {
                item.clone()
            } else {
                keys.iter().map(|k| (k.to_string(), item[*k].clone())).collect::<Map<_, _>>().into()
            }
        };
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|earlier| identity(earlier) == identity(item)) {
                causes.push((format!("{path}[{i}]"), format!("Duplicate value: {}", shown(&identity(item)))));
            }
        }
    }
    if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
        for (i, item) in items.iter().enumerate() {
            validate(item, item_schema, &format!("{path}[{i}]"), compiled, causes);
        }
    }
}

fn validate_object(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    body: &str,
    compiled: &Compiled,
    causes: &mut Vec<Cause>,
) {
    for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(required) {
            causes.push((join(path, required), "Required value".into()));
        }
    }
    let count = map.len() as u64;
    if let Some(max) = schema["maxProperties"].as_u64()
        && count > max
    {
        causes.push((path.into(), format!("Too many: {count}: must have at most {max} items")));
    }
    if let Some(min) = schema["minProperties"].as_u64()
        && count < min
    {
        invalid(causes, path, &Value::from(count), format!("{body} should have at least {min} properties"));
    }
    for (key, child) in map {
        if let Some(property) = schema["properties"].get(key) {
            validate(child, property, &join(path, key), compiled, causes);
        } else if schema["additionalProperties"].is_object() {
            validate(child, &schema["additionalProperties"], &join(path, key), compiled, causes);
        }
    }
}

/// allOf, anyOf, oneOf and not: value validations only, in a structural schema.
fn validate_combinations(value: &Value, schema: &Value, path: &str, compiled: &Compiled, causes: &mut Vec<Cause>) {
    let passes = |s: &Value| {
        let mut found = Vec::new();
        validate(value, s, path, compiled, &mut found);
        found.is_empty()
    };
    for each in schema["allOf"].as_array().into_iter().flatten() {
        validate(value, each, path, compiled, causes);
    }
    if let Some(any) = schema["anyOf"].as_array()
        && !any.iter().any(passes)
    {
        invalid(causes, path, value, format!("{} must validate at least one schema (anyOf)", display(path)));
    }
    if let Some(one) = schema["oneOf"].as_array()
        && one.iter().filter(|s| passes(s)).count() != 1
    {
        invalid(causes, path, value, format!("{} must validate one and only one schema (oneOf)", display(path)));
    }
    if let Some(not) = schema.get("not").filter(|s| s.is_object())
        && passes(not)
    {
        invalid(causes, path, value, format!("{} must not validate the schema (not)", display(path)));
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

/// What makes a definition's schema structural (apiextensions-apiserver's
/// ValidateStructural), with `path` the schema's place in the definition: every field
/// has a type (unless it is an int-or-string or preserves unknown fields), the root is an
/// object, properties and additionalProperties are not both given, and defaults are
/// values the schema accepts.
pub fn check_definition(root: &Value, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    match root["type"].as_str() {
        Some("object") => {}
        Some(other) => {
            causes.push((format!("{path}.type"), format!("Invalid value: \"{other}\": must be object at the root")))
        }
        None => causes.push((format!("{path}.type"), "Required value: must not be empty at the root".into())),
    }
    check_node(root, path, true, &mut causes);
    causes
}

/// Why the CEL rules of the schema at `path` would cost too much (see `cost`).
pub fn check_rule_costs(root: &Value, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if super::rules::any(root) {
        super::cost::check(root, path, &mut causes);
    }
    causes
}

fn check_node(schema: &Value, path: &str, root: bool, causes: &mut Vec<Cause>) {
    if !schema.is_object() {
        return;
    }
    if schema["properties"].is_object()
        && schema.get("additionalProperties").is_some_and(|a| a.is_object() || *a == true)
    {
        causes.push((
            format!("{path}.additionalProperties"),
            "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        ));
    }
    if let Some(default) = schema.get("default") {
        let mut found = Vec::new();
        validate(default, schema, "", &Compiled::of(schema), &mut found);
        for (at, message) in found {
            let at = if at.is_empty() { format!("{path}.default") } else { format!("{path}.default.{at}") };
            causes.push((at, message));
        }
    }
    let typed = |s: &Value| {
        s["type"].as_str().is_some_and(|t| !t.is_empty())
            || flag(s, "x-kubernetes-int-or-string")
            || flag(s, "x-kubernetes-preserve-unknown-fields")
    };
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let here = format!("{path}.properties[{name}]");
        if root && name == "metadata" {
            let allowed =
                property["properties"].as_object().is_none_or(|p| p.keys().all(|k| k == "name" || k == "generateName"));
            if !allowed {
                causes.push((here.clone(), "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified".into()));
            }
        }
        if !typed(property) {
            causes
                .push((format!("{here}.type"), "Required value: must not be empty for specified object fields".into()));
        }
        check_node(property, &here, false, causes);
    }
    if let Some(items) = schema.get("items").filter(|s| s.is_object()) {
        if !typed(items) {
            causes.push((
                format!("{path}.items.type"),
                "Required value: must not be empty for specified array items".into(),
            ));
        }
        check_node(items, &format!("{path}.items"), false, causes);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        if !typed(additional) {
            causes.push((
                format!("{path}.additionalProperties.type"),
                "Required value: must not be empty for specified object fields".into(),
            ));
        }
        check_node(additional, &format!("{path}.additionalProperties"), false, causes);
    }
    if schema["type"] == "array" && schema.get("items").is_none() {
        causes.push((format!("{path}.items"), "Required value: must be specified".into()));
    }
    super::rules::check(schema, path, causes);
    if let Some(pattern) = schema["pattern"].as_str()
        && let Err(e) = Regex::new(pattern)
    {
        causes.push((format!("{path}.pattern"), format!("Invalid value: {}: {e}", shown(&Value::from(pattern)))));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crontab() -> Schema {
        Schema::new(json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "minLength": 1},
                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "size": {"type": "string", "enum": ["small", "large"]},
                "ports": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {"name": {"type": "string"},
                                    "port": {"x-kubernetes-int-or-string": true}, "protocol": {"type": "string", "default": "TCP"}}}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "options": {"type": "object", "default": {}, "properties": {"verbose": {"type": "boolean", "default": false}}},
                "note": {"type": "string", "nullable": true}}},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}))
    }

    #[test]
    fn unknown_fields_are_pruned_and_named() {
        let mut object = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "spec": {"image": "i", "bogus": 1, "extra": {"anything": {"goes": true}}, "labels": {"a": "b"},
                     "ports": [{"name": "p", "port": 80, "junk": 2}]}, "top": 1});
        let unknown = crontab().prune(&mut object);
        assert_eq!(unknown, ["spec.bogus", "spec.ports[0].junk", "top"]);
        assert_eq!(object["spec"]["extra"]["anything"]["goes"], true);
        assert_eq!(object["spec"]["labels"]["a"], "b");
        assert_eq!(object["metadata"]["name"], "a");
    }

    #[test]
    fn defaults_fill_absent_fields_top_down() {
        let mut object = json!({"spec": {"image": "i", "ports": [{"name": "p"}], "note": null, "size": null}});
        crontab().default(&mut object);
        assert_eq!(object["spec"]["replicas"], 1);
        assert_eq!(object["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(object["spec"]["options"], json!({"verbose": false}), "defaults inside a defaulted object apply");
        assert!(object["spec"].get("note").is_some(), "a nullable null stays");
        assert!(object["spec"].get("size").is_none(), "a null that is neither nullable nor defaulted goes");
    }

    #[test]
    fn values_are_checked_with_the_openapi_validators_messages() {
        let object = json!({"spec": {"cronSpec": "* * * *", "replicas": 11, "size": "huge", "image": "",
            "ports": [{"name": "a", "port": 1.5}, {"name": "a", "port": "x"}, {"name": "b"}]}, "status": {"replicas": "two"}});
        let causes = crontab().validate(&object, None);
        let expected = [
            (
                "spec.cronSpec",
                "Invalid value: \"* * * *\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'",
            ),
            ("spec.image", "Invalid value: \"\": spec.image in body should be at least 1 chars long"),
            ("spec.ports", "Too many: 3: must have at most 2 items"),
            ("spec.ports[1]", "Duplicate value: {\"name\":\"a\"}"),
            (
                "spec.ports[0].port",
                "Invalid value: \"number\": spec.ports[0].port in body must be of type integer,string: \"number\"",
            ),
            ("spec.replicas", "Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
            ("spec.size", "Unsupported value: \"huge\": supported values: \"small\", \"large\""),
            (
                "status.replicas",
                "Invalid value: \"string\": status.replicas in body must be of type integer: \"string\"",
            ),
        ];
        for (path, message) in expected {
            assert!(causes.contains(&(path.to_string(), message.to_string())), "{path}: {message}\nin {causes:#?}");
        }
        assert_eq!(causes.len(), expected.len(), "{causes:#?}");
        let causes = crontab().validate(&json!({"spec": {}}), None);
        assert_eq!(causes, [("spec.image".to_string(), "Required value".to_string())]);
    }

    #[test]
    fn definitions_must_be_structural() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"properties": {"a": {"type": "string"}}},
            "list": {"type": "array", "items": {}},
            "both": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "n": {"type": "integer", "default": "one"},
            "free": {"x-kubernetes-preserve-unknown-fields": true}}});
        let causes = check_definition(&schema, "s");
        let paths: Vec<&str> = causes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "s.properties[both].additionalProperties",
                "s.properties[list].items.type",
                "s.properties[n].default",
                "s.properties[spec].type"
            ],
            "{causes:#?}"
        );
        assert_eq!(
            check_definition(&json!({"type": "string"}), "s")[0].1,
            "Invalid value: \"string\": must be object at the root"
        );
    }
}
