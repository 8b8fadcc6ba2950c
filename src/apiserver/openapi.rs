//! The API's schemas: Kubernetes 1.33's OpenAPI v3 definitions of the built-in types
//! (`openapi/definitions.json`, made by scripts/openapi-definitions from the upstream
//! definitions), served per group version as kube-apiserver serves them (`kubectl
//! explain`, and `kubectl apply` choosing strategic merge patch), and read here for what
//! the server itself needs of them: each list's patch strategy and merge key.
//!
//! The definitions are parsed once, on first use, into the documents (kept as bytes) and
//! a small index of list fields; the parsed JSON is not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

use super::registry::custom::CustomResource;
use super::registry::{Registry, ResourceInfo, Strategy};

static DEFINITIONS: &str = include_str!("openapi/definitions.json");
const INFO: &str = "v1.33.0-podctl";

/// How a strategic merge patch treats one list or map field (its
/// `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key`), and where its
/// values' schema is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Field {
    /// The definition the field's value (or each item, or each map value) is, if any.
    pub definition: Option<String>,
    /// `merge`, `replace`, `retainKeys`, `merge,retainKeys`.
    pub patch_strategy: Option<String>,
    pub merge_key: Option<String>,
    pub is_list: bool,
    /// A map (`additionalProperties`): `definition` is its values'.
    pub is_map: bool,
    /// A list's `x-kubernetes-list-type` (`atomic`, `set`, `map`) and its
    /// `x-kubernetes-list-map-keys`.
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    /// `x-kubernetes-map-type: atomic`: the map is replaced whole, never merged.
    pub atomic_map: bool,
    /// Among the definition's `required` fields.
    pub required: bool,
}

/// Every definition's fields that are objects, lists or maps, by name.
pub struct Index {
    definitions: HashMap<String, HashMap<String, Field>>,
    /// Definitions of objects with fields (not scalars such as Quantity or Time), and
    /// whether each is atomic (`x-kubernetes-map-type: atomic`).
    objects: HashMap<String, bool>,
    /// The definition of each kind: (group, version, kind).
    kinds: HashMap<(String, String, String), String>,
}

impl Index {
    /// The definition of `kind` in `group`/`version`.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds.get(&(group.into(), version.into(), kind.into())).map(String::as_str)
    }

    /// A field of a definition.
    pub fn field(&self, definition: &str, name: &str) -> Option<&Field> {
        self.definitions.get(definition)?.get(name)
    }

    /// A definition's fields that are objects, lists or maps.
    pub fn fields(&self, definition: &str) -> impl Iterator<Item = (&String, &Field)> {
        self.definitions.get(definition).into_iter().flatten()
    }

    /// The definitions of objects with fields.
    pub fn object_definitions(&self) -> impl Iterator<Item = &String> {
        self.objects.keys()
    }

    /// Whether a definition is an object with fields, and if so whether it is atomic.
    pub fn object(&self, definition: &str) -> Option<bool> {
        self.objects.get(definition).copied()
    }
}

/// The bundled definitions, by name.
pub(super) fn parse() -> Map<String, Value> {
    serde_json::from_str(DEFINITIONS).expect("the bundled definitions are JSON")
}

fn reference(schema: &Value) -> Option<String> {
    let direct = schema["$ref"].as_str();
    let all_of = schema["allOf"].as_array().and_then(|a| a.first()).and_then(|r| r["$ref"].as_str());
    direct.or(all_of).map(|r| r.trim_start_matches("#/components/schemas/").to_string())
}

pub fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| Index::build(&parse()))
}

