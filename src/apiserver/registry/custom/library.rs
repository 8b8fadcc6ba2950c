//! The Kubernetes CEL libraries beyond standard CEL that validation rules use
//! (k8s.io/apiserver/pkg/cel/library and cel-go's ext.Strings and ext.Sets, as the API
//! server's environment has them): string functions (`charAt`, `indexOf`, `lastIndexOf`,
//! `lowerAscii`, `upperAscii`, `replace`, `split`, `substring`, `trim`, `join`,
//! `format`), lists
//! (`isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf`), regular expressions
//! (`find`, `findAll`), sets (`sets.contains`, `sets.equivalent`, `sets.intersects`),
//! quantities (`quantity`, `isQuantity` and their methods), IP addresses and CIDRs (`ip`,
//! `isIP`, `ip.isCanonical`, `cidr`, `isCIDR` and their methods) and URLs (`url`,
//! `isURL`, `getScheme`, `getHost`, `getHostname`, `getPort`, `getEscapedPath`,
//! `getQuery`) and semantic versions (`semver`, `isSemver`, `major`, `minor`, `patch`,
//! `compareTo`, …). Indexes count code points, as cel-go's do.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use cel::extractors::{Arguments, This};
use cel::objects::Opaque;
use cel::{Context, ExecutionError, FunctionContext, Value};

use crate::quantity::Quantity;

type Outcome = Result<Value, String>;

/// CEL's standard library with these beside it, made once: a rule's context is a scope
/// of this one that holds only its variables (making the libraries for each evaluation
/// would cost a standard environment and some 70 functions per rule and list item).
pub fn root() -> &'static Context<'static> {
    static ROOT: LazyLock<Context<'static>> = LazyLock::new(|| {
        let mut context = Context::default();
        install(&mut context);
        context
    });
    &ROOT
}

