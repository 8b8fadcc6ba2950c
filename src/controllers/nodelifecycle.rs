//! Node lifecycle (kube-controller-manager's nodelifecycle and its NoExecute taint
//! manager): a node whose agent has not renewed its Lease (nor posted its status) for the
//! grace period is marked `Ready=Unknown`; not-ready and unreachable nodes carry the
//! `node.kubernetes.io/not-ready` or `…/unreachable` taints (NoSchedule and NoExecute),
//! their pods are marked not Ready (so Services stop sending them traffic), and pods that
//! do not tolerate a NoExecute taint (for longer than their tolerationSeconds) are
//! evicted, so their ReplicaSets replace them elsewhere.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use super::objects::{elapsed, is_ready, is_terminal, now};
use super::scheduler::tolerates;
use crate::events::{Event, Involved, Recorder};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The node conditions an agent posts, all Unknown once it stops.
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Debug, PartialEq)]
pub enum Action {
    /// The node's conditions, made Unknown (a merge patch of its status).
    NodeUnknown {
        node: String,
        conditions: Value,
    },
    /// The node's whole list of taints.
    Taints {
        node: String,
        taints: Vec<Taint>,
    },
    PodNotReady {
        namespace: String,
        pod: String,
        conditions: Value,
    },
    Evict {
        namespace: String,
        pod: String,
        uid: String,
    },
}

fn later(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 > b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What the nodes and their pods need, and when to look again (a node's grace period or
/// a toleration running out).
pub fn sync(
    nodes: &[&Node],
    leases: &[&Lease],
    pods: &[&Pod],
    now: &Time,
    grace: Duration,
) -> (Vec<Action>, Option<Duration>) {
    let mut actions = Vec::new();
    let mut requeue: Option<Duration> = None;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let ready_condition = conditions.iter().find(|c| c.type_ == "Ready");
        let lease = leases.iter().find(|l| {
            l.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE) && l.metadata.name.as_deref() == Some(&name)
        });
        let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref()).map(|t| Time(t.0));
        let heartbeat = later(
            later(renewed, ready_condition.and_then(|c| c.last_heartbeat_time.clone())),
            node.metadata.creation_timestamp.clone(),
        );
        let mut ready = ready_condition.map_or("Unknown", |c| c.status.as_str()).to_string();
        let silent_for = heartbeat.as_ref().map_or(grace, |h| elapsed(h, now));
        if silent_for >= grace {
            if ready != "Unknown"
                || conditions.iter().any(|c| CONDITIONS.contains(&c.type_.as_str()) && c.status != "Unknown")
            {
                let stamp = serde_json::to_value(now).unwrap_or_default();
                let unknown: Vec<Value> = CONDITIONS
                    .iter()
                    .map(|kind| {
                        let current = conditions.iter().find(|c| c.type_ == *kind);
                        let since = match current {
                            Some(c) if c.status == "Unknown" => {
                                serde_json::to_value(&c.last_transition_time).unwrap_or_default()
                            }
                            _ => stamp.clone(),
                        };
                        json!({"type": kind, "status": "Unknown", "reason": "NodeStatusUnknown",
                            "message": "Kubelet stopped posting node status.",
                            "lastHeartbeatTime": current.and_then(|c| c.last_heartbeat_time.clone()),
                            "lastTransitionTime": since})
                    })
                    .collect();
                let mut all: Vec<Value> = conditions
                    .iter()
                    .filter(|c| !CONDITIONS.contains(&c.type_.as_str()))
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect();
                all.extend(unknown);
                actions.push(Action::NodeUnknown { node: name.clone(), conditions: all.into() });
            }
            ready = "Unknown".into();
        } else {
            requeue = super::sooner(requeue, Some(grace - silent_for + Duration::from_millis(500)));
        }

        // The taints that say so (TaintNodesByCondition and the NoExecute taint manager's).
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let managed = |t: &Taint| t.key == NOT_READY || t.key == UNREACHABLE;
        let wanted_key = match ready.as_str() {
            "True" => None,
            "Unknown" => Some(UNREACHABLE),
            _ => Some(NOT_READY),
        };
        let mut taints: Vec<Taint> = current.iter().filter(|t| !managed(t)).cloned().collect();
        if let Some(key) = wanted_key {
            for effect in ["NoSchedule", "NoExecute"] {
                let kept = current.iter().find(|t| t.key == key && t.effect == effect).cloned();
                taints.push(kept.unwrap_or_else(|| Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then(|| now.clone()),
                    value: None,
                }));
            }
        }
        let unchanged = taints.len() == current.len() && taints.iter().all(|t| current.contains(t));
        if !unchanged {
            actions.push(Action::Taints { node: name.clone(), taints: taints.clone() });
        }

        let on_node = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name) && !is_terminal(p));
        for pod in on_node {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if ready != "True" && is_ready(pod) {
                let conditions: Vec<Value> = pod
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .map(|c| {
                        let mut c = serde_json::to_value(c).unwrap_or_default();
                        if c["type"] == "Ready" {
                            c["status"] = "False".into();
                            c["lastTransitionTime"] = serde_json::to_value(now).unwrap_or_default();
                        }
                        c
                    })
                    .collect();
                actions.push(Action::PodNotReady {
                    namespace: namespace.clone(),
                    pod: pod_name.clone(),
                    conditions: conditions.into(),
                });
            }
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match eviction_in(pod, &taints, now) {
                Some(wait) if wait.is_zero() => actions.push(Action::Evict {
                    namespace,
                    pod: pod_name,
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                }),
                Some(wait) => requeue = super::sooner(requeue, Some(wait)),
                None => {}
            }
        }
    }
    (actions, requeue)
}

