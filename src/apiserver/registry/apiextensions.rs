//! customresourcedefinitions (apiextensions.k8s.io/v1): named `<plural>.<group>`, each
//! version with a structural schema, exactly one stored. The server does the work of
//! apiextensions-apiserver's naming and establishing controllers at once: a definition
//! is `NamesAccepted` and `Established` as it is written, and its versions are served
//! from then on (`custom`). Conversion between versions is `None`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, CustomResourceDefinitionCondition,
    CustomResourceDefinitionStatus, CustomResourceDefinitionVersion,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::checks::{immutable, one_of};
use super::custom::{JsonPath, schema};
use super::{Cause, Rules};
use crate::validation;

pub struct CustomResourceDefinitions;

/// Groups only the Kubernetes project may define resources in, unless approved.
const APPROVAL: &str = "api-approved.kubernetes.io";

impl Rules for CustomResourceDefinitions {
    type Object = CustomResourceDefinition;
    const SHORT_NAMES: &'static [&'static str] = &["crd", "crds"];
    const CATEGORIES: &'static [&'static str] = &["api-extensions"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const GENERATION: bool = true;

    fn default(definition: &mut CustomResourceDefinition) {
        let spec = &mut definition.spec;
        let conversion =
            spec.conversion.get_or_insert_with(|| CustomResourceConversion { strategy: "None".into(), webhook: None });
        if conversion.strategy.is_empty() {
            conversion.strategy = "None".into();
        }
        let names = &mut spec.names;
        if names.singular.as_deref().is_none_or(str::is_empty) {
            names.singular = Some(names.kind.to_lowercase());
        }
        if names.list_kind.as_deref().is_none_or(str::is_empty) {
            names.list_kind = Some(format!("{}List", names.kind));
        }
    }

    fn prepare_for_create(definition: &mut CustomResourceDefinition) {
        definition.status = None;
        settle_status(definition);
    }

    fn validate(definition: &CustomResourceDefinition) -> Vec<Cause> {
        let spec = &definition.spec;
        let mut causes = Vec::new();
        let name = definition.metadata.name.as_deref().unwrap_or_default();
        let expected = format!("{}.{}", spec.names.plural, spec.group);
        if name != expected {
            causes.push((
                "metadata.name".into(),
                format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        if spec.group.is_empty() {
            causes.push(("spec.group".into(), "Required value".into()));
        } else if !spec.group.contains('.') {
            causes.push((
                "spec.group".into(),
                format!("Invalid value: \"{}\": should be a domain with at least one dot", spec.group),
            ));
        } else {
            causes.extend(validation::check("spec.group", &spec.group, validation::dns_subdomain));
        }
        let protected = spec.group.ends_with(".k8s.io")
            || spec.group.ends_with(".kubernetes.io")
            || spec.group == "k8s.io"
            || spec.group == "kubernetes.io";
        let approved = definition.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(APPROVAL));
        if protected && !approved {
            causes.push((
                format!("metadata.annotations[{APPROVAL}]"),
                format!("Required value: protected groups must have approval annotation \"{APPROVAL}\", see https://github.com/kubernetes/enhancements/pull/1111"),
            ));
        }
        causes.extend(one_of("spec.scope", Some(spec.scope.as_str()), &["Cluster", "Namespaced"]));
        causes.extend(validate_names(definition));
        if let Some(conversion) = &spec.conversion {
            causes.extend(one_of("spec.conversion.strategy", Some(conversion.strategy.as_str()), &["None"]));
        }
        if spec.versions.is_empty() {
            causes.push((
                "spec.versions".into(),
                "Invalid value: null: must have exactly one version marked as storage version".into(),
            ));
        } else if spec.versions.iter().filter(|v| v.storage).count() != 1 {
            let names: Vec<&str> = spec.versions.iter().map(|v| v.name.as_str()).collect();
            causes.push((
                "spec.versions".into(),
                format!(
                    "Invalid value: {}: must have exactly one version marked as storage version",
                    serde_json::to_string(&names).unwrap_or_default()
                ),
            ));
        }
        for (i, version) in spec.versions.iter().enumerate() {
            let path = format!("spec.versions[{i}]");
            if spec.versions[..i].iter().any(|v| v.name == version.name) {
                causes.push((format!("{path}.name"), format!("Duplicate value: \"{}\"", version.name)));
            }
            causes.extend(validate_version(version, &path));
        }
        causes
    }

    fn validate_create(definition: &CustomResourceDefinition) -> Vec<Cause> {
        rule_costs(definition, None)
    }

    fn validate_update(new: &CustomResourceDefinition, old: &CustomResourceDefinition) -> Vec<Cause> {
        let mut causes: Vec<Cause> = immutable(&new.spec.scope, &old.spec.scope, "spec.scope").into_iter().collect();
        causes.extend(rule_costs(new, Some(old)));
        // A version objects may still be stored in stays (until storedVersions says otherwise).
        let stored = old.status.as_ref().and_then(|s| s.stored_versions.clone()).unwrap_or_default();
        for (i, version) in stored.iter().enumerate() {
            if !new.spec.versions.iter().any(|v| &v.name == version) {
                causes.push((
                    format!("status.storedVersions[{i}]"),
                    format!("Invalid value: \"{version}\": must appear in spec.versions"),
                ));
            }
        }
        causes
    }

    fn prepare_for_update(new: &mut CustomResourceDefinition, _old: &CustomResourceDefinition) {
        settle_status(new);
    }
}

fn validate_names(definition: &CustomResourceDefinition) -> Vec<Cause> {
    let names = &definition.spec.names;
    let mut causes = Vec::new();
    let lowercase_label = |path: &str, value: &str| -> Vec<Cause> {
        if value.is_empty() {
            return vec![(path.to_string(), "Required value".to_string())];
        }
        validation::check(path, value, validation::dns_label)
    };
    causes.extend(lowercase_label("spec.names.plural", &names.plural));
    causes.extend(lowercase_label("spec.names.singular", names.singular.as_deref().unwrap_or_default()));
    for (i, short) in names.short_names.iter().flatten().enumerate() {
        causes.extend(lowercase_label(&format!("spec.names.shortNames[{i}]"), short));
    }
    for (i, category) in names.categories.iter().flatten().enumerate() {
        causes.extend(lowercase_label(&format!("spec.names.categories[{i}]"), category));
    }
    let kind_like = |path: &str, value: &str| -> Vec<Cause> {
        if value.is_empty() {
            return vec![(path.to_string(), "Required value".to_string())];
        }
        let lower = value.to_lowercase();
        if !lower.starts_with(|c: char| c.is_ascii_lowercase()) {
            return vec![(path.to_string(), format!("Invalid value: \"{value}\": a kind must start with a letter"))];
        }
        validation::check(path, &lower, validation::dns_label)
    };
    causes.extend(kind_like("spec.names.kind", &names.kind));
    let list_kind = names.list_kind.as_deref().unwrap_or_default();
    causes.extend(kind_like("spec.names.listKind", list_kind));
    if list_kind == names.kind && !list_kind.is_empty() {
        causes.push((
            "spec.names.listKind".into(),
            format!("Invalid value: \"{list_kind}\": kind and listKind may not be the same or parameters are invalid"),
        ));
    }
    causes
}

/// The rule cost limits of each version's schema — on an update, of the schemas it
/// changes only (kube-apiserver's ratcheting: a definition stored under older limits may
/// still be changed elsewhere).
fn rule_costs(definition: &CustomResourceDefinition, old: Option<&CustomResourceDefinition>) -> Vec<Cause> {
    let schema_of = |version: &CustomResourceDefinitionVersion| {
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|root| serde_json::to_value(root).expect("schemas serialise"))
    };
    let mut causes = Vec::new();
    for (i, version) in definition.spec.versions.iter().enumerate() {
        let Some(root) = schema_of(version) else { continue };
        let before = old.and_then(|o| o.spec.versions.iter().find(|v| v.name == version.name)).and_then(schema_of);
        if before.as_ref() != Some(&root) {
            causes.extend(schema::check_rule_costs(&root, &format!("spec.versions[{i}].schema.openAPIV3Schema")));
        }
    }
    causes
}

fn validate_version(version: &CustomResourceDefinitionVersion, path: &str) -> Vec<Cause> {
    let mut causes = validation::check(&format!("{path}.name"), &version.name, validation::dns_label);
    match version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()) {
        Some(root) => {
            let root = serde_json::to_value(root).expect("schemas serialise");
            causes.extend(schema::check_definition(&root, &format!("{path}.schema.openAPIV3Schema")));
        }
        None => causes.push((format!("{path}.schema.openAPIV3Schema"), "Required value: schemas are required".into())),
    }
    if let Some(scale) = version.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
        let scale_path = format!("{path}.subresources.scale");
        let mut under = |field: &str, value: &str, roots: &[&str]| {
            let simple = JsonPath::parse(value).ok().and_then(|p| p.fields().map(|f| f.first().map(|s| s.to_string())));
            let fine = matches!(simple, Some(Some(first)) if roots.contains(&first.as_str()));
            if !fine {
                let under = roots.iter().map(|r| format!(".{r}")).collect::<Vec<_>>().join(" or ");
                causes.push((
                    format!("{scale_path}.{field}"),
                    format!("Invalid value: \"{value}\": should be a json path under {under}"),
                ));
            }
        };
        under("specReplicasPath", &scale.spec_replicas_path, &["spec"]);
        under("statusReplicasPath", &scale.status_replicas_path, &["status"]);
        if let Some(selector) = &scale.label_selector_path {
            under("labelSelectorPath", selector, &["spec", "status"]);
        }
    }
    causes.extend(validate_selectable_fields(version, path));
    for (i, column) in version.additional_printer_columns.iter().flatten().enumerate() {
        let column_path = format!("{path}.additionalPrinterColumns[{i}]");
        if column.name.is_empty() {
            causes.push((format!("{column_path}.name"), "Required value".into()));
        }
        causes.extend(one_of(
            &format!("{column_path}.type"),
            Some(column.type_.as_str()),
            &["integer", "number", "string", "boolean", "date"],
        ));
        if column.json_path.is_empty() {
            causes.push((format!("{column_path}.jsonPath"), "Required value".into()));
        } else if let Err(e) = JsonPath::parse(&column.json_path) {
            causes.push((
                format!("{column_path}.jsonPath"),
                format!("Invalid value: \"{}\": must be a simple json path: {e}", column.json_path),
            ));
        }
    }
    causes
}

