//! What clients ask before anything else: the version, the groups and resources (also as
//! one aggregated document per `/api` and `/apis`), and the OpenAPI v2 document kubectl
//! up to 1.28 reads to learn that the server validates fields itself (`fieldValidation`
//! on each resource's operations). The OpenAPI v3 documents are `openapi`'s.

use serde_json::{Value, json};

use super::registry::{Registry, ResourceInfo};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-podctl",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// Each named group with its versions, the first the preferred one.
fn groups(registry: &Registry) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (group, version) in registry.group_versions().into_iter().filter(|(g, _)| !g.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    groups
}

fn api_group_of(group: &str, versions: &[String]) -> Value {
    let listed: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": listed, "preferredVersion": listed[0]})
}

pub fn api_groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = groups(registry).iter().map(|(g, v)| api_group_of(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    let (name, versions) = groups(registry).into_iter().find(|(g, _)| g == group)?;
    let mut found = api_group_of(&name, &versions);
    found["kind"] = "APIGroup".into();
    found["apiVersion"] = "v1".into();
    Some(found)
}

/// A subresource's kind (group, version, kind) and verbs.
fn subresource(info: &ResourceInfo, sub: &str) -> ((String, String, String), &'static [&'static str]) {
    let own = |kind: &str| (info.group.clone(), info.version.clone(), kind.to_string());
    match sub {
        "status" => (own(&info.kind), &["get", "patch", "update"]),
        "scale" => (("autoscaling".into(), "v1".into(), "Scale".into()), &["get", "patch", "update"]),
        "binding" => (own("Binding"), &["create"]),
        "eviction" => (("policy".into(), "v1".into(), "Eviction".into()), &["create"]),
        "finalize" => (own(&info.kind), &["update"]),
        "ephemeralcontainers" => (own(&info.kind), &["get", "patch", "update"]),
        "log" => (own(&info.kind), &["get"]),
        "exec" | "attach" | "portforward" => (own("PodExecOptions"), &["create", "get"]),
        "token" => (("authentication.k8s.io".into(), "v1".into(), "TokenRequest".into()), &["create"]),
        _ => (own(&info.kind), &["get"]),
    }
}

/// The Accept value of aggregated discovery, which kubectl asks for first.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether `accept` takes aggregated discovery (apidiscovery.k8s.io/v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"].iter().all(|p| params.contains(p))
    })
}

