//! The ReplicaSet controller (kube-controller-manager's replicaset): as many active pods
//! as `spec.replicas` asks, made from the template; pods adopted and released by the
//! selector; the status counted from the pods. Expectations (pods made or deleted that
//! the cache has not shown yet) stop a burst from being doubled.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use super::objects::{Claim, availability, claim, controller_ref, is_active, is_ready, now, pod_from_template};
use super::pod_control::PodOwners;

/// At most this many pods are made or deleted in one pass (kube-controller-manager's
/// burstReplicas).
const BURST: usize = 500;

/// What the controller does to one ReplicaSet's pods and status.
#[derive(Debug, PartialEq)]
pub enum Action {
    Claim(Claim),
    /// Make `count` pods like this one.
    Create {
        count: usize,
        pod: Value,
    },
    Delete {
        pod: String,
        uid: String,
    },
    Status(Value),
}

/// What one ReplicaSet needs done, from it, the pods of its namespace, and whether its
/// expectations are met. Also returns when to look again (a pod becoming available).
pub fn sync(rs: &ReplicaSet, pods: &[&Pod], expectations_met: bool, now: &Time) -> (Vec<Action>, Option<Duration>) {
    let mut actions = Vec::new();
    let spec = rs.spec.as_ref().cloned().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());

    let reference = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    let (owned, claims) = claim(&rs.metadata, &reference, &spec.selector, pods, is_active);
    actions.extend(claims.into_iter().map(Action::Claim));
    let active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let wanted = spec.replicas.unwrap_or(1).max(0) as usize;
    if expectations_met && !deleting {
        if active.len() < wanted {
            let count = (wanted - active.len()).min(BURST);
            actions.push(Action::Create { count, pod: pod_of(rs) });
        } else if active.len() > wanted {
            let mut doomed = active.clone();
            doomed.sort_by_key(|p| deletion_rank(p, now));
            for pod in doomed.into_iter().take((active.len() - wanted).min(BURST)) {
                actions.push(Action::Delete {
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                });
            }
        }
    }

    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let mut requeue: Option<Duration> = None;
    let mut available = 0;
    for pod in &active {
        let (is_available, wait) = availability(pod, min_ready, now);
        available += is_available as i32;
        requeue = super::sooner(requeue, wait);
    }
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels.iter().flatten().all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": active.iter().filter(|p| is_ready(p)).count(),
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    });
    let current = serde_json::to_value(rs.status.clone().unwrap_or_default()).unwrap_or_default();
    let differs = status
        .as_object()
        .expect("object")
        .iter()
        .any(|(k, v)| current[k].as_i64().unwrap_or(0) != v.as_i64().unwrap_or(0));
    if differs {
        actions.push(Action::Status(status));
    }
    (actions, requeue)
}

/// Which pods go first when there are too many (kube-controller-manager's ActivePods
/// order): unscheduled, then pending, then not ready, then the newest.
fn deletion_rank(pod: &Pod, now: &Time) -> (bool, u8, bool, std::cmp::Reverse<i64>) {
    let scheduled = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let created = pod.metadata.creation_timestamp.as_ref().unwrap_or(now).0.as_second();
    (scheduled, phase, is_ready(pod), std::cmp::Reverse(created))
}

/// A pod as the ReplicaSet's template describes it, owned by the ReplicaSet.
fn pod_of(rs: &ReplicaSet) -> Value {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    let owner = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    pod_from_template(&template, &owner, rs.metadata.namespace.as_deref(), format!("{name}-"))
}

