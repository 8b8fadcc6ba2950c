//! The DaemonSet controller (kube-controller-manager's daemon): one pod on every node the
//! template may run on (its nodeSelector and node affinity, the node's taints against its
//! tolerations), placed by the scheduler through a node affinity to that node's name;
//! RollingUpdate within maxUnavailable and maxSurge, or OnDelete; ControllerRevisions for
//! `kubectl rollout history|undo`; the status `kubectl rollout status` reads.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::history::{self, Change, REVISION_HASH};
use super::informers::Informers;
use super::objects::{Claim, availability, claim, controller_ref, is_ready, now, pod_from_template};
use super::pod_control::PodOwners;
use super::scheduler::{matches_node_selection, tolerates};
use crate::events::Event;

/// The template generation a pod was made from (kube's `pod-template-generation` label).
const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// What the controller does to one DaemonSet.
#[derive(Debug, PartialEq)]
pub enum Action {
    Claim(Claim),
    Revision(Change),
    Create { node: String, pod: Value },
    Delete { pod: String, uid: String, reason: Option<String> },
    Status(Value),
}

/// Whether a node should run the daemon pod, and whether a pod already there may stay
/// (kube's NodeShouldRunDaemonPod: a NoSchedule taint keeps new pods off, only a NoExecute
/// one sends a running pod away).
fn placement(pod: &Pod, node: &Node) -> (bool, bool) {
    if !matches_node_selection(pod, node) {
        return (false, false);
    }
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t: &Taint| t.effect == effect && !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let stays = !untolerated("NoExecute");
    (stays && !untolerated("NoSchedule"), stays)
}

/// The tolerations every daemon pod gets (kube's AddOrUpdateDaemonPodTolerations): it
/// stays on nodes that are not ready or unreachable, under pressure, or cordoned.
fn with_daemon_tolerations(tolerations: &mut Vec<Toleration>, host_network: bool) {
    let mut add = |key: &str, effect: &str| {
        if !tolerations.iter().any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)) {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if host_network {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
}

/// A daemon pod: the template, with the revision's labels and the daemon tolerations.
fn daemon_pod(ds: &DaemonSet, hash: &str) -> Value {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    let owner = controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let mut pod = pod_from_template(&template, &owner, ds.metadata.namespace.as_deref(), format!("{name}-"));
    pod["metadata"]["labels"][REVISION_HASH] = hash.into();
    pod["metadata"]["labels"][TEMPLATE_GENERATION] = ds.metadata.generation.unwrap_or(0).to_string().into();
    let host_network = template.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    let mut tolerations = template.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    with_daemon_tolerations(&mut tolerations, host_network);
    pod["spec"]["tolerations"] = serde_json::to_value(tolerations).unwrap_or_default();
    pod
}

/// The daemon pod for `node`: a required node affinity to the node's name in every term
/// (kube's ReplaceDaemonSetPodNodeNameNodeAffinity), which the scheduler honours.
fn pinned(mut pod: Value, node: &str) -> Value {
    let by_name = json!([{"key": "metadata.name", "operator": "In", "values": [node]}]);
    let terms = &mut pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    match terms.as_array_mut().filter(|t| !t.is_empty()) {
        Some(terms) => terms.iter_mut().for_each(|term| term["matchFields"] = by_name.clone()),
        None => *terms = json!([{"matchFields": by_name}]),
    }
    pod
}

/// The node a daemon pod is for: where it runs, or the node its affinity names.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|f| {
        (f.key == "metadata.name" && f.operator == "In").then(|| f.values.as_ref()?.first().cloned()).flatten()
    })
}

fn is_failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

/// (maxSurge, maxUnavailable) of a rolling update over `desired` nodes, rounded up as
/// kube does for DaemonSets; never both zero.
fn rolling_limits(ds: &DaemonSet, desired: usize) -> (usize, usize) {
    let rolling = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let scaled = |value: Option<&IntOrString>, default: i32| match value {
        None => default.max(0) as usize,
        Some(IntOrString::Int(n)) => (*n).max(0) as usize,
        Some(IntOrString::String(s)) => {
            let percent: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (percent * desired).div_ceil(100)
        }
    };
    let surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), 0);
    let unavailable = scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), 1);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// What one DaemonSet needs done, from it, the pods of its namespace, the nodes, its
