//! The StatefulSet controller (kube-controller-manager's statefulset): pods with stable
//! names `<set>-<ordinal>` (and hostnames under the set's Service), each with its own
//! PersistentVolumeClaims from the claim templates, kept across the pod's deletion;
//! OrderedReady (one at a time, in order, each Running and Ready before the next; scaled
//! down from the highest ordinal) or Parallel; RollingUpdate from the highest ordinal down
//! to the partition, or OnDelete; ControllerRevisions; the claim retention policy.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::history::{self, Change, REVISION_HASH};
use super::informers::Informers;
use super::objects::{Claim, availability, claim, controller_ref, is_ready, is_terminal, now, pod_from_template};
use super::pod_control::PodOwners;
use crate::events::Event;

const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug, PartialEq)]
pub enum Action {
    Claim(Claim),
    Revision(Change),
    CreateClaim(Value),
    /// Give a claim an owner reference (the retention policy's Delete).
    OwnClaim {
        name: String,
        owner: Value,
    },
    CreatePod(Value),
    DeletePod {
        name: String,
        uid: String,
    },
    Status(Value),
}

/// The ordinal of a pod named `<set>-<n>`.
fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    name.strip_prefix(set)?.strip_prefix('-')?.parse().ok().filter(|n: &i32| *n >= 0)
}

fn is_running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && is_ready(pod)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

/// The template a revision holds (its patch, without the `$patch` directive).
fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

/// The claims of pod `ordinal`: each claim template with the claim's name,
/// `<template>-<set>-<ordinal>`.
fn claims_of(set: &StatefulSet, ordinal: i32) -> Vec<(&PersistentVolumeClaim, String)> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref());
    templates
        .into_iter()
        .flatten()
        .map(|t| (t, format!("{}-{set_name}-{ordinal}", t.metadata.name.as_deref().unwrap_or_default())))
        .collect()
}

/// Pod `ordinal` of the set, from `template` at revision `hash`.
fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, hash: &str, ordinal: i32) -> Value {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let name = format!("{set_name}-{ordinal}");
    let owner = controller_ref("apps/v1", "StatefulSet", &set.metadata);
    let mut pod = pod_from_template(template, &owner, set.metadata.namespace.as_deref(), String::new());
    let meta = pod["metadata"].as_object_mut().expect("object");
    meta.remove("generateName");
    meta.insert("name".into(), name.clone().into());
    pod["metadata"]["labels"][POD_NAME] = name.clone().into();
    pod["metadata"]["labels"][POD_INDEX] = ordinal.to_string().into();
    pod["metadata"]["labels"][REVISION_HASH] = hash.into();
    pod["spec"]["hostname"] = name.into();
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        pod["spec"]["subdomain"] = spec.service_name.clone().into();
    }
    for (claim, claim_name) in claims_of(set, ordinal) {
        let template_name = claim.metadata.name.clone().unwrap_or_default();
        let volume = json!({"name": template_name, "persistentVolumeClaim": {"claimName": claim_name}});
        let volumes = pod["spec"]["volumes"].as_array_mut();
        match volumes {
            Some(volumes) => {
                volumes.retain(|v| v["name"] != template_name.as_str());
                volumes.push(volume);
            }
            None => pod["spec"]["volumes"] = json!([volume]),
        }
    }
    pod
}

/// The claims pod `ordinal` needs that do not exist yet.
fn missing_claims(set: &StatefulSet, claims: &BTreeMap<&str, &PersistentVolumeClaim>, ordinal: i32) -> Vec<Value> {
    let spec = set.spec.clone().unwrap_or_default();
    let owned_on_delete = retention(set).0 == "Delete";
    claims_of(set, ordinal)
        .into_iter()
        .filter_map(|(template, name)| {
            if claims.contains_key(name.as_str()) {
                return None;
            }
            let mut claim = serde_json::to_value(template).unwrap_or_default();
            claim["apiVersion"] = "v1".into();
            claim["kind"] = "PersistentVolumeClaim".into();
            claim["metadata"]["name"] = name.into();
            claim["metadata"]["namespace"] = set.metadata.namespace.clone().into();
            for (key, value) in spec.selector.match_labels.iter().flatten() {
                claim["metadata"]["labels"][key] = value.clone().into();
            }
            if owned_on_delete {
                claim["metadata"]["ownerReferences"] = json!([set_owner(set)]);
            }
            claim.as_object_mut().expect("object").remove("status");
            Some(claim)
        })
        .collect()
}

