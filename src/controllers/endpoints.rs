//! The Endpoints, EndpointSlice and EndpointSlice mirroring controllers
//! (kube-controller-manager's endpoint, endpointslice and endpointslicemirroring): for
//! every Service with a selector, the pods it selects, with their readiness, grouped by
//! the ports they resolve the Service's target ports to (a named target port can be a
//! different number in each pod); for a Service without one, the Endpoints written by
//! hand, mirrored into slices.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::{Informer, Informers};
use super::objects::{controller_ref, is_ready, is_terminal};
use crate::labels::map_matches;

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub const MIRRORING_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
/// The annotation the endpoints controller marks its Endpoints with; the ones without it
/// (written by hand for a Service without selector) are never touched.
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// At most this many endpoints in one slice (kube-controller-manager's default).
const SLICE_SIZE: usize = 100;

/// One of a Service's ports, as a pod resolves it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// A selected pod as an endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint<'a> {
    pub pod: &'a Pod,
    pub ip: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// The Service's ports as `pod` resolves them; None when a named target port is one the
/// pod does not have (the pod is left out for that port set, as kube does).
fn resolve_ports(service: &Service, pod: &Pod) -> Vec<ResolvedPort> {
    let spec = service.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let number = match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(name)) => pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                .map(|p| p.container_port),
        };
        if let Some(number) = number {
            ports.push(ResolvedPort {
                name: port.name.clone(),
                port: number,
                protocol,
                app_protocol: port.app_protocol.clone(),
            });
        }
    }
    ports
}

/// The Service's selected pods that have an address, grouped by resolved ports; the
/// groups in a stable order.
pub fn endpoints_of<'a>(service: &Service, pods: &[&'a Pod]) -> BTreeMap<Vec<ResolvedPort>, Vec<Endpoint<'a>>> {
    let spec = service.spec.clone().unwrap_or_default();
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else { return BTreeMap::new() };
    let publish_unready = spec.publish_not_ready_addresses == Some(true);
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        if !map_matches(selector, pod.metadata.labels.as_ref()) || is_terminal(pod) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else { continue };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = publish_unready || is_ready(pod);
        let endpoint = Endpoint { pod, ip, ready: serving && (!terminating || publish_unready), serving, terminating };
        groups.entry(resolve_ports(service, pod)).or_default().push(endpoint);
    }
    for endpoints in groups.values_mut() {
        endpoints.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.pod.metadata.name.cmp(&b.pod.metadata.name)));
    }
    groups
}

fn target_ref(pod: &Pod) -> Value {
    json!({"kind": "Pod", "namespace": pod.metadata.namespace, "name": pod.metadata.name, "uid": pod.metadata.uid})
}

/// The hostname a pod has in its Service's DNS, when it names the Service as its subdomain.
fn hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()).then(|| spec.hostname.clone()).flatten()
}

/// The Endpoints object of a Service with a selector (its subsets; not-ready pods in
/// `notReadyAddresses`; terminating ones left out).
pub fn desired_endpoints(service: &Service, pods: &[&Pod]) -> Value {
    let mut subsets = Vec::new();
    for (ports, endpoints) in endpoints_of(service, pods) {
        let address = |e: &Endpoint| {
            let mut address = json!({"ip": e.ip, "targetRef": target_ref(e.pod)});
            if let Some(node) = e.pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                address["nodeName"] = node.into();
            }
            if let Some(hostname) = hostname(service, e.pod) {
                address["hostname"] = hostname.into();
            }
            address
        };
        let live: Vec<&Endpoint> = endpoints.iter().filter(|e| !e.terminating || e.ready).collect();
        let ready: Vec<Value> = live.iter().filter(|e| e.ready).map(|e| address(e)).collect();
        let unready: Vec<Value> = live.iter().filter(|e| !e.ready).map(|e| address(e)).collect();
        if ready.is_empty() && unready.is_empty() {
            continue;
        }
        let ports: Vec<Value> = ports.iter().map(port_json).collect();
        let mut subset = json!({"ports": ports});
        if !ready.is_empty() {
            subset["addresses"] = ready.into();
        }
        if !unready.is_empty() {
            subset["notReadyAddresses"] = unready.into();
        }
        subsets.push(subset);
    }
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service.metadata.name, "namespace": service.metadata.namespace, "labels": labels},
        "subsets": subsets,
    })
}

