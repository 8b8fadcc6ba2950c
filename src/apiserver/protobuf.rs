//! The Kubernetes protobuf encoding of every built-in type, both ways: the `k8s\0` envelope
//! around a runtime.Unknown, and the object in it transcoded to and from its JSON form
//! through the API's own protobuf definitions (k8s.io/api, apimachinery and
//! apiextensions-apiserver 1.33, vendored in `proto/` and compiled by build.rs into one
//! descriptor set) rather than field tables of our own.
//!
//! What protobuf does not say, the Go types beside the definitions do
//! (`proto/go-fields.txt`, see scripts/protobuf-sources): which fields are pointers (Go
//! sends every other field even when unset, so their zero value means unset and is left
//! out of the JSON), which are embedded inline, and JSON names unlike protobuf's. A handful
//! of apimachinery's messages have a JSON form of their own: IntOrString, Quantity, Time,
//! MicroTime, Duration, and raw JSON carried as bytes.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage};
use serde_json::{Map, Number, Value};

use super::errors::ApiError;

const MAGIC: &[u8] = b"k8s\x00";
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes-api.pb"));
static GO_FIELDS: &str = include_str!("proto/go-fields.txt");

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
/// Messages that carry JSON as bytes in their first field.
const RAW_JSON: [&str; 3] = [
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON",
];
const EXTENSIONS: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1";

struct Types {
    pool: DescriptorPool,
    /// `message.field` of Go pointers, of inline structs, and JSON names.
    pointers: HashSet<String>,
    inline: HashSet<String>,
    json_names: HashMap<String, String>,
}

fn types() -> &'static Types {
    static TYPES: OnceLock<Types> = OnceLock::new();
    TYPES.get_or_init(|| {
        let pool = DescriptorPool::decode(DESCRIPTORS).expect("build.rs compiled the API's descriptors");
        let (mut pointers, mut inline, mut json_names) = (HashSet::new(), HashSet::new(), HashMap::new());
        for line in GO_FIELDS.lines() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("P"), Some(field), _) => drop(pointers.insert(field.to_string())),
                (Some("I"), Some(field), _) => drop(inline.insert(field.to_string())),
                (Some("J"), Some(field), Some(name)) => drop(json_names.insert(field.to_string(), name.to_string())),
                _ => {}
            }
        }
        Types { pool, pointers, inline, json_names }
    })
}

/// Loads the descriptors now rather than at the first protobuf request.
pub fn prepare() {
    types();
}

/// The protobuf message of `kind` in `api_version`: k8s.io/api's package for the group
/// (its first label), apiextensions' own, or apimachinery's meta/v1 for the kinds every
/// group shares (DeleteOptions, Status, …).
fn message_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let pool = &types().pool;
    let own = match api_version.split_once('/') {
        None => format!("k8s.io.api.core.{api_version}.{kind}"),
        Some(("apiextensions.k8s.io", version)) => {
            format!("{EXTENSIONS}.{kind}").replace(".v1.", &format!(".{version}."))
        }
        Some((group, version)) => format!("k8s.io.api.{}.{version}.{kind}", group.split('.').next().unwrap_or(group)),
    };
    pool.get_message_by_name(&own).or_else(|| pool.get_message_by_name(&format!("{META}.{kind}")))
}

fn malformed(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("the protobuf body is malformed: {what}"))
}

/// Whether field `field` of OpenAPI definition `definition` is a Go pointer (sent only
/// when set); other struct fields are Go values, always there.
pub fn is_go_pointer(definition: &str, field: &str) -> bool {
    let message = definition.strip_prefix("io.k8s.").unwrap_or(definition).replace('-', "_");
    types().pointers.contains(&format!("k8s.io.{message}.{field}"))
}

