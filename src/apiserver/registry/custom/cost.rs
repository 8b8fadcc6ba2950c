//! What a definition's CEL rules may cost, as apiextensions-apiserver bounds it when a
//! version's schema is written (a schema an update leaves as it was is not checked again):
//! each rule's worst case, estimated from the schema and counted as many times as its node
//! can occur in one object, may not pass 10 million (StaticEstimatedCostLimit), nor the
//! sum over the whole schema 100 million (StaticEstimatedCRDCostLimit). A rule that would walk an unbounded list inside a walk of
//! another is refused before any object makes the server run it.
//!
//! The estimate follows cel-go's checker cost model where it matters: a comprehension
//! (`all`, `exists`, `map`, `filter`, …) costs its body times the largest size of what it
//! walks; a membership test on a list, its size; a string function, a tenth of the
//! string's length; any other step, 1. Sizes come from the schema's `maxItems`,
//! `maxProperties` and `maxLength`, else from the largest request the server takes (3 MiB)
//! and the smallest JSON an item can be. Where cel-go charges more (string comparisons,
//! regular expressions by pattern size), this estimate stays below it, so that no
//! definition kube-apiserver installs is refused here.

use std::collections::HashMap;

use cel::common::ast::{Expr, IdedExpr, operators};
use serde_json::Value;

use super::super::Cause;

/// kube-apiserver's largest request body (3 MiB).
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// StaticEstimatedCostLimit: one rule.
const RULE_LIMIT: u64 = 10_000_000;
/// StaticEstimatedCRDCostLimit: every rule of a schema, times how often its node occurs.
const TOTAL_LIMIT: u64 = 100_000_000;

/// What an expression's value is, as far as its size goes.
#[derive(Clone, Debug)]
enum Shape<'a> {
    /// A value the schema describes.
    Schema(&'a Value),
    /// A list of at most this many items, shaped so.
    List(u64, Box<Shape<'a>>),
    /// A scalar, or a value whose size is not known: size 1.
    Unknown,
}

impl<'a> Shape<'a> {
    /// The most items (list), entries (map) or characters (string) it can have.
    fn max_size(&self) -> u64 {
        match self {
            Shape::Schema(schema) => max_size(schema),
            Shape::List(n, _) => *n,
            Shape::Unknown => 1,
        }
    }

    /// What walking it gives: a list's items, a map's keys.
    fn element(&self) -> Shape<'a> {
        match self {
            Shape::Schema(schema) if schema["type"] == "array" => {
                schema.get("items").filter(|i| i.is_object()).map_or(Shape::Unknown, Shape::Schema)
            }
            Shape::List(_, item) => (**item).clone(),
            _ => Shape::Unknown,
        }
    }

    /// A field of it, when it is an object the schema describes.
    fn field(&self, name: &str) -> Shape<'a> {
        let Shape::Schema(schema) = self else { return Shape::Unknown };
        match schema["properties"].get(name) {
            Some(property) => Shape::Schema(property),
            None => schema.get("additionalProperties").filter(|a| a.is_object()).map_or(Shape::Unknown, Shape::Schema),
        }
    }
}

/// The most a value of `schema` can hold, from its bounds or from the largest request.
fn max_size(schema: &Value) -> u64 {
    let bound = |key: &str| schema[key].as_u64();
    match schema["type"].as_str() {
        Some("array") => bound("maxItems").unwrap_or_else(|| {
            (MAX_REQUEST_BYTES - 2) / (min_json_size(schema.get("items").unwrap_or(&Value::Null)) + 1)
        }),
        Some("object") if is_map(schema) => bound("maxProperties").unwrap_or_else(|| {
            let value = schema.get("additionalProperties").filter(|a| a.is_object()).unwrap_or(&Value::Null);
            // The smallest entry: `"":` and a comma around the value (estimateMaxAdditionalPropertiesFromMinSize).
            (MAX_REQUEST_BYTES - 2) / (min_json_size(value) + 6)
        }),
        Some("string") => bound("maxLength").unwrap_or(MAX_REQUEST_BYTES - 2),
        _ => 1,
    }
}

fn is_map(schema: &Value) -> bool {
    schema.get("additionalProperties").is_some_and(|a| a.is_object() || *a == true)
}