impl Index {
    /// The index of OpenAPI v3 `definitions` (by name).
    pub fn build(definitions: &Map<String, Value>) -> Index {
        let mut index = Index { definitions: HashMap::new(), objects: HashMap::new(), kinds: HashMap::new() };
        for (name, schema) in definitions {
            if schema["properties"].is_object() {
                index.objects.insert(name.clone(), schema["x-kubernetes-map-type"] == "atomic");
            }
            for gvk in schema["x-kubernetes-group-version-kind"].as_array().into_iter().flatten() {
                let part = |k: &str| gvk[k].as_str().unwrap_or("").to_string();
                index.kinds.insert((part("group"), part("version"), part("kind")), name.clone());
            }
            let mut fields = HashMap::new();
            for (field, property) in schema["properties"].as_object().into_iter().flatten() {
                let is_list = property["type"] == "array";
                let is_map = property["additionalProperties"].is_object();
                let values = if is_list { &property["items"] } else { &property["additionalProperties"] };
                let definition = reference(property).or_else(|| reference(values));
                let strategy = property["x-kubernetes-patch-strategy"].as_str().map(String::from);
                if definition.is_some() || strategy.is_some() || is_list || is_map {
                    fields.insert(
                        field.clone(),
                        Field {
                            definition,
                            patch_strategy: strategy,
                            merge_key: property["x-kubernetes-patch-merge-key"].as_str().map(String::from),
                            is_list,
                            is_map,
                            list_type: property["x-kubernetes-list-type"].as_str().map(String::from),
                            list_map_keys: property["x-kubernetes-list-map-keys"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|k| k.as_str().map(String::from))
                                .collect(),
                            atomic_map: property["x-kubernetes-map-type"] == "atomic",
                            required: schema["required"]
                                .as_array()
                                .is_some_and(|r| r.iter().any(|f| f == field.as_str())),
                        },
                    );
                }
            }
            index.definitions.insert(name.clone(), fields);
        }
        index
    }
}

/// Serialised documents by (group, version), each with its hash.
type ByGroupVersion = HashMap<(String, String), (Arc<Vec<u8>>, String)>;

/// The documents of every group version served, serialised, made once; and the hash
/// `/openapi/v3` names each by, so kubectl's cache knows when it changed.
pub struct Documents {
    by_group_version: ByGroupVersion,
    /// The custom group versions' documents, and the custom resources they were made
    /// from: made again only when the served definitions change.
    custom: Mutex<(Vec<Arc<CustomResource>>, Arc<ByGroupVersion>)>,
}

/// The OpenAPI v3 document of each group version of the built-in resources (custom
/// ones are made from their definitions: [`custom_document`]).
pub fn documents(registry: &Registry) -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(|| Documents::of(registry))
}

impl Documents {
    fn of(registry: &Registry) -> Documents {
        let definitions = parse();
        let mut by_group_version = HashMap::new();
        let mut group_versions: Vec<(String, String)> =
            registry.built_in().iter().map(|s| (s.info().group.clone(), s.info().version.clone())).collect();
        group_versions.dedup();
        for (group, version) in group_versions {
            let document = document(registry, &definitions, &group, &version);
            let bytes = serde_json::to_vec(&document).expect("JSON values serialise");
            let hash = hash(&bytes);
            by_group_version.insert((group, version), (Arc::new(bytes), hash));
        }
        Documents { by_group_version, custom: Mutex::default() }
    }

    /// A group version's document: a built-in one, or one of the custom resources served
    /// now.
    pub fn get(&self, registry: &Registry, group: &str, version: &str) -> Option<Arc<Vec<u8>>> {
        let key = (group.to_string(), version.to_string());
        match self.by_group_version.get(&key) {
            Some((bytes, _)) => Some(bytes.clone()),
            None => self.custom(registry).get(&key).map(|(bytes, _)| bytes.clone()),
        }
    }

    fn custom(&self, registry: &Registry) -> Arc<ByGroupVersion> {
        let resources = registry.custom();
        let mut cached = self.custom.lock().expect("openapi documents lock");
        let (made_from, documents) = &*cached;
        if made_from.len() == resources.len() && made_from.iter().zip(&resources).all(|(a, b)| Arc::ptr_eq(a, b)) {
            return documents.clone();
        }
        let mut documents = ByGroupVersion::new();
        for resource in &resources {
            let key = (resource.info().group.clone(), resource.info().version.clone());
            if let std::collections::hash_map::Entry::Vacant(entry) = documents.entry(key) {
                let (group, version) = entry.key();
                let bytes = custom_document(&resources, group, version);
                let hash = hash(&bytes);
                entry.insert((Arc::new(bytes), hash));
            }
        }
        let documents = Arc::new(documents);
        *cached = (resources, documents.clone());
        documents
    }