/// A protobuf body as the JSON object it encodes; `kind` is what the URL expects, when the
/// envelope names none.
pub fn decode(body: &[u8], api_version: &str, kind: &str) -> Result<Value, ApiError> {
    let unknown = body.strip_prefix(MAGIC).ok_or_else(|| malformed("no k8s envelope"))?;
    let envelope = types().pool.get_message_by_name(UNKNOWN).expect("runtime.Unknown is compiled in");
    let envelope = DynamicMessage::decode(envelope, unknown).map_err(malformed)?;
    let text = |message: &DynamicMessage, name: &str| {
        message.get_field_by_name(name).and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    };
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(prost_reflect::Value::as_message);
    let body_version = type_meta.map(|t| text(t, "apiVersion")).filter(|v| !v.is_empty());
    let body_kind = type_meta.map(|t| text(t, "kind")).filter(|k| !k.is_empty());
    let (api_version, kind) = (body_version.unwrap_or(api_version.into()), body_kind.unwrap_or(kind.into()));
    let raw = envelope.get_field_by_name("raw").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    let descriptor = message_for(&api_version, &kind)
        .ok_or_else(|| ApiError::unsupported_media_type(&format!("{MEDIA_TYPE} for {api_version} {kind}")))?;
    let message = DynamicMessage::decode(descriptor, raw).map_err(malformed)?;
    let mut object = match to_json(&message).map_err(malformed)? {
        Value::Object(object) => object,
        _ => Map::new(),
    };
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    Ok(Value::Object(object))
}

/// `object` (its apiVersion and kind naming its message) in the protobuf encoding.
pub fn encode(object: &Value) -> Result<Vec<u8>, ApiError> {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or_default();
    let descriptor = message_for(api_version, kind)
        .ok_or_else(|| ApiError::internal(format!("no protobuf message for {api_version} {kind}")))?;
    let message = from_json(&descriptor, object).map_err(|e| ApiError::internal(format!("protobuf: {e}")))?;
    Ok(wrap(api_version, kind, &message))
}

/// `message` in the `k8s\0` envelope, a runtime.Unknown naming its type.
fn wrap(api_version: &str, kind: &str, message: &DynamicMessage) -> Vec<u8> {
    use prost_reflect::Value as P;
    let pool = &types().pool;
    let mut type_meta =
        DynamicMessage::new(pool.get_message_by_name("k8s.io.apimachinery.pkg.runtime.TypeMeta").expect("TypeMeta"));
    type_meta.set_field_by_name("apiVersion", P::String(api_version.into()));
    type_meta.set_field_by_name("kind", P::String(kind.into()));
    let mut envelope = DynamicMessage::new(pool.get_message_by_name(UNKNOWN).expect("runtime.Unknown"));
    envelope.set_field_by_name("typeMeta", P::Message(type_meta));
    envelope.set_field_by_name("raw", P::Bytes(message.encode_to_vec().into()));
    envelope.set_field_by_name("contentEncoding", P::String(String::new()));
    envelope.set_field_by_name("contentType", P::String(String::new()));
    [MAGIC, &envelope.encode_to_vec()].concat()
}

/// One watch event in the protobuf stream framing (`;stream=watch`): a 4-byte big-endian
/// length, then a metav1.WatchEvent in its envelope, its object encoded in turn.
pub fn encode_watch_event(event_type: &str, object: &Value) -> Result<Vec<u8>, ApiError> {
    let raw = encode(object)?;
    let pool = &types().pool;
    let mut extension = DynamicMessage::new(pool.get_message_by_name(RAW_JSON[0]).expect("RawExtension"));
    extension.set_field_by_name("raw", prost_reflect::Value::Bytes(raw.into()));
    let mut watch = DynamicMessage::new(pool.get_message_by_name(&format!("{META}.WatchEvent")).expect("WatchEvent"));
    watch.set_field_by_name("type", prost_reflect::Value::String(event_type.into()));
    watch.set_field_by_name("object", prost_reflect::Value::Message(extension));
    let framed = wrap("v1", "WatchEvent", &watch);
    Ok([(framed.len() as u32).to_be_bytes().as_slice(), &framed].concat())
}