/// The fewest bytes a value of `schema` takes in JSON (estimateMinSizeJSON): an object
/// holds at least its required properties that have no default.
fn min_json_size(schema: &Value) -> u64 {
    match schema["type"].as_str() {
        Some("boolean") => 4,
        Some("number") | Some("integer") => 1,
        // Quoted: "2000-01-01", "2000-01-01T01:01:01", "0s".
        Some("string") => match schema["format"].as_str() {
            Some("date") => 12,
            Some("date-time") => 21,
            Some("duration") => 4,
            _ => 2,
        },
        Some("array") => 2,
        Some("object") => {
            let required = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str);
            let properties = &schema["properties"];
            required
                .filter(|name| properties[*name].get("default").is_none())
                .map(|name| name.len() as u64 + min_json_size(&properties[name]) + 4)
                .fold(2, u64::saturating_add)
        }
        _ => 1,
    }
}

/// The names in scope and what they are.
type Scope<'a> = HashMap<String, Shape<'a>>;

/// String functions cel-go charges by the length of the string they read.
const STRING_TRAVERSALS: [&str; 12] = [
    "contains",
    "matches",
    "find",
    "findAll",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "indexOf",
    "lastIndexOf",
    "substring",
];

/// List functions that read every item.
const LIST_TRAVERSALS: [&str; 5] = ["sum", "min", "max", "isSorted", "join"];

/// The estimated worst-case cost of `expr`, and the shape of its value.
fn estimate<'a>(expr: &IdedExpr, scope: &Scope<'a>) -> (u64, Shape<'a>) {
    match &expr.expr {
        Expr::Literal(_) | Expr::Unspecified => (0, Shape::Unknown),
        Expr::Ident(name) => (1, scope.get(name).cloned().unwrap_or(Shape::Unknown)),
        Expr::Select(select) => {
            let (cost, operand) = estimate(&select.operand, scope);
            let shape = if select.test { Shape::Unknown } else { operand.field(&select.field) };
            (cost.saturating_add(1), shape)
        }
        Expr::List(list) => {
            let cost = list.elements.iter().map(|e| estimate(e, scope).0).fold(0, u64::saturating_add);
            (cost, Shape::List(list.elements.len() as u64, Box::new(Shape::Unknown)))
        }
        Expr::Map(_) | Expr::Struct(_) => (1, Shape::Unknown),
        Expr::Comprehension(comprehension) => {
            let (range_cost, range) = estimate(&comprehension.iter_range, scope);
            let n = range.max_size();
            let mut inner = scope.clone();
            inner.insert(comprehension.iter_var.clone(), range.element());
            if let Some(second) = &comprehension.iter_var2 {
                inner.insert(second.clone(), Shape::Unknown);
            }
            inner.insert(comprehension.accu_var.clone(), Shape::Unknown);
            let (init, accumulator) = estimate(&comprehension.accu_init, &inner);
            let step = estimate(&comprehension.loop_cond, &inner)
                .0
                .saturating_add(estimate(&comprehension.loop_step, &inner).0);
            let result = estimate(&comprehension.result, &inner).0;
            let cost = range_cost.saturating_add(init).saturating_add(n.saturating_mul(step)).saturating_add(result);
            // `map` and `filter` build a list of up to one item per step.
            let shape = match accumulator {
                Shape::List(..) => Shape::List(n, Box::new(Shape::Unknown)),
                _ => Shape::Unknown,
            };
            (cost, shape)
        }
        Expr::Call(call) => {
            let target = call.target.as_deref().map(|t| estimate(t, scope));
            let args: Vec<(u64, Shape)> = call.args.iter().map(|a| estimate(a, scope)).collect();
            let sum = target.iter().chain(&args).map(|(c, _)| *c).fold(0, u64::saturating_add);
            let size_of = |shape: Option<&Shape>| shape.map_or(1, Shape::max_size);
            let name = call.func_name.as_str();
            match name {
                // Both sides, no step of its own.
                operators::LOGICAL_AND | operators::LOGICAL_OR => (sum, Shape::Unknown),
                operators::CONDITIONAL => {
                    let branches = args.iter().skip(1).map(|(c, _)| *c).max().unwrap_or(0);
                    (args.first().map_or(0, |(c, _)| *c).saturating_add(branches), Shape::Unknown)
                }
                operators::INDEX => {
                    let element = args.first().map_or(Shape::Unknown, |(_, s)| s.element());
                    (sum.saturating_add(1), element)
                }
                // A list is searched item by item; a map looks its key up.
                operators::IN => {
                    let searched = match args.get(1).map(|(_, s)| s) {
                        Some(Shape::Schema(schema)) if schema["type"] == "object" => 1,
                        shape => size_of(shape),
                    };
                    (sum.saturating_add(searched), Shape::Unknown)
                }
                // A prefix or suffix test reads as much as the prefix or suffix.
                "startsWith" | "endsWith" => {
                    let read = size_of(args.first().map(|(_, s)| s));
                    (sum.saturating_add(1).saturating_add(read.div_ceil(10)), Shape::Unknown)
                }
                _ if STRING_TRAVERSALS.contains(&name) => {
                    let read = size_of(target.as_ref().map(|(_, s)| s).or(args.first().map(|(_, s)| s)));
                    (sum.saturating_add(1).saturating_add(read.div_ceil(10)), Shape::Unknown)
                }
                _ if LIST_TRAVERSALS.contains(&name) => {
                    let read = size_of(target.as_ref().map(|(_, s)| s).or(args.first().map(|(_, s)| s)));
                    (sum.saturating_add(1).saturating_add(read), Shape::Unknown)
                }
                _ => (sum.saturating_add(1), Shape::Unknown),
            }
        }
    }
}