/// How long until the node's NoExecute taints evict the pod (zero: now), if ever.
fn eviction_in(pod: &Pod, taints: &[Taint], now: &Time) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut soonest: Option<Duration> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // The shortest of the tolerations that bound it; none bounds it: never.
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else { continue };
        let added = taint.time_added.clone().unwrap_or_else(|| now.clone());
        let deadline = Duration::from_secs(seconds.max(0) as u64);
        let elapsed = elapsed(&added, now);
        let left = deadline.saturating_sub(elapsed);
        soonest = Some(soonest.map_or(left, |s| s.min(left)));
    }
    soonest
}

/// Watches over nodes until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>, grace: Duration) {
    let wake = Arc::new(Notify::new());
    informers.nodes().subscribe(&wake);
    informers.leases().subscribe(&wake);
    informers.pods().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), "node-controller", None));
    super::level_triggered(wake, move || {
        let (client, informers, recorder) = (client.clone(), informers.clone(), recorder.clone());
        async move {
            if !(informers.nodes().ready().await && informers.leases().ready().await && informers.pods().ready().await)
            {
                return None;
            }
            let (nodes, leases, pods) = (informers.nodes().all(), informers.leases().all(), informers.pods().all());
            let (nodes, leases, pods) = (super::refs(&nodes), super::refs(&leases), super::refs(&pods));
            let (actions, requeue) = sync(&nodes, &leases, &pods, &now(), grace);
            let mut ok = true;
            for action in actions {
                ok &= carry_out(&client, &recorder, &nodes, &pods, action).await;
            }
            if ok { requeue } else { super::sooner(requeue, Some(Duration::from_secs(1))) }
        }
    });
}

