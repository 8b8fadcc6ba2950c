//! The node's own objects, as kubelet keeps them: the Node (registered at start, with the
//! addresses and port the API server reaches this node's endpoint by, its capacity and a
//! Ready condition) and its Lease in `kube-node-lease`, renewed every 10 s.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use axum::http::Method;
use serde_json::{Value, json};

use super::client::ApiClient;

/// kubelet's nodeLeaseDurationSeconds; it renews at a quarter of it.
const LEASE_SECONDS: u64 = 40;
const RENEW_INTERVAL: Duration = Duration::from_secs(LEASE_SECONDS / 4);
const MERGE_PATCH: &str = "application/merge-patch+json";

/// What the node says of itself.
pub struct NodeIdentity {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub pod_cidr: String,
}

/// `…T12:34:56Z` (metav1.Time) or `…T12:34:56.123456Z` (metav1.MicroTime), now.
fn now(micro: bool) -> String {
    let nanos = runtime::logs::rfc3339_nano(SystemTime::now());
    format!("{}Z", &nanos[..if micro { 26 } else { 19 }])
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The Node object this node registers.
pub fn node_object(node: &NodeIdentity) -> Value {
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let os_image = read_trimmed("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into());
    let memory_kib = read_trimmed("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{memory_kib}Ki"), "pods": "110"});
    let arch = images::Platform::host().architecture;
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
            },
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.address.to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node.port}},
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "podctl node is posting ready status",
                "lastHeartbeatTime": now(false),
                "lastTransitionTime": now(false),
            }],
            "nodeInfo": {
                "machineID": read_trimmed("/etc/machine-id"),
                "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
                "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": kernel,
                "osImage": os_image,
                "containerRuntimeVersion": concat!("podctl://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": concat!("v1.33.0-podctl.", env!("CARGO_PKG_VERSION")),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        },
    })
}

/// Creates the Node, or brings an existing one's status (addresses, port, Ready) up to date.
pub async fn register(client: &ApiClient, node: &NodeIdentity) -> Result<()> {
    let object = node_object(node);
    match client.request(Method::POST, "/api/v1/nodes", "application/json", Some(&object)).await? {
        (201 | 200, _) => Ok(()),
        (409, _) => {
            let path = format!("/api/v1/nodes/{}/status", node.name);
            let patch = json!({"status": object["status"]});
            match client.request(Method::PATCH, &path, MERGE_PATCH, Some(&patch)).await? {
                (200, _) => Ok(()),
                (code, answer) => bail!("update node {}: {code}: {}", node.name, message(&answer)),
            }
        }
        (code, answer) => bail!("register node {}: {code}: {}", node.name, message(&answer)),
    }
}

/// Renews the node's Lease every 10 s, creating it if it is missing. Runs until dropped;
/// a failed renewal is logged and tried again at the next tick.
pub async fn renew_lease(client: ApiClient, name: String) {
    let mut tick = tokio::time::interval(RENEW_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = renew_once(&client, &name).await {
            tracing::warn!("renew lease of node {name}: {e:#}");
        }
    }
}

async fn renew_once(client: &ApiClient, name: &str) -> Result<()> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now(true)});
    match client.request(Method::PATCH, &path, MERGE_PATCH, Some(&json!({"spec": spec}))).await? {
        (200, _) => Ok(()),
        (404, _) => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            });
            let collection = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
            match client.request(Method::POST, collection, "application/json", Some(&lease)).await? {
                (201 | 200 | 409, _) => Ok(()),
                (code, answer) => bail!("{code}: {}", message(&answer)),
            }
        }
        (code, answer) => bail!("{code}: {}", message(&answer)),
    }
}

fn message(answer: &Value) -> String {
    answer["message"].as_str().map_or_else(|| answer.to_string(), String::from)
}
