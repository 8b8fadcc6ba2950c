//! The scheduler (kube-scheduler's default profile, in small): every pod waiting for a
//! node is bound (`pods/binding`) to one that passes the filters — node name, node
//! selector and required node affinity, taints and tolerations, unschedulable nodes,
//! resource requests against what is allocatable and already bound, host ports, its
//! volumes' node affinity (`volume_binding`) — and scores best: least allocated, and
//! fewest pods of the same owner (spreading a ReplicaSet's pods). A pod no node takes gets
//! `PodScheduled=False` (`Unschedulable`) and a FailedScheduling event that says why, node
//! by node, as kube-scheduler does; it is tried again whenever pods or nodes change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement, Pod, Taint, Toleration};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;

use super::informers::Informers;
use super::nodelifecycle::{NOT_READY, UNREACHABLE};
use super::objects::{controller_of, is_terminal};
use super::volume_binding::{Claims, SELECTED_NODE, Storage};
use crate::events::{Event, Involved, Recorder};
use crate::quantity::Quantity;

pub const NAME: &str = "default-scheduler";

/// What a pod asks of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub cpu_millis: i128,
    pub memory: i128,
    /// (protocol, port, host IP) of the host ports it binds.
    pub host_ports: Vec<(String, i32, String)>,
}

/// CPU and memory requested by the requests of all its containers (the largest init
/// container's when larger), and its overhead.
pub fn request_of(pod: &Pod) -> Request {
    let Some(spec) = &pod.spec else { return Request::default() };
    let amount = |c: &k8s_openapi::api::core::v1::Container, name: &str| -> i128 {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref().or(r.limits.as_ref()));
        let quantity = requests.and_then(|r| r.get(name)).and_then(|q| Quantity::parse(&q.0));
        match (quantity, name) {
            (Some(q), "cpu") => q.millis(),
            (Some(q), _) => q.units(),
            (None, _) => 0,
        }
    };
    let mut request = Request::default();
    for name in ["cpu", "memory"] {
        let running: i128 = spec.containers.iter().map(|c| amount(c, name)).sum();
        let init = spec.init_containers.iter().flatten().map(|c| amount(c, name)).max().unwrap_or(0);
        let overhead = spec.overhead.as_ref().and_then(|o| o.get(name)).and_then(|q| Quantity::parse(&q.0));
        let overhead = overhead.map_or(0, |q| if name == "cpu" { q.millis() } else { q.units() });
        let total = running.max(init) + overhead;
        if name == "cpu" {
            request.cpu_millis = total;
        } else {
            request.memory = total;
        }
    }
    for container in &spec.containers {
        for port in container.ports.iter().flatten().filter(|p| p.host_port.unwrap_or(0) > 0) {
            request.host_ports.push((
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port.host_port.unwrap_or(0),
                port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
            ));
        }
    }
    request
}

/// A node and what is bound to it.
#[derive(Clone, Debug)]
pub struct NodeInfo<'a> {
    pub node: &'a Node,
    pub requested: Request,
    pub pods: usize,
    /// Pods bound here, by their controller's uid.
    pub by_owner: HashMap<String, usize>,
}