/// A message's JSON form.
fn to_json(message: &DynamicMessage) -> Result<Value, String> {
    let descriptor = message.descriptor();
    let name = descriptor.full_name();
    if let Some(field) = message.unknown_fields().next() {
        return Err(format!("field {} of {name} is not in Kubernetes 1.33's {name}", field.number()));
    }
    let get = |field: &str| message.get_field_by_name(field);
    match name {
        INT_OR_STRING => {
            return Ok(match get("type").and_then(|t| t.as_i64()) {
                Some(1) => get("strVal").and_then(|s| s.as_str().map(|s| Value::String(s.into()))).unwrap_or_default(),
                _ => Value::from(get("intVal").and_then(|i| i.as_i32()).unwrap_or(0)),
            });
        }
        QUANTITY => {
            return Ok(get("string").and_then(|s| s.as_str().map(|s| Value::String(s.into()))).unwrap_or_default());
        }
        TIME | MICRO_TIME => {
            let seconds = get("seconds").and_then(|s| s.as_i64()).unwrap_or(0);
            let nanos = get("nanos").and_then(|n| n.as_i32()).unwrap_or(0);
            return Ok(format_time(seconds, nanos, name == MICRO_TIME).map_or(Value::Null, Value::String));
        }
        DURATION => return Ok(Value::String(format_duration(get("duration").and_then(|d| d.as_i64()).unwrap_or(0)))),
        _ if RAW_JSON.contains(&name) => {
            let raw = message.fields().next().and_then(|(_, v)| v.as_bytes().cloned()).unwrap_or_default();
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&raw).map_err(|e| format!("{name}: not JSON: {e}"));
        }
        _ if name.starts_with(EXTENSIONS) && name.ends_with("OrBool") => {
            return match get("schema").filter(|_| message.has_field_by_name("schema")) {
                Some(schema) => to_json(schema.as_message().ok_or("JSONSchemaPropsOrBool")?),
                None => Ok(Value::Bool(get("allows").and_then(|a| a.as_bool()).unwrap_or(false))),
            };
        }
        _ if name.starts_with(EXTENSIONS) && (name.ends_with("OrArray") || name.ends_with("OrStringArray")) => {
            if message.has_field_by_name("schema") {
                return to_json(get("schema").as_deref().and_then(|s| s.as_message()).ok_or("schema")?);
            }
            let (_, list) = message.fields().find(|(f, _)| f.is_list()).ok_or("an empty list")?;
            return proto_value_json(list, &list_kind(&descriptor)?);
        }
        _ => {}
    }
    if let Some(items) = named_list(&descriptor) {
        return proto_value_json(&message.get_field(&items), &items.kind());
    }
    let t = types();
    let mut object = Map::new();
    for (field, value) in message.fields() {
        let key = format!("{name}.{}", field.name());
        let json = field_json(&field, value)?;
        if !t.pointers.contains(&key) && is_unset(&field, &json) {
            continue;
        }
        if t.inline.contains(&key) {
            if let Value::Object(inner) = json {
                object.extend(inner);
            }
            continue;
        }
        let json_name = t.json_names.get(&key).map_or(field.name(), String::as_str);
        object.insert(json_name.to_string(), json);
    }
    Ok(Value::Object(object))
}

/// The one field of a message that stands for a Go named slice type (`ExtraValue
/// []string`, `Verbs`): its JSON form is the list itself.
fn named_list(descriptor: &MessageDescriptor) -> Option<FieldDescriptor> {
    let mut fields = descriptor.fields();
    match (fields.next(), fields.next()) {
        (Some(only), None) if only.name() == "items" && only.is_list() => Some(only),
        _ => None,
    }
}

/// The kind of the list field of a JSONSchemaProps…OrArray message.
fn list_kind(descriptor: &MessageDescriptor) -> Result<Kind, String> {
    descriptor.fields().find(|f| f.is_list()).map(|f| f.kind()).ok_or_else(|| "no list".into())
}