/// At most 8 selectable fields, each a simple path (no array steps) outside the metadata
/// to a string, integer or boolean of the version's schema, none twice.
fn validate_selectable_fields(version: &CustomResourceDefinitionVersion, path: &str) -> Vec<Cause> {
    const MAX: usize = 8;
    let fields = version.selectable_fields.as_deref().unwrap_or_default();
    let mut causes = Vec::new();
    if fields.len() > MAX {
        causes.push((
            format!("{path}.selectableFields"),
            format!("Too many: {}: must have at most {MAX} items", fields.len()),
        ));
    }
    let root = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    let root = root.map(|r| serde_json::to_value(r).expect("schemas serialise"));
    for (i, field) in fields.iter().enumerate() {
        let field_path = format!("{path}.selectableFields[{i}].jsonPath");
        let text = field.json_path.as_str();
        if text.is_empty() {
            causes.push((field_path, "Required value".into()));
            continue;
        }
        let invalid = |why: &str| (field_path.clone(), format!("Invalid value: \"{text}\": {why}"));
        let Some(names) = JsonPath::parse(text)
            .ok()
            .filter(|_| text.starts_with('.'))
            .and_then(|p| p.fields().map(|f| f.into_iter().map(String::from).collect::<Vec<_>>()))
        else {
            causes.push(invalid("is an invalid path: must be a simple json path without array notation"));
            continue;
        };
        if names.first().map(String::as_str) == Some("metadata") {
            causes.push(invalid("must not point to fields in metadata"));
            continue;
        }
        if fields[..i].iter().any(|f| f.json_path == field.json_path) {
            causes.push((field_path, format!("Duplicate value: \"{text}\"")));
            continue;
        }
        let mut schema = root.as_ref();
        for name in &names {
            schema = schema.and_then(|s| s["properties"].get(name));
        }
        match schema.and_then(|s| s["type"].as_str()) {
            Some("string" | "integer" | "boolean") => {}
            Some(other) => causes.push(invalid(&format!(
                "selectable field type must be one of: \"boolean\", \"integer\", \"string\", but was \"{other}\""
            ))),
            None => causes.push(invalid("is an invalid path: the field is not in the schema")),
        }
    }
    causes
}

/// What the naming and establishing controllers would write: the names accepted, the
/// definition established, its storage version among the stored ones.
fn settle_status(definition: &mut CustomResourceDefinition) {
    let status = definition.status.get_or_insert_with(CustomResourceDefinitionStatus::default);
    status.accepted_names = Some(definition.spec.names.clone());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    for (kind, reason, message) in [
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ] {
        if !conditions.iter().any(|c| c.type_ == kind && c.status == "True") {
            conditions.retain(|c| c.type_ != kind);
            conditions.push(CustomResourceDefinitionCondition {
                type_: kind.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(now())),
            });
        }
    }
    let stored = status.stored_versions.get_or_insert_with(Vec::new);
    if let Some(storage) = definition.spec.versions.iter().find(|v| v.storage)
        && !stored.contains(&storage.name)
    {
        stored.push(storage.name.clone());
    }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    let second = time::OffsetDateTime::now_utc().unix_timestamp();
    k8s_openapi::jiff::Timestamp::from_second(second).expect("the clock reads a representable time")
}
