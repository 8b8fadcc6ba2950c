//! The Kubernetes CEL libraries beyond standard CEL that validation rules use
//! (k8s.io/apiserver/pkg/cel/library and cel-go's ext.Strings and ext.Sets, as the API
//! server's environment has them): string functions (`charAt`, `indexOf`, `lastIndexOf`,
//! `lowerAscii`, `upperAscii`, `replace`, `split`, `substring`, `trim`, `join`), lists
//! (`isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf`), regular expressions
//! (`find`, `findAll`), sets (`sets.contains`, `sets.equivalent`, `sets.intersects`) and
//! quantities (`quantity`, `isQuantity` and their methods). Indexes count code points,
//! as cel-go's do.

use std::cmp::Ordering;
use std::sync::Arc;

use cel::extractors::{Arguments, This};
use cel::objects::Opaque;
use cel::{Context, ExecutionError, FunctionContext, Value};

use crate::quantity::Quantity;

type Outcome = Result<Value, String>;

/// Adds the libraries' functions to a rule's context.
pub fn install(context: &mut Context) {
    method(context, "charAt", char_at);
    method(context, "indexOf", |this, args| index_of(this, args, false));
    method(context, "lastIndexOf", |this, args| index_of(this, args, true));
    method(context, "lowerAscii", |this, _| Ok(string(this)?.to_ascii_lowercase().into()));
    method(context, "upperAscii", |this, _| Ok(string(this)?.to_ascii_uppercase().into()));
    method(context, "replace", replace);
    method(context, "split", split);
    method(context, "substring", substring);
    method(context, "trim", |this, _| Ok(string(this)?.trim().into()));
    method(context, "join", join);
    method(context, "isSorted", |this, _| Ok(list(this)?.windows(2).all(|w| order(&w[0], &w[1]).is_le()).into()));
    method(context, "sum", sum);
    method(context, "min", |this, args| extreme(this, args, Ordering::Less));
    method(context, "max", |this, args| extreme(this, args, Ordering::Greater));
    method(context, "find", |this, args| Ok(regex(args)?.find(string(this)?).map_or("", |m| m.as_str()).into()));
    method(context, "findAll", find_all);
    method(context, "isInteger", |this, _| Ok((quantity_of(this)?.nanos() % 1_000_000_000 == 0).into()));
    method(context, "asInteger", as_integer);
    method(context, "asApproximateFloat", |this, _| Ok(Value::Float(quantity_of(this)?.nanos() as f64 / 1e9)));
    method(context, "sign", |this, _| Ok(Value::Int(quantity_of(this)?.nanos().signum() as i64)));
    method(context, "add", |this, args| combine(this, args, 1));
    method(context, "sub", |this, args| combine(this, args, -1));
    method(context, "compareTo", |this, args| Ok(Value::Int(compare_quantities(this, args)? as i64)));
    method(context, "isGreaterThan", |this, args| Ok(compare_quantities(this, args)?.is_gt().into()));
    method(context, "isLessThan", |this, args| Ok(compare_quantities(this, args)?.is_lt().into()));
    function(context, "quantity", |args| {
        let text = string(first(args)?)?;
        Quantity::parse(text)
            .map(quantity_value)
            .ok_or_else(|| format!("quantities must match the regular expression: {text:?}"))
    });
    function(context, "isQuantity", |args| Ok(Quantity::parse(string(first(args)?)?).is_some().into()));
    function(context, "sets.contains", |args| {
        let (a, b) = pair(args)?;
        Ok(b.iter().all(|x| a.contains(x)).into())
    });
    function(context, "sets.equivalent", |args| {
        let (a, b) = pair(args)?;
        Ok((b.iter().all(|x| a.contains(x)) && a.iter().all(|x| b.contains(x))).into())
    });
    function(context, "sets.intersects", |args| {
        let (a, b) = pair(args)?;
        Ok(a.iter().any(|x| b.contains(x)).into())
    });
}

/// A function called on a value: `this.name(args...)`.
fn method(context: &mut Context, name: &'static str, body: fn(&Value, &[Value]) -> Outcome) {
    context.add_function(name, move |ftx: &FunctionContext, This(this): This<Value>, Arguments(args): Arguments| {
        body(&this, &args).map_err(|e| ftx.error(e))
    });
}