/// (whenDeleted, whenScaled) of the claim retention policy.
fn retention(set: &StatefulSet) -> (String, String) {
    let policy = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let of = |value: Option<&String>| value.cloned().unwrap_or_else(|| "Retain".into());
    (of(policy.and_then(|p| p.when_deleted.as_ref())), of(policy.and_then(|p| p.when_scaled.as_ref())))
}

/// The set as a claim's (non-controller) owner.
fn set_owner(set: &StatefulSet) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": set.metadata.name,
           "uid": set.metadata.uid, "blockOwnerDeletion": true})
}

/// What one StatefulSet needs done, from it, the pods and claims of its namespace, its
/// revisions, and whether its expectations are met; and when to look again.
pub fn sync(
    set: &StatefulSet,
    pods: &[&Pod],
    claims: &[&PersistentVolumeClaim],
    revisions: &[&ControllerRevision],
    expectations_met: bool,
    now: &Time,
) -> (Vec<Action>, Option<Duration>) {
    let mut actions = Vec::new();
    let spec = set.spec.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let reference = controller_ref("apps/v1", "StatefulSet", &set.metadata);
    let (owned, claimed) = claim(&set.metadata, &reference, &spec.selector, pods, |p| !terminating(p));
    actions.extend(claimed.into_iter().map(Action::Claim));
    let in_use: HashSet<String> = owned.iter().filter_map(|p| hash_of(p)).map(String::from).collect();
    let status = set.status.clone().unwrap_or_default();
    let collisions = status.collision_count.unwrap_or(0);
    let (update_hash, changes) = history::plan(
        &set.metadata,
        &reference,
        &spec.template,
        collisions,
        spec.revision_history_limit,
        revisions,
        &in_use,
    );
    let deleting = set.metadata.deletion_timestamp.is_some();
    if !deleting {
        actions.extend(changes.into_iter().map(Action::Revision));
    }
    let current_hash = status.current_revision.as_deref().and_then(|r| r.strip_prefix(&format!("{set_name}-")));
    let current_hash = current_hash.unwrap_or(&update_hash).to_string();
    let current_template = revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&format!("{set_name}-{current_hash}")))
        .and_then(|r| template_of(r))
        .unwrap_or_else(|| spec.template.clone());

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition).unwrap_or(0).max(0);
    let by_name: BTreeMap<&str, &PersistentVolumeClaim> =
        claims.iter().filter_map(|c| Some((c.metadata.name.as_deref()?, *c))).collect();

    let mut replica_pods: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for pod in &owned {
        match ordinal_of(&set_name, pod) {
            Some(n) if n >= start && n < start + replicas => {
                replica_pods.insert(n, pod);
            }
            Some(n) => condemned.push((n, pod)),
            None => {}
        }
    }
    condemned.sort_by_key(|(n, _)| std::cmp::Reverse(*n));

    let mut writes = Vec::new();
    let (when_deleted, when_scaled) = retention(set);
    // Claims made with the set's retention policy on deletion keep it as their owner.
    if when_deleted == "Delete" {
        for (_, name) in (start..start + replicas).flat_map(|n| claims_of(set, n)) {
            let owned = |c: &&PersistentVolumeClaim| {
                c.metadata.owner_references.iter().flatten().any(|r| Some(&r.uid) == set.metadata.uid.as_ref())
            };
            if by_name.get(name.as_str()).is_some_and(|c| !owned(c)) {
                writes.push(Action::OwnClaim { name, owner: set_owner(set) });
            }
        }
    }
    'replicas: {
        if deleting || !expectations_met {
            break 'replicas;
        }
        for ordinal in start..start + replicas {
            match replica_pods.get(&ordinal) {
                None => {
                    writes.extend(missing_claims(set, &by_name, ordinal).into_iter().map(Action::CreateClaim));
                    let use_current = !on_delete && ordinal < start + partition;
                    let (template, hash) = if use_current {
                        (&current_template, current_hash.as_str())
                    } else {
                        (&spec.template, update_hash.as_str())
                    };
                    writes.push(Action::CreatePod(pod_for(set, template, hash, ordinal)));
                    if !parallel {
                        break 'replicas;
                    }
                }
                // A pod that has finished is replaced (it keeps its name and claims).
                Some(pod) if is_terminal(pod) && !terminating(pod) => {
                    writes.push(delete(pod));
                    if !parallel {
                        break 'replicas;
                    }
                }
                Some(pod) if !parallel && (terminating(pod) || !is_running_and_ready(pod)) => break 'replicas,
                Some(_) => {}
            }
        }
        // Scale down: the highest ordinal first, one at a time unless Parallel.
        if !parallel && owned.iter().any(|p| terminating(p)) {
            break 'replicas;
        }
        for (ordinal, pod) in condemned.iter().filter(|(_, p)| !terminating(p)) {
            if when_scaled == "Delete" {
                for (_, name) in claims_of(set, *ordinal) {
                    if by_name.contains_key(name.as_str()) {
                        let owner = json!({"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                           "uid": pod.metadata.uid, "blockOwnerDeletion": true});
                        writes.push(Action::OwnClaim { name, owner });
                    }
                }
            }
            writes.push(delete(pod));
            if !parallel {
                break 'replicas;
            }
        }
        if !condemned.is_empty() && !parallel {
            break 'replicas;
        }
        // A rolling update: from the highest ordinal down to the partition, one pod at a
        // time, each Running and Ready before the next goes.
        if on_delete {
            break 'replicas;
        }
        for ordinal in (start + partition..start + replicas).rev() {
            let Some(pod) = replica_pods.get(&ordinal) else { break 'replicas };
            if hash_of(pod) != Some(&update_hash) && !terminating(pod) {
                writes.push(delete(pod));
                break 'replicas;
            }
            // kube's isHealthy: running, ready, and not going away.
            if terminating(pod) || !is_running_and_ready(pod) {
                break 'replicas;
            }
        }
    }
    actions.extend(writes);

    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let mut requeue = None;
    let live: Vec<&Pod> = owned.iter().copied().filter(|p| !terminating(p)).collect();
    let mut available = 0;
    for pod in &live {
        let (is, wait) = availability(pod, min_ready, now);
        available += is as i32;
        requeue = super::sooner(requeue, wait);
    }
    let ready = live.iter().filter(|p| is_running_and_ready(p)).count() as i32;
    let updated = live.iter().filter(|p| hash_of(p) == Some(&update_hash)).count() as i32;
    let mut current_replicas = live.iter().filter(|p| hash_of(p) == Some(&current_hash)).count() as i32;
    let mut current_revision = format!("{set_name}-{current_hash}");
    let update_revision = format!("{set_name}-{update_hash}");
    if !on_delete && updated == live.len() as i32 && ready == live.len() as i32 && live.len() as i32 == replicas {
        current_replicas = updated;
        current_revision = update_revision.clone();
    }
    let wanted = json!({
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current_replicas,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "observedGeneration": set.metadata.generation,
        "collisionCount": collisions,
    });
    let seen = serde_json::to_value(&status).unwrap_or_default();
    let differs = wanted.as_object().expect("object").iter().any(|(k, v)| match v {
        Value::String(_) => seen[k] != *v,
        _ => seen[k].as_i64().unwrap_or(0) != v.as_i64().unwrap_or(0),
    });
    if differs {
        actions.push(Action::Status(wanted));
    }
    (actions, requeue)
}

fn delete(pod: &Pod) -> Action {
    Action::DeletePod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Keeps every StatefulSet's pods until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.stateful_sets().subscribe(&wake);
    informers.pods().subscribe(&wake);
    informers.claims().subscribe(&wake);
    informers.revisions().subscribe(&wake);
    let informers = informers.clone();
    let context = Arc::new(PodOwners::new(client, "statefulset-controller"));
    super::level_triggered(wake, move || {
        let (context, informers) = (context.clone(), informers.clone());
        async move {
            for ready in [
                informers.stateful_sets().ready().await,
                informers.pods().ready().await,
                informers.claims().ready().await,
                informers.revisions().ready().await,
            ] {
                if !ready {
                    return None;
                }
            }
            let (sets, pods, claims) =
                (informers.stateful_sets().all(), informers.pods().all(), informers.claims().all());
            let (revisions, now) = (informers.revisions().all(), now());
            let (plans, mut requeue) = context.plan_each(&sets, &pods, |set, pods, met| {
                let namespace = set.metadata.namespace.as_deref();
                let claims: Vec<&PersistentVolumeClaim> =
                    claims.iter().map(|c| &**c).filter(|c| c.metadata.namespace.as_deref() == namespace).collect();
                let owned = history::owned_by(&revisions, set.metadata.uid.as_deref().unwrap_or_default());
                sync(set, pods, &claims, &owned, met, &now)
            });
            for (set, actions) in plans {
                if !apply(&context, set, actions).await {
                    requeue = super::sooner(requeue, Some(Duration::from_secs(1)));
                }
            }
            requeue
        }
    });
}

/// Does what `sync` decided, in order (a pod's claims before the pod); false when
/// something failed (it is tried again).
async fn apply(context: &PodOwners, set: &StatefulSet, actions: Vec<Action>) -> bool {
    let control = context.control(set);
    let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let revisions: Api<ControllerRevision> = Api::namespaced(context.client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), namespace);
    for action in actions {
        let ok = match action {
            Action::Claim(claim) => control.claim(claim).await,
            Action::Revision(change) => history::apply(&revisions, change).await,
            Action::CreateClaim(claim) => {
                let claim: PersistentVolumeClaim = match serde_json::from_value(claim) {
                    Ok(claim) => claim,
                    Err(e) => {
                        tracing::warn!("statefulset {namespace}/{name}: a claim template: {e}");
                        return false;
                    }
                };
                let claim_name = claim.metadata.name.clone().unwrap_or_default();
                match claims.create(&PostParams::default(), &claim).await {
                    Ok(_) => {
                        let message = format!("create Claim {claim_name} Pod {name} in StatefulSet {name} success");
                        control.record(Event::normal("SuccessfulCreate", message)).await;
                        true
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => true,
                    Err(e) => {
                        let message = format!(
                            "create Claim {claim_name} for StatefulSet {name} failed: {}",
                            crate::client::message(&e)
                        );
                        control.record(Event::warning("FailedCreate", message)).await;
                        false
                    }
                }
            }
            Action::OwnClaim { name: claim, owner } => {
                let current = claims.get_opt(&claim).await.ok().flatten();
                let mut references = current.and_then(|c| c.metadata.owner_references).unwrap_or_default();
                references.push(serde_json::from_value(owner).unwrap_or_default());
                let patch = json!({"metadata": {"ownerReferences": references}});
                super::report(
                    claims.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "persistentvolumeclaim",
                    &claim,
                )
            }
            Action::CreatePod(pod) => control.create(pod).await,
            Action::DeletePod { name, uid } => control.delete(&name, uid).await,
            Action::Status(status) => {
                let api: Api<StatefulSet> = Api::namespaced(context.client.clone(), namespace);
                let patch = json!({"status": status});
                super::report(
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "statefulset",
                    name,
                )
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(extra: Value) -> StatefulSet {
        let mut set = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "set-uid", "generation": 1},
            "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
        });
        if let (Some(spec), Some(extra)) = (set["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(set).unwrap()
    }

    fn hash(set: &StatefulSet) -> String {
        history::plan(&set.metadata, &json!({}), &set.spec.as_ref().unwrap().template, 0, None, &[], &HashSet::new()).0
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name,
                "labels": {"app": "web", REVISION_HASH: hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "set-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn writes(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateClaim(c) => Some(format!("claim {}", c["metadata"]["name"].as_str().unwrap())),
                Action::CreatePod(p) => Some(format!("create {}", p["metadata"]["name"].as_str().unwrap())),
                Action::DeletePod { name, .. } => Some(format!("delete {name}")),
                Action::OwnClaim { name, .. } => Some(format!("own {name}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ordered_ready_makes_one_pod_at_a_time_with_its_claim_name_and_hostname() {
        let set = set(json!({}));
        let (actions, _) = sync(&set, &[], &[], &[], true, &now());
        assert_eq!(writes(&actions), ["claim data-web-0", "create web-0"]);
        let Some(Action::CreatePod(made)) = actions.iter().find(|a| matches!(a, Action::CreatePod(_))) else {
            panic!()
        };
        assert_eq!(
            (made["spec"]["hostname"].as_str(), made["spec"]["subdomain"].as_str()),
            (Some("web-0"), Some("web"))
        );
        assert_eq!(made["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-web-0");
        assert_eq!(made["metadata"]["labels"][POD_NAME], "web-0");
        let h = hash(&set);
        let not_ready = pod("web-0", &h, false);
        let (actions, _) = sync(&set, &[&not_ready], &[], &[], true, &now());
        assert!(writes(&actions).is_empty(), "web-1 waits for web-0 to be ready: {actions:?}");
        let ready = pod("web-0", &h, true);
        let (actions, _) = sync(&set, &[&ready], &[], &[], true, &now());
        assert_eq!(writes(&actions), ["claim data-web-1", "create web-1"]);
        let parallel = self::set(json!({"podManagementPolicy": "Parallel"}));
        let (actions, _) = sync(&parallel, &[], &[], &[], true, &now());
        assert_eq!(writes(&actions).len(), 6);
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal_and_claims_stay_unless_told() {
        let set = set(json!({"replicas": 1}));
        let h = hash(&set);
        let pods = [pod("web-0", &h, true), pod("web-1", &h, true), pod("web-2", &h, true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (actions, _) = sync(&set, &refs, &[], &[], true, &now());
        assert_eq!(writes(&actions), ["delete web-2"]);
        let deleting =
            self::set(json!({"replicas": 1, "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}));
        let claim: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data-web-2", "namespace": "default"}})).unwrap();
        let (actions, _) = sync(&deleting, &refs, &[&claim], &[], true, &now());
        assert_eq!(writes(&actions), ["own data-web-2", "delete web-2"]);
    }

    #[test]
    fn a_rolling_update_goes_down_to_the_partition_one_ready_pod_at_a_time() {
        let set = set(json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}));
        let pods = [pod("web-0", "old", true), pod("web-1", "old", true), pod("web-2", "old", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (actions, _) = sync(&set, &refs, &[], &[], true, &now());
        assert_eq!(writes(&actions), ["delete web-2"]);
        let h = hash(&set);
        let pods = [pod("web-0", "old", true), pod("web-1", "old", true), pod("web-2", &h, false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (actions, _) = sync(&set, &refs, &[], &[], true, &now());
        assert!(writes(&actions).is_empty(), "web-1 waits for the new web-2 to be ready");
        let pods = [pod("web-0", "old", true), pod("web-1", &h, true), pod("web-2", &h, true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (actions, _) = sync(&set, &refs, &[], &[], true, &now());
        assert!(writes(&actions).is_empty(), "web-0 is below the partition");
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(status["updatedReplicas"], 2);
        // Parallel: the updated web-2 still going away holds the next one back.
        let parallel = self::set(json!({"podManagementPolicy": "Parallel"}));
        let h = hash(&parallel);
        let mut leaving = pod("web-2", &h, true);
        leaving.metadata.deletion_timestamp = Some(now());
        let pods = [pod("web-0", "old", true), pod("web-1", "old", true), leaving];
        let (actions, _) = sync(&parallel, &pods.iter().collect::<Vec<_>>(), &[], &[], true, &now());
        assert!(writes(&actions).iter().all(|w| !w.starts_with("delete")), "{actions:?}");
    }
}
