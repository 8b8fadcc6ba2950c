//! Custom resources: the strategy a CustomResourceDefinition makes for each version it
//! serves (apiextensions-apiserver's customresource registry). Objects are JSON checked
//! against the version's structural schema (`schema`): unknown fields pruned, defaults
//! filled in, values validated; the status and scale subresources, printer columns
//! (`jsonpath`) and the storage version come from the definition. All versions share one
//! place in the store; with `None` conversion an object read through another version
//! differs only in its `apiVersion`.

mod cost;
mod jsonpath;
mod library;
mod rules;
pub mod schema;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

pub use self::jsonpath::JsonPath;
use self::schema::Schema;
use super::columns::human_age;
use super::{ALL_VERBS, Cause, Decoded, FieldLabel, ResourceInfo, Scale, Strategy};
use crate::apiserver::errors::ApiError;

/// One printer column of a definition's version.
struct PrinterColumn {
    definition: Value,
    kind: String,
    path: Option<JsonPath>,
}

/// Where the scale subresource reads and writes.
struct ScalePaths {
    spec_replicas: JsonPath,
    status_replicas: JsonPath,
    label_selector: Option<JsonPath>,
}

pub struct CustomResource {
    info: ResourceInfo,
    storage_api_version: String,
    schema: Schema,
    columns: Vec<PrinterColumn>,
    scale: Option<ScalePaths>,
    selectable_fields: Vec<(String, Vec<String>)>,
}

impl CustomResource {
    /// The strategy of each served version of `definition` (a CustomResourceDefinition).
    pub fn of_definition(definition: &Value) -> Vec<CustomResource> {
        let spec = &definition["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
        };
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        let storage = versions.iter().find(|v| v["storage"] == true).and_then(|v| v["name"].as_str()).unwrap_or("");
        versions
            .iter()
            .filter(|v| v["served"] == true)
            .map(|version| {
                let subresources = &version["subresources"];
                let mut served_subresources = Vec::new();
                if subresources["status"].is_object() {
                    served_subresources.push("status".to_string());
                }
                let scale = subresources["scale"].as_object().and_then(|scale| {
                    served_subresources.push("scale".to_string());
                    let path =
                        |name: &str| scale.get(name).and_then(Value::as_str).and_then(|p| JsonPath::parse(p).ok());
                    Some(ScalePaths {
                        spec_replicas: path("specReplicasPath")?,
                        status_replicas: path("statusReplicasPath")?,
                        label_selector: path("labelSelectorPath"),
                    })
                });
                let info = ResourceInfo {
                    group: group.into(),
                    version: version["name"].as_str().unwrap_or_default().into(),
                    plural: names["plural"].as_str().unwrap_or_default().into(),
                    kind: names["kind"].as_str().unwrap_or_default().into(),
                    namespaced: spec["scope"] == "Namespaced",
                    short_names: strings(&names["shortNames"]),
                    categories: strings(&names["categories"]),
                    subresources: served_subresources,
                    verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
                    storage_group: None,
                };
                CustomResource {
                    info,
                    storage_api_version: format!("{group}/{storage}"),
                    schema: Schema::new(version["schema"]["openAPIV3Schema"].clone()),
                    columns: printer_columns(&version["additionalPrinterColumns"]),
                    scale,
                    selectable_fields: selectable_fields(&version["selectableFields"]),
                }
            })
            .collect()
    }

    /// The version's `openAPIV3Schema`.
    pub fn open_api_schema(&self) -> &Value {
        self.schema.root()
    }
}