fn port_json(port: &ResolvedPort) -> Value {
    let mut value = json!({"port": port.port, "protocol": port.protocol});
    if let Some(name) = &port.name {
        value["name"] = name.clone().into();
    }
    if let Some(app) = &port.app_protocol {
        value["appProtocol"] = app.clone().into();
    }
    value
}

/// What a sync of the Services' endpoints does.
#[derive(Debug, PartialEq)]
pub enum Action {
    Create(Value),
    /// Replace an object's contents (labels, and subsets or endpoints and ports).
    Patch {
        namespace: String,
        name: String,
        patch: Value,
    },
    Delete {
        namespace: String,
        name: String,
    },
}

/// The Services whose endpoints the controllers keep (with a selector, not
/// ExternalName), each with the pods of its namespace.
fn with_selector<'a, 'p>(services: &[&'a Service], pods: &[&'p Pod]) -> Vec<(&'a Service, Vec<&'p Pod>)> {
    services
        .iter()
        .filter(|service| {
            let spec = service.spec.as_ref();
            spec.and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty())
                && spec.and_then(|s| s.type_.as_deref()) != Some("ExternalName")
        })
        .map(|service| {
            let namespace = service.metadata.namespace.as_deref();
            (*service, pods.iter().copied().filter(|p| p.metadata.namespace.as_deref() == namespace).collect())
        })
        .collect()
}

/// The Endpoints to write: one per Service with a selector, and none left of ours for a
/// Service that is gone or has lost its selector.
pub fn sync_endpoints(services: &[&Service], pods: &[&Pod], existing: &[&Endpoints]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut wanted = HashSet::new();
    for (service, in_namespace) in with_selector(services, pods) {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        wanted.insert((namespace.clone(), name.clone()));
        let mut desired = desired_endpoints(service, &in_namespace);
        let current = existing
            .iter()
            .find(|e| e.metadata.namespace.as_deref() == Some(&namespace) && e.metadata.name.as_deref() == Some(&name));
        match current {
            None => {
                desired["metadata"]["annotations"] = json!({TRIGGER_TIME: crate::client::now()});
                actions.push(Action::Create(desired));
            }
            Some(current) => {
                let subsets = serde_json::to_value(current.subsets.clone().unwrap_or_default()).unwrap_or_default();
                let labels = json!(current.metadata.labels.clone().unwrap_or_default());
                if subsets != desired["subsets"] || labels != desired["metadata"]["labels"] {
                    let patch = json!({
                        "metadata": {"labels": desired["metadata"]["labels"], "annotations": {TRIGGER_TIME: crate::client::now()}},
                        "subsets": desired["subsets"],
                    });
                    actions.push(Action::Patch { namespace, name, patch });
                }
            }
        }
    }
    for endpoints in existing {
        let key = (
            endpoints.metadata.namespace.clone().unwrap_or_default(),
            endpoints.metadata.name.clone().unwrap_or_default(),
        );
        let ours = endpoints.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(TRIGGER_TIME));
        if ours && !wanted.contains(&key) {
            actions.push(Action::Delete { namespace: key.0, name: key.1 });
        }
    }
    actions
}

/// A slice's endpoints and ports, as it is written.
fn slice_content(service: &Service, ports: &[ResolvedPort], endpoints: &[Endpoint]) -> (Value, Value) {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let mut endpoint = json!({
                "addresses": [e.ip],
                "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                "targetRef": target_ref(e.pod),
            });
            if let Some(node) = e.pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                endpoint["nodeName"] = node.into();
            }
            if let Some(hostname) = hostname(service, e.pod) {
                endpoint["hostname"] = hostname.into();
            }
            endpoint
        })
        .collect();
    (endpoints.into(), ports.iter().map(port_json).collect::<Vec<_>>().into())
}

fn slice_labels(service: &Service) -> Value {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY.into(), SLICE_CONTROLLER.into());
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    json!(labels)
}

