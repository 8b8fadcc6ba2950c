//! Kubernetes objects from YAML or JSON files, as `kubectl apply -f` reads them: several
//! documents per file, and `List`s unpacked.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every object in the file at `path`, in order.
pub fn read_objects(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).with_context(|| format!("{}: not YAML or JSON", path.display()))?;
    let mut objects = Vec::new();
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        if document["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
            objects.extend(document["items"].as_array().cloned().unwrap_or_default());
        } else {
            objects.push(document);
        }
    }
    Ok(objects)
}

/// `object` as the typed `kind`, checking its apiVersion and kind first, and decoded
/// strictly, as the API server decodes with `fieldValidation=Strict`: a field the type
/// does not have (a misspelling) is an error that names it.
pub fn typed<T: DeserializeOwned + Serialize>(object: Value, api_version: &str, kind: &str, path: &Path) -> Result<T> {
    let (found_version, found_kind) = (object["apiVersion"].as_str(), object["kind"].as_str());
    if found_version != Some(api_version) || found_kind != Some(kind) {
        bail!(
            "{}: apiVersion {api_version}, kind {kind} expected (found apiVersion {}, kind {})",
            path.display(),
            found_version.unwrap_or("none"),
            found_kind.unwrap_or("none")
        );
    }
    let name = object["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let decoded: T = serde_json::from_value(object.clone())
        .with_context(|| format!("{}: {kind} {name} is not a valid {api_version} {kind}", path.display()))?;
    let mut unknown = Vec::new();
    let known = serde_json::to_value(&decoded).context("encode")?;
    crate::validation::collect_unknown(&object, &known, "", &mut unknown);
    if let Some(field) = unknown.first() {
        bail!("{}: {kind} {name}: unknown field \"{field}\"", path.display());
    }
    Ok(decoded)
}
