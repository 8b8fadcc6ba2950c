//! The storage.k8s.io group: storageclasses, how volumes for claims are provisioned; one
//! may be the default (`storageclass.kubernetes.io/is-default-class`).

use k8s_openapi::api::storage::v1::StorageClass;

use super::checks::{immutable, one_of};
use super::columns::{self, AGE};
use super::{Cause, Column, Rules};

pub struct StorageClasses;

pub const DEFAULT_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const BETA_DEFAULT_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

pub fn is_default(annotations: &serde_json::Value) -> bool {
    annotations[DEFAULT_ANNOTATION] == "true" || annotations[BETA_DEFAULT_ANNOTATION] == "true"
}

impl Rules for StorageClasses {
    type Object = StorageClass;
    const SHORT_NAMES: &'static [&'static str] = &["sc"];

    fn default(class: &mut StorageClass) {
        class.reclaim_policy.get_or_insert_with(|| "Delete".into());
        class.volume_binding_mode.get_or_insert_with(|| "Immediate".into());
    }

    fn validate(class: &StorageClass) -> Vec<Cause> {
        let mut causes = Vec::new();
        if class.provisioner.is_empty() {
            causes.push(("provisioner".into(), "Required value".into()));
        } else {
            causes.extend(crate::validation::check(
                "provisioner",
                &class.provisioner.to_lowercase(),
                crate::validation::qualified_name,
            ));
        }
        let parameters = class.parameters.clone().unwrap_or_default();
        if parameters.len() > 512 {
            causes.push(("parameters".into(), "Too long: must have at most 512 items".into()));
        }
        if parameters.keys().any(String::is_empty) {
            causes.push(("parameters".into(), "Invalid value: field can not be empty.".into()));
        }
        causes.extend(one_of("reclaimPolicy", class.reclaim_policy.as_deref(), &["Delete", "Retain"]));
        let mode = class.volume_binding_mode.as_deref();
        causes.extend(one_of("volumeBindingMode", mode, &["Immediate", "WaitForFirstConsumer"]));
        causes
    }

    fn validate_update(new: &StorageClass, old: &StorageClass) -> Vec<Cause> {
        let mut causes = Vec::new();
        for (field, changed) in [
            ("parameters", new.parameters != old.parameters),
            ("provisioner", new.provisioner != old.provisioner),
            ("reclaimPolicy", new.reclaim_policy != old.reclaim_policy),
        ] {
            if changed {
                causes.push((field.into(), format!("Forbidden: updates to {field} are forbidden.")));
            }
        }
        causes.extend(immutable(&new.volume_binding_mode, &old.volume_binding_mode, "volumeBindingMode"));
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column {
                name: "Name",
                kind: "string",
                priority: 0,
                cell: |o| {
                    let name = o["metadata"]["name"].as_str().unwrap_or("");
                    if is_default(&o["metadata"]["annotations"]) {
                        format!("{name} (default)").into()
                    } else {
                        name.into()
                    }
                },
            },
            columns::string("Provisioner", 0, |o| o["provisioner"].clone()),
            columns::string("ReclaimPolicy", 0, |o| o["reclaimPolicy"].as_str().unwrap_or("Delete").into()),
            columns::string("VolumeBindingMode", 0, |o| o["volumeBindingMode"].as_str().unwrap_or("Immediate").into()),
            columns::string("AllowVolumeExpansion", 0, |o| (o["allowVolumeExpansion"] == true).to_string().into()),
            AGE,
        ]
    }
}