/// Kubernetes' version priority (apimachinery's CompareKubeAwareVersionStrings): GA
/// before beta before alpha, higher numbers first, other names last alphabetically. The
/// first of a group's versions is its preferred one.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major = rest[..digits].parse().ok()?;
        let (stage, minor) = match &rest[digits..] {
            "" => return Some((major, 2, 0)),
            tail => match (tail.strip_prefix("beta"), tail.strip_prefix("alpha")) {
                (Some(n), _) => (1, n),
                (_, Some(n)) => (0, n),
                _ => return None,
            },
        };
        Some((major, stage, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((a_major, a_stage, a_minor)), Some((b_major, b_stage, b_minor))) => {
            b_stage.cmp(&a_stage).then(b_major.cmp(&a_major)).then(b_minor.cmp(&a_minor))
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// The version's selectable fields (`.spec.color` is selected as `spec.color`).
fn selectable_fields(given: &Value) -> Vec<(String, Vec<String>)> {
    let paths = given.as_array().into_iter().flatten().filter_map(|f| f["jsonPath"].as_str());
    paths
        .filter_map(|text| {
            let path = JsonPath::parse(text).ok()?;
            let names = path.fields()?.into_iter().map(String::from).collect();
            Some((text.trim_start_matches('.').to_string(), names))
        })
        .collect()
}

/// The Age column, when a version names no columns of its own.
fn printer_columns(given: &Value) -> Vec<PrinterColumn> {
    let default = json!([{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}]);
    let given = given.as_array().filter(|c| !c.is_empty()).unwrap_or_else(|| default.as_array().expect("a list"));
    let name = json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace."});
    let mut columns = vec![PrinterColumn { definition: name, kind: "name".into(), path: None }];
    for column in given {
        let kind = column["type"].as_str().unwrap_or("string").to_string();
        columns.push(PrinterColumn {
            definition: json!({"name": column["name"], "type": kind, "format": column["format"].as_str().unwrap_or(""),
                "description": column["description"].as_str().unwrap_or(""), "priority": column["priority"].as_i64().unwrap_or(0)}),
            path: column["jsonPath"].as_str().and_then(|p| JsonPath::parse(p).ok()),
            kind,
        });
    }
    columns
}

/// A printer column's cell, as apiextensions-apiserver's table convertor makes it: a
/// string column prints what it finds, others keep their type; a date is an age.
fn cell(column: &PrinterColumn, object: &Value) -> Value {
    let Some(found) = column.path.as_ref().and_then(|p| p.first(object)) else {
        return match column.kind.as_str() {
            "name" => object["metadata"]["name"].clone(),
            _ => Value::Null,
        };
    };
    match (column.kind.as_str(), found) {
        ("string", Value::String(_)) => found.clone(),
        ("string", other) => other.to_string().into(),
        ("integer", Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).into(),
        ("number", Value::Number(n)) => n.as_f64().into(),
        ("boolean", Value::Bool(_)) => found.clone(),
        ("date", Value::String(at)) => human_age(at).into(),
        _ => Value::Null,
    }
}

impl Strategy for CustomResource {
    fn info(&self) -> &ResourceInfo {
        &self.info
    }

    /// The metadata through ObjectMeta, the rest through the schema: unknown fields
    /// pruned and named, defaults filled in.
    fn decode(&self, mut object: Value) -> Result<Decoded, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        let mut unknown = Vec::new();
        let given = object["metadata"].take();
        let metadata: ObjectMeta = serde_json::from_value(given.clone())
            .map_err(|e| ApiError::bad_request(format!("error decoding metadata: {e}")))?;
        let metadata = serde_json::to_value(&metadata).expect("ObjectMeta serialises");
        crate::validation::collect_unknown(&given, &metadata, "metadata", &mut unknown);
        object["metadata"] = metadata;
        unknown.extend(self.schema.prune(&mut object));
        self.schema.default(&mut object);
        Ok(Decoded { object, unknown })
    }

    fn prepare_create(&self, object: &mut Value) -> Vec<Cause> {
        if self.info.has_subresource("status")
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        self.schema.validate(object, None)
    }

    fn prepare_update(&self, new: &mut Value, old: &Value) -> Vec<Cause> {
        self.schema.validate(new, Some(old))
    }

    fn prepare_status_update(&self, new: &mut Value, old: &Value) -> Vec<Cause> {
        self.schema.validate(new, Some(old))
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    /// Any change but of the metadata (and of the status, when it is a subresource).
    fn changes_generation(&self, new: &Value, old: &Value) -> bool {
        let without = |o: &Value| {
            let mut o = o.clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("metadata");
                if self.info.has_subresource("status") {
                    map.remove("status");
                }
            }
            o
        };
        without(new) != without(old)
    }

    fn column_definitions(&self) -> Vec<Value> {
        self.columns.iter().map(|c| c.definition.clone()).collect()
    }

    fn cells(&self, object: &Value) -> Vec<Value> {
        self.columns.iter().map(|c| cell(c, object)).collect()
    }

    fn field_labels(&self) -> &[FieldLabel] {
        &[]
    }

    fn selectable_fields(&self) -> &[(String, Vec<String>)] {
        &self.selectable_fields
    }

    fn scale(&self, object: &Value) -> Option<Scale> {
        let paths = self.scale.as_ref()?;
        let read = |path: &JsonPath| path.first(object).and_then(Value::as_i64).unwrap_or(0);
        let selector = paths.label_selector.as_ref().and_then(|p| p.first(object)).and_then(Value::as_str);
        Some(Scale {
            replicas: read(&paths.spec_replicas),
            current: read(&paths.status_replicas),
            selector: selector.unwrap_or_default().to_string(),
        })
    }

    fn set_replicas(&self, object: &mut Value, replicas: i64) {
        let Some(fields) = self.scale.as_ref().and_then(|s| s.spec_replicas.fields()) else { return };
        let mut at = object;
        for field in fields {
            at = &mut at[field];
        }
        *at = replicas.into();
    }

    fn schema(&self) -> Option<&Value> {
        Some(self.schema.root())
    }

    fn has_protobuf(&self) -> bool {
        false
    }

    fn to_storage(&self, object: &mut Value) {
        super::set_api_version(object, &self.storage_api_version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> Value {
        json!({"spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"cronSpec": {"type": "string"}, "replicas": {"type": "integer", "default": 1}}},
                     "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}}}}}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                 "additionalPrinterColumns": [{"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                                              {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                                              {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]},
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1alpha1", "served": false, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut versions = ["v1alpha1", "foo", "v2beta1", "v1", "v1beta2", "v11alpha2", "v1beta1", "v2", "bar"];
        versions.sort_by(|a, b| version_order(a, b));
        assert_eq!(versions, ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v11alpha2", "v1alpha1", "bar", "foo"]);
    }

    #[test]
    fn a_definition_serves_each_served_version() {
        let resources = CustomResource::of_definition(&definition());
        let versions: Vec<&str> = resources.iter().map(|r| r.info().version.as_str()).collect();
        assert_eq!(versions, ["v1", "v1beta1"]);
        let v1 = &resources[0];
        assert_eq!(v1.info().subresources, ["status", "scale"]);
        assert_eq!(v1.info().key(Some("ns"), "a"), "/registry/stable.example.com/crontabs/ns/a");
        let mut stored = json!({"apiVersion": "stable.example.com/v1beta1"});
        resources[1].to_storage(&mut stored);
        assert_eq!(stored["apiVersion"], "stable.example.com/v1");
        assert_eq!(resources[1].column_definitions().len(), 2, "Name and the default Age");
    }

    #[test]
    fn objects_are_pruned_defaulted_printed_and_scaled() {
        let v1 = &CustomResource::of_definition(&definition())[0];
        let decoded = v1
            .decode(json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                "metadata": {"name": "a", "bogus": 1}, "spec": {"cronSpec": "* * * * */5", "image": "x"},
                "status": {"replicas": 2, "selector": "app=a"}}))
            .unwrap();
        assert_eq!(decoded.unknown, ["metadata.bogus", "spec.image"]);
        let mut object = decoded.object;
        assert_eq!(object["spec"]["replicas"], 1);
        let now = crate::apiserver::objects::now();
        object["metadata"]["creationTimestamp"] = now.into();
        let cells = v1.cells(&object);
        assert_eq!(cells[..3], [json!("a"), json!("* * * * */5"), json!(1)]);
        assert!(matches!(cells[3].as_str(), Some("0s" | "1s")), "{}", cells[3]);
        let scale = v1.scale(&object).unwrap();
        assert_eq!((scale.replicas, scale.current, scale.selector.as_str()), (1, 2, "app=a"));
        v1.set_replicas(&mut object, 4);
        assert_eq!(object["spec"]["replicas"], 4);
        let mut changed = object.clone();
        changed["status"]["replicas"] = 5.into();
        assert!(!v1.changes_generation(&changed, &object), "the status is a subresource");
        changed["spec"]["cronSpec"] = "x".into();
        assert!(v1.changes_generation(&changed, &object));
    }
}
