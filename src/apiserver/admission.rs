//! Admission: what kube-apiserver's admission plugins decide about a write from the rest
//! of the cluster, around the object's own strategy.
//!
//! - mutating, before the strategy prepares and validates a new object (so that a pod's
//!   QoS class sees what LimitRanger gave it): NamespaceLifecycle, ServiceAccount,
//!   Priority, LimitRanger, DefaultStorageClass, DefaultIngressClass;
//! - validating, under the server's write lock, right before the object is stored:
//!   ResourceQuota, whose usage is counted from the objects themselves (and written to the
//!   quotas' status after each change, so `kubectl describe quota` is current);
//! - on delete: the system priority classes stay.

use std::sync::Arc;

use serde_json::{Value, json};

use super::authorization::{self, Asked, Attributes, NODE_PREFIX, NODES};
use super::cache::Cache;
use super::errors::ApiError;
use super::http::Shared;
use super::registry::Registry;
use super::registry::scheduling::SYSTEM_CLASSES;
use super::rest::{Target, qualified_resource};
use super::store::StoreError;
use crate::quantity::Quantity;

/// The kinds admission reads on every write (group, plural), kept in the cache.
const CACHED: [(&str, &str); 7] = [
    ("", "namespaces"),
    ("", "serviceaccounts"),
    ("", "limitranges"),
    ("", "resourcequotas"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "storageclasses"),
    ("networking.k8s.io", "ingressclasses"),
];

/// The cache admission reads from: every namespace of the kinds it consults.
pub fn cache_of(registry: &Registry) -> Cache {
    let mut prefixes: Vec<String> = CACHED
        .iter()
        .filter_map(|(group, plural)| Some(registry.find(group, "v1", plural)?.info().prefix(None)))
        .collect();
    prefixes.extend(super::authorization::PREFIXES.map(String::from));
    prefixes.push(super::registry::DEFINITIONS.to_string());
    Cache::new(prefixes)
}

fn prefix(server: &Shared, group: &str, plural: &str, namespace: Option<&str>) -> Option<String> {
    Some(server.registry.find(group, "v1", plural)?.info().prefix(namespace))
}

/// The objects of a cached kind (in a namespace).
fn cached(server: &Shared, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
    prefix(server, group, plural, namespace).map_or_else(Vec::new, |p| server.cache.list(&p))
}