/// A function called alone: `name(args...)`.
fn function(context: &mut Context, name: &'static str, body: fn(&[Value]) -> Outcome) {
    context.add_function(name, move |ftx: &FunctionContext, Arguments(args): Arguments| {
        body(&args).map_err(|e: String| -> ExecutionError { ftx.error(e) })
    });
}

fn string(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("no such overload: expected a string, got {}", type_name(other))),
    }
}

fn int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => i64::try_from(*u).map_err(|_| "integer overflow".to_string()),
        other => Err(format!("no such overload: expected an int, got {}", type_name(other))),
    }
}

fn list(value: &Value) -> Result<&[Value], String> {
    match value {
        Value::List(items) => Ok(items),
        other => Err(format!("no such overload: expected a list, got {}", type_name(other))),
    }
}

fn first(args: &[Value]) -> Result<&Value, String> {
    args.first().ok_or_else(|| "missing argument".to_string())
}

fn pair(args: &[Value]) -> Result<(&[Value], &[Value]), String> {
    match args {
        [a, b] => Ok((list(a)?, list(b)?)),
        _ => Err("expected two lists".into()),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        _ => "value",
    }
}

/// An optional int argument at `index`.
fn optional_int(args: &[Value], index: usize) -> Result<Option<i64>, String> {
    args.get(index).map(int).transpose()
}

fn char_at(this: &Value, args: &[Value]) -> Outcome {
    let chars: Vec<char> = string(this)?.chars().collect();
    let index = int(first(args)?)?;
    match usize::try_from(index).ok().filter(|&i| i <= chars.len()) {
        Some(i) => Ok(chars.get(i).map_or(String::new(), char::to_string).into()),
        None => Err(format!("index out of range: {index}")),
    }
}

/// `indexOf`/`lastIndexOf` of a substring (from an optional offset) or of a list element.
fn index_of(this: &Value, args: &[Value], last: bool) -> Outcome {
    if let Value::List(items) = this {
        let wanted = first(args)?;
        let found = if last { items.iter().rposition(|v| v == wanted) } else { items.iter().position(|v| v == wanted) };
        return Ok(Value::Int(found.map_or(-1, |i| i as i64)));
    }
    let chars: Vec<char> = string(this)?.chars().collect();
    let needle: Vec<char> = string(first(args)?)?.chars().collect();
    let default_offset = if last { chars.len() as i64 } else { 0 };
    let offset = optional_int(args, 1)?.unwrap_or(default_offset);
    let Some(offset) = usize::try_from(offset).ok().filter(|&o| o <= chars.len()) else {
        return Err(format!("index out of range: {offset}"));
    };
    let matches_at = |i: usize| chars.get(i..i + needle.len()) == Some(&needle[..]);
    let found = if last {
        (0..=offset.min(chars.len().saturating_sub(needle.len()))).rev().find(|&i| matches_at(i))
    } else {
        (offset..=chars.len()).find(|&i| matches_at(i))
    };
    Ok(Value::Int(found.map_or(-1, |i| i as i64)))
}

fn replace(this: &Value, args: &[Value]) -> Outcome {
    let (text, old, new) = match args {
        [old, new, ..] => (string(this)?, string(old)?, string(new)?),
        _ => return Err("replace takes the text to replace and its replacement".into()),
    };
    Ok(match optional_int(args, 2)? {
        Some(n) if n >= 0 => text.replacen(old, new, n as usize),
        _ => text.replace(old, new),
    }
    .into())
}

/// Go's strings.SplitN: n < 0 all parts, 0 none, n at most n.
fn split(this: &Value, args: &[Value]) -> Outcome {
    let (text, separator) = (string(this)?, string(first(args)?)?);
    let parts: Vec<Value> = match optional_int(args, 1)? {
        Some(0) => vec![],
        Some(n) if n > 0 && separator.is_empty() => {
            let chars: Vec<char> = text.chars().collect();
            let n = (n as usize).min(chars.len());
            let mut parts: Vec<Value> = chars[..n.saturating_sub(1)].iter().map(|c| c.to_string().into()).collect();
            parts.push(chars[n.saturating_sub(1)..].iter().collect::<String>().into());
            parts
        }
        Some(n) if n > 0 => text.splitn(n as usize, separator).map(Value::from).collect(),
        _ if separator.is_empty() => text.chars().map(|c| c.to_string().into()).collect(),
        _ => text.split(separator).map(Value::from).collect(),
    };
    Ok(Value::List(Arc::new(parts)))
}

