//! The CEL rules of a custom resource's schema (`x-kubernetes-validations`), as
//! apiextensions-apiserver runs them: each rule at a schema node is evaluated with `self`
//! the value there (and `oldSelf` the stored one, on an update, for transition rules); a
//! rule that is false is a field error with its message (or `failed rule: RULE`), at its
//! node's path (and `fieldPath`), of its reason's type.

use cel::{Context, Program};
use serde_json::Value;

use super::super::Cause;
use super::schema::{Compiled, type_of};

/// Whether a schema holds rules anywhere: most do not, and then nothing is walked.
pub fn any(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.contains_key("x-kubernetes-validations") || map.values().any(any),
        Value::Array(items) => items.iter().any(any),
        _ => false,
    }
}

/// Why each rule (or message expression) of a definition's schema does not compile, at
/// `path`.
pub fn check(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, rule) in schema["x-kubernetes-validations"].as_array().into_iter().flatten().enumerate() {
        let here = |field: &str| format!("{path}.x-kubernetes-validations[{i}].{field}");
        let text = rule["rule"].as_str().unwrap_or_default();
        if text.trim().is_empty() {
            causes.push((here("rule"), "Required value".into()));
        }
        let message = rule["messageExpression"].as_str();
        if message.is_some_and(|m| m.trim().is_empty()) {
            causes.push((here("messageExpression"), "Required value: must be non-empty if specified".into()));
        }
        let given = [("rule", Some(text)), ("messageExpression", message)];
        for (field, text) in given.into_iter().filter_map(|(f, t)| Some((f, t.filter(|t| !t.trim().is_empty())?))) {
            if let Err(e) = Program::compile(text) {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                causes.push((here(field), format!("Invalid value: {}: compilation failed: {first}", json(text))));
            }
        }
    }
}

fn json(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Runs the rules of `schema` and below on `value` (`old`: the stored value there), as
/// `compiled` holds them.
pub fn run(
    value: &Value,
    old: Option<&Value>,
    schema: &Value,
    path: &str,
    compiled: &Compiled,
    causes: &mut Vec<Cause>,
) {
    for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
        evaluate(rule, value, old, path, compiled, causes);
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_schema = match schema["properties"].get(key) {
                    Some(property) => property,
                    None if schema["additionalProperties"].is_object() => &schema["additionalProperties"],
                    None => continue,
                };
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                run(child, old.and_then(|o| o.get(key)), child_schema, &here, compiled, causes);
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) else { return };
            for (i, item) in items.iter().enumerate() {
                run(item, old_item(item, old, schema), item_schema, &format!("{path}[{i}]"), compiled, causes);
            }
        }
        _ => {}
    }
}

/// The stored item an item is: by keys in a map-list, by value in a set; items of other
/// lists have none.
fn old_item<'a>(item: &Value, old: Option<&'a Value>, schema: &Value) -> Option<&'a Value> {
    let old_items = old?.as_array()?;
    match schema["x-kubernetes-list-type"].as_str() {
        Some("set") => old_items.iter().find(|o| *o == item),
        Some("map") => {
            let keys: Vec<&str> =
                schema["x-kubernetes-list-map-keys"].as_array()?.iter().filter_map(Value::as_str).collect();
            old_items.iter().find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k)))
        }
        _ => None,
    }
}