/// Adds the libraries' functions to `context`.
fn install(context: &mut Context) {
    method(context, "charAt", char_at);
    method(context, "indexOf", |this, args| index_of(this, args, false));
    method(context, "lastIndexOf", |this, args| index_of(this, args, true));
    method(context, "lowerAscii", |this, _| Ok(string(this)?.to_ascii_lowercase().into()));
    method(context, "upperAscii", |this, _| Ok(string(this)?.to_ascii_uppercase().into()));
    method(context, "replace", replace);
    method(context, "split", split);
    method(context, "substring", substring);
    method(context, "trim", |this, _| Ok(string(this)?.trim().into()));
    method(context, "format", format);
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
    method(context, "compareTo", |this, args| Ok(Value::Int(compare(this, args)? as i64)));
    method(context, "isGreaterThan", |this, args| Ok(compare(this, args)?.is_gt().into()));
    method(context, "isLessThan", |this, args| Ok(compare(this, args)?.is_lt().into()));
    function(context, "semver", |args| {
        let normalize = matches!(args.get(1), Some(Value::Bool(true)));
        Ok(Value::Opaque(Arc::new(Semver::parse(string(first(args)?)?, normalize)?)))
    });
    function(context, "isSemver", |args| {
        let normalize = matches!(args.get(1), Some(Value::Bool(true)));
        Ok(Semver::parse(string(first(args)?)?, normalize).is_ok().into())
    });
    method(context, "major", |this, _| Ok(Value::Int(semver_value(this)?.numbers[0] as i64)));
    method(context, "minor", |this, _| Ok(Value::Int(semver_value(this)?.numbers[1] as i64)));
    method(context, "patch", |this, _| Ok(Value::Int(semver_value(this)?.numbers[2] as i64)));
    function(context, "quantity", |args| {
        let text = string(first(args)?)?;
        Quantity::parse(text)
            .map(quantity_value)
            .ok_or_else(|| format!("quantities must match the regular expression: {text:?}"))
    });
    function(context, "isQuantity", |args| Ok(Quantity::parse(string(first(args)?)?).is_some().into()));
    method(context, "ip", ip_of);
    function(context, "isIP", |args| Ok(parse_ip(string(first(args)?)?).is_ok().into()));
    function(context, "ip.isCanonical", |args| {
        let text = string(first(args)?)?;
        Ok((parse_ip(text)?.to_string() == text).into())
    });
    method(context, "family", |this, _| Ok(Value::Int(if ip_value(this)?.is_ipv4() { 4 } else { 6 })));
    method(context, "isUnspecified", |this, _| Ok(ip_value(this)?.is_unspecified().into()));
    method(context, "isLoopback", |this, _| Ok(ip_value(this)?.is_loopback().into()));
    method(context, "isLinkLocalMulticast", |this, _| Ok(is_link_local_multicast(ip_value(this)?).into()));
    method(context, "isLinkLocalUnicast", |this, _| Ok(is_link_local_unicast(ip_value(this)?).into()));
    method(context, "isGlobalUnicast", |this, _| Ok(is_global_unicast(ip_value(this)?).into()));
    function(context, "cidr", |args| Ok(Value::Opaque(Arc::new(parse_cidr(string(first(args)?)?)?))));
    function(context, "isCIDR", |args| Ok(parse_cidr(string(first(args)?)?).is_ok().into()));
    method(context, "containsIP", |this, args| {
        let ip = match first(args)? {
            Value::String(text) => parse_ip(text)?,
            other => ip_value(other)?,
        };
        Ok(cidr_value(this)?.contains(ip).into())
    });
    method(context, "containsCIDR", |this, args| {
        let other = match first(args)? {
            Value::String(text) => parse_cidr(text)?,
            other => *cidr_value(other)?,
        };
        let outer = cidr_value(this)?;
        Ok((other.prefix >= outer.prefix && outer.contains(other.address)).into())
    });
    method(context, "prefixLength", |this, _| Ok(Value::Int(i64::from(cidr_value(this)?.prefix))));
    method(context, "masked", |this, _| Ok(Value::Opaque(Arc::new(cidr_value(this)?.masked()))));
    // string(ip) and string(cidr): standard CEL's string() knows neither.
    method(context, "string", |this, _| match this {
        Value::Opaque(_) if ip_value(this).is_ok() => Ok(ip_value(this)?.to_string().into()),
        Value::Opaque(_) => Ok(cidr_value(this)?.to_string().into()),
        other => Err(format!("no such overload: string({})", type_name(other))),
    });
    function(context, "url", |args| Ok(Value::Opaque(Arc::new(Url::parse(string(first(args)?)?)?))));
    function(context, "isURL", |args| Ok(Url::parse(string(first(args)?)?).is_ok().into()));
    method(context, "getScheme", |this, _| Ok(url_value(this)?.scheme.clone().into()));
    method(context, "getHost", |this, _| Ok(url_value(this)?.host.clone().into()));
    method(context, "getHostname", |this, _| Ok(url_value(this)?.hostname().into()));
    method(context, "getPort", |this, _| Ok(url_value(this)?.port().into()));
    method(context, "getEscapedPath", |this, _| Ok(url_value(this)?.path.clone().into()));
    method(context, "getQuery", |this, _| Ok(url_value(this)?.query_map()));
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

/// cel-go's `"…".format([args])`: `%s`, `%d`, `%f`/`%.Nf`, `%e`, `%b`, `%o`, `%x`/`%X` and
/// `%%`, each taking the next argument.
fn format(this: &Value, args: &[Value]) -> Outcome {
    let template = string(this)?;
    let values = list(first(args)?)?;
    let mut next = 0;
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let digits: String = std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
            precision = Some(digits.parse::<usize>().map_err(|_| "malformed precision in format string")?);
        }
        let verb = chars.next().ok_or("unexpected end of format string")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let value = values.get(next).ok_or_else(|| format!("index {next} out of range"))?;
        next += 1;
        let number = |value: &Value| match value {
            Value::Int(i) => Ok(*i as f64),
            Value::UInt(u) => Ok(*u as f64),
            Value::Float(f) => Ok(*f),
            other => Err(format!("error during formatting: expected a number, got {}", type_name(other))),
        };
        // A number to format, or (Err) what cel-go writes for NaN and the infinities.
        let finite = |value: &Value| -> Result<Result<f64, String>, String> {
            let n = number(value)?;
            Ok(if n.is_finite() { Ok(n) } else { Err(non_finite(n)) })
        };
        let integer = |value: &Value| -> Result<i128, String> {
            match value {
                Value::Int(i) => Ok(i128::from(*i)),
                Value::UInt(u) => Ok(i128::from(*u)),
                other => Err(format!("error during formatting: expected an integer, got {}", type_name(other))),
            }
        };
        let signed = |n: i128, text: String| if n < 0 { format!("-{text}") } else { text };
        match verb {
            's' => out.push_str(&text_of(value)?),
            'd' => out.push_str(&integer(value)?.to_string()),
            'f' => match finite(value)? {
                Ok(n) => out.push_str(&format!("{:.*}", precision.unwrap_or(6), n)),
                Err(text) => out.push_str(&text),
            },
            'e' => {
                let n = match finite(value)? {
                    Ok(n) => n,
                    Err(text) => {
                        out.push_str(&text);
                        continue;
                    }
                };
                let text = format!("{:.*e}", precision.unwrap_or(6), n);
                // Go writes the exponent with a sign and at least two digits.
                let (mantissa, exponent) = text.split_once('e').expect("an exponent");
                let (sign, digits) = exponent.strip_prefix('-').map_or(("+", exponent), |d| ("-", d));
                out.push_str(&format!("{mantissa}e{sign}{digits:0>2}"));
            }
            'b' => out.push_str(&integer(value).map(|n| signed(n, format!("{:b}", n.unsigned_abs())))?),
            'o' => out.push_str(&integer(value).map(|n| signed(n, format!("{:o}", n.unsigned_abs())))?),
            'x' | 'X' => {
                let text = match value {
                    Value::String(s) => s.bytes().map(|b| format!("{b:02x}")).collect(),
                    other => integer(other).map(|n| signed(n, format!("{:x}", n.unsigned_abs())))?,
                };
                out.push_str(&if verb == 'X' { text.to_uppercase() } else { text });
            }
            other => {
                return Err(format!("could not parse formatting clause: unrecognized formatting clause \"{other}\""));
            }
        }
    }
    Ok(out.into())
}

