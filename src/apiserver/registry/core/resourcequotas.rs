//! resourcequotas (core/v1): hard limits on what a namespace holds, by standard resource
//! name or a qualified one; the quota controller fills the status, admission enforces it.

use k8s_openapi::api::core::v1::ResourceQuota;
use serde_json::Value;

use super::super::checks::{immutable, one_of};
use super::super::columns::{AGE, NAME};
use super::super::{Cause, Column, Rules};
use crate::quantity::Quantity;

pub struct ResourceQuotas;

/// Resources counted in whole objects.
const COUNTED: [&str; 10] = [
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
    "count/",
];
/// Resources measured in quantities.
const MEASURED: [&str; 9] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
];

fn is_counted(name: &str) -> bool {
    COUNTED.iter().any(|c| name == *c || c.ends_with('/') && name.starts_with(c))
}

/// A standard quota resource, or a qualified name of one's own (`example.com/gpu`,
/// `gold.storageclass.storage.k8s.io/requests.storage`).
fn is_quota_resource(name: &str) -> bool {
    is_counted(name)
        || MEASURED.contains(&name)
        || name == "limits.ephemeral-storage"
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
        || name.contains('/')
}

impl Rules for ResourceQuotas {
    type Object = ResourceQuota;
    const SHORT_NAMES: &'static [&'static str] = &["quota"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn prepare_for_create(quota: &mut ResourceQuota) {
        quota.status = None;
    }

    fn validate(quota: &ResourceQuota) -> Vec<Cause> {
        let mut causes = Vec::new();
        let Some(spec) = quota.spec.as_ref() else { return causes };
        for (name, value) in spec.hard.iter().flatten() {
            let path = format!("spec.hard[{name}]");
            if !is_quota_resource(name) {
                causes
                    .push((path.clone(), format!("Invalid value: \"{name}\": must be a standard resource for quota")));
            }
            match Quantity::parse(&value.0) {
                None => causes.push((path, format!("Invalid value: \"{}\": must be a quantity", value.0))),
                Some(q) if q.is_negative() => {
                    causes.push((path, format!("Invalid value: \"{}\": must be greater than or equal to 0", value.0)));
                }
                Some(q) if is_counted(name) && q.units() * 1_000_000_000 != q.millis() * 1_000_000 => {
                    causes.push((path, format!("Invalid value: \"{}\": must be an integer", value.0)));
                }
                Some(_) => {}
            }
        }
        let scopes = spec.scopes.clone().unwrap_or_default();
        for scope in &scopes {
            let supported = [
                "Terminating",
                "NotTerminating",
                "BestEffort",
                "NotBestEffort",
                "PriorityClass",
                "CrossNamespacePodAffinity",
                "VolumeAttributesClass",
            ];
            causes.extend(one_of("spec.scopes", Some(scope), &supported));
        }
        for (a, b) in [("Terminating", "NotTerminating"), ("BestEffort", "NotBestEffort")] {
            if scopes.iter().any(|s| s == a) && scopes.iter().any(|s| s == b) {
                causes.push(("spec.scopes".into(), format!("Invalid value: [\"{a}\" \"{b}\"]: conflicting scopes")));
            }
        }
        causes
    }

    fn validate_update(new: &ResourceQuota, old: &ResourceQuota) -> Vec<Cause> {
        let scopes = |q: &ResourceQuota| q.spec.as_ref().and_then(|s| s.scopes.clone());
        immutable(&scopes(new), &scopes(old), "spec.scopes").into_iter().collect()
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            Column { name: "Request", kind: "string", priority: 0, cell: |o| usage(o, false) },
            Column { name: "Limit", kind: "string", priority: 0, cell: |o| usage(o, true) },
            AGE,
        ]
    }
}

/// `resource: used/hard` of the quota's status, sorted, the `limits.` ones or the rest.
fn usage(quota: &Value, limits: bool) -> Value {
    let hard = quota["status"]["hard"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<&String> = hard.keys().filter(|k| k.starts_with("limits.") == limits).collect();
    names.sort();
    let entries: Vec<String> = names
        .into_iter()
        .map(|name| {
            let used = quota["status"]["used"][name].as_str().unwrap_or("0");
            format!("{name}: {used}/{}", hard[name].as_str().unwrap_or(""))
        })
        .collect();
    entries.join(", ").into()
}