/// Aggregated discovery: every resource of the core group (`/api`) or of the named groups
/// (`/apis`) in one document, so a client learns them in one request, not one per group.
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let strategies = registry.all();
    let mut items: Vec<Value> = Vec::new();
    for (group, version) in registry.group_versions().into_iter().filter(|(group, _)| group.is_empty() == core) {
        let resources: Vec<Value> = strategies
            .iter()
            .map(|s| s.info())
            .filter(|info| info.group == group && info.version == version)
            .map(|info| {
                let kind = |(g, v, k): (String, String, String)| json!({"group": g, "version": v, "kind": k});
                let subresources: Vec<Value> = info
                    .subresources
                    .iter()
                    .map(|sub| {
                        let (sub_kind, verbs) = subresource(info, sub);
                        json!({"subresource": sub, "responseKind": kind(sub_kind), "verbs": verbs})
                    })
                    .collect();
                json!({
                    "resource": info.plural,
                    "responseKind": kind((group.clone(), version.clone(), info.kind.clone())),
                    "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": info.kind.to_lowercase(),
                    "verbs": info.verbs,
                    "shortNames": info.short_names,
                    "categories": info.categories,
                    "subresources": subresources,
                })
            })
            .collect();
        let entry = json!({"version": version, "resources": resources, "freshness": "Current"});
        match items.iter_mut().find(|i| i["metadata"]["name"] == group.as_str()) {
            Some(item) => item["versions"].as_array_mut().expect("versions").push(entry),
            None => items.push(json!({"metadata": {"name": group}, "versions": [entry]})),
        }
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for strategy in registry.all().iter().filter(|s| s.info().group == group && s.info().version == version) {
        let info = strategy.info();
        resources.push(json!({
            "name": info.plural,
            "singularName": info.kind.to_lowercase(),
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs,
            "shortNames": info.short_names,
            "categories": info.categories,
        }));
        for sub in &info.subresources {
            let ((g, v, kind), verbs) = subresource(info, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", info.plural), "singularName": "", "namespaced": info.namespaced,
                "kind": kind, "verbs": verbs
            });
            if g != info.group || v != info.version {
                entry["group"] = g.into();
                entry["version"] = v.into();
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// Each resource's item path and its group-version-kind: what OpenAPI v2 lists.
fn item_paths(registry: &Registry) -> Vec<(String, ResourceInfo)> {
    registry
        .all()
        .iter()
        .map(|s| {
            let info = s.info().clone();
            let base = if info.group.is_empty() {
                format!("/api/{}", info.version)
            } else {
                format!("/apis/{}/{}", info.group, info.version)
            };
            let namespace = if info.namespaced { "/namespaces/{namespace}" } else { "" };
            (format!("{base}{namespace}/{}/{{name}}", info.plural), info)
        })
        .collect()
}

/// The Accept value of OpenAPI v2 in protobuf (gnostic's openapi_v2.Document), which
/// kubectl up to 1.28 reads to learn that `fieldValidation` is served.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// `/openapi/v2`, in JSON: each resource's PATCH with its group-version-kind and the
/// `fieldValidation` parameter.
pub fn openapi_v2(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (path, info) in item_paths(registry) {
        let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
        let parameter = json!({"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true});
        paths.insert(path, json!({"patch": {"x-kubernetes-group-version-kind": gvk, "parameters": [parameter]}}));
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0-podctl"}, "paths": paths})
}

/// The same document as gnostic's openapi_v2.Document in protobuf (OpenAPIv2.proto field
/// numbers).
pub fn openapi_v2_protobuf(registry: &Registry) -> Vec<u8> {
    use super::protobuf::encode_field as field;
    let mut paths = Vec::new();
    for (path, info) in item_paths(registry) {
        let gvk = format!("group: \"{}\"\nkind: {}\nversion: {}\n", info.group, info.kind, info.version);
        // NamedAny { name, Any { yaml = 2 } }
        let extension = [field(1, b"x-kubernetes-group-version-kind"), field(2, &field(2, gvk.as_bytes()))].concat();
        // ParametersItem { Parameter { NonBodyParameter { QueryParameterSubSchema { in = 2, name = 4, type = 6 } } } }
        let query = [field(2, b"query"), field(4, b"fieldValidation"), field(6, b"string")].concat();
        let parameter = field(1, &field(2, &field(3, &query)));
        // Operation { parameters = 8, vendor_extension = 13 }
        let patch = [field(8, &parameter), field(13, &extension)].concat();
        // NamedPathItem { name, PathItem { patch = 8 } }
        paths.extend(field(2, &[field(1, path.as_bytes()), field(2, &field(8, &patch))].concat()));
    }
    let info = [field(1, b"Kubernetes"), field(2, b"v1.33.0-podctl")].concat();
    // Document { swagger = 1, info = 2, paths = 8 }
    [field(1, b"2.0"), field(2, &info), field(8, &paths)].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_for_kubectl() {
        let registry = Registry::builtin();
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                       application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"));
        let core = aggregated(&registry, true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
        assert_eq!(
            pods["subresources"][1],
            json!({"subresource": "binding", "verbs": ["create"],
            "responseKind": {"group": "", "version": "v1", "kind": "Binding"}})
        );
        let named = aggregated(&registry, false);
        let groups: Vec<&str> =
            named["items"].as_array().unwrap().iter().map(|g| g["metadata"]["name"].as_str().unwrap()).collect();
        assert!(groups.contains(&"apps") && !groups.contains(&""), "{groups:?}");
        // The scale subresource is autoscaling/v1's Scale.
        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        let ((group, version, kind), _) = subresource(deployments.info(), "scale");
        assert_eq!((group.as_str(), version.as_str(), kind.as_str()), ("autoscaling", "v1", "Scale"));
    }
}