/// The EndpointSlices to write for every Service with a selector: one slice per port set
/// (split every 100 endpoints), existing slices reused in place, the extra ones deleted.
/// A Service that is gone takes its slices with it (they are owned by it).
pub fn sync_slices(services: &[&Service], pods: &[&Pod], existing: &[&EndpointSlice]) -> Vec<Action> {
    let mut actions = Vec::new();
    for (service, in_namespace) in with_selector(services, pods) {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let mut desired: Vec<(Value, Value)> = Vec::new();
        for (ports, endpoints) in endpoints_of(service, &in_namespace) {
            for chunk in endpoints.chunks(SLICE_SIZE) {
                desired.push(slice_content(service, &ports, chunk));
            }
        }
        if desired.is_empty() {
            // A Service with no endpoints still has one slice, empty: a placeholder, as
            // kube-controller-manager keeps.
            desired.push(slice_content(service, &[], &[]));
        }
        let reference = controller_ref("v1", "Service", &service.metadata);
        actions.extend(reconcile_slices(
            &namespace,
            &name,
            SLICE_CONTROLLER,
            &slice_labels(service),
            &reference,
            desired,
            existing,
        ));
    }
    actions
}

/// The writes that make a Service's slices of one manager (`managed_by`) say `desired`
/// (endpoints and ports of each): slices that already say one are kept, others rewritten
/// in place, the rest made or deleted.
fn reconcile_slices(
    namespace: &str,
    service: &str,
    managed_by: &str,
    labels: &Value,
    owner: &Value,
    desired: Vec<(Value, Value)>,
    existing: &[&EndpointSlice],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut mine: Vec<&EndpointSlice> = existing
        .iter()
        .copied()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            labels.and_then(|l| l.get(SERVICE_NAME)).map(String::as_str) == Some(service)
                && labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(managed_by)
        })
        .collect();
    mine.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let content = |s: &EndpointSlice| {
        (
            serde_json::to_value(&s.endpoints).unwrap_or_default(),
            serde_json::to_value(s.ports.clone().unwrap_or_default()).unwrap_or_default(),
        )
    };
    let patch_of = |slice: &EndpointSlice, patch: Value| Action::Patch {
        namespace: namespace.to_string(),
        name: slice.metadata.name.clone().unwrap_or_default(),
        patch,
    };
    let mut unmatched: Vec<(Value, Value)> = Vec::new();
    for wanted in desired {
        match mine.iter().position(|s| content(s) == wanted) {
            Some(i) => {
                let slice = mine.remove(i);
                if json!(slice.metadata.labels.clone().unwrap_or_default()) != *labels {
                    actions.push(patch_of(slice, json!({"metadata": {"labels": labels}})));
                }
            }
            None => unmatched.push(wanted),
        }
    }
    for (endpoints, ports) in unmatched {
        match mine.pop() {
            Some(slice) => {
                actions.push(patch_of(
                    slice,
                    json!({"metadata": {"labels": labels}, "endpoints": endpoints, "ports": ports}),
                ));
            }
            None => actions.push(Action::Create(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "generateName": format!("{service}-"),
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [owner],
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            }))),
        }
    }
    for extra in mine {
        actions.push(Action::Delete {
            namespace: namespace.to_string(),
            name: extra.metadata.name.clone().unwrap_or_default(),
        });
    }
    actions
}