    /// `/openapi/v3`: where each group version's document is (the built-in ones' and
    /// those of the custom resources served now), with its hash.
    pub fn index(&self, registry: &Registry) -> Value {
        let custom = self.custom(registry);
        let mut group_versions: Vec<(&(String, String), &String)> =
            self.by_group_version.iter().chain(custom.iter()).map(|(gv, (_, hash))| (gv, hash)).collect();
        group_versions.sort();
        let mut paths = Map::new();
        for ((group, version), hash) in group_versions {
            let path = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
            paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
        }
        json!({"paths": paths})
    }
}

/// The document of a custom group version: each resource's schema as its definition
/// gives it (with the ObjectMeta every object has), under the name kube-apiserver gives
/// it (`com.example.stable.v1.CronTab`).
fn custom_document(custom: &[Arc<CustomResource>], group: &str, version: &str) -> Vec<u8> {
    let resources: Vec<_> = custom.iter().filter(|r| r.info().group == group && r.info().version == version).collect();
    let reversed: Vec<&str> = group.split('.').rev().collect();
    let prefix = format!("{}.{version}", reversed.join("."));
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for resource in &resources {
        let info = resource.info();
        let name = format!("{prefix}.{}", info.kind);
        let list = format!("{name}List");
        let gvk = |kind: &str| json!([{"group": group, "version": version, "kind": kind}]);
        let reference = |to: &str| json!({"allOf": [{"$ref": format!("#/components/schemas/{to}")}]});
        let mut schema = resource.open_api_schema().clone();
        if !schema.is_object() {
            schema = json!({"type": "object"});
        }
        let properties = schema["properties"].as_object().cloned().unwrap_or_default();
        let mut all = Map::new();
        all.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        all.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        all.insert("metadata".into(), reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        all.extend(properties.into_iter().filter(|(k, _)| k != "metadata" && k != "apiVersion" && k != "kind"));
        schema["properties"] = all.into();
        schema["x-kubernetes-group-version-kind"] = gvk(&info.kind);
        schemas.insert(name.clone(), schema);
        schemas.insert(
            list.clone(),
            json!({"type": "object", "required": ["items"], "x-kubernetes-group-version-kind": gvk(&format!("{}List", info.kind)),
                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                                  "metadata": reference("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}}),
        );
        let patch_types =
            ["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json"];
        resource_paths(&mut paths, info, &name, Some(&list), &patch_types);
    }
    schemas.extend(metadata_schemas().clone());
    let document = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    serde_json::to_vec(&document).expect("JSON values serialise")
}

/// ObjectMeta and ListMeta, and the definitions they reach: what every custom
/// resource's document holds besides its own schemas.
fn metadata_schemas() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let definitions = parse();
        let wanted = ["ObjectMeta", "ListMeta"].map(|m| format!("io.k8s.apimachinery.pkg.apis.meta.v1.{m}"));
        reachable(&definitions, wanted.to_vec())
    })
}

/// A resource's collection and item paths, with the operations kubectl looks for: the
/// group-version-kind, the `fieldValidation` parameter and the patch types accepted.
fn resource_paths(
    paths: &mut Map<String, Value>,
    info: &ResourceInfo,
    definition: &str,
    list: Option<&str>,
    patch_types: &[&str],
) {
    let field_validation =
        json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let ok = |name: Option<&str>| {
        let content = name.map_or(json!({}), |n| json!({"application/json": {"schema": schema(n)}}));
        json!({"200": {"description": "OK", "content": content}})
    };
    let op = |action: &str, responses: Value| {
        json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
               "parameters": [field_validation], "responses": responses})
    };
    let mut patch = op("patch", ok(Some(definition)));
    let content: Map<String, Value> =
        patch_types.iter().map(|t| (t.to_string(), json!({"schema": {"type": "object"}}))).collect();
    patch["requestBody"] = json!({"content": content});
    let base = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    let namespace = if info.namespaced { "/namespaces/{namespace}" } else { "" };
    let collection = format!("{base}{namespace}/{}", info.plural);
    paths.insert(collection.clone(), json!({"get": op("list", ok(list)), "post": op("post", ok(Some(definition)))}));
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({"get": op("get", ok(Some(definition))), "put": op("put", ok(Some(definition))),
               "patch": patch, "delete": op("delete", ok(None))}),
    );
}