fn substring(this: &Value, args: &[Value]) -> Outcome {
    let chars: Vec<char> = string(this)?.chars().collect();
    let start = int(first(args)?)?;
    let end = optional_int(args, 1)?.unwrap_or(chars.len() as i64);
    let in_range = |i: i64| usize::try_from(i).ok().filter(|&i| i <= chars.len());
    match (in_range(start), in_range(end)) {
        (Some(s), Some(e)) if s <= e => Ok(chars[s..e].iter().collect::<String>().into()),
        (Some(_), Some(_)) => Err(format!("invalid substring range. start: {start}, end: {end}")),
        (None, _) => Err(format!("index out of range: {start}")),
        (_, None) => Err(format!("index out of range: {end}")),
    }
}

fn join(this: &Value, args: &[Value]) -> Outcome {
    let separator = args.first().map(string).transpose()?.unwrap_or("");
    let parts: Result<Vec<&str>, String> = list(this)?.iter().map(string).collect();
    Ok(parts?.join(separator).into())
}

/// CEL's order of comparable values (numbers across kinds, strings, bools...).
fn order(a: &Value, b: &Value) -> Ordering {
    a.partial_cmp(b).unwrap_or(Ordering::Equal)
}

fn sum(this: &Value, _: &[Value]) -> Outcome {
    let items = list(this)?;
    match items.first() {
        None | Some(Value::Int(_)) => items
            .iter()
            .try_fold(0i64, |total, v| total.checked_add(int(v)?).ok_or("integer overflow".into()))
            .map(Value::Int),
        Some(Value::UInt(_)) => items
            .iter()
            .try_fold(0u64, |total, v| match v {
                Value::UInt(u) => total.checked_add(*u).ok_or_else(|| "unsigned integer overflow".to_string()),
                other => Err(format!("no such overload: sum of uint and {}", type_name(other))),
            })
            .map(Value::UInt),
        Some(Value::Float(_)) => items
            .iter()
            .try_fold(0f64, |total, v| match v {
                Value::Float(f) => Ok(total + f),
                other => Err(format!("no such overload: sum of double and {}", type_name(other))),
            })
            .map(Value::Float),
        Some(other) => Err(format!("no such overload: sum of {}", type_name(other))),
    }
}

/// A list's least or greatest element (as a method); with arguments (`min(a, b)`), the
/// least or greatest of those, as standard CEL here has them.
fn extreme(this: &Value, args: &[Value], wanted: Ordering) -> Outcome {
    let items = match this {
        Value::List(items) if args.is_empty() => &items[..],
        _ => return Err("no such overload: expected a list".into()),
    };
    let mut best = items
        .first()
        .ok_or_else(|| format!("{} called on an empty list", if wanted.is_lt() { "min" } else { "max" }))?;
    for item in &items[1..] {
        if order(item, best) == wanted {
            best = item;
        }
    }
    Ok(best.clone())
}

fn regex(args: &[Value]) -> Result<regex::Regex, String> {
    let pattern = string(first(args)?)?;
    regex::Regex::new(pattern).map_err(|e| format!("{pattern:?} is not a valid regular expression: {e}"))
}

fn find_all(this: &Value, args: &[Value]) -> Outcome {
    let text = string(this)?;
    let limit = match optional_int(args, 1)? {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    };
    let found: Vec<Value> = regex(args)?.find_iter(text).take(limit).map(|m| m.as_str().into()).collect();
    Ok(Value::List(Arc::new(found)))
}

/// A quantity as a CEL value.
#[derive(Debug, PartialEq, Eq)]
struct CelQuantity(Quantity);

impl Opaque for CelQuantity {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.Quantity"
    }
}

fn quantity_value(quantity: Quantity) -> Value {
    Value::Opaque(Arc::new(CelQuantity(quantity)))
}

fn quantity_of(value: &Value) -> Result<Quantity, String> {
    match value {
        Value::Opaque(opaque) => match (opaque.as_ref() as &dyn std::any::Any).downcast_ref::<CelQuantity>() {
            Some(q) => Ok(q.0),
            None => Err("no such overload: expected a quantity".into()),
        },
        Value::Int(i) => Ok(Quantity::from_nanos(i128::from(*i) * 1_000_000_000)),
        other => Err(format!("no such overload: expected a quantity, got {}", type_name(other))),
    }
}