/// Keeps every ReplicaSet's pods until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.replica_sets().subscribe(&wake);
    informers.pods().subscribe(&wake);
    let informers = informers.clone();
    let context = Arc::new(PodOwners::new(client, "replicaset-controller"));
    super::level_triggered(wake, move || {
        let (context, informers) = (context.clone(), informers.clone());
        async move {
            if !informers.replica_sets().ready().await || !informers.pods().ready().await {
                return None;
            }
            let (sets, pods, now) = (informers.replica_sets().all(), informers.pods().all(), now());
            let (plans, mut requeue) = context.plan_each(&sets, &pods, |rs, pods, met| sync(rs, pods, met, &now));
            for (rs, actions) in plans {
                if !apply(&context, rs, actions).await {
                    requeue = super::sooner(requeue, Some(Duration::from_secs(1)));
                }
            }
            requeue
        }
    });
}

/// Does what `sync` decided; false when something failed (it is tried again).
async fn apply(context: &PodOwners, rs: &ReplicaSet, actions: Vec<Action>) -> bool {
    let control = context.control(rs);
    let mut ok = true;
    for action in actions {
        ok &= match action {
            Action::Claim(claim) => control.claim(claim).await,
            Action::Create { count, pod } => {
                // Slow start, as kube-controller-manager's: 1, 2, 4… at once, stopping at
                // the first failure (a quota, an invalid template) rather than failing
                // `count` times.
                let (mut made, mut batch, mut all_made) = (0, 1, true);
                while made < count && all_made {
                    let n = batch.min(count - made);
                    all_made = super::run_all((0..n).map(|_| control.create(pod.clone()))).await;
                    made += n;
                    batch *= 2;
                }
                all_made
            }
            Action::Delete { pod, uid } => control.delete(&pod, uid).await,
            Action::Status(status) => {
                let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
                let name = rs.metadata.name.as_deref().unwrap_or_default();
                let api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), namespace);
                let patch = json!({"status": status});
                super::report(
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "replicaset",
                    name,
                )
            }
        };
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_set(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: Option<&str>, node: Option<&str>, ready: bool, created: u32) -> Pod {
        let owners = owner.map(|uid| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"},
                "ownerReferences": owners, "creationTimestamp": format!("2026-01-01T00:00:{created:02}Z")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn missing_pods_are_made_from_the_template_and_orphans_adopted() {
        let orphan = pod("orphan", None, Some("n"), true, 1);
        let (actions, _) = sync(&replica_set(3), &[&orphan], true, &now());
        assert!(matches!(&actions[0], Action::Claim(Claim::Adopt { name, .. }) if name == "orphan"));
        let Action::Create { count, pod } = &actions[1] else { panic!("{actions:?}") };
        assert_eq!(*count, 2);
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
        // While earlier creates are unseen, nothing more is made.
        let (actions, _) = sync(&replica_set(3), &[&orphan], false, &now());
        assert!(!actions.iter().any(|a| matches!(a, Action::Create { .. })), "{actions:?}");
    }

    #[test]
    fn extra_pods_go_unscheduled_then_not_ready_then_newest_first() {
        let pods = [
            pod("old-ready", Some("rs-uid"), Some("n"), true, 1),
            pod("new-ready", Some("rs-uid"), Some("n"), true, 5),
            pod("not-ready", Some("rs-uid"), Some("n"), false, 2),
            pod("unscheduled", Some("rs-uid"), None, false, 3),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (actions, _) = sync(&replica_set(1), &refs, true, &now());
        let deleted: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { pod, .. } => Some(pod.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["unscheduled", "not-ready", "new-ready"]);
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(status["replicas"], 4);
        assert_eq!(status["readyReplicas"], 2);
        assert_eq!(status["observedGeneration"], 2);
    }

    #[test]
    fn a_pod_whose_labels_no_longer_match_is_released() {
        let mut strayed = pod("strayed", Some("rs-uid"), Some("n"), true, 1);
        strayed.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        let (actions, _) = sync(&replica_set(0), &[&strayed], true, &now());
        let Action::Claim(Claim::Release { name, patch }) = &actions[0] else { panic!("{actions:?}") };
        assert_eq!(name, "strayed");
        assert_eq!(patch["metadata"]["ownerReferences"], json!([]));
    }
}