/// The EndpointSlices of Services without a selector whose Endpoints someone else
/// writes (kube-controller-manager's endpointslicemirroring): each subset a slice, its
/// addresses ready, its notReadyAddresses not; none for Endpoints labelled
/// `endpointslice.kubernetes.io/skip-mirror` (the API server's own). Slices it made for
/// what no longer qualifies are deleted.
pub fn sync_mirrored(services: &[&Service], endpoints: &[&Endpoints], existing: &[&EndpointSlice]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut mirrored = HashSet::new();
    for service in services {
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty())
            || spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName")
        {
            continue;
        }
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let Some(source) = endpoints
            .iter()
            .find(|e| e.metadata.namespace.as_deref() == Some(&namespace) && e.metadata.name.as_deref() == Some(&name))
        else {
            continue;
        };
        let annotations = source.metadata.annotations.as_ref();
        let labels = source.metadata.labels.clone().unwrap_or_default();
        if labels.get("endpointslice.kubernetes.io/skip-mirror").map(String::as_str) == Some("true")
            || annotations.is_some_and(|a| a.contains_key(TRIGGER_TIME))
        {
            continue;
        }
        mirrored.insert((namespace.clone(), name.clone()));
        let desired: Vec<(Value, Value)> = source
            .subsets
            .iter()
            .flatten()
            .map(|subset| {
                let endpoint = |a: &k8s_openapi::api::core::v1::EndpointAddress, ready: bool| {
                    let mut endpoint = json!({"addresses": [a.ip], "conditions": {"ready": ready}});
                    for (field, value) in [("nodeName", &a.node_name), ("hostname", &a.hostname)] {
                        if let Some(value) = value {
                            endpoint[field] = value.clone().into();
                        }
                    }
                    if let Some(target) = &a.target_ref {
                        endpoint["targetRef"] = serde_json::to_value(target).unwrap_or_default();
                    }
                    endpoint
                };
                let ready = subset.addresses.iter().flatten().map(|a| endpoint(a, true));
                let unready = subset.not_ready_addresses.iter().flatten().map(|a| endpoint(a, false));
                let ports: Vec<Value> =
                    subset.ports.iter().flatten().filter_map(|p| serde_json::to_value(p).ok()).collect();
                (Value::Array(ready.chain(unready).collect()), Value::Array(ports))
            })
            .collect();
        let mut slice_labels = labels;
        slice_labels.insert(SERVICE_NAME.into(), name.clone());
        slice_labels.insert(MANAGED_BY.into(), MIRRORING_CONTROLLER.into());
        let reference = controller_ref("v1", "Endpoints", &source.metadata);
        actions.extend(reconcile_slices(
            &namespace,
            &name,
            MIRRORING_CONTROLLER,
            &json!(slice_labels),
            &reference,
            desired,
            existing,
        ));
    }
    for slice in existing {
        let labels = slice.metadata.labels.as_ref();
        if labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) != Some(MIRRORING_CONTROLLER) {
            continue;
        }
        let key = (
            slice.metadata.namespace.clone().unwrap_or_default(),
            labels.and_then(|l| l.get(SERVICE_NAME)).cloned().unwrap_or_default(),
        );
        if !mirrored.contains(&key) {
            actions.push(Action::Delete { namespace: key.0, name: slice.metadata.name.clone().unwrap_or_default() });
        }
    }
    actions
}

/// Keeps the Services' Endpoints until the process ends.
pub fn start_endpoints(client: Client, informers: &Arc<Informers>) {
    start(client, informers, Informers::pods, Informers::endpoints, sync_endpoints);
}

/// Keeps the Services' EndpointSlices until the process ends.
pub fn start_slices(client: Client, informers: &Arc<Informers>) {
    start(client, informers, Informers::pods, Informers::slices, sync_slices);
}

/// Mirrors the Endpoints of Services without a selector into EndpointSlices until the
/// process ends.
pub fn start_mirroring(client: Client, informers: &Arc<Informers>) {
    start(client, informers, Informers::endpoints, Informers::slices, sync_mirrored);
}

/// What a controller of endpoints derives from the Services and its sources (pods, or
/// Endpoints), and the objects of its kind there are.
type Derive<S, K> = fn(&[&Service], &[&S], &[&K]) -> Vec<Action>;

/// Keeps the objects of kind `K` that `derive` makes of Services and sources `S`.
fn start<S, K>(
    client: Client,
    informers: &Arc<Informers>,
    sources: fn(&Informers) -> &Informer<S>,
    existing: fn(&Informers) -> &Informer<K>,
    derive: Derive<S, K>,
) where
    S: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let wake = Arc::new(Notify::new());
    informers.services().subscribe(&wake);
    sources(informers).subscribe(&wake);
    existing(informers).subscribe(&wake);
    let informers = informers.clone();
    super::level_triggered(wake, move || {
        let (client, informers) = (client.clone(), informers.clone());
        async move {
            if !(informers.services().ready().await
                && sources(&informers).ready().await
                && existing(&informers).ready().await)
            {
                return None;
            }
            let (services, from, current) =
                (informers.services().all(), sources(&informers).all(), existing(&informers).all());
            let actions = derive(&super::refs(&services), &super::refs(&from), &super::refs(&current));
            apply::<K>(&client, actions).await
        }
    });
}

