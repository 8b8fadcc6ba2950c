//! controllerrevisions (apps/v1): the immutable snapshots of a workload's template that
//! daemon sets and stateful sets roll between.

use k8s_openapi::api::apps::v1::ControllerRevision;

use super::super::checks::{immutable, non_negative};
use super::super::columns::{AGE, NAME};
use super::super::{Cause, Column, Rules};

pub struct ControllerRevisions;

impl Rules for ControllerRevisions {
    type Object = ControllerRevision;

    fn validate(revision: &ControllerRevision) -> Vec<Cause> {
        let mut causes = non_negative([("revision", Some(revision.revision))]);
        if revision.data.is_none() {
            causes.push(("data".into(), "Required value: data is mandatory".into()));
        }
        causes
    }

    fn validate_update(new: &ControllerRevision, old: &ControllerRevision) -> Vec<Cause> {
        immutable(&new.data, &old.data, "data").into_iter().collect()
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            Column {
                name: "Controller",
                kind: "string",
                priority: 0,
                cell: |o| {
                    let owners = o["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
                    let controller = owners.iter().find(|r| r["controller"] == true);
                    controller.map_or("<none>".into(), |r| {
                        let group = r["apiVersion"].as_str().unwrap_or("").split_once('/').map_or("", |(g, _)| g);
                        let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
                        let kind = if group.is_empty() { kind } else { format!("{kind}.{group}") };
                        format!("{kind}/{}", r["name"].as_str().unwrap_or("")).into()
                    })
                },
            },
            Column {
                name: "Revision",
                kind: "integer",
                priority: 0,
                cell: |o| o["revision"].as_i64().unwrap_or(0).into(),
            },
            AGE,
        ]
    }
}