/// revisions, and whether its expectations are met; and when to look again.
pub fn sync(
    ds: &DaemonSet,
    pods: &[&Pod],
    nodes: &[&Node],
    revisions: &[&ControllerRevision],
    expectations_met: bool,
    now: &Time,
) -> (Vec<Action>, Option<Duration>) {
    let mut actions = Vec::new();
    let spec = ds.spec.clone().unwrap_or_default();
    let reference = controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let (owned, claims) =
        claim(&ds.metadata, &reference, &spec.selector, pods, |p| p.metadata.deletion_timestamp.is_none());
    actions.extend(claims.into_iter().map(Action::Claim));
    let live: Vec<&Pod> = owned.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let in_use: HashSet<String> = live.iter().filter_map(|p| hash_of(p)).map(String::from).collect();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
    let (hash, changes) = history::plan(
        &ds.metadata,
        &reference,
        &spec.template,
        collisions,
        spec.revision_history_limit,
        revisions,
        &in_use,
    );
    let deleting = ds.metadata.deletion_timestamp.is_some();
    if !deleting {
        actions.extend(changes.into_iter().map(Action::Revision));
    }

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in &live {
        by_node.entry(node_of(pod).unwrap_or_default()).or_default().push(pod);
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    let daemon = daemon_pod(ds, &hash);
    let probe: Pod = serde_json::from_value(daemon.clone()).unwrap_or_default();
    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let mut requeue = None;
    let mut available = |pod: &Pod| {
        let (is, wait) = availability(pod, min_ready, now);
        requeue = super::sooner(requeue, wait);
        is
    };
    let mut creates = Vec::new();
    let mut deletes: Vec<(&Pod, Option<String>)> = Vec::new();
    let mut status = Counts::default();
    let node_names: HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    // Pods for nodes that are gone.
    for (node, pods) in &by_node {
        if !node_names.contains(node.as_str()) {
            deletes.extend(pods.iter().map(|p| (*p, None)));
        }
    }
    // (node, old pod, new pod) of the nodes a rolling update works through.
    let mut updating: Vec<(String, Option<&Pod>, Option<&Pod>)> = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (should_run, may_stay) = placement(&probe, node);
        let pods = by_node.get(&name).cloned().unwrap_or_default();
        let scheduled = pods.iter().any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some());
        if !may_stay {
            status.misscheduled += scheduled as usize;
            deletes.extend(pods.iter().map(|p| (*p, None)));
            continue;
        }
        let (failed, running): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| is_failed(p));
        for pod in failed {
            let reason = format!(
                "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            deletes.push((pod, Some(reason)));
        }
        if !should_run {
            if !running.is_empty() {
                status.misscheduled += scheduled as usize;
            }
            continue;
        }
        status.desired += 1;
        status.current += scheduled as usize;
        // The oldest pod of the current template and the oldest of an older one stay
        // (both only while a surge replaces one with the other); extras go.
        let new = running.iter().copied().find(|p| hash_of(p) == Some(&hash));
        let old = running.iter().copied().find(|p| hash_of(p) != Some(&hash));
        for pod in running.iter().copied() {
            if Some(pod.metadata.uid.as_ref()) != new.map(|p| p.metadata.uid.as_ref())
                && Some(pod.metadata.uid.as_ref()) != old.map(|p| p.metadata.uid.as_ref())
            {
                deletes.push((pod, None));
            }
        }
        status.ready += running.iter().any(|p| is_ready(p)) as usize;
        status.available += running.iter().any(|p| available(p)) as usize;
        if new.is_some_and(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()) {
            status.updated += 1;
        }
        match (old, new) {
            (None, None) => creates.push(name),
            (Some(_), _) => updating.push((name, old, new)),
            (None, Some(_)) => {}
        }
    }

    let on_delete = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    if on_delete {
        // Old pods stay until someone deletes them; a node with both keeps the old one
        // only until the new one exists (never, unless surging before the switch).
        for (_, old, new) in &updating {
            if let (Some(old), Some(_)) = (old, new) {
                deletes.push((old, None));
            }
        }
    } else {
        // kube's rollingUpdate: without surge, old pods are deleted (the unavailable ones at
        // once, the others while fewer than maxUnavailable nodes lack an available pod) and
        // replaced; with surge, a new pod starts beside the old one (for an unavailable
        // one at once, for the others while fewer than maxSurge new pods are not yet
        // available), and the old one goes once the new one is available.
        let (surge, max_unavailable) = rolling_limits(ds, status.desired);
        let mut unavailable = status.desired - status.available;
        let mut surging = updating.iter().filter(|(_, _, new)| new.is_some_and(|p| !available(p))).count();
        for (node, old, new) in &updating {
            let old = old.expect("a node being updated has an old pod");
            match new {
                Some(new) if available(new) => deletes.push((old, None)),
                Some(_) => {}
                None if surge > 0 && !available(old) => creates.push(node.clone()),
                None if surge > 0 => {
                    if surging < surge {
                        surging += 1;
                        creates.push(node.clone());
                    }
                }
                None if !available(old) => deletes.push((old, None)),
                None => {
                    if unavailable < max_unavailable {
                        unavailable += 1;
                        deletes.push((old, None));
                    }
                }
            }
        }
    }

    if expectations_met && !deleting {
        for node in creates {
            actions.push(Action::Create { pod: pinned(daemon.clone(), &node), node });
        }
        let mut seen = HashSet::new();
        for (pod, reason) in deletes {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if seen.insert(uid.clone()) {
                actions.push(Action::Delete { pod: pod.metadata.name.clone().unwrap_or_default(), uid, reason });
            }
        }
    }

    let wanted = json!({
        "desiredNumberScheduled": status.desired,
        "currentNumberScheduled": status.current,
        "numberMisscheduled": status.misscheduled,
        "numberReady": status.ready,
        "updatedNumberScheduled": status.updated,
        "numberAvailable": status.available,
        "numberUnavailable": status.desired - status.available,
        "observedGeneration": ds.metadata.generation,
    });
    let current = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
    if wanted
        .as_object()
        .expect("object")
        .iter()
        .any(|(k, v)| current[k].as_i64().unwrap_or(0) != v.as_i64().unwrap_or(0))
    {
        actions.push(Action::Status(wanted));
    }
    (actions, requeue)
}

