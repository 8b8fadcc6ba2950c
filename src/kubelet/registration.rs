//! The node's own objects, as kubelet keeps them: the Node (registered at start, with the
//! addresses and port the API server reaches this node's endpoint by, its capacity and a
//! Ready condition) and its Lease in `kube-node-lease`, renewed every 10 s.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// kubelet's nodeLeaseDurationSeconds; it renews at a quarter of it.
const LEASE_SECONDS: u64 = 40;
const RENEW_INTERVAL: Duration = Duration::from_secs(LEASE_SECONDS / 4);

/// What the node says of itself.
pub struct NodeIdentity {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub pod_cidr: String,
    pub capacity: Capacity,
}

/// What the node offers pods: its CPUs, memory and pod slots.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: usize,
}

impl Capacity {
    pub fn of_machine(pods: usize) -> Capacity {
        let memory_kib = read_trimmed("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        Capacity { cpu_millis: cpus * 1000, memory_bytes: memory_kib * 1024, pods }
    }
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
    let c = &node.capacity;
    let capacity = json!({
        "cpu": format!("{}", c.cpu_millis / 1000),
        "memory": format!("{}Ki", c.memory_bytes / 1024),
        "pods": c.pods.to_string(),
    });
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
pub async fn register(client: &kube::Client, node: &NodeIdentity) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let object = node_object(node);
    let typed: Node = serde_json::from_value(object.clone()).context("the Node object")?;
    match nodes.create(&PostParams::default(), &typed).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = Patch::Merge(json!({"status": object["status"]}));
            nodes
                .patch_status(&node.name, &PatchParams::default(), &patch)
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("update node {}: {}", node.name, message(&e)))
        }
        Err(e) => bail!("register node {}: {}", node.name, message(&e)),
    }
}

/// Renews the node's Lease every 10 s, creating it if it is missing. Runs until dropped;
/// a failed renewal is logged and tried again at the next tick.
pub async fn renew_lease(client: kube::Client, name: String) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(RENEW_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = renew_once(&leases, &name).await {
            tracing::warn!("renew lease of node {name}: {e:#}");
        }
    }
}

async fn renew_once(leases: &Api<Lease>, name: &str) -> Result<()> {
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now(true)});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            }))?;
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => bail!("{}", message(&e)),
            }
        }
        Err(e) => bail!("{}", message(&e)),
    }
}

/// What the API server said, or why it could not be asked.
fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{}: {}", status.code, status.message),
        other => other.to_string(),
    }
}