/// One group version's document: each resource's paths (with the group-version-kind, the
/// `fieldValidation` parameter and the patch types kubectl looks for) and every
/// definition its kinds reach.
fn document(registry: &Registry, definitions: &Map<String, Value>, group: &str, version: &str) -> Value {
    let index = index();
    let mut paths = Map::new();
    let mut wanted: Vec<String> = Vec::new();
    for strategy in registry.built_in().iter().filter(|s| s.info().group == group && s.info().version == version) {
        let info = strategy.info();
        let Some(definition) = index.kind(group, version, &info.kind) else { continue };
        wanted.push(definition.to_string());
        let list = index.kind(group, version, &format!("{}List", info.kind));
        wanted.extend(list.map(String::from));
        let patch_types = [
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ];
        resource_paths(&mut paths, info, definition, list, &patch_types);
    }
    let schemas = reachable(definitions, wanted);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// What `/openapi/v3` names a document by: it changes when the document does.
fn hash(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// The definitions named in `wanted` and every definition they refer to.
fn reachable(definitions: &Map<String, Value>, mut wanted: Vec<String>) -> Map<String, Value> {
    let mut schemas = Map::new();
    while let Some(name) = wanted.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        let Some(schema) = definitions.get(&name) else { continue };
        collect_references(schema, &mut wanted);
        schemas.insert(name, schema.clone());
    }
    schemas
}

fn collect_references(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                out.push(reference.trim_start_matches("#/components/schemas/").to_string());
            }
            map.values().for_each(|v| collect_references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keys_come_from_the_definitions() {
        let index = index();
        let pod_spec = index.kind("", "v1", "Pod").and_then(|pod| index.field(pod, "spec")).unwrap();
        let spec = pod_spec.definition.as_deref().unwrap();
        let containers = index.field(spec, "containers").unwrap();
        assert_eq!(
            (containers.patch_strategy.as_deref(), containers.merge_key.as_deref(), containers.is_list),
            (Some("merge"), Some("name"), true)
        );
        let container = containers.definition.as_deref().unwrap();
        assert_eq!(index.field(container, "ports").unwrap().merge_key.as_deref(), Some("containerPort"));
        assert_eq!(index.field(container, "volumeMounts").unwrap().merge_key.as_deref(), Some("mountPath"));
        let deployment_spec = index.kind("apps", "v1", "Deployment").and_then(|d| index.field(d, "spec")).unwrap();
        let strategy = index.field(deployment_spec.definition.as_deref().unwrap(), "strategy").unwrap();
        assert_eq!(strategy.patch_strategy.as_deref(), Some("retainKeys"));
    }

    #[test]
    fn custom_documents_are_made_again_only_when_the_definitions_change() {
        let registry = Registry::builtin();
        let definition = |description: &str| {
            Arc::new(json!({"spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema":
                    {"type": "object", "description": description}}}]}}))
        };
        // Its own documents: the process's are shared with the other tests' registries.
        let documents = Documents::of(&registry);
        registry.define(&[definition("first")]);
        let first = documents.get(&registry, "example.com", "v1").unwrap();
        assert!(String::from_utf8_lossy(&first).contains("first"));
        assert!(Arc::ptr_eq(&first, &documents.get(&registry, "example.com", "v1").unwrap()));
        let index = documents.index(&registry);
        registry.define(&[definition("second")]);
        assert!(String::from_utf8_lossy(&documents.get(&registry, "example.com", "v1").unwrap()).contains("second"));
        assert_ne!(documents.index(&registry), index, "the hash changes with the document");
        registry.define(&[]);
        assert!(documents.get(&registry, "example.com", "v1").is_none());
    }

    #[test]
    fn a_group_versions_document_holds_what_its_kinds_reach() {
        let registry = Registry::builtin();
        let documents = documents(&registry);
        let apps: Value = serde_json::from_slice(&documents.get(&registry, "apps", "v1").unwrap()).unwrap();
        let schemas = apps["components"]["schemas"].as_object().unwrap();
        for name in [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_some());
        let index = documents.index(&registry);
        assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap().contains("?hash="));
    }
}