/// NaN and the infinities as cel-go writes them.
fn non_finite(n: f64) -> String {
    match n {
        n if n.is_nan() => "NaN".into(),
        n if n > 0.0 => "Infinity".into(),
        _ => "-Infinity".into(),
    }
}

/// A value as `%s` writes it.
fn text_of(value: &Value) -> Result<String, String> {
    Ok(match value {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) if !f.is_finite() => non_finite(*f),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::List(items) => {
            format!("[{}]", items.iter().map(text_of).collect::<Result<Vec<_>, _>>()?.join(", "))
        }
        Value::Opaque(_) if ip_value(value).is_ok() => ip_value(value)?.to_string(),
        Value::Opaque(_) if cidr_value(value).is_ok() => cidr_value(value)?.to_string(),
        other => return Err(format!("error during formatting: cannot format a {}", type_name(other))),
    })
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
        Value::Opaque(_) => {
            opaque::<CelQuantity>(value).map(|q| q.0).ok_or_else(|| "no such overload: expected a quantity".into())
        }
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
    let sum = b.nanos().checked_mul(sign).and_then(|b| a.nanos().checked_add(b)).ok_or("quantity overflow")?;
    Ok(quantity_value(Quantity::from_nanos(sum)))
}

/// `compareTo`, `isGreaterThan`, `isLessThan`: of two quantities, or of two versions.
fn compare(this: &Value, args: &[Value]) -> Result<Ordering, String> {
    if let Some(version) = opaque::<Semver>(this) {
        return Ok(version.cmp(semver_value(first(args)?)?));
    }
    Ok(quantity_of(this)?.nanos().cmp(&quantity_of(first(args)?)?.nanos()))
}

/// A semantic version (semver.org 2.0.0, as blang/semver parses it): `1.2.3-rc.1+build`.
#[derive(Debug, PartialEq, Eq)]
struct Semver {
    numbers: [u64; 3],
    pre: Vec<String>,
}

