//! ControllerRevisions (kube-controller-manager's controller history), as DaemonSets and
//! StatefulSets keep them: one revision per template the owner has had, named
//! `<owner>-<hash>`, holding a patch that puts the template back (what `kubectl rollout
//! undo` applies), numbered in the order the templates were current, the oldest ones no
//! pod uses any more dropped beyond `revisionHistoryLimit`.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::deployment::{template_hash, without_hash};
use super::objects::controlled_by;

/// The label that ties pods and revisions to their template's hash.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// kube's default `revisionHistoryLimit` for DaemonSets and StatefulSets.
pub const DEFAULT_LIMIT: i32 = 10;

/// What keeping the history takes.
#[derive(Debug, PartialEq)]
pub enum Change {
    Create(Value),
    /// The current template was an older revision's (after an undo): it becomes the newest.
    Renumber {
        name: String,
        revision: i64,
    },
    Delete {
        name: String,
        uid: String,
    },
}

/// The current template's hash and the changes to the owner's revisions: `owned` are the
/// revisions it controls, `in_use` the hashes its live pods carry.
pub fn plan(
    owner: &ObjectMeta,
    reference: &Value,
    template: &PodTemplateSpec,
    collisions: i32,
    limit: Option<i32>,
    owned: &[&ControllerRevision],
    in_use: &HashSet<String>,
) -> (String, Vec<Change>) {
    let template = serde_json::to_value(template).unwrap_or_default();
    let hash = template_hash(&without_hash(&template), collisions);
    let owner_name = owner.name.as_deref().unwrap_or_default();
    let name = format!("{owner_name}-{hash}");
    let newest = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut changes = Vec::new();
    match owned.iter().find(|r| r.metadata.name.as_deref() == Some(&name)) {
        Some(current) if current.revision < newest => {
            changes.push(Change::Renumber { name: name.clone(), revision: newest + 1 })
        }
        Some(_) => {}
        None => {
            let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
            labels[REVISION_HASH] = hash.clone().into();
            let mut data = json!({"spec": {"template": template}});
            data["spec"]["template"]["$patch"] = "replace".into();
            changes.push(Change::Create(json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": name,
                    "namespace": owner.namespace,
                    "labels": labels,
                    "annotations": owner.annotations,
                    "ownerReferences": [reference],
                },
                "data": data,
                "revision": newest + 1,
            })));
        }
    }
    let mut old: Vec<&&ControllerRevision> = owned
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(&name))
        .filter(|r| !r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH)).is_some_and(|h| in_use.contains(h)))
        .collect();
    old.sort_by_key(|r| r.revision);
    let keep = limit.unwrap_or(DEFAULT_LIMIT).max(0) as usize;
    for revision in old.iter().take(old.len().saturating_sub(keep)) {
        changes.push(Change::Delete {
            name: revision.metadata.name.clone().unwrap_or_default(),
            uid: revision.metadata.uid.clone().unwrap_or_default(),
        });
    }
    (hash, changes)
}

/// Makes a change to the owner's revisions; false when it failed (it is tried again).
pub async fn apply(revisions: &kube::Api<ControllerRevision>, change: Change) -> bool {
    use kube::api::{Patch, PatchParams, PostParams};
    match change {
        Change::Create(revision) => match serde_json::from_value::<ControllerRevision>(revision) {
            Ok(revision) => {
                let name = revision.metadata.name.clone().unwrap_or_default();
                match revisions.create(&PostParams::default(), &revision).await {
                    // Made by an earlier pass the cache has not shown yet.
                    Err(kube::Error::Api(e)) if e.code == 409 => true,
                    made => super::report(made, "controllerrevision", &name),
                }
            }
            Err(e) => {
                tracing::warn!("a controller revision: {e}");
                false
            }
        },
        Change::Renumber { name, revision } => {
            let patch = json!({"revision": revision});
            super::report(
                revisions.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                "controllerrevision",
                &name,
            )
        }
        Change::Delete { name, uid } => super::report_delete(
            revisions.delete(&name, &crate::client::delete_params(uid, None)).await,
            "controllerrevision",
            &name,
        ),
    }
}

/// The revisions among `all` that the owner with `uid` controls.
pub fn owned_by<'a>(all: &'a [std::sync::Arc<ControllerRevision>], uid: &str) -> Vec<&'a ControllerRevision> {
    all.iter().map(|r| &**r).filter(|r| controlled_by(&r.metadata, uid)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .unwrap()
    }

    fn owner() -> ObjectMeta {
        serde_json::from_value(json!({"name": "agent", "namespace": "default", "uid": "ds", "annotations": {"a": "b"}}))
            .unwrap()
    }

    fn revision(image: &str, number: i64) -> ControllerRevision {
        let (hash, _) = plan(&owner(), &json!({}), &template(image), 0, None, &[], &HashSet::new());
        serde_json::from_value(json!({"metadata": {"name": format!("agent-{hash}"), "uid": image,
            "labels": {REVISION_HASH: hash}}, "revision": number}))
        .unwrap()
    }

    #[test]
    fn a_new_template_is_a_new_revision_that_patches_it_back() {
        let first = revision("v1", 1);
        let (hash, changes) =
            plan(&owner(), &json!({"uid": "ds"}), &template("v2"), 0, None, &[&first], &HashSet::new());
        let [Change::Create(created)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(created["metadata"]["name"], format!("agent-{hash}"));
        assert_eq!(created["metadata"]["labels"][REVISION_HASH], hash);
        assert_eq!(created["metadata"]["labels"]["app"], "agent");
        assert_eq!(created["metadata"]["annotations"]["a"], "b");
        assert_eq!(created["revision"], 2);
        assert_eq!(created["data"]["spec"]["template"]["$patch"], "replace");
        assert_eq!(created["data"]["spec"]["template"]["spec"]["containers"][0]["image"], "v2");
    }

    #[test]
    fn going_back_renumbers_and_old_unused_revisions_are_dropped_beyond_the_limit() {
        let (v1, v2, v3) = (revision("v1", 1), revision("v2", 2), revision("v3", 3));
        let (_, changes) = plan(&owner(), &json!({}), &template("v1"), 0, Some(1), &[&v1, &v2, &v3], &HashSet::new());
        assert_eq!(changes[0], Change::Renumber { name: v1.metadata.name.clone().unwrap(), revision: 4 });
        assert_eq!(changes[1..], [Change::Delete { name: v2.metadata.name.clone().unwrap(), uid: "v2".into() }]);
        let in_use = HashSet::from([v2.metadata.labels.as_ref().unwrap()[REVISION_HASH].clone()]);
        let (_, changes) = plan(&owner(), &json!({}), &template("v1"), 0, Some(0), &[&v1, &v2, &v3], &in_use);
        assert_eq!(changes[1..], [Change::Delete { name: v3.metadata.name.clone().unwrap(), uid: "v3".into() }]);
    }
}
