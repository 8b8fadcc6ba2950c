//! What several controllers ask of the objects they watch: controller
//! references (who owns what, and the patches that adopt and release), and a pod's state
//! (active, ready, available).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time};
use serde_json::{Value, json};

/// The owner reference marked `controller`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// Whether `meta`'s controller is the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// The controller reference an owner puts on what it makes.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The patch that makes an object the owner's (adoption), guarded by the object's uid so
/// it cannot land on a namesake made since.
fn adopt_patch(reference: &Value, object: &ObjectMeta) -> Value {
    json!({"metadata": {"ownerReferences": [reference], "uid": object.uid}})
}

/// The patch that lets an object go from its owner (the owner's selector no longer
/// matches it): its other owner references stay.
fn release_patch(owner_uid: &str, object: &ObjectMeta) -> Value {
    let kept: Vec<&OwnerReference> = object.owner_references.iter().flatten().filter(|r| r.uid != owner_uid).collect();
    json!({"metadata": {"ownerReferences": kept, "uid": object.uid}})
}

/// What claiming does to a candidate.
#[derive(Debug, PartialEq)]
pub enum Claim {
    Adopt { name: String, patch: Value },
    Release { name: String, patch: Value },
}

/// The objects an owner controls among `candidates` (kube-controller-manager's
/// ClaimPods and ClaimReplicaSets): the ones it controls that its selector still matches,
/// and the orphans it matches, which it adopts when `adoptable`; the ones it controls but
/// no longer matches it releases. An owner being deleted adopts and releases nothing.
pub fn claim<'a, K: kube::Resource>(
    owner: &ObjectMeta,
    reference: &Value,
    selector: &LabelSelector,
    candidates: &[&'a K],
    adoptable: impl Fn(&K) -> bool,
) -> (Vec<&'a K>, Vec<Claim>) {
    let uid = owner.uid.as_deref().unwrap_or_default();
    let deleting = owner.deletion_timestamp.is_some();
    let mut owned = Vec::new();
    let mut claims = Vec::new();
    for candidate in candidates {
        let meta = candidate.meta();
        let matches = crate::labels::selector_matches(selector, meta.labels.as_ref());
        let name = meta.name.clone().unwrap_or_default();
        if controlled_by(meta, uid) {
            if matches {
                owned.push(*candidate);
            } else if !deleting {
                claims.push(Claim::Release { name, patch: release_patch(uid, meta) });
            }
        } else if matches && controller_of(meta).is_none() && !deleting && adoptable(candidate) {
            claims.push(Claim::Adopt { name, patch: adopt_patch(reference, meta) });
            owned.push(*candidate);
        }
    }
    (owned, claims)
}

/// Neither finished nor being deleted: a pod that counts towards its owner's replicas.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_terminal(pod)
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// When the pod became Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Option<&Time>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref())
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready` at `now`; if it is Ready but not for
/// long enough yet, how long until it is.
pub fn availability(pod: &Pod, min_ready: Duration, now: &Time) -> (bool, Option<Duration>) {
    match ready_since(pod) {
        None => (false, None),
        Some(_) if min_ready.is_zero() => (true, None),
        Some(None) => (false, Some(min_ready)),
        Some(Some(since)) => {
            let ready_for = elapsed(since, now);
            if ready_for >= min_ready { (true, None) } else { (false, Some(min_ready - ready_for)) }
        }
    }
}

/// How long from `from` to `to` (zero if `to` is earlier).
pub fn elapsed(from: &Time, to: &Time) -> Duration {
    Duration::try_from(from.0.duration_until(to.0)).unwrap_or_default()
}

/// A pod as `template` describes it, owned by (the controller reference) `owner`, named
/// `generate_name` and a random suffix.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    owner: &Value,
    namespace: Option<&str>,
    generate_name: String,
) -> Value {
    let meta = template.metadata.clone().unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "namespace": namespace,
            "labels": meta.labels,
            "annotations": meta.annotations,
            "finalizers": meta.finalizers,
            "ownerReferences": [owner],
        },
        "spec": template.spec,
    })
}

/// Now, as the API's times are.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
