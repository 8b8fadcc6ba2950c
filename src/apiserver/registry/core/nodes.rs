//! nodes (core/v1, cluster-scoped): created with their status by the node agent; spec and
//! status written apart.

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::super::columns::{self, AGE, NAME};
use super::super::{Cause, Column, FieldLabel, Rules};

pub struct Nodes;

impl Rules for Nodes {
    type Object = Node;
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn default(node: &mut Node) {
        if let Some(status) = node.status.as_mut()
            && status.allocatable.is_none()
        {
            status.allocatable = status.capacity.clone();
        }
    }

    fn validate_update(new: &Node, old: &Node) -> Vec<Cause> {
        let cidrs = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        let mut causes = Vec::new();
        if !cidrs(old).is_empty() && cidrs(new) != cidrs(old) {
            causes.push((
                "spec.podCIDRs".into(),
                "Forbidden: node updates may not change podCIDR except from \"\" to valid".into(),
            ));
        }
        let provider = |n: &Node| n.spec.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default();
        if !provider(old).is_empty() && provider(new) != provider(old) {
            causes.push((
                "spec.providerID".into(),
                "Forbidden: node updates may not change providerID except from \"\" to valid".into(),
            ));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Status", 0, |o| {
                let ready = o["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
                let mut status = match ready.map(|c| c["status"].as_str().unwrap_or("")) {
                    Some("True") => "Ready".to_string(),
                    Some(_) => "NotReady".to_string(),
                    None => "Unknown".to_string(),
                };
                if o["spec"]["unschedulable"] == true {
                    status += ",SchedulingDisabled";
                }
                status.into()
            }),
            columns::string("Roles", 0, |o| {
                let labels = o["metadata"]["labels"].as_object().cloned().unwrap_or_default();
                let mut roles: Vec<String> = labels
                    .keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .map(String::from)
                    .collect();
                roles.extend(labels.get("kubernetes.io/role").and_then(Value::as_str).map(String::from));
                roles.sort();
                if roles.is_empty() { "<none>".into() } else { roles.join(",").into() }
            }),
            AGE,
            columns::string("Version", 0, |o| o["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("").into()),
            columns::string("Internal-IP", 1, |o| address(o, "InternalIP")),
            columns::string("External-IP", 1, |o| address(o, "ExternalIP")),
            columns::string("OS-Image", 1, |o| unknown(&o["status"]["nodeInfo"]["osImage"])),
            columns::string("Kernel-Version", 1, |o| unknown(&o["status"]["nodeInfo"]["kernelVersion"])),
            columns::string("Container-Runtime", 1, |o| unknown(&o["status"]["nodeInfo"]["containerRuntimeVersion"])),
        ]
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![FieldLabel { name: "spec.unschedulable", value: |o| (o["spec"]["unschedulable"] == true).to_string() }]
    }
}

fn address(node: &Value, kind: &str) -> Value {
    let found = node["status"]["addresses"].as_array().into_iter().flatten().find(|a| a["type"] == kind);
    found.map_or("<none>".into(), |a| a["address"].clone())
}

fn unknown(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => s.into(),
        _ => "<unknown>".into(),
    }
}
