//! What the server does to every object on its way in, whatever its kind (k8s.io/apiserver
//! rest.BeforeCreate / BeforeUpdate): kind and name checks, the metadata the server owns
//! (uid, creationTimestamp, generation, resourceVersion), the status and spec kept apart,
//! unknown fields (refused under `fieldValidation=Strict`), and the kind's own strategy.

use serde_json::{Map, Value, json};

use super::errors::ApiError;
use super::registry::{Cause, ResourceInfo, Strategy};
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

    pub fn take(&mut self, unknown: Vec<String>) -> Result<(), ApiError> {
        if let Some(field) = unknown.first().filter(|_| self.strict) {
            return Err(ApiError::bad_request(format!("strict decoding error: unknown field \"{field}\"")));
        }
        self.unknown.extend(unknown);
        Ok(())
    }
}

/// System fields no client sets (WipeObjectMetaSystemFields).
const SYSTEM_FIELDS: [&str; 6] =
    ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "uid", "creationTimestamp"];

/// Checks that `object` is a kind its URL allows, gives it the server's metadata for a new
/// object, lets mutating admission `admit` change it, and runs the kind's strategy on it.
/// `namespace` is the URL's.
pub fn prepare_create(
    strategy: &dyn Strategy,
    namespace: Option<&str>,
    mut object: Value,
    validation: &mut Validation,
    admit: impl FnOnce(&mut Value) -> Result<(), ApiError>,
) -> Result<Value, ApiError> {
    let info = strategy.info();
    check_kind(info, &mut object)?;
    let meta = metadata_mut(&mut object)?;
    let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => {
            let prefix: String = prefix.chars().take(58).collect();
            format!("{prefix}{}", random_suffix())
        }
        _ => {
            return Err(ApiError::invalid(
                &qualified_kind(info),
                "",
                vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
            ));
        }
    };
    meta.insert("name".into(), name.clone().into());
    match (info.namespaced, namespace, meta.get("namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty())) {
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
    for owned in SYSTEM_FIELDS {
        meta.remove(owned);
    }
    meta.remove("generation");
    meta.insert("uid".into(), new_uid().into());
    meta.insert("creationTimestamp".into(), now().into());
    let decoded = strategy.decode(object)?;
    validation.take(decoded.unknown)?;
    let mut object = decoded.object;
    admit(&mut object)?;
    if strategy.tracks_generation() {
        object["metadata"]["generation"] = 1.into();
    }
    let mut causes = metadata_causes(strategy, &object);
    causes.extend(strategy.prepare_create(&mut object));
    if !causes.is_empty() {
        return Err(ApiError::invalid(&qualified_kind(info), &name, causes));
    }
    Ok(object)
}

/// Checks an update of `current` to `object` (of its `subresource`: `status`, `finalize`,
/// `binding` or none): same identity, the server's metadata kept, the status (or everything but
/// it) kept apart, generation counted, then the kind's strategy.
pub fn prepare_update(
    strategy: &dyn Strategy,
    current: &Value,
    mut object: Value,
    subresource: Option<&str>,
    validation: &mut Validation,
) -> Result<Value, ApiError> {
    let info = strategy.info();
    check_kind(info, &mut object)?;
    let name = current["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let meta = metadata_mut(&mut object)?;
    if meta.get("name").and_then(Value::as_str).is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object does not match the name on the URL ({name})"
        )));
    }
    let current_uid = current["metadata"]["uid"].as_str().unwrap_or_default();
    if let Some(uid) = meta.get("uid").and_then(Value::as_str).filter(|uid| !uid.is_empty() && *uid != current_uid) {
        return Err(ApiError::conflict_because(
            &super::rest::qualified_resource(info),
            &name,
            // As etcd3's store words it (the uid of an update is a precondition).
            format!(
                "StorageError: invalid object, Code: 4, Key: {}, ResourceVersion: 0, AdditionalErrorMsg: \
                 Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}",
                info.key(current["metadata"]["namespace"].as_str(), &name)
            ),
        ));
    }
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty())
        && info.namespaced
        && Some(ns) != current["metadata"]["namespace"].as_str()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta.insert("name".into(), name.clone().into());
    let decoded = strategy.decode(object)?;
    validation.take(decoded.unknown)?;
    let mut object = decoded.object;
    {
        let meta = metadata_mut(&mut object)?;
        for kept in ["uid", "creationTimestamp", "namespace", "deletionTimestamp", "generation"] {
            match current["metadata"].get(kept) {
                Some(value) => meta.insert(kept.into(), value.clone()),
                None => meta.remove(kept),
            };
        }
        if meta.get("deletionGracePeriodSeconds").is_none_or(Value::is_null)
            && let Some(grace) = current["metadata"].get("deletionGracePeriodSeconds")
        {
            meta.insert("deletionGracePeriodSeconds".into(), grace.clone());
        }
    }
    let has_status = info.has_subresource("status");
    let mut causes = match subresource {
        Some("status") => {
            // Only the status (and what the server tracks in metadata) changes: the rest
            // is the stored object's (ResetObjectMetaForStatus).
            object = only_changing(current, &object, &["status"]);
            strategy.prepare_status_update(&mut object, current)
        }
        Some(sub @ ("ephemeralcontainers" | "approval")) => {
            let part: &[&str] =
                if sub == "approval" { &["status", "conditions"] } else { &["spec", "ephemeralContainers"] };
            object = only_changing(current, &object, part);
            strategy.prepare_subresource_update(sub, &mut object, current)
        }
        Some("binding") => {
            // The binding storage assigns the node (and the binding's annotations) to the
            // pod as stored: no other change, and no check of the pod's update rules,
            // which keep spec.nodeName otherwise.
            let (node, annotations) = (object["spec"]["nodeName"].clone(), object["metadata"]["annotations"].clone());
            object = current.clone();
            object["spec"]["nodeName"] = node;
            set_or_remove(&mut object["metadata"], "annotations", Some(annotations).filter(|a| !a.is_null()));
            vec![]
        }
        Some("finalize") => {
            let finalizers = object["spec"]["finalizers"].clone();
            object = current.clone();
            object["spec"]["finalizers"] = finalizers;
            vec![]
        }
        _ => {
            if has_status {
                set_or_remove(&mut object, "status", current.get("status").cloned());
            }
            strategy.prepare_update(&mut object, current)
        }
    };
    if subresource.is_none() && strategy.changes_generation(&object, current) {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
        object["metadata"]["generation"] = (generation + 1).into();
    }
    causes.extend(metadata_causes(strategy, &object));
    causes.extend(metadata_update_causes(&object, current));
    if !causes.is_empty() {
        return Err(ApiError::invalid(&qualified_kind(info), &name, causes));
    }
    Ok(object)
}