impl Opaque for Semver {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.Semver"
    }
}

impl Semver {
    /// With `normalize`, a leading `v`, missing minor or patch numbers and leading
    /// zeros are forgiven (`v1.2` is 1.2.0), as the library's second argument asks.
    fn parse(text: &str, normalize: bool) -> Result<Semver, String> {
        let invalid = |why: &str| format!("could not parse {text:?} as version: {why}");
        let mut rest = text;
        if normalize {
            rest = rest.strip_prefix('v').unwrap_or(rest);
        }
        let rest = rest.split_once('+').map_or(rest, |(version, _)| version);
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let mut parts: Vec<&str> = core.split('.').collect();
        if normalize && parts.len() < 3 {
            parts.resize(3, "0");
        }
        if parts.len() != 3 {
            return Err(invalid("no major, minor and patch numbers"));
        }
        let mut numbers = [0u64; 3];
        for (number, part) in numbers.iter_mut().zip(&parts) {
            let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            if !digits || (!normalize && part.len() > 1 && part.starts_with('0')) {
                return Err(invalid(&format!("invalid number {part:?}")));
            }
            *number = part.parse().map_err(|_| invalid(&format!("invalid number {part:?}")))?;
        }
        let pre: Vec<String> = pre.map(|p| p.split('.').map(String::from).collect()).unwrap_or_default();
        for identifier in &pre {
            let allowed = identifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            let numeric_with_zero =
                identifier.len() > 1 && identifier.starts_with('0') && identifier.bytes().all(|b| b.is_ascii_digit());
            if identifier.is_empty() || !allowed || numeric_with_zero {
                return Err(invalid(&format!("invalid prerelease {identifier:?}")));
            }
        }
        Ok(Semver { numbers, pre })
    }
}

impl Ord for Semver {
    /// semver.org's precedence: numbers, then a prerelease below its release, prerelease
    /// identifiers numerically when both are numbers, else by text, numbers first.
    fn cmp(&self, other: &Semver) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                for (a, b) in self.pre.iter().zip(&other.pre) {
                    let order = match (a.parse::<u64>(), b.parse::<u64>()) {
                        (Ok(a), Ok(b)) => a.cmp(&b),
                        (Ok(_), Err(_)) => Ordering::Less,
                        (Err(_), Ok(_)) => Ordering::Greater,
                        (Err(_), Err(_)) => a.cmp(b),
                    };
                    if order.is_ne() {
                        return order;
                    }
                }
                self.pre.len().cmp(&other.pre.len())
            }
        })
    }
}

impl PartialOrd for Semver {
    fn partial_cmp(&self, other: &Semver) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn semver_value(value: &Value) -> Result<&Semver, String> {
    opaque::<Semver>(value).ok_or_else(|| "no such overload: expected a semver".into())
}

/// An IP address as a CEL value (the `net.IP` type of Kubernetes' library).
#[derive(Debug, PartialEq, Eq)]
struct CelIp(IpAddr);

impl Opaque for CelIp {
    fn runtime_type_name(&self) -> &str {
        "net.IP"
    }
}

/// A CIDR as a CEL value: the address as written and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CelCidr {
    address: IpAddr,
    prefix: u8,
}

impl Opaque for CelCidr {
    fn runtime_type_name(&self) -> &str {
        "net.CIDR"
    }
}

impl CelCidr {
    fn mask(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(v4) if self.address.is_ipv4() => {
                let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                Some(IpAddr::V4(bits.into()))
            }
            IpAddr::V6(v6) if self.address.is_ipv6() => {
                let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                Some(IpAddr::V6(bits.into()))
            }
            _ => None,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.mask(ip).is_some() && self.mask(ip) == self.mask(self.address)
    }

    fn masked(&self) -> CelCidr {
        CelCidr { address: self.mask(self.address).expect("the same family"), prefix: self.prefix }
    }
}