/// Writes the actions; asks to look again soon when one failed.
async fn apply<K>(client: &Client, actions: Vec<Action>) -> Option<std::time::Duration>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let writes = actions.into_iter().map(|action| {
        let client = client.clone();
        async move {
            match action {
                Action::Create(object) => {
                    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                    let name = object["metadata"]["name"]
                        .as_str()
                        .or(object["metadata"]["generateName"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let Ok(typed) = serde_json::from_value::<K>(object) else { return false };
                    let api: Api<K> = Api::namespaced(client, &namespace);
                    super::report(api.create(&PostParams::default(), &typed).await, &K::kind(&()), &name)
                }
                Action::Patch { namespace, name, patch } => {
                    let api: Api<K> = Api::namespaced(client, &namespace);
                    super::report(
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                        &K::kind(&()),
                        &name,
                    )
                }
                Action::Delete { namespace, name } => {
                    let api: Api<K> = Api::namespaced(client, &namespace);
                    super::report_delete(api.delete(&name, &DeleteParams::default()).await, &K::kind(&()), &name)
                }
            }
        }
    });
    (!super::run_all(writes).await).then_some(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(target_port: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target_port}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, port: i32, ready: bool, deleting: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"},
                "deletionTimestamp": if deleting { Some("2026-01-01T00:00:00Z") } else { None }},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "x", "ports": [{"name": "web", "containerPort": port}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_readiness_splits_addresses() {
        let svc = service(json!("web"));
        let (a, b, c) = (
            pod("a", "10.0.0.1", 8080, true, false),
            pod("b", "10.0.0.2", 9090, true, false),
            pod("c", "10.0.0.3", 8080, false, false),
        );
        let endpoints = desired_endpoints(&svc, &[&a, &b, &c]);
        let subsets = endpoints["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2, "{endpoints}");
        assert_eq!(subsets[0]["ports"][0]["port"], 8080);
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(subsets[1]["ports"][0]["port"], 9090);
    }

    #[test]
    fn slices_say_ready_serving_and_terminating_and_are_reused_in_place() {
        let svc = service(json!(8080));
        let (up, going) = (pod("a", "10.0.0.1", 8080, true, false), pod("b", "10.0.0.2", 8080, true, true));
        let actions = sync_slices(&[&svc], &[&up, &going], &[]);
        let [Action::Create(slice)] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME], "web");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        let conditions: Vec<&Value> = slice["endpoints"].as_array().unwrap().iter().map(|e| &e["conditions"]).collect();
        assert_eq!(conditions[0], &json!({"ready": true, "serving": true, "terminating": false}));
        assert_eq!(conditions[1], &json!({"ready": false, "serving": true, "terminating": true}));

        let mut existing: EndpointSlice = serde_json::from_value(slice.clone()).unwrap();
        existing.metadata.name = Some("web-abcde".into());
        assert_eq!(sync_slices(&[&svc], &[&up, &going], &[&existing]), vec![]);
        let actions = sync_slices(&[&svc], &[&up], &[&existing]);
        let [Action::Patch { name, patch, .. }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(name, "web-abcde");
        assert_eq!(patch["endpoints"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn endpoints_written_by_hand_are_mirrored_into_slices() {
        let selectorless: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default"}, "spec": {"ports": [{"port": 5432}]}}))
        .unwrap();
        let by_hand: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "ep-uid"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "notReadyAddresses": [{"ip": "192.0.2.11"}],
                "ports": [{"port": 5432, "protocol": "TCP"}]}]}))
        .unwrap();
        let actions = sync_mirrored(&[&selectorless], &[&by_hand], &[]);
        let [Action::Create(slice)] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(slice["metadata"]["labels"][MANAGED_BY], MIRRORING_CONTROLLER);
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Endpoints");
        assert_eq!(slice["endpoints"][0], json!({"addresses": ["192.0.2.10"], "conditions": {"ready": true}}));
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slice["ports"], json!([{"port": 5432, "protocol": "TCP"}]));

        // Once the Service has a selector, the mirror goes.
        let mut mirrored: EndpointSlice = serde_json::from_value(slice.clone()).unwrap();
        mirrored.metadata.name = Some("db-x".into());
        let mut selected = selectorless.clone();
        selected.spec.as_mut().unwrap().selector = Some([("app".to_string(), "db".to_string())].into());
        assert_eq!(
            sync_mirrored(&[&selected], &[&by_hand], &[&mirrored]),
            vec![Action::Delete { namespace: "default".into(), name: "db-x".into() }]
        );
    }
}