impl<'a> NodeInfo<'a> {
    pub fn new(node: &'a Node) -> NodeInfo<'a> {
        NodeInfo { node, requested: Request::default(), pods: 0, by_owner: HashMap::new() }
    }

    pub fn add(&mut self, pod: &Pod) {
        let request = request_of(pod);
        self.requested.cpu_millis += request.cpu_millis;
        self.requested.memory += request.memory;
        self.requested.host_ports.extend(request.host_ports);
        self.pods += 1;
        if let Some(owner) = controller_of(&pod.metadata) {
            *self.by_owner.entry(owner.uid.clone()).or_default() += 1;
        }
    }

    fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    fn allocatable(&self, name: &str) -> i128 {
        let status = self.node.status.as_ref();
        let quantity = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .and_then(|a| a.get(name))
            .and_then(|q| Quantity::parse(&q.0));
        match (quantity, name) {
            (Some(q), "cpu") => q.millis(),
            (Some(q), _) => q.units(),
            (None, "pods") => 110,
            (None, _) => 0,
        }
    }

    /// The node's taints, and the one its Ready condition stands for when it is not
    /// Ready and no controller has tainted it yet.
    fn taints(&self) -> Vec<Taint> {
        let mut taints = self.node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = self
            .node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let implied = match ready {
            Some("True") => None,
            Some("Unknown") => Some(UNREACHABLE),
            _ => Some(NOT_READY),
        };
        if let Some(key) = implied
            && !taints.iter().any(|t| t.key == key)
        {
            taints.push(Taint { key: key.into(), effect: "NoSchedule".into(), ..Default::default() });
        }
        if self.node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            taints.push(Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
        taints
    }

    /// Why the pod cannot go here (kube-scheduler's reasons), if it cannot; `volumes` are
    /// the node affinities of the persistent volumes it uses.
    fn unfit(&self, pod: &Pod, request: &Request, volumes: &[&NodeSelector]) -> Vec<String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let tolerations = spec.tolerations.clone().unwrap_or_default();
        let untolerated = self
            .taints()
            .into_iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
        if let Some(taint) = untolerated {
            if taint.key == "node.kubernetes.io/unschedulable" {
                return vec!["node(s) were unschedulable".into()];
            }
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            )];
        }
        if !matches_node_selection(pod, self.node) {
            return vec!["node(s) didn't match Pod's node affinity/selector".into()];
        }
        if !volumes.iter().all(|affinity| selector_matches(affinity, self.node)) {
            return vec!["node(s) had volume node affinity conflict".into()];
        }
        let mut reasons = Vec::new();
        if self.pods + 1 > self.allocatable("pods") as usize {
            reasons.push("Too many pods".to_string());
        }
        if request.cpu_millis > 0 && self.requested.cpu_millis + request.cpu_millis > self.allocatable("cpu") {
            reasons.push("Insufficient cpu".into());
        }
        if request.memory > 0 && self.requested.memory + request.memory > self.allocatable("memory") {
            reasons.push("Insufficient memory".into());
        }
        let conflict = request.host_ports.iter().any(|(protocol, port, ip)| {
            self.requested
                .host_ports
                .iter()
                .any(|(p, n, i)| p == protocol && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0"))
        });
        if conflict {
            reasons.push("node(s) didn't have free ports for the requested pod ports".into());
        }
        reasons
    }

    /// How well the pod fits (higher is better): least allocated CPU and memory once it
    /// is here, and fewest pods of its owner already here.
    fn score(&self, pod: &Pod, request: &Request, most_of_owner: usize) -> i128 {
        // kube-scheduler scores pods that request nothing as 100m and 200Mi.
        let cpu = if request.cpu_millis == 0 { 100 } else { request.cpu_millis };
        let memory = if request.memory == 0 { 200 << 20 } else { request.memory };
        let free = |allocatable: i128, used: i128| {
            if allocatable <= 0 { 0 } else { ((allocatable - used).max(0) * 100) / allocatable }
        };
        let least_allocated = (free(self.allocatable("cpu"), self.requested.cpu_millis + cpu)
            + free(self.allocatable("memory"), self.requested.memory + memory))
            / 2;
        let owner = controller_of(&pod.metadata).map(|o| self.by_owner.get(&o.uid).copied().unwrap_or(0)).unwrap_or(0);
        let spread = ((most_of_owner - owner) * 100).checked_div(most_of_owner).map_or(100, |s| s as i128);
        least_allocated + spread
    }
}

/// Whether a toleration tolerates a taint.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// nodeSelector, and the required terms of node affinity (any term; every expression of it).
pub fn matches_node_selection(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(spec) = &pod.spec else { return true };
    if !spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    required.is_none_or(|required| selector_matches(required, node))
}