/// The estimated worst-case cost of `source` run with `self` (and `oldSelf`) at `node`;
/// `None` when it does not compile (said elsewhere).
fn rule_cost(source: &str, node: &Value) -> Option<u64> {
    let program = cel::Program::compile(source).ok()?;
    let scope: Scope =
        [("self".to_string(), Shape::Schema(node)), ("oldSelf".to_string(), Shape::Schema(node))].into_iter().collect();
    Some(estimate(program.expression(), &scope).0)
}

/// kube-apiserver's getCostErrorMessage.
fn exceeds(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "Forbidden: {what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, \
         maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// Why the rules of the schema at `path` (a version's `openAPIV3Schema`) cost too much.
pub fn check(root: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut contributions = Vec::new();
    walk(root, path, Some(1), causes, &mut contributions);
    let total = contributions.iter().map(|(_, cost)| *cost).fold(0, u64::saturating_add);
    if total > TOTAL_LIMIT {
        // The four dearest, of those that are 1 % of the limit or more.
        contributions.sort_by_key(|(_, cost)| std::cmp::Reverse(*cost));
        for (at, _) in contributions.iter().filter(|(_, cost)| *cost >= TOTAL_LIMIT / 100).take(4) {
            causes.push((
                at.clone(),
                "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"
                    .into(),
            ));
        }
        let what = "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema";
        causes.push((path.to_string(), exceeds(what, total, TOTAL_LIMIT)));
    }
}

/// Checks the rules at `schema` and below, which can occur `cardinality` times in one
/// object (`None`: under a list or map without a bound); notes each expression's share
/// of the total: a rule's times the cardinality, a message expression's once.
fn walk(
    schema: &Value,
    path: &str,
    cardinality: Option<u64>,
    causes: &mut Vec<Cause>,
    contributions: &mut Vec<(String, u64)>,
) {
    if !schema.is_object() {
        return;
    }
    // Under an unbounded collection, as many as the largest request holds (maxCardinality).
    let times = cardinality.unwrap_or_else(|| (MAX_REQUEST_BYTES - 2) / (min_json_size(schema) + 1));
    for (i, rule) in schema["x-kubernetes-validations"].as_array().into_iter().flatten().enumerate() {
        for (field, what, times) in
            [("rule", "estimated rule cost", times), ("messageExpression", "estimated messageExpression cost", 1)]
        {
            let Some(cost) = rule[field].as_str().and_then(|source| rule_cost(source, schema)) else { continue };
            let at = format!("{path}.x-kubernetes-validations[{i}].{field}");
            let cost = cost.saturating_mul(times);
            if cost > RULE_LIMIT {
                causes.push((at.clone(), exceeds(what, cost, RULE_LIMIT)));
            }
            contributions.push((at, cost));
        }
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        walk(property, &format!("{path}.properties[{name}]"), cardinality, causes, contributions);
    }
    let bound = match schema["type"].as_str() {
        Some("array") => schema["maxItems"].as_u64(),
        _ => schema["maxProperties"].as_u64(),
    };
    let each = cardinality.zip(bound).map(|(outer, bound)| outer.saturating_mul(bound));
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        walk(items, &format!("{path}.items"), each, causes, contributions);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        walk(values, &format!("{path}.additionalProperties"), each, causes, contributions);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn causes(schema: Value) -> Vec<Cause> {
        let mut found = Vec::new();
        check(&schema, "s", &mut found);
        found
    }

    fn rule(rule: &str) -> Value {
        json!([{"rule": rule}])
    }

    #[test]
    fn a_walk_inside_a_walk_of_an_unbounded_list_is_refused() {
        let unique = rule("self.all(x, self.all(y, x != y || x == y))");
        let list = json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-validations": unique}}});
        let found = causes(list.clone());
        assert_eq!(found[0].0, "s.properties[tags].x-kubernetes-validations[0].rule");
        assert_eq!(
            found[0].1,
            "Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, \
             or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        );
        // Bounded, the same rule is fine.
        let mut bounded = list;
        bounded["properties"]["tags"]["maxItems"] = json!(100);
        assert_eq!(causes(bounded), []);
    }

    #[test]
    fn simple_rules_and_string_functions_on_unbounded_values_pass() {
        let schema = json!({"type": "object", "x-kubernetes-validations": rule("self.name.startsWith('a') && self.name.contains('b') && self.n > 1"),
            "properties": {"name": {"type": "string"}, "n": {"type": "integer"},
                           "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-validations": rule("self.exists(t, t == 'x')")}}});
        assert_eq!(causes(schema), []);
    }

    #[test]
    fn rules_repeated_in_every_item_of_unbounded_lists_add_up() {
        // Cheap alone (about 100), but run on each of ~1 M strings of an unbounded list: too
        // dear as a rule, and for the schema.
        let items =
            json!({"type": "string", "maxLength": 1024, "x-kubernetes-validations": rule("self.contains('k')")});
        let schema = json!({"type": "object", "properties": {"keys": {"type": "array", "items": items}}});
        let found = causes(schema.clone());
        let rule_at = "s.properties[keys].items.x-kubernetes-validations[0].rule";
        let at: Vec<&str> = found.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(at, [rule_at, rule_at, "s"]);
        assert!(
            found[0].1.starts_with("Forbidden: estimated rule cost exceeds budget by factor of 11.0x"),
            "{}",
            found[0].1
        );
        assert!(
            found[2].1.starts_with("Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1."),
            "{}",
            found[2].1
        );
        // A bound on the list, or a cheaper rule, and it fits.
        let mut bounded = schema.clone();
        bounded["properties"]["keys"]["maxItems"] = json!(10_000);
        assert_eq!(causes(bounded), []);
        let mut cheap = schema;
        cheap["properties"]["keys"]["items"]["x-kubernetes-validations"] = rule("self != 'k'");
        assert_eq!(causes(cheap), []);
    }

    #[test]
    fn sizes_come_from_bounds_else_from_the_largest_request() {
        assert_eq!(max_size(&json!({"type": "array", "maxItems": 7})), 7);
        assert_eq!(max_size(&json!({"type": "array", "items": {"type": "string"}})), (MAX_REQUEST_BYTES - 2) / 3);
        assert_eq!(
            max_size(&json!({"type": "object", "additionalProperties": {"type": "integer"}})),
            (MAX_REQUEST_BYTES - 2) / 7
        );
        let object = json!({"type": "object", "required": ["port", "name"],
            "properties": {"port": {"type": "integer"}, "name": {"type": "string", "default": "x"}}});
        assert_eq!(min_json_size(&object), 2 + 4 + 1 + 4);
        assert_eq!(max_size(&json!({"type": "string", "maxLength": 63})), 63);
        assert_eq!(
            exceeds("x", 12_000_000, RULE_LIMIT).split(" (").next().unwrap(),
            "Forbidden: x exceeds budget by factor of 1.200000x"
        );
        assert_eq!(
            exceeds("x", 54_000_000, RULE_LIMIT).split(" (").next().unwrap(),
            "Forbidden: x exceeds budget by factor of 5.4x"
        );
    }
}