/// What a Go value field's zero is: unset (its JSON would leave it out, or say null).
fn is_unset(field: &FieldDescriptor, json: &Value) -> bool {
    match json {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        // A message is sent whole even when empty (Go JSON keeps `"status": {}`); a map not.
        Value::Object(o) => field.is_map() && o.is_empty(),
    }
}

fn field_json(field: &FieldDescriptor, value: &prost_reflect::Value) -> Result<Value, String> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { return Err("a map without entries".into()) };
        let value_kind = entry.map_entry_value_field().kind();
        let map = value.as_map().ok_or("a map")?;
        let mut object = Map::new();
        for (key, value) in map {
            let key = match key {
                MapKey::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            object.insert(key, proto_value_json(value, &value_kind)?);
        }
        return Ok(Value::Object(object));
    }
    proto_value_json(value, &field.kind())
}

fn proto_value_json(value: &prost_reflect::Value, kind: &Kind) -> Result<Value, String> {
    use prost_reflect::Value as P;
    Ok(match value {
        P::Bool(b) => Value::Bool(*b),
        P::I32(i) => Value::from(*i),
        P::I64(i) => Value::from(*i),
        P::U32(u) => Value::from(*u),
        P::U64(u) => Value::from(*u),
        P::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        P::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        P::String(s) => Value::String(s.clone()),
        P::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        P::EnumNumber(n) => Value::from(*n),
        P::Message(m) => to_json(m)?,
        P::List(items) => Value::Array(items.iter().map(|i| proto_value_json(i, kind)).collect::<Result<_, _>>()?),
        P::Map(_) => return Err("a nested map".into()),
    })
}