impl std::fmt::Display for CelCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// An address as Go's netip.ParseAddr reads it for Kubernetes: no leading zeros, no
/// zone, and no IPv4-mapped IPv6 form.
fn parse_ip(text: &str) -> Result<IpAddr, String> {
    if text.contains('%') {
        return Err(format!("IP address with zone value is not allowed: {text}"));
    }
    let ip: IpAddr =
        text.parse().map_err(|_| format!("IP Address {text:?} parse error during conversion from string"))?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(format!("IPv4-mapped IPv6 address {text:?} is not allowed"));
    }
    Ok(ip)
}

fn parse_cidr(text: &str) -> Result<CelCidr, String> {
    let invalid = || format!("network address {text:?} parse error during conversion from string");
    let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let address = parse_ip(address).map_err(|_| invalid())?;
    // Digits only, without leading zeros, as netip.ParsePrefix takes them.
    let digits =
        !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) && (prefix == "0" || !prefix.starts_with('0'));
    let prefix: u8 = prefix.parse().ok().filter(|_| digits).ok_or_else(invalid)?;
    if prefix > if address.is_ipv4() { 32 } else { 128 } {
        return Err(invalid());
    }
    Ok(CelCidr { address, prefix })
}

fn opaque<T: 'static>(value: &Value) -> Option<&T> {
    match value {
        Value::Opaque(opaque) => (opaque.as_ref() as &dyn std::any::Any).downcast_ref::<T>(),
        _ => None,
    }
}

fn ip_value(value: &Value) -> Result<IpAddr, String> {
    opaque::<CelIp>(value).map(|ip| ip.0).ok_or_else(|| "no such overload: expected an IP address".into())
}

fn cidr_value(value: &Value) -> Result<&CelCidr, String> {
    opaque::<CelCidr>(value).ok_or_else(|| "no such overload: expected a CIDR".into())
}

/// `ip("…")`, or a CIDR's address (`cidr("…").ip()`).
fn ip_of(this: &Value, _: &[Value]) -> Outcome {
    let ip = match this {
        Value::String(text) => parse_ip(text)?,
        other => cidr_value(other)?.address,
    };
    Ok(Value::Opaque(Arc::new(CelIp(ip))))
}

fn is_link_local_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    }
}

fn is_link_local_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Go's netip.Addr.IsGlobalUnicast: not unspecified, loopback, multicast, link-local
/// (nor the IPv4 broadcast address); private ranges count.
fn is_global_unicast(ip: IpAddr) -> bool {
    let multicast = match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    !(ip.is_unspecified() || ip.is_loopback() || multicast || is_link_local_unicast(ip))
}

/// A URL as Kubernetes' CEL library reads one (Go's url.ParseRequestURI, then
/// url.Parse): an absolute URI or an absolute path, kept as written.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    scheme: String,
    /// `host[:port]`, an IPv6 address in brackets.
    host: String,
    /// The path as escaped in the text.
    path: String,
    query: Option<String>,
}

impl Opaque for Url {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.URL"
    }
}

impl Url {
    fn parse(text: &str) -> Result<Url, String> {
        let invalid = |why: &str| format!("URL parse error during conversion from string: parse {text:?}: {why}");
        if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(invalid("net/url: invalid control character in URL"));
        }
        let text = text.split_once('#').map_or(text, |(before, _)| before);
        let (rest, query) = match text.split_once('?') {
            Some((rest, query)) => (rest, Some(query.to_string())),
            None => (text, None),
        };
        let scheme_end = rest.find(':').filter(|&i| {
            let scheme = &rest[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        let (scheme, rest) = match scheme_end {
            Some(i) => (rest[..i].to_ascii_lowercase(), &rest[i + 1..]),
            None if rest.starts_with('/') => (String::new(), rest),
            None => return Err(invalid("invalid URI for request")),
        };
        let (host, path) = match rest.strip_prefix("//") {
            Some(authority_and_path) => {
                let end = authority_and_path.find('/').unwrap_or(authority_and_path.len());
                let authority = &authority_and_path[..end];
                let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
                (host.to_string(), authority_and_path[end..].to_string())
            }
            None if scheme.is_empty() || rest.starts_with('/') => (String::new(), rest.to_string()),
            // An opaque URI (`mailto:x`): no host, no path.
            None => (String::new(), String::new()),
        };
        let bad_escape = path
            .match_indices('%')
            .any(|(i, _)| path.get(i + 1..i + 3).is_none_or(|hex| !hex.bytes().all(|b| b.is_ascii_hexdigit())));
        if bad_escape {
            return Err(invalid("invalid URL escape"));
        }
        if host.contains(' ') {
            return Err(invalid("invalid character \" \" in host name"));
        }
        let url = Url { scheme, host, path: escape_path(&path), query };
        if let Some(port) = url.host.strip_prefix(url.hostname_part()).and_then(|p| p.strip_prefix(':'))
            && !port.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid(&format!("invalid port {:?} after host", format!(":{port}"))));
        }
        Ok(url)
    }

