//! The Kubernetes protobuf encoding, for the bodies kubectl 1.32+ sends from its typed
//! commands (`kubectl create namespace|configmap|secret`): the `k8s\0` envelope around a
//! runtime.Unknown, and the object decoded into JSON by a field table per kind (field
//! numbers from k8s.io/api's generated.proto). Responses are JSON, which kubectl also
//! accepts.

use serde_json::{Map, Value};

use super::errors::ApiError;

const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Field {
    Str(&'static str),
    Int(&'static str),
    Bool(&'static str),
    Strings(&'static str),
    StringMap(&'static str),
    /// map<string, bytes>, which JSON carries as base64.
    BytesMap(&'static str),
    Message(&'static str, &'static [(u32, Field)]),
}

const OBJECT_META: &[(u32, Field)] = &[
    (1, Field::Str("name")),
    (2, Field::Str("generateName")),
    (3, Field::Str("namespace")),
    (6, Field::Str("resourceVersion")),
    (7, Field::Int("generation")),
    (11, Field::StringMap("labels")),
    (12, Field::StringMap("annotations")),
    (14, Field::Strings("finalizers")),
];

const NAMESPACE: &[(u32, Field)] =
    &[(1, Field::Message("metadata", OBJECT_META)), (2, Field::Message("spec", &[(1, Field::Strings("finalizers"))]))];

const CONFIG_MAP: &[(u32, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::StringMap("data")),
    (3, Field::BytesMap("binaryData")),
    (4, Field::Bool("immutable")),
];

const SECRET: &[(u32, Field)] = &[
    (1, Field::Message("metadata", OBJECT_META)),
    (2, Field::BytesMap("data")),
    (3, Field::Str("type")),
    (4, Field::StringMap("stringData")),
    (5, Field::Bool("immutable")),
];

/// The kinds whose protobuf bodies we read.
fn schema(kind: &str) -> Option<&'static [(u32, Field)]> {
    match kind {
        "Namespace" => Some(NAMESPACE),
        "ConfigMap" => Some(CONFIG_MAP),
        "Secret" => Some(SECRET),
        _ => None,
    }
}

/// A protobuf body as the JSON object it encodes.
pub fn decode(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    let bad = |what: &str| ApiError::bad_request(format!("the protobuf body is malformed: {what}"));
    let unknown = body.strip_prefix(MAGIC).ok_or_else(|| bad("no k8s envelope"))?;
    let (mut api_version, mut body_kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, value) in fields(unknown).map_err(|e| bad(&e))? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in fields(type_meta).map_err(|e| bad(&e))? {
                    match (n, v) {
                        (1, Wire::Bytes(s)) => api_version = String::from_utf8_lossy(s).into(),
                        (2, Wire::Bytes(s)) => body_kind = String::from_utf8_lossy(s).into(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(bytes)) => raw = bytes,
            _ => {}
        }
    }
    let kind = if body_kind.is_empty() { kind.to_string() } else { body_kind };
    let table = schema(&kind).ok_or_else(|| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {kind} (read for Namespace, ConfigMap and Secret; send JSON)"
        ))
    })?;
    let mut object = message(raw, table).map_err(|e| bad(&e))?;
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.into());
    Ok(Value::Object(object))
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(data: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

fn fields(data: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at < data.len() {
        let key = varint(data, &mut at)?;
        let number = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Wire::Varint(varint(data, &mut at)?),
            2 => {
                let len = varint(data, &mut at)? as usize;
                let end = at.checked_add(len).filter(|e| *e <= data.len()).ok_or("truncated field")?;
                let bytes = &data[at..end];
                at = end;
                Wire::Bytes(bytes)
            }
            1 => {
                at += 8;
                Wire::Other
            }
            5 => {
                at += 4;
                Wire::Other
            }
            other => return Err(format!("wire type {other}")),
        };
        if at > data.len() {
            return Err("truncated field".into());
        }
        out.push((number, value));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

fn message(data: &[u8], table: &[(u32, Field)]) -> Result<Map<String, Value>, String> {
    let mut object = Map::new();
    for (number, value) in fields(data)? {
        let Some((_, field)) = table.iter().find(|(n, _)| *n == number) else { continue };
        match (*field, value) {
            (Field::Str(name), Wire::Bytes(b)) => {
                object.insert(name.into(), text(b)?.into());
            }
            (Field::Int(name), Wire::Varint(v)) => {
                object.insert(name.into(), (v as i64).into());
            }
            (Field::Bool(name), Wire::Varint(v)) => {
                object.insert(name.into(), (v != 0).into());
            }
            (Field::Strings(name), Wire::Bytes(b)) => {
                let list = object.entry(name).or_insert_with(|| Value::Array(vec![]));
                list.as_array_mut().expect("a list").push(text(b)?.into());
            }
            (Field::StringMap(name) | Field::BytesMap(name), Wire::Bytes(entry)) => {
                let (mut key, mut val) = (String::new(), Vec::new());
                for (n, v) in fields(entry)? {
                    match (n, v) {
                        (1, Wire::Bytes(k)) => key = text(k)?,
                        (2, Wire::Bytes(v)) => val = v.to_vec(),
                        _ => {}
                    }
                }
                let val: Value = match field {
                    Field::BytesMap(_) => base64(&val).into(),
                    _ => text(&val)?.into(),
                };
                let map = object.entry(name).or_insert_with(|| Value::Object(Map::new()));
                map.as_object_mut().expect("a map").insert(key, val);
            }
            (Field::Message(name, inner), Wire::Bytes(b)) => {
                object.insert(name.into(), Value::Object(message(b, inner)?));
            }
            _ => return Err(format!("field {number} has the wrong wire type")),
        }
    }
    Ok(object)
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_what_kubectl_create_secret_sends() {
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let meta = [field(1, b"creds"), field(11, &labels)].concat();
        let data = [field(1, b"password"), field(2, b"s3cret")].concat();
        let secret = [field(1, &meta), field(2, &data), field(3, b"Opaque")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        assert_eq!(
            decode(&body, "Secret").unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "labels": {"app": "web"}},
                   "data": {"password": "czNjcmV0"}, "type": "Opaque"})
        );
        assert_eq!(decode(&body[..body.len() - 3], "Secret").unwrap_err().code, 400);
        let pod = [MAGIC.to_vec(), field(1, &[field(1, b"v1"), field(2, b"Pod")].concat())].concat();
        assert_eq!(decode(&pod, "Pod").unwrap_err().code, 415);
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"s3cret"), "czNjcmV0");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
