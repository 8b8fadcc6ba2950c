//! What the server does to an object on its way in: kind and name checks, the metadata the
//! server owns (uid, creationTimestamp, generation, resourceVersion), a check against the
//! kind's type from k8s-openapi (unknown fields refused under `fieldValidation=Strict`),
//! and the validation a user can act on, with field paths.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::errors::ApiError;
use super::resources::Resource;
use crate::validation;

/// What to do with fields an object's type does not have (`fieldValidation`): refuse the
/// object (Strict), or drop them and say so (Warn, the default) or not (Ignore), as
/// kube-apiserver does.
pub struct Validation {
    strict: bool,
    warn: bool,
    /// The fields dropped.
    unknown: Vec<String>,
}

impl Validation {
    pub fn from_query(value: Option<&str>) -> Validation {
        Validation { strict: value == Some("Strict"), warn: value != Some("Ignore"), unknown: Vec::new() }
    }

    /// The unknown fields to name in Warning headers.
    pub fn warnings(&self) -> &[String] {
        if self.warn { &self.unknown } else { &[] }
    }
}

/// Checks that `object` is a `kind` its URL allows and has a valid type, and returns it
/// with the server's metadata for a new object. `namespace` is the URL's.
pub fn prepare_create(
    resource: &Resource,
    namespace: Option<&str>,
    mut object: Value,
    validation: &mut Validation,
) -> Result<Value, ApiError> {
    check_kind(resource, &mut object)?;
    let meta = metadata_mut(&mut object)?;
    let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", random_suffix()),
        _ => {
            return Err(ApiError::invalid(
                resource.kind,
                "",
                vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
            ));
        }
    };
    meta.insert("name".into(), name.clone().into());
    match (resource.namespaced, namespace, meta.get("namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty())) {
        (true, Some(url), Some(body)) if url != body => {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body}) does not match the namespace sent on the request ({url})"
            )));
        }
        (true, Some(url), _) => {
            meta.insert("namespace".into(), url.into());
        }
        (false, _, _) => {
            meta.remove("namespace");
        }
        (true, None, _) => return Err(ApiError::bad_request("a namespaced object is created in a namespace")),
    }
    meta.insert("uid".into(), new_uid().into());
    meta.insert("creationTimestamp".into(), now().into());
    meta.insert("generation".into(), 1.into());
    for owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(owned);
    }
    typed_check(resource, &mut object, validation)?;
    validate(resource, &name, &object)?;
    Ok(object)
}

/// Checks an update of `current` to `object`: same identity, the server's metadata kept,
/// generation bumped when the spec changes.
pub fn prepare_update(
    resource: &Resource,
    current: &Value,
    mut object: Value,
    validation: &mut Validation,
) -> Result<Value, ApiError> {
    check_kind(resource, &mut object)?;
    let name = current["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let meta = metadata_mut(&mut object)?;
    if meta.get("name").and_then(Value::as_str).is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object does not match the name on the URL ({name})"
        )));
    }
    meta.insert("name".into(), name.clone().into());
    for kept in ["uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        match current["metadata"].get(kept) {
            Some(value) => meta.insert(kept.into(), value.clone()),
            None => meta.remove(kept),
        };
    }
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    let spec_changed = object.get("spec") != current.get("spec");
    let meta = metadata_mut(&mut object)?;
    meta.insert("generation".into(), (generation + i64::from(spec_changed)).into());
    typed_check(resource, &mut object, validation)?;
    validate(resource, &name, &object)?;
    Ok(object)
}

fn check_kind(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    };
    let api_version = resource.api_version();
    match (map.get("apiVersion").and_then(Value::as_str), map.get("kind").and_then(Value::as_str)) {
        (Some(v), Some(k)) if v == api_version && k == resource.kind => Ok(()),
        (None, None) => {
            map.insert("apiVersion".into(), api_version.into());
            map.insert("kind".into(), resource.kind.into());
            Ok(())
        }
        (v, k) => Err(ApiError::bad_request(format!(
            "the API version in the data ({}) and kind ({}) do not match the URL ({api_version}, {})",
            v.unwrap_or(""),
            k.unwrap_or(""),
            resource.kind
        ))),
    }
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object.as_object_mut().ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut().ok_or_else(|| ApiError::bad_request("metadata: expected an object"))
}

