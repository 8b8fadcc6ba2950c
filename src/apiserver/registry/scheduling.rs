//! The scheduling.k8s.io group: priorityclasses, the priorities pods ask for by name; the
//! two system classes exist from the start and cannot be deleted.

use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{Value, json};

use super::checks::{immutable, one_of};
use super::columns::{self, AGE, NAME};
use super::{Cause, Column, Rules};

pub struct PriorityClasses;

/// The highest priority a class of a user's may have.
const HIGHEST_USER_PRIORITY: i32 = 1_000_000_000;

/// The system classes: name, value, description.
pub const SYSTEM_CLASSES: [(&str, i32, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// A system class as the server makes it at start.
pub fn system_class(name: &str, value: i32, description: &str) -> Value {
    json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
           "value": value, "description": description})
}

impl Rules for PriorityClasses {
    type Object = PriorityClass;
    const SHORT_NAMES: &'static [&'static str] = &["pc"];
    const GENERATION: bool = true;

    fn default(class: &mut PriorityClass) {
        class.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());
    }

    fn validate(class: &PriorityClass) -> Vec<Cause> {
        let mut causes = Vec::new();
        let name = class.metadata.name.clone().unwrap_or_default();
        if name.starts_with("system-") {
            let problem = match SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) {
                None => Some(format!("{name} is not a known system priority class")),
                Some((_, value, _)) if class.value != *value => {
                    Some(format!("value of {name} PriorityClass must be {value}"))
                }
                Some(_) if class.global_default == Some(true) => {
                    Some(format!("globalDefault of {name} PriorityClass must be false"))
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                causes.push((
                    "metadata.name".into(),
                    format!("Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: {problem}"),
                ));
            }
        } else if class.value > HIGHEST_USER_PRIORITY {
            causes.push((
                "value".into(),
                format!("Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
            ));
        }
        let policy = class.preemption_policy.as_deref();
        causes.extend(one_of("preemptionPolicy", policy, &["PreemptLowerPriority", "Never"]));
        causes
    }

    fn validate_update(new: &PriorityClass, old: &PriorityClass) -> Vec<Cause> {
        let mut causes = Vec::new();
        if new.value != old.value {
            causes.push(("value".into(), "Forbidden: may not be changed in an update.".into()));
        }
        causes.extend(immutable(&new.preemption_policy, &old.preemption_policy, "preemptionPolicy"));
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::integer("Value", 0, |o| columns::count(&o["value"])),
            Column {
                name: "Global-Default",
                kind: "boolean",
                priority: 0,
                cell: |o| (o["globalDefault"] == true).into(),
            },
            AGE,
            columns::string("PreemptionPolicy", 0, |o| o["preemptionPolicy"].as_str().unwrap_or("").into()),
        ]
    }
}