#[derive(Default)]
struct Counts {
    desired: usize,
    current: usize,
    misscheduled: usize,
    ready: usize,
    updated: usize,
    available: usize,
}

/// Keeps every DaemonSet's pods until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.daemon_sets().subscribe(&wake);
    informers.pods().subscribe(&wake);
    informers.nodes().subscribe(&wake);
    informers.revisions().subscribe(&wake);
    let informers = informers.clone();
    let context = Arc::new(PodOwners::new(client, "daemonset-controller"));
    super::level_triggered(wake, move || {
        let (context, informers) = (context.clone(), informers.clone());
        async move {
            for ready in [
                informers.daemon_sets().ready().await,
                informers.pods().ready().await,
                informers.nodes().ready().await,
                informers.revisions().ready().await,
            ] {
                if !ready {
                    return None;
                }
            }
            let (sets, pods, nodes) = (informers.daemon_sets().all(), informers.pods().all(), informers.nodes().all());
            let (revisions, nodes, now) = (informers.revisions().all(), super::refs(&nodes), now());
            let (plans, mut requeue) = context.plan_each(&sets, &pods, |ds, pods, met| {
                let owned = history::owned_by(&revisions, ds.metadata.uid.as_deref().unwrap_or_default());
                sync(ds, pods, &nodes, &owned, met, &now)
            });
            for (ds, actions) in plans {
                if !apply(&context, ds, actions).await {
                    requeue = super::sooner(requeue, Some(Duration::from_secs(1)));
                }
            }
            requeue
        }
    });
}