/// The message `descriptor` made from its JSON form.
fn from_json(descriptor: &MessageDescriptor, json: &Value) -> Result<DynamicMessage, String> {
    use prost_reflect::Value as P;
    let name = descriptor.full_name();
    let mut message = DynamicMessage::new(descriptor.clone());
    let set = |message: &mut DynamicMessage, field: &str, value: P| message.set_field_by_name(field, value);
    match name {
        INT_OR_STRING => {
            match json {
                Value::String(s) => {
                    set(&mut message, "type", P::I64(1));
                    set(&mut message, "strVal", P::String(s.clone()));
                }
                other => {
                    set(&mut message, "type", P::I64(0));
                    set(&mut message, "intVal", P::I32(other.as_i64().unwrap_or(0) as i32));
                }
            }
            return Ok(message);
        }
        QUANTITY => {
            let text = match json {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            set(&mut message, "string", P::String(text));
            return Ok(message);
        }
        TIME | MICRO_TIME => {
            let (seconds, nanos) =
                parse_time(json.as_str().unwrap_or_default()).ok_or_else(|| format!("{json}: not a time"))?;
            set(&mut message, "seconds", P::I64(seconds));
            if name == MICRO_TIME || nanos != 0 {
                set(&mut message, "nanos", P::I32(nanos));
            }
            return Ok(message);
        }
        DURATION => {
            let nanos =
                parse_duration(json.as_str().unwrap_or_default()).ok_or_else(|| format!("{json}: not a duration"))?;
            set(&mut message, "duration", P::I64(nanos));
            return Ok(message);
        }
        _ if RAW_JSON.contains(&name) => {
            let field = descriptor.fields().next().ok_or("raw JSON without a field")?;
            message.set_field(&field, P::Bytes(serde_json::to_vec(json).map_err(|e| e.to_string())?.into()));
            return Ok(message);
        }
        _ if name.starts_with(EXTENSIONS) && name.ends_with("OrBool") => {
            match json {
                Value::Bool(b) => set(&mut message, "allows", P::Bool(*b)),
                other => {
                    let schema = descriptor.get_field_by_name("schema").ok_or("schema")?;
                    let Kind::Message(props) = schema.kind() else { return Err("schema".into()) };
                    set(&mut message, "allows", P::Bool(true));
                    message.set_field(&schema, P::Message(from_json(&props, other)?));
                }
            }
            return Ok(message);
        }
        _ if name.starts_with(EXTENSIONS) && (name.ends_with("OrArray") || name.ends_with("OrStringArray")) => {
            match json {
                Value::Array(items) => {
                    let list = descriptor.fields().find(|f| f.is_list()).ok_or("list")?;
                    let kind = list.kind();
                    let items = items.iter().map(|i| json_proto_value(i, &kind)).collect::<Result<_, _>>()?;
                    message.set_field(&list, P::List(items));
                }
                other => {
                    let schema = descriptor.get_field_by_name("schema").ok_or("schema")?;
                    let Kind::Message(props) = schema.kind() else { return Err("schema".into()) };
                    message.set_field(&schema, P::Message(from_json(&props, other)?));
                }
            }
            return Ok(message);
        }
        _ => {}
    }
    if let (Some(items), Value::Array(values)) = (named_list(descriptor), json) {
        let values = values.iter().map(|v| json_proto_value(v, &items.kind())).collect::<Result<_, _>>()?;
        message.set_field(&items, P::List(values));
        return Ok(message);
    }
    let Value::Object(object) = json else { return Err(format!("{name}: an object expected, not {json}")) };
    let t = types();
    let mut inline: HashMap<String, Map<String, Value>> = HashMap::new();
    for (key, value) in object {
        if value.is_null() {
            continue;
        }
        let field = descriptor.fields().find(|f| {
            let full = format!("{name}.{}", f.name());
            !t.inline.contains(&full) && t.json_names.get(&full).map_or(f.name(), String::as_str) == key
        });
        match field {
            Some(field) => {
                let proto = if field.is_map() {
                    let Kind::Message(entry) = field.kind() else { return Err("map".into()) };
                    let value_kind = entry.map_entry_value_field().kind();
                    let Value::Object(entries) = value else { return Err(format!("{name}.{key}: an object expected")) };
                    let mut map = HashMap::new();
                    for (k, v) in entries {
                        map.insert(MapKey::String(k.clone()), json_proto_value(v, &value_kind)?);
                    }
                    P::Map(map)
                } else if field.is_list() {
                    let Value::Array(items) = value else { return Err(format!("{name}.{key}: a list expected")) };
                    P::List(items.iter().map(|i| json_proto_value(i, &field.kind())).collect::<Result<_, _>>()?)
                } else {
                    json_proto_value(value, &field.kind())?
                };
                message.set_field(&field, proto);
            }
            None => {
                // A field of a struct Go embeds inline.
                let holder = descriptor.fields().find(|f| {
                    t.inline.contains(&format!("{name}.{}", f.name()))
                        && matches!(f.kind(), Kind::Message(m) if message_has_json_field(&m, key))
                });
                let Some(holder) = holder else {
                    // The type of an object is its envelope's (or its list's), not a field.
                    if key == "apiVersion" || key == "kind" {
                        continue;
                    }
                    return Err(format!("{name} has no field {key}"));
                };
                inline.entry(holder.name().to_string()).or_default().insert(key.clone(), value.clone());
            }
        }
    }
    for (field, values) in inline {
        let field = descriptor.get_field_by_name(&field).expect("found above");
        let Kind::Message(inner) = field.kind() else { continue };
        message.set_field(&field, P::Message(from_json(&inner, &Value::Object(values))?));
    }
    Ok(message)
}

fn message_has_json_field(descriptor: &MessageDescriptor, key: &str) -> bool {
    let t = types();
    descriptor.fields().any(|f| {
        let full = format!("{}.{}", descriptor.full_name(), f.name());
        if t.inline.contains(&full) {
            return matches!(f.kind(), Kind::Message(m) if message_has_json_field(&m, key));
        }
        t.json_names.get(&full).map_or(f.name(), String::as_str) == key
    })
}

fn json_proto_value(json: &Value, kind: &Kind) -> Result<prost_reflect::Value, String> {
    use prost_reflect::Value as P;
    let number = || json.as_f64().ok_or_else(|| format!("{json}: a number expected"));
    Ok(match kind {
        Kind::Bool => P::Bool(json.as_bool().ok_or_else(|| format!("{json}: a boolean expected"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => P::I32(number()? as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            P::I64(json.as_i64().map_or_else(|| number().map(|n| n as i64), Ok)?)
        }
        Kind::Uint32 | Kind::Fixed32 => P::U32(number()? as u32),
        Kind::Uint64 | Kind::Fixed64 => P::U64(number()? as u64),
        Kind::Float => P::F32(number()? as f32),
        Kind::Double => P::F64(number()?),
        Kind::String => P::String(match json {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Kind::Bytes => P::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(json.as_str().unwrap_or_default())
                .map_err(|e| format!("not base64: {e}"))?
                .into(),
        ),
        Kind::Enum(_) => P::EnumNumber(number()? as i32),
        Kind::Message(descriptor) => P::Message(from_json(descriptor, json)?),
    })
}

/// metav1.Time's JSON: RFC 3339 in UTC, whole seconds (MicroTime: microseconds); Go's
/// zero time (and the Unix epoch sent for it by older clients) is no time.
fn format_time(seconds: i64, nanos: i32, micro: bool) -> Option<String> {
    const GO_ZERO: i64 = -62_135_596_800;
    if seconds == GO_ZERO || (seconds == 0 && nanos == 0) {
        return None;
    }
    let time = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    let date = time.date();
    let clock = time.time();
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    );
    Some(if micro { format!("{base}.{:06}Z", nanos / 1000) } else { format!("{base}Z") })
}

fn parse_time(text: &str) -> Option<(i64, i32)> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((time.unix_timestamp(), time.nanosecond() as i32))
}

/// Go's time.Duration String: `1h2m3.5s`, `150ms`, `0s`.
fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (value, unit) = match n {
            n if n < 1_000 => (n as f64, "ns"),
            n if n < 1_000_000 => (n as f64 / 1e3, "µs"),
            n => (n as f64 / 1e6, "ms"),
        };
        return format!("{sign}{value}{unit}");
    }
    let (hours, minutes) = (n / 3_600_000_000_000, n / 60_000_000_000 % 60);
    let seconds = (n % 60_000_000_000) as f64 / 1e9;
    let mut out = sign.to_string();
    if hours > 0 {
        out += &format!("{hours}h");
    }
    if hours > 0 || minutes > 0 {
        out += &format!("{minutes}m");
    }
    out + &format!("{seconds}s")
}

fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit..];
    }
    Some(if negative { -total as i64 } else { total as i64 })
}