/// `current` with what `given` has at `path` (and its resourceVersion, a precondition):
/// a subresource's write of one field.
fn only_changing(current: &Value, given: &Value, path: &[&str]) -> Value {
    let mut object = current.clone();
    let (last, parents) = path.split_last().expect("a path");
    let value = parents.iter().fold(given, |v, p| &v[*p]).get(*last).cloned();
    let parent = parents.iter().fold(&mut object, |v, p| {
        let child = &mut v[*p];
        if child.is_null() {
            *child = Value::Object(Map::new());
        }
        child
    });
    set_or_remove(parent, last, value);
    if let Some(version) = given["metadata"].get("resourceVersion") {
        object["metadata"]["resourceVersion"] = version.clone();
    }
    object
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => map.insert(field.into(), value),
            None => map.remove(field),
        };
    }
}

/// `Deployment.apps`, as kube-apiserver names a kind in its messages.
pub fn qualified_kind(info: &ResourceInfo) -> String {
    if info.group.is_empty() { info.kind.clone() } else { format!("{}.{}", info.kind, info.group) }
}

/// ValidateObjectMeta: the name as the kind wants it, labels, annotations.
fn metadata_causes(strategy: &dyn Strategy, object: &Value) -> Vec<Cause> {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let mut causes = validation::check("metadata.name", name, strategy.name_rule());
    let map = |key: &str| -> std::collections::BTreeMap<String, String> {
        serde_json::from_value(meta[key].clone()).unwrap_or_default()
    };
    causes.extend(validation::labels(&map("labels"), "metadata.labels"));
    causes.extend(validation::annotations(&map("annotations"), "metadata.annotations"));
    causes
}

/// ValidateObjectMetaUpdate: no finalizer added once deletion has begun.
fn metadata_update_causes(object: &Value, current: &Value) -> Vec<Cause> {
    if current["metadata"].get("deletionTimestamp").is_none() {
        return vec![];
    }
    let finalizers = |o: &Value| -> Vec<String> {
        o["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(String::from))
            .collect()
    };
    let old = finalizers(current);
    finalizers(object)
        .into_iter()
        .filter(|f| !old.contains(f))
        .map(|f| ("metadata.finalizers".to_string(), format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{f}\"]")))
        .collect()
}

fn check_kind(info: &ResourceInfo, object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    };
    let api_version = info.api_version();
    match (map.get("apiVersion").and_then(Value::as_str), map.get("kind").and_then(Value::as_str)) {
        (Some(v), Some(k)) if v == api_version && k == info.kind => Ok(()),
        (None, None) => {
            map.insert("apiVersion".into(), api_version.into());
            map.insert("kind".into(), info.kind.clone().into());
            Ok(())
        }
        (v, k) => Err(ApiError::bad_request(format!(
            "the API version in the data ({}) and kind ({}) do not match the URL ({api_version}, {})",
            v.unwrap_or(""),
            k.unwrap_or(""),
            info.kind
        ))),
    }
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object.as_object_mut().ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut().ok_or_else(|| ApiError::bad_request("metadata: expected an object"))
}