/// Checks `object` against its kind's k8s-openapi type: a wrong type is a 400 naming the
/// path; fields the type does not have are refused, or dropped, as `validation` says.
fn typed_check(resource: &Resource, object: &mut Value, validation: &mut Validation) -> Result<(), ApiError> {
    let unknown = unknown_fields(resource, object)?;
    if let Some(field) = unknown.first().filter(|_| validation.strict) {
        return Err(ApiError::bad_request(format!("strict decoding error: unknown field \"{field}\"")));
    }
    for path in &unknown {
        remove_path(object, path);
    }
    validation.unknown.extend(unknown);
    Ok(())
}

/// Removes the field at `path` (`spec.containers[0].imagee`, as `collect_unknown` writes
/// it: field names and list indexes; an unknown field is never a list item itself).
fn remove_path(object: &mut Value, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut here = Some(object);
    for part in parts {
        let (name, index) = match part.split_once('[') {
            Some((name, index)) => (name, index.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        here = here.and_then(|v| v.get_mut(name));
        if let Some(i) = index {
            here = here.and_then(|v| v.get_mut(i));
        }
    }
    if let Some(map) = here.and_then(Value::as_object_mut) {
        map.remove(last);
    }
}

/// The fields of `object` that its kind's type does not have (what kube-apiserver warns
/// about, or refuses under `fieldValidation=Strict`); an error if a field has the wrong type.
fn unknown_fields(resource: &Resource, object: &Value) -> Result<Vec<String>, ApiError> {
    use k8s_openapi::api::{apps, coordination, core, discovery};
    fn unknown<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Vec<String>, ApiError> {
        let typed: T = serde_json::from_value(object.clone())
            .map_err(|e| ApiError::bad_request(format!("error decoding the object: {e}")))?;
        let known = serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut fields = Vec::new();
        collect_unknown(object, &known, "", &mut fields);
        Ok(fields)
    }
    match resource.kind {
        "Namespace" => unknown::<core::v1::Namespace>(object),
        "Pod" => unknown::<core::v1::Pod>(object),
        "Node" => unknown::<core::v1::Node>(object),
        "Service" => unknown::<core::v1::Service>(object),
        "Endpoints" => unknown::<core::v1::Endpoints>(object),
        "ConfigMap" => unknown::<core::v1::ConfigMap>(object),
        "Secret" => unknown::<core::v1::Secret>(object),
        "Event" => unknown::<core::v1::Event>(object),
        "ServiceAccount" => unknown::<core::v1::ServiceAccount>(object),
        "Deployment" => unknown::<apps::v1::Deployment>(object),
        "ReplicaSet" => unknown::<apps::v1::ReplicaSet>(object),
        "EndpointSlice" => unknown::<discovery::v1::EndpointSlice>(object),
        "Lease" => unknown::<coordination::v1::Lease>(object),
        other => Err(ApiError::internal(format!("no type for kind {other}"))),
    }
}

/// The paths in `given` that the typed round trip `known` dropped. Values the type keeps
/// as free-form (labels, data) come back whole, so only real unknown fields show.
fn collect_unknown(given: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(given), Value::Object(known)) => {
            for (key, value) in given {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match known.get(key) {
                    None if !value.is_null() => out.push(here),
                    None => {}
                    Some(k) => collect_unknown(value, k, &here, out),
                }
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (g, k)) in given.iter().zip(known).enumerate() {
                collect_unknown(g, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn validate(resource: &Resource, name: &str, object: &Value) -> Result<(), ApiError> {
    let label_names = matches!(resource.kind, "Namespace" | "Service");
    let rule = if label_names { validation::dns_label } else { validation::dns_subdomain };
    let mut causes = validation::check("metadata.name", name, rule);
    causes.extend(metadata_maps(&object["metadata"], "metadata"));
    match resource.kind {
        "Pod" => validate_pod_spec(&object["spec"], "spec", &mut causes),
        "Deployment" | "ReplicaSet" => {
            causes.extend(metadata_maps(&object["spec"]["template"]["metadata"], "spec.template.metadata"));
            validate_pod_spec(&object["spec"]["template"]["spec"], "spec.template.spec", &mut causes)
        }
        "Service" => {
            let ports = object["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
            let headless = object["spec"]["clusterIP"].as_str() == Some("None");
            if ports == 0 && !headless && object["spec"]["type"].as_str() != Some("ExternalName") {
                causes.push(("spec.ports".into(), "Required value".into()));
            }
            for (i, port) in object["spec"]["ports"].as_array().into_iter().flatten().enumerate() {
                if !(1..=65535).contains(&port["port"].as_i64().unwrap_or(0)) {
                    causes.push((
                        format!("spec.ports[{i}].port"),
                        "Invalid value: must be between 1 and 65535, inclusive".into(),
                    ));
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource.kind, name, causes)) }
}

/// The labels and annotations of an object's (or a template's) metadata.
fn metadata_maps(metadata: &Value, path: &str) -> Vec<validation::Cause> {
    let map = |key: &str| -> std::collections::BTreeMap<String, String> {
        serde_json::from_value(metadata[key].clone()).unwrap_or_default()
    };
    let mut causes = validation::labels(&map("labels"), &format!("{path}.labels"));
    causes.extend(validation::annotations(&map("annotations"), &format!("{path}.annotations")));
    causes
}

fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<(String, String)>) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push((format!("{path}.containers"), "Required value".into()));
    }
    if let Ok(typed) = serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(spec.clone()) {
        causes.extend(validation::pod_spec_names(&typed, path));
    }
    for (i, container) in containers.iter().enumerate() {
        if container["image"].as_str().unwrap_or_default().is_empty() {
            causes.push((format!("{path}.containers[{i}].image"), "Required value".into()));
        }
    }
}

/// 5 characters of [a-z0-9 without vowels], as generateName uses.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    crate::files::random_bytes::<5>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b = crate::files::random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Now, as metav1.Time writes it (RFC 3339, seconds).
pub fn now() -> String {
    rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64)
}

/// Seconds since the Unix epoch as metav1.Time writes them.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        Resource::find("", "v1", "pods").unwrap()
    }

    #[test]
    fn create_fills_server_metadata_and_generate_name() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "resourceVersion": "9"},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let made = prepare_create(pods(), Some("default"), pod, &mut Validation::from_query(Some("Strict"))).unwrap();
        let meta = &made["metadata"];
        assert!(meta["name"].as_str().unwrap().starts_with("web-") && meta["name"].as_str().unwrap().len() == 9);
        assert_eq!(meta["namespace"], "default");
        assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
        assert_eq!(meta["generation"], 1);
        assert!(meta.get("resourceVersion").is_none());
        assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn bad_objects_name_what_is_wrong() {
        let wrong_kind = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
        let e = prepare_create(pods(), Some("default"), wrong_kind, &mut Validation::from_query(None)).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        let invalid = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}]}});
        let e = prepare_create(pods(), Some("default"), invalid, &mut Validation::from_query(None)).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value"), "{}", e.message);
        assert!(e.message.contains("spec.containers[0].image: Required value"), "{}", e.message);
        let unknown = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x"}]}});
        let e = prepare_create(pods(), Some("default"), unknown.clone(), &mut Validation::from_query(Some("Strict")))
            .unwrap_err();
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.containers[0].imagePullPolicyy\"");
        // Warn (the default): dropped, and named for a Warning header.
        let mut warn = Validation::from_query(None);
        let made = prepare_create(pods(), Some("default"), unknown.clone(), &mut warn).unwrap();
        assert_eq!(made["spec"]["containers"][0], json!({"name": "c", "image": "i"}));
        assert_eq!(warn.warnings(), ["spec.containers[0].imagePullPolicyy"]);
        let mut ignore = Validation::from_query(Some("Ignore"));
        prepare_create(pods(), Some("default"), unknown, &mut ignore).unwrap();
        assert!(ignore.warnings().is_empty());
        let wrong_type = json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let e = prepare_create(pods(), Some("default"), wrong_type, &mut Validation::from_query(None)).unwrap_err();
        assert!(e.message.starts_with("error decoding the object: invalid type"), "{}", e.message);
    }

    #[test]
    fn update_keeps_identity_and_counts_spec_changes() {
        let current = prepare_create(
            pods(),
            Some("ns"),
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}}),
            &mut Validation::from_query(None),
        )
        .unwrap();
        let mut next = current.clone();
        next["metadata"]["uid"] = "forged".into();
        next["metadata"]["labels"] = json!({"a": "b"});
        let same_spec = prepare_update(pods(), &current, next.clone(), &mut Validation::from_query(None)).unwrap();
        assert_eq!(same_spec["metadata"]["uid"], current["metadata"]["uid"]);
        assert_eq!(same_spec["metadata"]["generation"], 1);
        next["spec"]["containers"][0]["image"] = "b".into();
        assert_eq!(
            prepare_update(pods(), &current, next, &mut Validation::from_query(None)).unwrap()["metadata"]["generation"],
            2
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