    /// The host as written, without the port (brackets kept).
    fn hostname_part(&self) -> &str {
        if self.host.starts_with('[') {
            return self.host.find(']').map_or(&self.host, |i| &self.host[..=i]);
        }
        self.host.rsplit_once(':').map_or(&self.host, |(host, _)| host)
    }

    /// The host without the port and without an IPv6 address's brackets.
    fn hostname(&self) -> String {
        self.hostname_part().trim_start_matches('[').trim_end_matches(']').to_string()
    }

    fn port(&self) -> String {
        self.host.strip_prefix(self.hostname_part()).and_then(|p| p.strip_prefix(':')).unwrap_or("").to_string()
    }

    /// The query as a map of lists (url.Values): `+` is a space, escapes decoded; pairs
    /// that do not decode are left out, as url.URL.Query leaves them.
    fn query_map(&self) -> Value {
        let mut map: std::collections::HashMap<String, Vec<Value>> = std::collections::HashMap::new();
        for pair in self.query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let (Some(key), Some(value)) = (unescape(key), unescape(value)) {
                map.entry(key).or_default().push(value.into());
            }
        }
        let entries: std::collections::HashMap<String, Value> =
            map.into_iter().map(|(k, v)| (k, Value::List(Arc::new(v)))).collect();
        entries.into()
    }
}