/// 5 characters of [a-z0-9 without vowels], as generateName uses.
/// Five characters as kube-apiserver's generated names end in.
pub fn random_suffix() -> String {
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

/// Now, as metav1.Time writes it (RFC 3339 in UTC, seconds).
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    now.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339 formats any UTC time")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::apiserver::registry::Registry;

    fn pods() -> Arc<dyn Strategy> {
        Registry::builtin().find("", "v1", "pods").unwrap()
    }

    #[test]
    fn create_fills_server_metadata_and_generate_name() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "resourceVersion": "9"},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let made =
            prepare_create(&*pods(), Some("default"), pod, &mut Validation::from_query(Some("Strict")), |_| Ok(()))
                .unwrap();
        let meta = &made["metadata"];
        assert!(meta["name"].as_str().unwrap().starts_with("web-") && meta["name"].as_str().unwrap().len() == 9);
        assert_eq!(meta["namespace"], "default");
        assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
        assert_eq!(meta["generation"], 1);
        assert!(meta.get("resourceVersion").is_none());
        assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
        // The pod's defaults and status.
        assert_eq!(made["spec"]["restartPolicy"], "Always");
        assert_eq!(made["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(made["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
    }

    #[test]
    fn bad_objects_name_what_is_wrong() {
        let wrong_kind = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
        let e = prepare_create(&*pods(), Some("default"), wrong_kind, &mut Validation::from_query(None), |_| Ok(()))
            .unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        let invalid = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}]}});
        let e = prepare_create(&*pods(), Some("default"), invalid, &mut Validation::from_query(None), |_| Ok(()))
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("Pod \"Bad_Name\" is invalid: [metadata.name: Invalid value"), "{}", e.message);
        assert!(e.message.contains("spec.containers[0].image: Required value"), "{}", e.message);
        let unknown = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x"}]}});
        let e = prepare_create(
            &*pods(),
            Some("default"),
            unknown.clone(),
            &mut Validation::from_query(Some("Strict")),
            |_| Ok(()),
        )
        .unwrap_err();
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.containers[0].imagePullPolicyy\"");
        // Warn (the default): dropped, and named for a Warning header.
        let mut warn = Validation::from_query(None);
        let made = prepare_create(&*pods(), Some("default"), unknown.clone(), &mut warn, |_| Ok(())).unwrap();
        assert!(made["spec"]["containers"][0].get("imagePullPolicyy").is_none());
        assert_eq!(warn.warnings(), ["spec.containers[0].imagePullPolicyy"]);
        let mut ignore = Validation::from_query(Some("Ignore"));
        prepare_create(&*pods(), Some("default"), unknown, &mut ignore, |_| Ok(())).unwrap();
        assert!(ignore.warnings().is_empty());
        let wrong_type = json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let e = prepare_create(&*pods(), Some("default"), wrong_type, &mut Validation::from_query(None), |_| Ok(()))
            .unwrap_err();
        assert!(e.message.starts_with("error decoding the object: invalid type"), "{}", e.message);
    }

    #[test]
    fn update_keeps_identity_and_counts_spec_changes() {
        let current = prepare_create(
            &*pods(),
            Some("ns"),
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}}),
            &mut Validation::from_query(None),
            |_| Ok(()),
        )
        .unwrap();
        let mut next = current.clone();
        next["metadata"]["labels"] = json!({"a": "b"});
        next["metadata"]["generation"] = 7.into();
        let same_spec =
            prepare_update(&*pods(), &current, next.clone(), None, &mut Validation::from_query(None)).unwrap();
        assert_eq!(same_spec["metadata"]["uid"], current["metadata"]["uid"]);
        assert_eq!(same_spec["metadata"]["generation"], 1, "clients never set the generation");
        next["spec"]["containers"][0]["image"] = "b".into();
        let changed =
            prepare_update(&*pods(), &current, next.clone(), None, &mut Validation::from_query(None)).unwrap();
        assert_eq!(changed["metadata"]["generation"], 2);
        // A forged uid is a failed precondition; other spec changes are refused.
        next["metadata"]["uid"] = "forged".into();
        assert_eq!(
            prepare_update(&*pods(), &current, next, None, &mut Validation::from_query(None)).unwrap_err().code,
            409
        );
        let mut restart = current.clone();
        restart["spec"]["restartPolicy"] = "Never".into();
        let e = prepare_update(&*pods(), &current, restart, None, &mut Validation::from_query(None)).unwrap_err();
        assert!(e.message.contains("pod updates may not change fields other than"), "{}", e.message);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