/// Whether a node selector (its terms ORed) takes the node.
pub fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.clone().unwrap_or_default();
    selector.node_selector_terms.iter().any(|term| {
        let by_labels = term.match_expressions.iter().flatten().all(|e| requirement_holds(e, labels.get(&e.key)));
        let by_fields =
            term.match_fields.iter().flatten().all(|e| e.key == "metadata.name" && requirement_holds(e, Some(&name)));
        let has_any = term.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            || term.match_fields.as_ref().is_some_and(|e| !e.is_empty());
        has_any && by_labels && by_fields
    })
}

fn requirement_holds(requirement: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// The node the pod goes to, or kube-scheduler's message saying why none takes it.
pub fn place(pod: &Pod, nodes: &[NodeInfo], volumes: &[&NodeSelector]) -> Result<usize, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let request = request_of(pod);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut fit = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let unfit = node.unfit(pod, &request, volumes);
        if unfit.is_empty() {
            fit.push(i);
        }
        for reason in unfit {
            *reasons.entry(reason).or_default() += 1;
        }
    }
    if fit.is_empty() {
        let mut parts: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        parts.sort();
        return Err(format!("0/{} nodes are available: {}.", nodes.len(), parts.join(", ")));
    }
    let owner = controller_of(&pod.metadata).map(|o| o.uid.clone());
    let most = owner
        .as_ref()
        .map_or(0, |o| fit.iter().map(|i| nodes[*i].by_owner.get(o).copied().unwrap_or(0)).max().unwrap_or(0));
    let best = fit
        .into_iter()
        .max_by(|a, b| {
            let (x, y) = (&nodes[*a], &nodes[*b]);
            x.score(pod, &request, most)
                .cmp(&y.score(pod, &request, most))
                .then(y.pods.cmp(&x.pods))
                .then(y.name().cmp(x.name()))
        })
        .expect("some node fits");
    Ok(best)
}

/// Whether the scheduler is to place this pod.
fn waiting(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.scheduler_name.as_deref().is_none_or(|s| s == NAME)
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
}

/// What a pass decided for one waiting pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Bind {
        namespace: String,
        pod: String,
        node: String,
    },
    /// Its claims are to be provisioned on the node first (WaitForFirstConsumer): they
    /// are annotated with it, and the pod is bound once they are.
    SelectNode {
        namespace: String,
        pod: String,
        node: String,
        claims: Vec<String>,
    },
    Unschedulable {
        namespace: String,
        pod: String,
        message: String,
    },
}

/// The decisions for every waiting pod, in priority order then oldest first; each placed
/// pod counts on its node for the ones after it. `assumed` are pods bound earlier that
/// the cache does not show bound yet (uid → node).
pub fn schedule(pods: &[&Pod], nodes: &[&Node], storage: &Storage, assumed: &HashMap<String, String>) -> Vec<Decision> {
    let mut infos: Vec<NodeInfo> = nodes.iter().map(|n| NodeInfo::new(n)).collect();
    let index: HashMap<String, usize> = infos.iter().enumerate().map(|(i, n)| (n.name().to_string(), i)).collect();
    let mut queue = Vec::new();
    for pod in pods {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        match bound.or(assumed.get(uid).map(String::as_str)) {
            Some(node) if !is_terminal(pod) => {
                if let Some(&i) = index.get(node) {
                    infos[i].add(pod);
                }
            }
            Some(_) => {}
            None if waiting(pod) => queue.push(*pod),
            None => {}
        }
    }
    queue.sort_by_key(|p| {
        let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        (
            std::cmp::Reverse(priority),
            p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
            p.metadata.name.clone(),
        )
    });
    let mut decisions = Vec::new();
    for pod in queue {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let volumes = match storage.claims_of(pod) {
            Claims::Wait => continue,
            Claims::Unusable(message) => {
                decisions.push(Decision::Unschedulable { namespace, pod: name, message });
                continue;
            }
            Claims::Usable { affinities, unbound } => (affinities, unbound),
        };
        match place(pod, &infos, &volumes.0) {
            Ok(i) => {
                infos[i].add(pod);
                let node = infos[i].name().to_string();
                decisions.push(if volumes.1.is_empty() {
                    Decision::Bind { namespace, pod: name, node }
                } else {
                    Decision::SelectNode { namespace, pod: name, node, claims: volumes.1 }
                });
            }
            Err(message) => decisions.push(Decision::Unschedulable { namespace, pod: name, message }),
        }
    }
    decisions
}