fn cached_one(server: &Shared, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Arc<Value>> {
    server.cache.get(&format!("{}{name}", prefix(server, group, plural, namespace)?))
}

/// The objects of any kind (in a namespace), from the store.
fn stored(server: &Shared, group: &str, plural: &str, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let Some(prefix) = prefix(server, group, plural, namespace) else { return Ok(vec![]) };
    let page = server.store.list(&prefix, None, 0).map_err(|e| ApiError::from_store(e, plural, ""))?;
    Ok(page.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

/// Who asks for a certificate, as the CertificateSigningRequest strategy's
/// PrepareForCreate records it from the request's user (strategies here do not see users,
/// so it is done with admission).
fn requester(target: &Target, object: &mut Value) {
    let user = &target.user;
    object["spec"]["username"] = user.name.clone().into();
    object["spec"]["uid"] = user.uid.clone().into();
    object["spec"]["groups"] = user.groups.clone().into();
}

fn is(target: &Target, group: &str, kind: &str) -> bool {
    target.info().group == group && target.info().kind == kind
}

/// The mutating plugins, on a new object (decoded and defaulted, not yet prepared).
pub fn mutate_create(server: &Shared, target: &Target, object: &mut Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let forbidden = |why: String| ApiError::forbidden(&qualified_resource(target.info()), &name, why);
    if let Some(namespace) = target.namespace.as_deref().filter(|_| target.info().namespaced) {
        namespace_lifecycle(server, namespace, &forbidden)?;
        if is(target, "", "Pod") {
            service_account(server, namespace, object, &forbidden)?;
            pod_priority(server, object, &forbidden)?;
            limit_ranger_pod(server, namespace, object, &forbidden)?;
        }
        if is(target, "", "PersistentVolumeClaim") {
            default_storage_class(server, object)?;
            limit_ranger_claim(server, namespace, object, &forbidden)?;
        }
        if is(target, "networking.k8s.io", "Ingress") {
            default_ingress_class(server, object)?;
        }
    }
    if is(target, "scheduling.k8s.io", "PriorityClass") {
        one_default_priority_class(server, object, &forbidden)?;
    }
    if is(target, "certificates.k8s.io", "CertificateSigningRequest") {
        requester(target, object);
    }
    node_restriction(target, object, None, "create", &forbidden)?;
    no_escalation(server, target, object, &forbidden)
}

/// The mutating plugins on an update of `current` to `object`.
pub fn mutate_update(server: &Shared, target: &Target, object: &Value, current: &Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let forbidden = |why: String| ApiError::forbidden(&qualified_resource(target.info()), &name, why);
    if is(target, "scheduling.k8s.io", "PriorityClass") {
        one_default_priority_class(server, object, &forbidden)?;
    }
    node_restriction(target, object, Some(current), "update", &forbidden)?;
    // Changes to what a role grants, or to whom, are checked as creates are; a change
    // to its garbage-collection fields alone is not.
    let grants =
        |o: &Value| (o["rules"].clone(), o["roleRef"].clone(), o["subjects"].clone(), o["aggregationRule"].clone());
    if grants(object) != grants(current) {
        no_escalation(server, target, object, &forbidden)?;
    }
    Ok(())
}

/// What may not be deleted, and by whom.
pub fn admit_delete(target: &Target, object: &Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let forbidden = |why: String| ApiError::forbidden(&qualified_resource(target.info()), name, why);
    // NamespaceLifecycle's immortal namespaces.
    if is(target, "", "Namespace") && ["default", "kube-system", "kube-public"].contains(&name) {
        return Err(forbidden("this namespace may not be deleted".into()));
    }
    if is(target, "scheduling.k8s.io", "PriorityClass") && SYSTEM_CLASSES.iter().any(|(n, _, _)| *n == name) {
        return Err(forbidden("this is a system priority class and cannot be deleted".into()));
    }
    node_restriction(target, object, Some(object), "delete", &forbidden)
}

/// NodeRestriction: a node writes only its own Node and Lease, and the pods bound to it.
fn node_restriction(
    target: &Target,
    object: &Value,
    current: Option<&Value>,
    verb: &str,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let user = &target.user;
    let Some(node) = user.name.strip_prefix(NODE_PREFIX).filter(|_| user.in_group(NODES)) else { return Ok(()) };
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if is(target, "", "Node") && name != node {
        return Err(forbidden(format!("node \"{node}\" is not allowed to modify node \"{name}\"")));
    }
    if is(target, "coordination.k8s.io", "Lease")
        && (name != node || target.namespace.as_deref() != Some("kube-node-lease"))
    {
        return Err(forbidden(format!(
            "can only access leases in the kube-node-lease namespace with a name matching the node's own: node \"{node}\""
        )));
    }
    if is(target, "", "Pod") {
        let bound = |o: &Value| o["spec"]["nodeName"].as_str() == Some(node);
        let allowed = match (verb, current) {
            ("create", _) => {
                object["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() && bound(object)
            }
            (_, Some(current)) => bound(current),
            _ => false,
        };
        if !allowed {
            let why = match verb {
                "create" => "can only create mirror pods bound to itself".to_string(),
                "delete" => "can only delete pods with spec.nodeName set to itself".to_string(),
                _ => "can only update pod status for pods with spec.nodeName set to itself".to_string(),
            };
            return Err(forbidden(format!("node \"{node}\" {why}")));
        }
    }
    Ok(())
}

/// RBAC's escalation prevention: a role may hold only rules its writer holds (where the
/// role applies), and a binding may grant only a role whose rules its writer holds,
/// unless the writer may `escalate` (roles) or `bind` (bindings) them.
fn no_escalation(
    server: &Shared,
    target: &Target,
    object: &Value,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    const GROUP: &str = "rbac.authorization.k8s.io";
    let user = &target.user;
    if server.tokens.is_none() || target.info().group != GROUP || user.in_group(super::authentication::MASTERS) {
        return Ok(());
    }
    let namespace = target.namespace.clone().filter(|_| target.info().namespaced).unwrap_or_default();
    let may = |verb: &str, plural: &str, name: &str| {
        let asked = Asked::Resource {
            group: GROUP.into(),
            resource: plural.into(),
            subresource: String::new(),
            namespace: namespace.clone(),
            name: name.into(),
        };
        authorization::authorize(&server.cache, user, &Attributes { verb: verb.into(), target: asked }).is_ok()
    };
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let granted: Vec<Value> = match target.info().kind.as_str() {
        "Role" | "ClusterRole" => {
            if may("escalate", &target.info().plural, name) {
                return Ok(());
            }
            object["rules"].as_array().cloned().unwrap_or_default()
        }
        _ => {
            let (kind, role) =
                (object["roleRef"]["kind"].as_str().unwrap_or(""), object["roleRef"]["name"].as_str().unwrap_or(""));
            let plural = if kind == "ClusterRole" { "clusterroles" } else { "roles" };
            if may("bind", plural, role) {
                return Ok(());
            }
            let key = match kind {
                "ClusterRole" => format!("/registry/{GROUP}/clusterroles/{role}"),
                _ => format!("/registry/{GROUP}/roles/{namespace}/{role}"),
            };
            let bound =
                server.cache.get(&key).ok_or_else(|| ApiError::not_found(&format!("{plural}.{GROUP}"), role))?;
            bound["rules"].as_array().cloned().unwrap_or_default()
        }
    };
    let missing = authorization::uncovered(&authorization::rules_of(&server.cache, user, &namespace), &granted);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("\"{g}\"")).collect();
    Err(forbidden(format!(
        "user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        missing.join("\n")
    )))
}

/// NamespaceLifecycle: a namespaced object goes only into a namespace that exists and is
/// not being deleted.
fn namespace_lifecycle(
    server: &Shared,
    namespace: &str,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let Some(stored) = cached_one(server, "", "namespaces", None, namespace) else {
        return Err(ApiError::not_found("namespaces", namespace));
    };
    if stored["metadata"].get("deletionTimestamp").is_some() {
        return Err(forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

/// ServiceAccount: a pod runs as a service account that exists (`default` unless it says).
fn service_account(
    server: &Shared,
    namespace: &str,
    pod: &mut Value,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let spec = &mut pod["spec"];
    let account = [&spec["serviceAccountName"], &spec["serviceAccount"]]
        .into_iter()
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = account.clone().into();
    spec["serviceAccount"] = account.clone().into();
    let Some(found) = cached_one(server, "", "serviceaccounts", Some(namespace), &account) else {
        return Err(forbidden(format!(
            "error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
        )));
    };
    let automount = spec["automountServiceAccountToken"].as_bool().or(found["automountServiceAccountToken"].as_bool());
    if automount != Some(false) {
        mount_api_access(spec);
    }
    Ok(())
}

/// Where a pod's containers find their service account's token, CA and namespace.
const API_ACCESS_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The projected `kube-api-access-…` volume kube-apiserver gives a pod (a token of its
/// service account, bound to it; the cluster's CA; its namespace), mounted read-only in
/// every container that does not mount something there already.
fn mount_api_access(spec: &mut Value) {
    let name = format!("kube-api-access-{}", super::objects::random_suffix());
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            let mounts = container["volumeMounts"].as_array().cloned().unwrap_or_default();
            if mounts.iter().any(|m| m["mountPath"] == API_ACCESS_PATH) {
                continue;
            }
            let mut mounts = mounts;
            mounts.push(json!({"name": name, "mountPath": API_ACCESS_PATH, "readOnly": true}));
            container["volumeMounts"] = mounts.into();
            mounted = true;
        }
    }
    if mounted {
        let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        volumes.push(volume);
        spec["volumes"] = volumes.into();
    }
}

/// Priority: a pod's priority is its class's (the default class's, or 0, when it names
/// none); the pod may not say a number of its own that differs.
fn pod_priority(server: &Shared, pod: &mut Value, forbidden: &dyn Fn(String) -> ApiError) -> Result<(), ApiError> {
    let spec = &mut pod["spec"];
    let named = spec["priorityClassName"].as_str().filter(|n| !n.is_empty()).map(String::from);
    let class = match &named {
        Some(name) => Some(
            cached_one(server, "scheduling.k8s.io", "priorityclasses", None, name)
                .ok_or_else(|| forbidden(format!("no PriorityClass with name {name} was found")))?,
        ),
        None => cached(server, "scheduling.k8s.io", "priorityclasses", None)
            .into_iter()
            .find(|c| c["globalDefault"] == true),
    };
    let (priority, policy) = match &class {
        Some(class) => (
            class["value"].as_i64().unwrap_or(0),
            class["preemptionPolicy"].as_str().unwrap_or("PreemptLowerPriority").to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string()),
    };
    if let Some(given) = spec["priority"].as_i64()
        && given != priority
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(class) = class.filter(|_| named.is_none()) {
        spec["priorityClassName"] = class["metadata"]["name"].clone();
    }
    spec["priority"] = priority.into();
    if spec["preemptionPolicy"].as_str().is_none_or(str::is_empty) {
        spec["preemptionPolicy"] = policy.into();
    }
    Ok(())
}

/// Only one PriorityClass may be the global default.
fn one_default_priority_class(
    server: &Shared,
    class: &Value,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    if class["globalDefault"] != true {
        return Ok(());
    }
    let name = class["metadata"]["name"].as_str().unwrap_or_default();
    let others = cached(server, "scheduling.k8s.io", "priorityclasses", None);
    if let Some(other) = others.iter().find(|c| c["globalDefault"] == true && c["metadata"]["name"] != name) {
        let other = other["metadata"]["name"].as_str().unwrap_or_default();
        return Err(forbidden(format!(
            "PriorityClass {other} is already marked as default. Only one default can exist"
        )));
    }
    Ok(())
}

/// DefaultStorageClass: a claim that names no class gets the default one, if any (the
/// newest when several say they are).
fn default_storage_class(server: &Shared, claim: &mut Value) -> Result<(), ApiError> {
    let beta = claim["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].is_string();
    if !claim["spec"]["storageClassName"].is_null() || beta {
        return Ok(());
    }
    let classes = cached(server, "storage.k8s.io", "storageclasses", None);
    let newest = newest_default(
        classes.iter().map(|c| &**c).filter(|c| super::registry::storage::is_default(&c["metadata"]["annotations"])),
    );
    if let Some(class) = newest {
        claim["spec"]["storageClassName"] = class["metadata"]["name"].clone();
    }
    Ok(())
}

/// DefaultIngressClass: an ingress that names no class gets the default one, if any.
fn default_ingress_class(server: &Shared, ingress: &mut Value) -> Result<(), ApiError> {
    let annotated =
        ingress["metadata"]["annotations"][super::registry::networking::ingresses::CLASS_ANNOTATION].is_string();
    if !ingress["spec"]["ingressClassName"].is_null() || annotated {
        return Ok(());
    }
    let classes = cached(server, "networking.k8s.io", "ingressclasses", None);
    let default = super::registry::networking::ingressclasses::DEFAULT_ANNOTATION;
    let newest =
        newest_default(classes.iter().map(|c| &**c).filter(|c| c["metadata"]["annotations"][default] == "true"));
    if let Some(class) = newest {
        ingress["spec"]["ingressClassName"] = class["metadata"]["name"].clone();
    }
    Ok(())
}

/// Of several objects marked default, the newest (then the first by name).
fn newest_default<'a>(candidates: impl Iterator<Item = &'a Value>) -> Option<&'a Value> {
    candidates.max_by(|a, b| {
        let key = |o: &Value| {
            (
                o["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string(),
                std::cmp::Reverse(o["metadata"]["name"].as_str().unwrap_or("").to_string()),
            )
        };
        key(a).cmp(&key(b))
    })
}

fn quantity(value: &Value) -> Option<Quantity> {
    Quantity::parse(value.as_str()?)
}

/// LimitRanger on a pod: its containers get the namespace's default limits and requests
/// where they set none, then must keep within the ranges' bounds.
fn limit_ranger_pod(
    server: &Shared,
    namespace: &str,
    pod: &mut Value,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let ranges = cached(server, "", "limitranges", Some(namespace));
    if ranges.is_empty() {
        return Ok(());
    }
    let items: Vec<Value> =
        ranges.iter().flat_map(|r| r["spec"]["limits"].as_array().cloned().unwrap_or_default()).collect();
    let mut notes = Vec::new();
    for list in ["containers", "initContainers"] {
        for container in pod["spec"][list].as_array_mut().into_iter().flatten() {
            let container_name = container["name"].as_str().unwrap_or_default().to_string();
            for item in items.iter().filter(|i| i["type"] == "Container") {
                for (field, source, what) in [("limits", "default", "limit"), ("requests", "defaultRequest", "request")]
                {
                    for (resource, value) in item[source].as_object().into_iter().flatten() {
                        let resources = &mut container["resources"];
                        if resources[field].get(resource).is_none() {
                            resources[field][resource] = value.clone();
                            notes.push(format!("{resource} {what} for container {container_name}"));
                        }
                    }
                }
            }
        }
    }
    if !notes.is_empty() {
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            format!("LimitRanger plugin set: {}", notes.join("; ")).into();
    }
    for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for item in items.iter().filter(|i| i["type"] == "Container") {
            check_bounds(item, &container["resources"], "Container", forbidden)?;
        }
    }
    // A pod's bounds hold for the sum of its containers.
    let mut total = json!({"requests": {}, "limits": {}});
    for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for field in ["requests", "limits"] {
            for (resource, value) in container["resources"][field].as_object().into_iter().flatten() {
                let sum = quantity(&total[field][resource]).map_or(0, nanos) + quantity(value).map_or(0, nanos);
                total[field][resource] = format_nanos(resource, sum).into();
            }
        }
    }
    for item in items.iter().filter(|i| i["type"] == "Pod") {
        check_bounds(item, &total, "Pod", forbidden)?;
    }
    Ok(())
}

/// LimitRanger on a claim: its storage request within the ranges' bounds.
fn limit_ranger_claim(
    server: &Shared,
    namespace: &str,
    claim: &Value,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    for range in cached(server, "", "limitranges", Some(namespace)) {
        for item in
            range["spec"]["limits"].as_array().into_iter().flatten().filter(|i| i["type"] == "PersistentVolumeClaim")
        {
            check_bounds(item, &claim["spec"]["resources"], "PersistentVolumeClaim", forbidden)?;
        }
    }
    Ok(())
}

fn nanos(q: Quantity) -> i128 {
    q.nanos()
}

/// `resources` (requests and limits) within a LimitRange item's min, max and ratio.
fn check_bounds(
    item: &Value,
    resources: &Value,
    kind: &str,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    for (resource, min) in item["min"].as_object().into_iter().flatten() {
        for (field, what) in [("requests", "request"), ("limits", "limit")] {
            let given = &resources[field][resource];
            match (quantity(given), quantity(min)) {
                (None, _) if field == "requests" => {
                    return Err(forbidden(format!(
                        "minimum {resource} usage per {kind} is {}.  No request is specified",
                        text(min)
                    )));
                }
                (Some(g), Some(m)) if g < m => {
                    return Err(forbidden(format!(
                        "minimum {resource} usage per {kind} is {}, but {what} is {}",
                        text(min),
                        text(given)
                    )));
                }
                _ => {}
            }
        }
    }
    for (resource, max) in item["max"].as_object().into_iter().flatten() {
        for (field, what) in [("limits", "limit"), ("requests", "request")] {
            let given = &resources[field][resource];
            match (quantity(given), quantity(max)) {
                (None, _) if field == "limits" => {
                    return Err(forbidden(format!(
                        "maximum {resource} usage per {kind} is {}.  No limit is specified",
                        text(max)
                    )));
                }
                (Some(g), Some(m)) if g > m => {
                    return Err(forbidden(format!(
                        "maximum {resource} usage per {kind} is {}, but {what} is {}",
                        text(max),
                        text(given)
                    )));
                }
                _ => {}
            }
        }
    }
    for (resource, ratio_text) in item["maxLimitRequestRatio"].as_object().into_iter().flatten() {
        let (limit, request) = (quantity(&resources["limits"][resource]), quantity(&resources["requests"][resource]));
        if let (Some(limit), Some(request), Some(ratio)) = (limit, request, quantity(ratio_text))
            && !request.is_zero()
            && nanos(limit) * 1_000_000_000 > nanos(ratio) * nanos(request)
        {
            return Err(forbidden(format!(
                "{resource} max limit to request ratio per {kind} is {}, but provided ratio is {:.6}",
                text(ratio_text),
                nanos(limit) as f64 / nanos(request) as f64
            )));
        }
    }
    Ok(())
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// A sum of quantities as kube-apiserver would print it: CPUs in cores or millicores,
/// anything else in whole units with a binary suffix where exact.
pub fn format_nanos(resource: &str, nanos: i128) -> String {
    let millis = nanos / 1_000_000;
    if resource.ends_with("cpu") {
        return if millis % 1000 == 0 { (millis / 1000).to_string() } else { format!("{millis}m") };
    }
    let units = millis / 1000;
    if millis % 1000 != 0 {
        return format!("{millis}m");
    }
    for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if units != 0 && units % (1i128 << shift) == 0 {
            return format!("{}{suffix}", units >> shift);
        }
    }
    units.to_string()
}

/// Whether a write of `target`'s kind has quotas to meet in its namespace.
pub fn has_quotas(server: &Shared, target: &Target) -> bool {
    let namespace = target.namespace.as_deref().filter(|_| target.info().namespaced);
    namespace.is_some_and(|namespace| !cached(server, "", "resourcequotas", Some(namespace)).is_empty())
}

/// The ResourceQuota plugin: every quota of the namespace whose resources `object` counts
/// towards must still hold with it. `replaced` is the object's previous self, on update.
pub fn check_quota(server: &Shared, target: &Target, object: &Value) -> Result<(), ApiError> {
    let Some(namespace) = target.namespace.as_deref().filter(|_| target.info().namespaced) else { return Ok(()) };
    let quotas = cached(server, "", "resourcequotas", Some(namespace));
    if quotas.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    for quota in &quotas {
        let hard = quota["spec"]["hard"].as_object().cloned().unwrap_or_default();
        let mine = usage_of(target, object, quota, hard.keys());
        if mine.is_empty() {
            continue;
        }
        let quota_name = quota["metadata"]["name"].as_str().unwrap_or_default();
        // What the quota tracks must be said, for a pod.
        if is(target, "", "Pod") {
            for resource in hard.keys().filter(|r| is_compute(r)) {
                if let Some(container) = missing(object, resource) {
                    return Err(ApiError::forbidden(
                        &qualified_resource(target.info()),
                        name,
                        format!("failed quota: {quota_name}: must specify {resource} for: {container}"),
                    ));
                }
            }
        }
        let used = usage(server, namespace, quota)?;
        let mut exceeded = Vec::new();
        for (resource, amount) in &mine {
            let (Some(limit), now) = (hard.get(resource).and_then(quantity), used.get(resource).copied().unwrap_or(0))
            else {
                continue;
            };
            if now + amount > nanos(limit) {
                exceeded.push((resource.clone(), *amount, now, hard[resource].as_str().unwrap_or("").to_string()));
            }
        }
        if !exceeded.is_empty() {
            let list = |f: &dyn Fn(&(String, i128, i128, String)) -> String| {
                exceeded.iter().map(f).collect::<Vec<_>>().join(",")
            };
            return Err(ApiError::forbidden(
                &qualified_resource(target.info()),
                name,
                format!(
                    "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                    list(&|e| format!("{}={}", e.0, format_nanos(&e.0, e.1))),
                    list(&|e| format!("{}={}", e.0, format_nanos(&e.0, e.2))),
                    list(&|e| format!("{}={}", e.0, e.3)),
                ),
            ));
        }
    }
    Ok(())
}

fn is_compute(resource: &str) -> bool {
    matches!(resource, "cpu" | "memory" | "requests.cpu" | "requests.memory" | "limits.cpu" | "limits.memory")
}

/// The first container of a pod that does not say the amount a quota tracks.
fn missing(pod: &Value, resource: &str) -> Option<String> {
    let (field, name) = match resource.split_once('.') {
        Some((field, name)) => (field, name),
        None => ("requests", resource),
    };
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["resources"][field].get(name).is_none())
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
}

/// Whether a quota's scopes take in a pod.
fn in_scope(quota: &Value, pod: &Value) -> bool {
    let best_effort = pod["status"]["qosClass"] == "BestEffort";
    let terminating = pod["spec"]["activeDeadlineSeconds"].is_number();
    quota["spec"]["scopes"].as_array().into_iter().flatten().all(|scope| match scope.as_str() {
        Some("BestEffort") => best_effort,
        Some("NotBestEffort") => !best_effort,
        Some("Terminating") => terminating,
        Some("NotTerminating") => !terminating,
        _ => true,
    })
}

/// What one object counts towards `resources`, in billionths.
fn usage_of<'a>(
    target: &Target,
    object: &Value,
    quota: &Value,
    resources: impl Iterator<Item = &'a String>,
) -> Vec<(String, i128)> {
    let info = target.info();
    let count_name = if info.group.is_empty() {
        format!("count/{}", info.plural)
    } else {
        format!("count/{}.{}", info.plural, info.group)
    };
    let pod = is(target, "", "Pod");
    if pod && (!in_scope(quota, object) || matches!(object["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))) {
        return vec![];
    }
    let one = 1_000_000_000;
    resources
        .filter_map(|resource| {
            let amount = match resource.as_str() {
                r if r == count_name || r == info.plural && info.group.is_empty() => one,
                "services.nodeports" if is(target, "", "Service") => {
                    let ports = object["spec"]["ports"]
                        .as_array()
                        .map_or(0, |p| p.iter().filter(|p| p["nodePort"].is_number()).count());
                    ports as i128 * one
                }
                "services.loadbalancers" if is(target, "", "Service") && object["spec"]["type"] == "LoadBalancer" => {
                    one
                }
                "requests.storage" if is(target, "", "PersistentVolumeClaim") => {
                    quantity(&object["spec"]["resources"]["requests"]["storage"]).map_or(0, nanos)
                }
                r if pod && is_compute(r) => pod_amount(object, r),
                _ => return None,
            };
            Some((resource.clone(), amount))
        })
        .collect()
}

/// A pod's request or limit of a resource: its containers' sum, or its largest init
/// container's when that is more.
fn pod_amount(pod: &Value, resource: &str) -> i128 {
    let (field, name) = resource.split_once('.').unwrap_or(("requests", resource));
    let amount = |c: &Value| quantity(&c["resources"][field][name]).map_or(0, nanos);
    let containers: i128 = pod["spec"]["containers"].as_array().into_iter().flatten().map(amount).sum();
    let init = pod["spec"]["initContainers"].as_array().into_iter().flatten().map(amount).max().unwrap_or(0);
    containers.max(init)
}

/// What a namespace uses of a quota's resources now, counted from its objects.
fn usage(
    server: &Shared,
    namespace: &str,
    quota: &Value,
) -> Result<std::collections::BTreeMap<String, i128>, ApiError> {
    let hard = quota["spec"]["hard"].as_object().cloned().unwrap_or_default();
    let mut used: std::collections::BTreeMap<String, i128> = hard.keys().map(|k| (k.clone(), 0)).collect();
    for strategy in server.registry.all().into_iter().filter(|s| s.info().namespaced) {
        let target = Target::collection(strategy.clone(), Some(namespace));
        let info = strategy.info();
        let counted = hard.keys().any(|r| {
            let core = info.group.is_empty();
            r == &format!("count/{}", info.plural) && core
                || r == &format!("count/{}.{}", info.plural, info.group)
                || core && r == &info.plural
                || core && info.kind == "Pod" && is_compute(r)
                || core && info.kind == "Service" && r.starts_with("services.")
                || core && info.kind == "PersistentVolumeClaim" && r == "requests.storage"
        });
        if !counted {
            continue;
        }
        for object in stored(server, &info.group, &info.plural, Some(namespace))? {
            for (resource, amount) in usage_of(&target, &object, quota, hard.keys()) {
                *used.entry(resource).or_insert(0) += amount;
            }
        }
    }
    Ok(used)
}

/// Writes each quota of the namespace's status: what it allows and what is used now.
pub fn refresh_quotas(server: &Shared, namespace: &str) -> Result<(), ApiError> {
    let Some(strategy) = server.registry.find("", "v1", "resourcequotas") else { return Ok(()) };
    let prefix = strategy.info().prefix(Some(namespace));
    if server.cache.list(&prefix).is_empty() {
        return Ok(());
    }
    let page = server.store.list(&prefix, None, 0).map_err(|e| ApiError::from_store(e, "resourcequotas", ""))?;
    for kv in page.items {
        let Ok(mut quota) = serde_json::from_slice::<Value>(&kv.value) else { continue };
        let used: serde_json::Map<String, Value> = usage(server, namespace, &quota)?
            .into_iter()
            .map(|(resource, amount)| {
                let text = format_nanos(&resource, amount);
                (resource, text.into())
            })
            .collect();
        let status = json!({"hard": quota["spec"]["hard"].clone(), "used": used});
        if quota["status"] == status {
            continue;
        }
        quota["status"] = status;
        match server.store.update(
            &kv.key,
            &serde_json::to_vec(&quota).expect("JSON values serialise"),
            Some(kv.mod_revision),
        ) {
            Ok(revision) => server.cache.observe(&kv.key, revision, Some(&quota)),
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::from_store(e, "resourcequotas", "")),
        }
    }
    Ok(())
}