/// A path as Go's URL.EscapedPath writes it: what a path may not hold literally
/// percent-encoded, escapes already there kept.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@%!*'()[]".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query component decoded: `+` a space, `%XX` its byte; None when an escape is bad.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn url_value(value: &Value) -> Result<&Url, String> {
    opaque::<Url>(value).ok_or_else(|| "no such overload: expected a URL".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expression: &str) -> Result<Value, String> {
        let program = cel::Program::compile(expression).map_err(|e| e.to_string())?;
        program.execute(&root().new_inner_scope()).map_err(|e| e.to_string())
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
            ("quantity('2E') == quantity('2000P') && quantity('2e3') == quantity('2k')", true),
            ("ip('10.0.0.1').family() == 4 && ip('fd00::1').family() == 6 && ip('10.0.0.1') == ip('10.0.0.1')", true),
            ("isIP('1.2.3.4') && !isIP('1.2.3.04') && !isIP('::ffff:1.2.3.4') && !isIP('fe80::1%eth0')", true),
            ("ip.isCanonical('2001:db8::1') && !ip.isCanonical('2001:DB8::1')", true),
            (
                "ip('127.0.0.1').isLoopback() && ip('0.0.0.0').isUnspecified() && ip('169.254.1.1').isLinkLocalUnicast()",
                true,
            ),
            (
                "ip('224.0.0.1').isLinkLocalMulticast() && ip('10.1.2.3').isGlobalUnicast() && !ip('::1').isGlobalUnicast()",
                true,
            ),
            ("cidr('10.0.0.0/8').containsIP('10.1.2.3') && !cidr('10.0.0.0/8').containsIP(ip('11.0.0.1'))", true),
            (
                "cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16') && !cidr('10.1.0.0/16').containsCIDR(cidr('10.0.0.0/8'))",
                true,
            ),
            ("cidr('192.168.0.1/24').ip() == ip('192.168.0.1') && cidr('192.168.0.1/24').prefixLength() == 24", true),
            ("string(cidr('192.168.0.1/24').masked()) == '192.168.0.0/24' && string(ip('::1')) == '::1'", true),
            ("isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0/33') && !isCIDR('10.0.0.0') && !isCIDR('10.0.0.0/+8')", true),
            ("string(1) == '1'", true),
            ("semver('1.2.3').major() == 1 && semver('1.2.3').minor() == 2 && semver('1.2.3').patch() == 3", true),
            (
                "semver('1.10.0').isGreaterThan(semver('1.9.9')) && semver('1.0.0-rc.1').isLessThan(semver('1.0.0'))",
                true,
            ),
            (
                "semver('1.0.0-alpha.2').isLessThan(semver('1.0.0-alpha.10')) && semver('1.0.0+b1').compareTo(semver('1.0.0')) == 0",
                true,
            ),
            (
                "isSemver('1.2.3') && !isSemver('v1.2') && isSemver('v1.2', true) && semver('v1.2', true) == semver('1.2.0')",
                true,
            ),
            ("!isSemver('01.2.3') && !isSemver('1.2.3-01') && !isSemver('1.2.3.4', true)", true),
            ("'%e %f %s'.format([double('NaN'), 1.0 / 0.0, -1.0 / 0.0]) == 'NaN Infinity -Infinity'", true),
            ("url('https://x/a(b)!').getEscapedPath() == '/a(b)!' && !isURL('/a%zz')", true),
            ("'%s has %d pods, %.2f%% ready'.format(['web', 3, 66.666]) == 'web has 3 pods, 66.67% ready'", true),
            ("'%x %X %b %o %e'.format([255, 'hi', 5, 8, 1234.5]) == 'ff 6869 101 10 1.234500e+03'", true),
            ("'%s'.format([[1, 'a']]) == '[1, a]'", true),
            ("isURL('https://example.com:80/path') && isURL('/absolute') && !isURL('relative/path')", true),
            ("url('https://example.com:80/path').getScheme() == 'https'", true),
            ("url('https://user@example.com:80/path').getHost() == 'example.com:80'", true),
            ("url('https://[::1]:80/path').getHostname() == '::1' && url('https://[::1]:80/').getPort() == '80'", true),
            (
                "url('https://example.com/').getPort() == '' && url('https://example.com/a%20b').getEscapedPath() == '/a%20b'",
                true,
            ),
            ("url('https://example.com/?k=a&k=b+c&x=%41').getQuery() == {'k': ['a', 'b c'], 'x': ['A']}", true),
            ("url('/p?q=1#frag').getQuery() == {'q': ['1']} && url('/p#frag').getEscapedPath() == '/p'", true),
            ("url('HTTPS://x/a b').getScheme() == 'https' && url('https://x/a b').getEscapedPath() == '/a%20b'", true),
            ("url('mailto:someone').getHost() == '' && url('mailto:someone').getEscapedPath() == ''", true),
        ] {
            assert_eq!(eval(expression), Ok(Value::Bool(expected)), "{expression}");
        }
        for (expression, error) in [
            ("'abc'.charAt(4)", "index out of range: 4"),
            ("'abc'.substring(2, 1)", "invalid substring range. start: 2, end: 1"),
            ("[].max()", "max called on an empty list"),
            ("quantity('x')", "quantities must match"),
            ("quantity('1.5').asInteger()", "fractional part"),
            ("ip('::ffff:1.2.3.4')", "IPv4-mapped IPv6 address"),
            ("cidr('10.0.0.0')", "parse error"),
            ("url('example.com')", "invalid URI for request"),
            ("url('https://example.com:x/')", "invalid port"),
            ("'%s %s'.format(['a'])", "index 1 out of range"),
            (
                "quantity('100000000000000000000000000000').add(quantity('100000000000000000000000000000'))",
                "quantity overflow",
            ),
        ] {
            let outcome = eval(expression);
            assert!(outcome.as_ref().is_err_and(|e| e.contains(error)), "{expression}: {outcome:?}");
        }
    }
}