/// Schedules pods until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.pods().subscribe(&wake);
    informers.nodes().subscribe(&wake);
    informers.claims().subscribe(&wake);
    informers.volumes().subscribe(&wake);
    informers.storage_classes().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), NAME, None));
    let assumed: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    super::level_triggered(wake, move || {
        let (client, informers, recorder, assumed) =
            (client.clone(), informers.clone(), recorder.clone(), assumed.clone());
        async move {
            for ready in [
                informers.pods().ready().await,
                informers.nodes().ready().await,
                informers.claims().ready().await,
                informers.volumes().ready().await,
                informers.storage_classes().ready().await,
            ] {
                if !ready {
                    return None;
                }
            }
            let (claims, volumes, classes) =
                (informers.claims().all(), informers.volumes().all(), informers.storage_classes().all());
            let storage = Storage::new(&claims, &volumes, &classes);
            let pods = informers.pods().all();
            let nodes = informers.nodes().all();
            // Assumptions the cache has caught up with (or whose pod is gone) are dropped.
            {
                let mut assumed = assumed.lock().expect("assumed");
                let pending: HashSet<&str> = pods
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty))
                    .filter_map(|p| p.metadata.uid.as_deref())
                    .collect();
                assumed.retain(|uid, _| pending.contains(uid.as_str()));
            }
            let snapshot = assumed.lock().expect("assumed").clone();
            let pod_refs = super::refs(&pods);
            let node_refs = super::refs(&nodes);
            let decisions = schedule(&pod_refs, &node_refs, &storage, &snapshot);
            let by_name: HashMap<(&str, &str), &Pod> = pod_refs
                .iter()
                .map(|p| {
                    (
                        (
                            p.metadata.namespace.as_deref().unwrap_or_default(),
                            p.metadata.name.as_deref().unwrap_or_default(),
                        ),
                        *p,
                    )
                })
                .collect();
            let writes = decisions.into_iter().filter_map(|decision| {
                let (namespace, name) = match &decision {
                    Decision::Bind { namespace, pod, .. }
                    | Decision::SelectNode { namespace, pod, .. }
                    | Decision::Unschedulable { namespace, pod, .. } => (namespace.clone(), pod.clone()),
                };
                let pod = (*by_name.get(&(namespace.as_str(), name.as_str()))?).clone();
                let (client, recorder, assumed) = (client.clone(), recorder.clone(), assumed.clone());
                Some(async move { carry_out(&client, &recorder, &assumed, &pod, decision).await })
            });
            let all = super::run_all(writes).await;
            (!all).then_some(Duration::from_secs(1))
        }
    });
}