fn as_integer(this: &Value, _: &[Value]) -> Outcome {
    let nanos = quantity_of(this)?.nanos();
    if nanos % 1_000_000_000 != 0 {
        return Err("cannot convert value to integer: it has a fractional part".into());
    }
    i64::try_from(nanos / 1_000_000_000)
        .map(Value::Int)
        .map_err(|_| "cannot convert value to integer: out of range".into())
}

fn combine(this: &Value, args: &[Value], sign: i128) -> Outcome {
    let (a, b) = (quantity_of(this)?, quantity_of(first(args)?)?);
    Ok(quantity_value(Quantity::from_nanos(a.nanos() + sign * b.nanos())))
}

fn compare_quantities(this: &Value, args: &[Value]) -> Result<Ordering, String> {
    Ok(quantity_of(this)?.nanos().cmp(&quantity_of(first(args)?)?.nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expression: &str) -> Result<Value, String> {
        let program = cel::Program::compile(expression).map_err(|e| e.to_string())?;
        let mut context = Context::default();
        install(&mut context);
        program.execute(&context).map_err(|e| e.to_string())
    }

    #[test]
    fn the_kubernetes_libraries_answer_as_kube_apiserver_does() {
        for (expression, expected) in [
            ("'hello'.charAt(1) == 'e' && 'hello'.charAt(5) == ''", true),
            ("'hello mellow'.indexOf('ello') == 1 && 'hello mellow'.indexOf('ello', 2) == 7", true),
            ("'hello mellow'.lastIndexOf('ello') == 7 && 'hello'.indexOf('x') == -1", true),
            ("'TacoCat'.lowerAscii() == 'tacocat' && 'TacoCat'.upperAscii() == 'TACOCAT'", true),
            ("'hello hello'.replace('he', 'we') == 'wello wello'", true),
            ("'hello hello'.replace('he', 'we', 1) == 'wello hello'", true),
            ("'a,b,c'.split(',') == ['a', 'b', 'c'] && 'a,b,c'.split(',', 2) == ['a', 'b,c']", true),
            ("'tacocat'.substring(4) == 'cat' && 'tacocat'.substring(0, 4) == 'taco'", true),
            ("'  \\ttrim\\n '.trim() == 'trim'", true),
            ("['a', 'b'].join() == 'ab' && ['a', 'b'].join('-') == 'a-b'", true),
            ("[1, 2, 3].isSorted() && !['b', 'a'].isSorted()", true),
            ("[1, 2, 3].sum() == 6 && [1.5, 2.5].sum() == 4.0 && [].sum() == 0", true),
            ("[3, 1, 2].min() == 1 && [3, 1, 2].max() == 3", true),
            ("[1, 2, 1].indexOf(1) == 0 && [1, 2, 1].lastIndexOf(1) == 2", true),
            ("'abc 123'.find('[0-9]+') == '123' && 'abc'.find('[0-9]+') == ''", true),
            ("'123 abc 456'.findAll('[0-9]+') == ['123', '456']", true),
            ("'123 abc 456'.findAll('[0-9]+', 1) == ['123']", true),
            ("sets.contains([1, 2, 3], [3, 1]) && !sets.contains([1], [2])", true),
            ("sets.equivalent([1, 2], [2, 1, 1]) && sets.intersects([1, 2], [2, 3])", true),
            ("quantity('1Gi').isGreaterThan(quantity('1G')) && quantity('500m').isLessThan(quantity('1'))", true),
            ("quantity('1') == quantity('1000m') && quantity('2k').compareTo(quantity('2000')) == 0", true),
            ("quantity('1.5').add(quantity('500m')).asInteger() == 2 && quantity('1').sub(3).sign() == -1", true),
            ("isQuantity('200Mi') && !isQuantity('2 apples') && !quantity('1.5').isInteger()", true),
        ] {
            assert_eq!(eval(expression), Ok(Value::Bool(expected)), "{expression}");
        }
        for (expression, error) in [
            ("'abc'.charAt(4)", "index out of range: 4"),
            ("'abc'.substring(2, 1)", "invalid substring range. start: 2, end: 1"),
            ("[].max()", "max called on an empty list"),
            ("quantity('x')", "quantities must match"),
            ("quantity('1.5').asInteger()", "fractional part"),
        ] {
            let outcome = eval(expression);
            assert!(outcome.as_ref().is_err_and(|e| e.contains(error)), "{expression}: {outcome:?}");
        }
    }
}