async fn carry_out(client: &Client, recorder: &Recorder, nodes: &[&Node], pods: &[&Pod], action: Action) -> bool {
    let merge = PatchParams::default();
    let node_api: Api<Node> = Api::all(client.clone());
    match action {
        Action::NodeUnknown { node, conditions } => {
            let patch = json!({"status": {"conditions": conditions}});
            let done = super::report(node_api.patch_status(&node, &merge, &Patch::Merge(&patch)).await, "node", &node);
            if done && let Some(object) = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(&node)) {
                let mut involved = Involved::of(*object);
                involved.namespace = "default".into();
                recorder
                    .record(
                        &involved,
                        &Event::normal("NodeNotReady", format!("Node {node} status is now: NodeNotReady")),
                    )
                    .await;
            }
            done
        }
        Action::Taints { node, taints } => {
            let patch = json!({"spec": {"taints": taints}});
            super::report(node_api.patch(&node, &merge, &Patch::Merge(&patch)).await, "node", &node)
        }
        Action::PodNotReady { namespace, pod, conditions } => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({"status": {"conditions": conditions}});
            super::report(api.patch_status(&pod, &merge, &Patch::Merge(&patch)).await, "pod", &pod)
        }
        Action::Evict { namespace, pod, uid } => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if let Some(object) = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(&uid)) {
                recorder
                    .record(
                        &Involved::of(*object),
                        &Event::normal("TaintManagerEviction", format!("Marking for deletion Pod {namespace}/{pod}")),
                    )
                    .await;
            }
            let params = crate::client::delete_params(uid, None);
            super::report_delete(api.delete(&pod, &params).await, "pod", &pod)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        serde_json::from_value(json!(format!("2026-01-01T00:{:02}:{:02}Z", seconds / 60, seconds % 60))).unwrap()
    }

    fn node(ready: &str, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    fn lease(renewed: i64) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "n", "namespace": LEASE_NAMESPACE},
            "spec": {"renewTime": format!("2026-01-01T00:{:02}:{:02}.000000Z", renewed / 60, renewed % 60)}}))
        .unwrap()
    }

    fn pod(tolerate_for: Option<i64>) -> Pod {
        let tolerations = tolerate_for.map(
            |s| json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s}]),
        );
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "p"},
            "spec": {"nodeName": "n", "tolerations": tolerations, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_silent_node_becomes_unknown_and_tainted_and_its_pods_not_ready() {
        let grace = Duration::from_secs(40);
        let (n, l, p) = (node("True", json!([])), lease(30), pod(Some(300)));
        let (actions, requeue) = sync(&[&n], &[&l], &[&p], &at(60), grace);
        assert_eq!(actions, vec![], "renewed 30 s ago: fine");
        assert_eq!(requeue, Some(Duration::from_millis(10_500)));

        let (actions, _) = sync(&[&n], &[&l], &[&p], &at(71), grace);
        assert!(matches!(&actions[0], Action::NodeUnknown { conditions, .. } if conditions[0]["status"] == "Unknown"));
        let Action::Taints { taints, .. } = &actions[1] else { panic!("{actions:?}") };
        assert_eq!(
            taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect::<Vec<_>>(),
            [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
        );
        assert!(matches!(&actions[2], Action::PodNotReady { pod, .. } if pod == "p"));
        assert_eq!(actions.len(), 3, "tolerated for 300 s: not evicted yet");
    }

    #[test]
    fn pods_are_evicted_once_their_toleration_runs_out_or_at_once_without_one() {
        let taints = json!([{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:01:00Z"},
            {"key": UNREACHABLE, "effect": "NoSchedule"}]);
        let n = node("Unknown", taints);
        let grace = Duration::from_secs(40);
        let patient = pod(Some(30));
        let (actions, requeue) = sync(&[&n], &[], &[&patient], &at(80), grace);
        assert!(!actions.iter().any(|a| matches!(a, Action::Evict { .. })), "{actions:?}");
        assert_eq!(requeue, Some(Duration::from_secs(10)));
        let (actions, _) = sync(&[&n], &[], &[&patient], &at(90), grace);
        assert!(actions.iter().any(|a| matches!(a, Action::Evict { .. })), "{actions:?}");
        let intolerant = pod(None);
        let (actions, _) = sync(&[&n], &[], &[&intolerant], &at(61), grace);
        assert!(actions.iter().any(|a| matches!(a, Action::Evict { .. })), "{actions:?}");
        let mut forever = pod(None);
        forever.spec.as_mut().unwrap().tolerations = serde_json::from_value(json!([{"operator": "Exists"}])).unwrap();
        let (actions, _) = sync(&[&n], &[], &[&forever], &at(3000), grace);
        assert!(!actions.iter().any(|a| matches!(a, Action::Evict { .. })), "{actions:?}");
    }

    #[test]
    fn a_node_back_to_ready_loses_its_taints() {
        let n =
            node("True", json!([{"key": UNREACHABLE, "effect": "NoExecute"}, {"key": "mine", "effect": "NoSchedule"}]));
        let (actions, _) = sync(&[&n], &[&lease(59)], &[], &at(60), Duration::from_secs(40));
        let [Action::Taints { taints, .. }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, "mine");
    }
}
