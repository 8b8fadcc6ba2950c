//! The JSON paths of printer columns and scale subresources (k8s.io/client-go
//! util/jsonpath, as a CustomResourceDefinition uses it): `.spec.replicas`,
//! `.items[0].name`, `.items[*].name`, `['a.b']`, and filters such as
//! `.status.conditions[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.a.b == value)]` (or `!=`); a bare `[?(@.a)]` keeps the items that have it.
    Filter {
        path: Vec<String>,
        equals: Option<(bool, Value)>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    /// A path, with or without the template braces (`{.spec.x}`).
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let inner = text.trim();
        let inner = inner.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(inner);
        let chars: Vec<char> = inner.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        if chars.first() == Some(&'$') {
            i = 1;
        }
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut name = String::new();
                    i = start;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        // `\.` is a dot inside a name.
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    if name.is_empty() {
                        return Err(format!("{text}: a name is missing after a dot"));
                    }
                    steps.push(Step::Field(name));
                }
                '[' => {
                    let close = find_close(&chars, i).ok_or_else(|| format!("{text}: unclosed bracket"))?;
                    let inside: String = chars[i + 1..close].iter().collect();
                    steps.push(bracket(inside.trim()).ok_or_else(|| format!("{text}: cannot read [{inside}]"))?);
                    i = close + 1;
                }
                c => return Err(format!("{text}: unexpected {c:?}; a path is made of .name and [...]")),
            }
        }
        Ok(JsonPath { steps })
    }

    /// The first value the path finds in `object`, as kube-apiserver's printer columns
    /// take it.
    pub fn first<'a>(&self, object: &'a Value) -> Option<&'a Value> {
        let mut current = vec![object];
        for step in &self.steps {
            let mut next = Vec::new();
            for value in current {
                match step {
                    Step::Field(name) => next.extend(value.get(name)),
                    Step::Index(i) => {
                        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
                        let at = if *i < 0 { items.len() as i64 + i } else { *i };
                        next.extend(usize::try_from(at).ok().and_then(|at| items.get(at)));
                    }
                    Step::All => match value {
                        Value::Array(items) => next.extend(items.iter()),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter { path, equals } => {
                        for item in value.as_array().into_iter().flatten() {
                            let found = path.iter().try_fold(item, |v, k| v.get(k));
                            let keep = match (found, equals) {
                                (Some(found), Some((true, wanted))) => found == wanted,
                                (Some(found), Some((false, wanted))) => found != wanted,
                                (Some(_), None) => true,
                                (None, _) => false,
                            };
                            if keep {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            current = next;
        }
        current.into_iter().next()
    }

    /// The field names of a path made of names only (`.spec.replicas`), for writing.
    pub fn fields(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Field(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut quote = None;
    for (i, c) in chars.iter().enumerate().skip(open + 1) {
        match (quote, c) {
            (Some(q), c) if *c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(*c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(text: &str) -> Option<&str> {
    let text = text.trim();
    text.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .or_else(|| text.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
}

fn bracket(inside: &str) -> Option<Step> {
    if inside == "*" {
        return Some(Step::All);
    }
    if let Some(name) = unquote(inside) {
        return Some(Step::Field(name.to_string()));
    }
    if let Ok(index) = inside.parse::<i64>() {
        return Some(Step::Index(index));
    }
    let filter = inside.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (left, equals) =
        match filter.find("==").map(|at| (at, true)).or_else(|| filter.find("!=").map(|at| (at, false))) {
            Some((at, equal)) => {
                let right = filter[at + 2..].trim();
                let value = match unquote(right) {
                    Some(text) => Value::String(text.to_string()),
                    None => serde_json::from_str(right).ok()?,
                };
                (filter[..at].trim(), Some((equal, value)))
            }
            None => (filter, None),
        };
    let path = left.strip_prefix('@')?;
    let path: Vec<String> = path.split('.').filter(|p| !p.is_empty()).map(String::from).collect();
    (!path.is_empty()).then_some(Step::Filter { path, equals })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_find_what_printer_columns_show() {
        let object = json!({"spec": {"replicas": 3, "items": [{"name": "a"}, {"name": "b"}], "a.b": 1},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let first = |p: &str| JsonPath::parse(p).unwrap().first(&object).cloned();
        assert_eq!(first(".spec.replicas"), Some(json!(3)));
        assert_eq!(first("{.spec.items[1].name}"), Some(json!("b")));
        assert_eq!(first(".spec.items[-1].name"), Some(json!("b")));
        assert_eq!(first(".spec.items[*].name"), Some(json!("a")));
        assert_eq!(first(".spec['a.b']"), Some(json!(1)));
        assert_eq!(first(r".spec.a\.b"), Some(json!(1)));
        assert_eq!(first(r#".status.conditions[?(@.type=="Ready")].status"#), Some(json!("True")));
        assert_eq!(first(".status.conditions[?(@.type!='Ready')].type"), Some(json!("Synced")));
        assert_eq!(first(".spec.missing"), None);
        assert_eq!(JsonPath::parse(".spec.replicas").unwrap().fields(), Some(vec!["spec", "replicas"]));
        assert!(JsonPath::parse("spec").is_err());
        assert!(JsonPath::parse(".spec[").is_err());
        assert!(JsonPath::parse(".spec..x").is_err());
    }
}