/// Binds a pod, or says why it cannot be.
async fn carry_out(
    client: &Client,
    recorder: &Recorder,
    assumed: &Mutex<HashMap<String, String>>,
    pod: &Pod,
    decision: Decision,
) -> bool {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match decision {
        Decision::Bind { node, .. } => {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let result: kube::Result<serde_json::Value> =
                api.create_subresource("binding", &name, &PostParams::default(), &binding).await;
            if !super::report(result, "pod binding", &name) {
                return false;
            }
            assumed.lock().expect("assumed").insert(pod.metadata.uid.clone().unwrap_or_default(), node.clone());
            recorder
                .record(
                    &Involved::of(pod),
                    &Event::normal("Scheduled", format!("Successfully assigned {namespace}/{name} to {node}")),
                )
                .await;
            true
        }
        Decision::SelectNode { node, claims, .. } => {
            let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
                Api::namespaced(client.clone(), &namespace);
            let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
            let mut all = true;
            for claim in claims {
                all &= super::report(
                    api.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "persistentvolumeclaim",
                    &claim,
                );
            }
            all
        }
        Decision::Unschedulable { message, .. } => {
            let current = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
            if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&message)) {
                return true;
            }
            let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastProbeTime": null, "lastTransitionTime": crate::client::now()});
            let mut conditions: Vec<serde_json::Value> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.type_ != "PodScheduled")
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            conditions.push(condition);
            let patch = json!({"metadata": {"uid": pod.metadata.uid}, "status": {"conditions": conditions}});
            let written = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            recorder.record(&Involved::of(pod), &Event::warning("FailedScheduling", message)).await;
            super::report(written, "pod", &name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, cpu: Option<&str>, extra: serde_json::Value) -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": cpu.map(|c| json!({"cpu": c}))}}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn no_fitting_node_is_said_node_by_node_as_kube_scheduler_does() {
        let small = node("small", "1", json!({}), json!([]));
        let tainted =
            node("tainted", "8", json!({}), json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]));
        let greedy = pod("greedy", Some("2"), json!({}));
        let decisions = schedule(&[&greedy], &[&small, &tainted], &Storage::default(), &HashMap::new());
        assert_eq!(
            decisions,
            [Decision::Unschedulable {
                namespace: "default".into(),
                pod: "greedy".into(),
                message:
                    "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}."
                        .into()
            }]
        );
        let tolerant = pod("tolerant", Some("2"), json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        let decisions = schedule(&[&tolerant], &[&small, &tainted], &Storage::default(), &HashMap::new());
        assert!(matches!(&decisions[0], Decision::Bind { node, .. } if node == "tainted"), "{decisions:?}");
    }

    #[test]
    fn selectors_affinity_and_readiness_filter_nodes() {
        let ssd = node("ssd", "4", json!({"disk": "ssd", "zone": "a"}), json!([]));
        let hdd = node("hdd", "4", json!({"disk": "hdd", "zone": "b"}), json!([]));
        let selected = pod("p", None, json!({"nodeSelector": {"disk": "ssd"}}));
        assert!(
            matches!(&schedule(&[&selected], &[&ssd, &hdd], &Storage::default(), &HashMap::new())[0], Decision::Bind { node, .. } if node == "ssd")
        );
        let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}}});
        let anti = pod("q", None, affinity);
        assert!(
            matches!(&schedule(&[&anti], &[&ssd, &hdd], &Storage::default(), &HashMap::new())[0], Decision::Bind { node, .. } if node == "hdd")
        );
        let mut down = hdd.clone();
        down.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let Decision::Unschedulable { message, .. } =
            &schedule(&[&anti], &[&ssd, &down], &Storage::default(), &HashMap::new())[0]
        else {
            panic!()
        };
        assert_eq!(
            message,
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        );
    }

    #[test]
    fn pods_placed_in_one_pass_count_on_their_node_and_spread() {
        let a = node("a", "2", json!({}), json!([]));
        let b = node("b", "2", json!({}), json!([]));
        let owner =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs", "controller": true}]);
        let mut pods: Vec<Pod> = (0..4).map(|i| pod(&format!("p{i}"), Some("500m"), json!({}))).collect();
        for p in &mut pods {
            p.metadata.owner_references = serde_json::from_value(owner.clone()).unwrap();
        }
        let refs: Vec<&Pod> = pods.iter().collect();
        let decisions = schedule(&refs, &[&a, &b], &Storage::default(), &HashMap::new());
        let on_a = decisions.iter().filter(|d| matches!(d, Decision::Bind { node, .. } if node == "a")).count();
        assert_eq!(on_a, 2, "{decisions:?}");
        // Bound as decided, they leave no room for a pod of 2 CPUs.
        for (pod, decision) in pods.iter_mut().zip(&decisions) {
            let Decision::Bind { node, .. } = decision else { panic!("{decision:?}") };
            pod.spec.as_mut().unwrap().node_name = Some(node.clone());
        }
        let big = pod("big", Some("2"), json!({}));
        let refs: Vec<&Pod> = pods.iter().chain([&big]).collect();
        let last = schedule(&refs, &[&a, &b], &Storage::default(), &HashMap::new()).pop().unwrap();
        assert!(
            matches!(last, Decision::Unschedulable { ref message, .. } if message == "0/2 nodes are available: 2 Insufficient cpu."),
            "{last:?}"
        );
    }
}