/// A length-delimited field (wire type 2): what the OpenAPI v2 protobuf document is made of.
pub fn encode_field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
        encode_field(number, bytes)
    }

    fn varint_field(number: u32, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut out);
        prost::encoding::encode_varint(value, &mut out);
        out
    }

    fn envelope(api_version: &[u8], kind: &[u8], object: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version), field(2, kind)].concat();
        [MAGIC.to_vec(), field(1, &type_meta), field(2, object)].concat()
    }

    #[test]
    fn decodes_what_kubectl_create_secret_sends() {
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let meta = [field(1, b"creds"), field(11, &labels)].concat();
        let data = [field(1, b"password"), field(2, b"s3cret")].concat();
        let secret = [field(1, &meta), field(2, &data), field(3, b"Opaque")].concat();
        let body = envelope(b"v1", b"Secret", &secret);
        assert_eq!(
            decode(&body, "v1", "Secret").unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "labels": {"app": "web"}},
                   "data": {"password": "czNjcmV0"}, "type": "Opaque"})
        );
        assert_eq!(decode(&body[..body.len() - 3], "v1", "Secret").unwrap_err().code, 400);
    }

    /// As Go marshals what `kubectl create deployment web --image=nginx --port=80` makes:
    /// empty strings, an unset hostPort and the zero creationTimestamp included, `replicas`
    /// (a pointer) set to 0.
    #[test]
    fn decodes_a_deployment_as_go_marshals_it() {
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let zero_time = varint_field(1, -62_135_596_800i64 as u64);
        let meta = [field(1, b"web"), field(2, b""), field(11, &labels), field(8, &zero_time)].concat();
        let quantity = field(1, b"100m");
        let limits = [field(1, b"cpu"), field(2, &quantity)].concat();
        let port = [varint_field(2, 0), varint_field(3, 80), field(4, b"TCP")].concat();
        let container =
            [field(1, b"nginx"), field(2, b"nginx"), field(6, &port), field(8, &field(1, &limits))].concat();
        let template =
            [field(1, &[field(11, &labels), field(8, &zero_time)].concat()), field(2, &field(2, &container))].concat();
        let surge = [varint_field(1, 1), field(3, b"25%")].concat();
        let strategy = [field(1, b"RollingUpdate"), field(2, &field(2, &surge))].concat();
        let spec =
            [varint_field(1, 0), field(2, &field(1, &labels)), field(3, &template), field(4, &strategy)].concat();
        let deployment = [field(1, &meta), field(2, &spec), field(3, b"")].concat();
        let body = envelope(b"apps/v1", b"Deployment", &deployment);
        let decoded = decode(&body, "apps/v1", "Deployment").unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                  "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                                  "resources": {"limits": {"cpu": "100m"}}}]}},
                            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}},
                   "status": {}})
        );
        // And back: what we encode decodes to the same JSON.
        assert_eq!(decode(&encode(&decoded).unwrap(), "apps/v1", "Deployment").unwrap(), decoded);
    }

    /// Every field of a Pod with what a debug container, affinity and volumes bring: one
    /// round trip through protobuf keeps it whole (kubectl 1.33 sends such bodies).
    #[test]
    fn a_rich_pod_goes_through_protobuf_and_back_whole() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "creationTimestamp": "2024-05-06T07:08:09Z",
                         "annotations": {"a": "b"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "name": "r", "uid": "u", "controller": true}],
                         "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                                            "time": "2024-05-06T07:08:09Z", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {"f:containers": {}}}}]},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
                                "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": false},
                                "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "c"}],
                "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "s", "secret": {"secretName": "x", "defaultMode": 420}}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]}}},
                "terminationGracePeriodSeconds": 0,
            },
            "status": {"phase": "Running", "startTime": "2024-05-06T07:08:10Z"}
        });
        let bytes = encode(&pod).unwrap();
        assert_eq!(decode(&bytes, "v1", "Pod").unwrap(), pod);
    }

    /// A value of `schema` with every field set, none to a zero (which Go's protobuf
    /// leaves unset), `depth` levels deep at most (schemas nest in themselves).
    fn sample(definitions: &Map<String, Value>, schema: &Value, depth: usize) -> Option<Value> {
        if depth == 0 {
            return None;
        }
        let reference = schema["$ref"].as_str().or_else(|| schema["allOf"][0]["$ref"].as_str());
        if let Some(name) = reference.map(|r| r.trim_start_matches("#/components/schemas/")) {
            return match name.rsplit('.').next().unwrap_or_default() {
                "Time" => Some(json!("2024-01-02T03:04:05Z")),
                "MicroTime" => Some(json!("2024-01-02T03:04:05.123456Z")),
                "Quantity" => Some(json!("1Gi")),
                "IntOrString" => Some(json!("25%")),
                "RawExtension" | "JSON" => Some(json!({"a": [1, "b"]})),
                "FieldsV1" => Some(json!({"f:spec": {"f:replicas": {}}})),
                "JSONSchemaPropsOrBool" => Some(json!(true)),
                "JSONSchemaPropsOrArray" | "JSONSchemaPropsOrStringArray" => None,
                _ => sample(definitions, &definitions[name], depth - 1),
            };
        }
        match schema["type"].as_str() {
            Some("string") if schema["format"] == "byte" => Some(json!("aGk=")),
            Some("string") => Some(json!("s")),
            Some("integer") => Some(json!(3)),
            Some("number") => Some(json!(1.5)),
            Some("boolean") => Some(json!(true)),
            Some("array") => Some(json!([sample(definitions, &schema["items"], depth - 1)?])),
            _ if schema["additionalProperties"].is_object() => {
                Some(json!({"k": sample(definitions, &schema["additionalProperties"], depth - 1)?}))
            }
            _ => {
                let properties = schema["properties"].as_object()?;
                // Objects inside objects have no type meta in protobuf (list items,
                // volumeClaimTemplates): the top level's is set by the caller.
                let fields: Map<String, Value> = properties
                    .iter()
                    .filter(|(name, _)| *name != "apiVersion" && *name != "kind")
                    .filter_map(|(name, field)| Some((name.clone(), sample(definitions, field, depth - 1)?)))
                    .collect();
                Some(Value::Object(fields))
            }
        }
    }

    /// Every kind of Kubernetes 1.33 with a protobuf message, each field set: JSON to
    /// protobuf and back gives the same JSON.
    #[test]
    fn every_kind_goes_through_protobuf_and_back_whole() {
        let definitions = crate::apiserver::openapi::parse();
        let mut failures = Vec::new();
        let mut checked = 0;
        for schema in definitions.values() {
            for gvk in schema["x-kubernetes-group-version-kind"].as_array().into_iter().flatten() {
                let (group, version, kind) =
                    (gvk["group"].as_str().unwrap(), gvk["version"].as_str().unwrap(), gvk["kind"].as_str().unwrap());
                let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
                if message_for(&api_version, kind).is_none() {
                    continue;
                }
                let mut object = sample(&definitions, schema, 12).unwrap();
                object["apiVersion"] = api_version.clone().into();
                object["kind"] = kind.into();
                let back = encode(&object).and_then(|bytes| decode(&bytes, &api_version, kind));
                match back {
                    Ok(back) if back == object => checked += 1,
                    Ok(back) => failures.push(format!("{api_version} {kind}: {}", difference(&object, &back, ""))),
                    Err(e) => failures.push(format!("{api_version} {kind}: {}", e.message)),
                }
            }
        }
        assert!(failures.is_empty(), "{} of {}:\n{}", failures.len(), checked + failures.len(), failures.join("\n"));
        assert!(checked > 200, "{checked}");
    }

    /// Where two JSON values first differ.
    fn difference(a: &Value, b: &Value, path: &str) -> String {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for key in a.keys().chain(b.keys()) {
                    if a.get(key) != b.get(key) {
                        return difference(
                            &a.get(key).cloned().unwrap_or_default(),
                            &b.get(key).cloned().unwrap_or_default(),
                            &format!("{path}.{key}"),
                        );
                    }
                }
                String::new()
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
                difference(&a[i], &b[i], &format!("{path}[{i}]"))
            }
            _ => format!("{path}: {a} became {b}"),
        }
    }

    #[test]
    fn delete_options_come_from_meta_v1() {
        let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                             "propagationPolicy": "Foreground", "dryRun": ["All"]});
        assert_eq!(decode(&encode(&options).unwrap(), "v1", "DeleteOptions").unwrap(), options);
    }

    #[test]
    fn a_field_of_a_newer_release_is_named_not_dropped() {
        let meta = field(1, b"cm");
        let config_map = [field(1, &meta), field(99, b"x")].concat();
        let err = decode(&envelope(b"v1", b"ConfigMap", &config_map), "v1", "ConfigMap").unwrap_err();
        assert!(err.message.contains("field 99 of k8s.io.api.core.v1.ConfigMap"), "{}", err.message);
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(format_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(format_duration(150_000_000), "150ms");
        assert_eq!(parse_duration("1h2m3.5s"), Some(3_723_500_000_000));
        assert_eq!(format_time(1_700_000_000, 0, false).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(1_700_000_000, 123_456_000, true).unwrap(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some((1_700_000_000, 0)));
        assert_eq!(format_time(-62_135_596_800, 0, false), None);
    }
}