fn evaluate(
    rule: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    compiled: &Compiled,
    causes: &mut Vec<Cause>,
) {
    let text = rule["rule"].as_str().unwrap_or_default();
    let Some(Some(program)) = compiled.programs.get(text) else { return };
    let transition = program.references().has_variable("oldSelf");
    let optional_old = rule["optionalOldSelf"] == true;
    // A transition rule judges a change: without a stored value there is none.
    if transition && old.is_none() && !optional_old {
        return;
    }
    // Without a stored value, an optional oldSelf is null.
    let old_self = |wanted: bool| wanted.then(|| old.cloned().unwrap_or(Value::Null));
    let Some(rule_context) = context(value, old_self(transition)) else { return };
    let outcome = program.execute(&rule_context);
    let failed = match &outcome {
        Ok(cel::Value::Bool(true)) => return,
        Ok(cel::Value::Bool(false)) => None,
        Ok(other) => Some(format!("rule {} evaluated to {other:?}, not a boolean", json(text))),
        Err(e) => Some(format!("{} evaluation error: {e}", json(text))),
    };
    let message = failed.unwrap_or_else(|| {
        let expression = rule["messageExpression"].as_str().and_then(|m| compiled.programs.get(m)?.as_ref());
        let evaluated = expression.and_then(|program| {
            match program.execute(&context(value, old_self(program.references().has_variable("oldSelf")))?) {
                Ok(cel::Value::String(message)) => Some(message.trim().to_string()),
                _ => None,
            }
        });
        // As kube-apiserver: a message expression that fails, or gives no single line of
        // text, leaves the rule's message (or its default).
        match evaluated.filter(|m| !m.is_empty() && !m.contains('\n')) {
            Some(message) => message,
            None => match rule["message"].as_str().filter(|m| !m.is_empty()) {
                Some(message) => message.to_string(),
                None => format!("failed rule: {text}"),
            },
        }
    });
    let field = rule["fieldPath"].as_str().unwrap_or_default();
    let at = format!("{path}{field}");
    let at = if at.is_empty() { "<nil>".to_string() } else { at.trim_start_matches('.').to_string() };
    let text = match rule["reason"].as_str().unwrap_or("FieldValueInvalid") {
        "FieldValueRequired" => format!("Required value: {message}"),
        "FieldValueForbidden" => format!("Forbidden: {message}"),
        "FieldValueDuplicate" => format!("Duplicate value: {message}"),
        _ => format!("Invalid value: \"{}\": {message}", type_of(value)),
    };
    causes.push((at, text));
}

/// A rule's context: `self`, `oldSelf` when given, and the Kubernetes libraries.
fn context(value: &Value, old: Option<Value>) -> Option<Context<'static>> {
    let mut context = super::library::root().new_inner_scope();
    context.add_variable("self", value.clone()).ok()?;
    if let Some(old) = old {
        context.add_variable("oldSelf", old).ok()?;
    }
    Some(context)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
                {"rule": "self.name == oldSelf.name", "message": "name is immutable", "fieldPath": ".name"}],
            "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}, "name": {"type": "string"},
                           "tags": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self.startsWith('t-')"}]}}}}}})
    }

    #[test]
    fn rules_judge_values_and_transitions() {
        let schema = schema();
        assert!(any(&schema));
        let object = json!({"spec": {"minReplicas": 3, "maxReplicas": 2, "name": "a", "tags": ["t-x", "y"]}});
        let compiled = Compiled::of(&schema);
        let mut causes = Vec::new();
        run(&object, None, &schema, "", &compiled, &mut causes);
        assert_eq!(
            causes,
            [
                ("spec".to_string(), "Invalid value: \"object\": minReplicas must not exceed maxReplicas".to_string()),
                (
                    "spec.tags[1]".to_string(),
                    "Invalid value: \"string\": failed rule: self.startsWith('t-')".to_string()
                ),
            ]
        );
        let old = json!({"spec": {"minReplicas": 1, "maxReplicas": 2, "name": "b"}});
        let mut causes = Vec::new();
        run(
            &json!({"spec": {"minReplicas": 1, "maxReplicas": 2, "name": "a"}}),
            Some(&old),
            &schema,
            "",
            &compiled,
            &mut causes,
        );
        assert_eq!(causes, [("spec.name".to_string(), "Invalid value: \"object\": name is immutable".to_string())]);
    }

    #[test]
    fn rules_that_do_not_compile_are_named() {
        let mut causes = Vec::new();
        check(&json!({"x-kubernetes-validations": [{"rule": "self.a <"}, {"rule": ""}]}), "s", &mut causes);
        assert_eq!(causes.len(), 2);
        assert!(causes[0].1.starts_with("Invalid value: \"self.a <\": compilation failed"), "{causes:?}");
        assert_eq!(causes[1], ("s.x-kubernetes-validations[1].rule".to_string(), "Required value".to_string()));
    }
}