/// Does what `sync` decided; false when something failed (it is tried again).
async fn apply(context: &PodOwners, ds: &DaemonSet, actions: Vec<Action>) -> bool {
    let control = context.control(ds);
    let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    let revisions: Api<ControllerRevision> = Api::namespaced(context.client.clone(), namespace);
    let mut ok = true;
    let mut creates = Vec::new();
    for action in actions {
        ok &= match action {
            Action::Claim(claim) => control.claim(claim).await,
            Action::Revision(change) => history::apply(&revisions, change).await,
            Action::Create { pod, .. } => {
                creates.push(pod);
                true
            }
            Action::Delete { pod, uid, reason } => {
                if let Some(reason) = reason {
                    control.record(Event::warning("FailedDaemonPod", reason)).await;
                }
                control.delete(&pod, uid).await
            }
            Action::Status(status) => {
                let api: Api<DaemonSet> = Api::namespaced(context.client.clone(), namespace);
                let patch = json!({"status": status});
                super::report(
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "daemonset",
                    name,
                )
            }
        };
    }
    ok & super::run_all(creates.into_iter().map(|pod| control.create(pod))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_set(strategy: Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "updateStrategy": strategy,
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "v2"}]}}},
        }))
        .unwrap()
    }

    fn node(name: &str, role: &str, taint: Option<&str>) -> Node {
        let taints = taint.map(|effect| json!([{"key": "dedicated", "value": "db", "effect": effect}]));
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"role": role}}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    fn current_hash(ds: &DaemonSet) -> String {
        history::plan(&ds.metadata, &json!({}), &ds.spec.as_ref().unwrap().template, 0, None, &[], &HashSet::new()).0
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name,
                "labels": {"app": "agent", REVISION_HASH: hash},
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn created_on(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| if let Action::Create { node, .. } = a { Some(node.as_str()) } else { None })
            .collect()
    }

    fn deleted(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| if let Action::Delete { pod, .. } = a { Some(pod.as_str()) } else { None })
            .collect()
    }

    #[test]
    fn one_pod_per_eligible_node_pinned_to_it_by_name() {
        let ds = daemon_set(json!({}));
        let nodes = [node("a", "worker", None), node("b", "db", None), node("c", "worker", Some("NoSchedule"))];
        let nodes: Vec<&Node> = nodes.iter().collect();
        let (actions, _) = sync(&ds, &[], &nodes, &[], true, &now());
        assert_eq!(created_on(&actions), ["a"], "b is no worker, c's taint is not tolerated");
        let Some(Action::Create { pod, .. }) = actions.iter().find(|a| matches!(a, Action::Create { .. })) else {
            panic!()
        };
        let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(terms["nodeSelectorTerms"][0]["matchFields"][0]["values"], json!(["a"]));
        assert_eq!(pod["metadata"]["labels"][TEMPLATE_GENERATION], "3");
        let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
        assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"));
        assert!(matches!(
            actions.iter().find(|a| matches!(a, Action::Revision(_))),
            Some(Action::Revision(Change::Create(_)))
        ));
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(
            (status["desiredNumberScheduled"].as_i64(), status["numberUnavailable"].as_i64()),
            (Some(1), Some(1))
        );
    }

    #[test]
    fn a_no_execute_taint_sends_the_pod_away_a_no_schedule_one_lets_it_stay() {
        let ds = daemon_set(json!({}));
        let hash = current_hash(&ds);
        let pods = [pod("on-c", "c", &hash, true), pod("on-d", "d", &hash, true)];
        let nodes = [node("c", "worker", Some("NoSchedule")), node("d", "worker", Some("NoExecute"))];
        let (actions, _) =
            sync(&ds, &pods.iter().collect::<Vec<_>>(), &nodes.iter().collect::<Vec<_>>(), &[], true, &now());
        assert_eq!(deleted(&actions), ["on-d"]);
        assert!(created_on(&actions).is_empty());
    }

    #[test]
    fn a_rolling_update_replaces_at_most_max_unavailable_at_once() {
        let ds = daemon_set(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
        let nodes = [node("a", "worker", None), node("b", "worker", None), node("c", "worker", None)];
        let pods = [pod("old-a", "a", "old", true), pod("old-b", "b", "old", true), pod("old-c", "c", "old", false)];
        let (actions, _) =
            sync(&ds, &pods.iter().collect::<Vec<_>>(), &nodes.iter().collect::<Vec<_>>(), &[], true, &now());
        // c's pod is unavailable already: it goes at once, and uses up the budget.
        assert_eq!(deleted(&actions), ["old-c"]);
        let ds = daemon_set(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}));
        let hash = current_hash(&ds);
        let pods = [pod("old-a", "a", "old", true), pod("new-b", "b", &hash, true), pod("old-b", "b", "old", true)];
        let (actions, _) =
            sync(&ds, &pods.iter().collect::<Vec<_>>(), &nodes.iter().collect::<Vec<_>>(), &[], true, &now());
        assert_eq!(deleted(&actions), ["old-b"], "b's new pod is available: its old one goes");
        let mut created = created_on(&actions);
        created.sort();
        assert_eq!(created, ["a", "c"], "one surge pod on a; c had none");
    }

    #[test]
    fn on_delete_leaves_old_pods_until_they_are_deleted() {
        let ds = daemon_set(json!({"type": "OnDelete"}));
        let nodes = [node("a", "worker", None)];
        let pods = [pod("old-a", "a", "old", true)];
        let (actions, _) =
            sync(&ds, &pods.iter().collect::<Vec<_>>(), &nodes.iter().collect::<Vec<_>>(), &[], true, &now());
        assert!(deleted(&actions).is_empty() && created_on(&actions).is_empty(), "{actions:?}");
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(status["updatedNumberScheduled"], 0);
        assert_eq!(status["numberAvailable"], 1);
    }
}
