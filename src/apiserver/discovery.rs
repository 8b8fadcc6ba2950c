//! What clients ask before anything else: the version, the groups and resources (also as
//! one aggregated document per `/api` and `/apis`), and the
//! OpenAPI v3 documents kubectl reads to learn that the server validates fields itself
//! (`fieldValidation` on each resource's operations), so `kubectl apply` needs no schema.

use serde_json::{Value, json};

use super::resources::{RESOURCES, Resource};

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

pub fn api_groups() -> Value {
    let groups: Vec<Value> = Resource::group_versions()
        .into_iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    let (_, version) = Resource::group_versions().into_iter().find(|(g, _)| *g == group && !g.is_empty())?;
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()], "preferredVersion": gv}),
    )
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The `all` category of `kubectl get all`.
fn categories(r: &Resource) -> Vec<&'static str> {
    if matches!(r.plural, "pods" | "services" | "deployments" | "replicasets") { vec!["all"] } else { vec![] }
}

/// A subresource's kind and verbs.
fn subresource(r: &Resource, sub: &str) -> (&'static str, &'static [&'static str]) {
    match sub {
        "status" => (r.kind, &["get", "patch", "update"]),
        "scale" => ("Scale", &["get", "patch", "update"]),
        _ => ("Binding", &["create"]),
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
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = Resource::group_versions()
        .into_iter()
        .filter(|(group, _)| group.is_empty() == core)
        .map(|(group, version)| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| {
                    let kind = |kind: &str| json!({"group": group, "version": version, "kind": kind});
                    let subresources: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|sub| {
                            let (sub_kind, verbs) = subresource(r, sub);
                            json!({"subresource": sub, "responseKind": kind(sub_kind), "verbs": verbs})
                        })
                        .collect();
                    json!({
                        "resource": r.plural,
                        "responseKind": kind(r.kind),
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.kind.to_lowercase(),
                        "verbs": VERBS,
                        "shortNames": r.short_names,
                        "categories": categories(r),
                        "subresources": subresources,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": group},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": categories(r),
        }));
        for sub in r.subresources {
            let (kind, verbs) = subresource(r, sub);
            resources.push(json!({
                "name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": verbs
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// A resource's collection path, as OpenAPI documents name it (`{namespace}` templated).
fn collection_path(r: &Resource) -> String {
    let base =
        if r.group.is_empty() { format!("/api/{}", r.version) } else { format!("/apis/{}/{}", r.group, r.version) };
    let namespace = if r.namespaced { "/namespaces/{namespace}" } else { "" };
    format!("{base}{namespace}/{}", r.plural)
}

/// Each resource's item path and the resource: what OpenAPI v2 lists.
fn item_paths() -> Vec<(String, &'static Resource)> {
    RESOURCES.iter().map(|r| (format!("{}/{{name}}", collection_path(r)), r)).collect()
}

/// The Accept value of OpenAPI v2 in protobuf (gnostic's openapi_v2.Document), which
/// kubectl up to 1.28 reads to learn that `fieldValidation` is served.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// `/openapi/v2`, in JSON: each resource's PATCH with its group-version-kind and the
/// `fieldValidation` parameter.
pub fn openapi_v2() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, r) in item_paths() {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let parameter = json!({"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true});
        paths.insert(path, json!({"patch": {"x-kubernetes-group-version-kind": gvk, "parameters": [parameter]}}));
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0-podctl"}, "paths": paths})
}

/// The same document as gnostic's openapi_v2.Document in protobuf (OpenAPIv2.proto field
/// numbers).
pub fn openapi_v2_protobuf() -> Vec<u8> {
    use super::protobuf::encode_field as field;
    let mut paths = Vec::new();
    for (path, r) in item_paths() {
        let gvk = format!("group: \"{}\"\nkind: {}\nversion: {}\n", r.group, r.kind, r.version);
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

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (group, version) in Resource::group_versions() {
        let path = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=podctl1")}));
    }
    json!({"paths": paths})
}

/// One group version's OpenAPI v3 document: each resource's paths with the
/// `x-kubernetes-group-version-kind` and the `fieldValidation` parameter kubectl looks for.
pub fn openapi_v3(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let field_validation =
        json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut schemas = serde_json::Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let collection = collection_path(r);
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": [field_validation]});
        paths.insert(collection.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        let schema_name = format!(
            "io.k8s.api.{}.{version}.{}",
            if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) },
            r.kind
        );
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-group-version-kind": [gvk], "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-podctl"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_for_kubectl() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                       application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"));
        let core = aggregated(true);
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
        let named = aggregated(false);
        let groups: Vec<&str> =
            named["items"].as_array().unwrap().iter().map(|g| g["metadata"]["name"].as_str().unwrap()).collect();
        assert!(groups.contains(&"apps") && !groups.contains(&""), "{groups:?}");
    }
}
