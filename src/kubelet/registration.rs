//! The node's own objects, as kubelet keeps them: the Node (registered at start, with the
//! addresses and port the API server reaches this node's endpoint by; its status —
//! capacity, conditions computed from the machine, images — looked at every 10 s and
//! written when it changes, or every 5 minutes) and its Lease in `kube-node-lease`,
//! renewed every 10 s.

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

/// kubelet's nodeStatusUpdateFrequency and nodeStatusReportFrequency.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
const REPORT_INTERVAL: Duration = Duration::from_secs(300);

/// What the node says of itself.
pub struct NodeIdentity {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub pod_cidr: String,
    pub capacity: Capacity,
    /// `--node-labels` and `--register-with-taints` (Taint objects), set at registration.
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Value>,
    /// The file system of the node's data (ephemeral storage, disk pressure).
    pub data_dir: std::path::PathBuf,
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
        let memory_kib = meminfo_kib("MemTotal:").unwrap_or(0);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        Capacity { cpu_millis: cpus * 1000, memory_bytes: memory_kib * 1024, pods }
    }
}

/// `…T12:34:56Z` (metav1.Time) or `…T12:34:56.123456Z` (metav1.MicroTime), now.
fn now(micro: bool) -> String {
    let nanos = runtime::logs::rfc3339_nano(SystemTime::now());
    format!("{}Z", &nanos[..if micro { 26 } else { 19 }])
}

/// A figure of /proc/meminfo (`MemTotal:`, `MemAvailable:`…), in KiB.
pub fn meminfo_kib(key: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse().ok())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// (type, pressure, reason, message) of the pressure conditions, as kubelet's eviction
/// manager reads its default thresholds: memory.available < 100Mi, nodefs.available < 10%,
/// and processes over 90 % of pid_max.
fn pressures(data_dir: &std::path::Path) -> [(&'static str, bool, &'static str, &'static str); 3] {
    let memory = meminfo_kib("MemAvailable:").is_some_and(|available| available < 100 * 1024);
    let disk = nix::sys::statvfs::statvfs(data_dir)
        .is_ok_and(|fs| fs.blocks() > 0 && (fs.blocks_available() as f64) < 0.1 * fs.blocks() as f64);
    let pid_max: u64 = read_trimmed("/proc/sys/kernel/pid_max").parse().unwrap_or(u64::MAX);
    let processes = std::fs::read_dir("/proc").map_or(0, |d| {
        d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())).count()
    }) as u64;
    let pids = processes * 10 > pid_max * 9;
    [
        (
            "MemoryPressure",
            memory,
            if memory { "KubeletHasInsufficientMemory" } else { "KubeletHasSufficientMemory" },
            if memory {
                "kubelet has insufficient memory available"
            } else {
                "kubelet has sufficient memory available"
            },
        ),
        (
            "DiskPressure",
            disk,
            if disk { "KubeletHasDiskPressure" } else { "KubeletHasNoDiskPressure" },
            if disk { "kubelet has disk pressure" } else { "kubelet has no disk pressure" },
        ),
        (
            "PIDPressure",
            pids,
            if pids { "KubeletHasInsufficientPID" } else { "KubeletHasSufficientPID" },
            if pids { "kubelet has insufficient PID available" } else { "kubelet has sufficient PID available" },
        ),
    ]
}

/// The node's conditions, keeping each one's transition time while its status holds.
fn conditions(node: &NodeIdentity, previous: &[Value]) -> Vec<Value> {
    let mut conditions: Vec<(&str, bool, &str, &str)> = pressures(&node.data_dir).to_vec();
    conditions.push(("Ready", true, "KubeletReady", "podctl node is posting ready status"));
    let now = now(false);
    conditions
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let status = if status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c["type"] == kind && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .map_or_else(|| now.clone(), String::from);
            json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": since})
        })
        .collect()
}

/// The images in the store, as kubelet lists them (names, size).
fn image_list(store: &images::Store) -> Value {
    let images = store.images().unwrap_or_default();
    let mut listed: Vec<Value> = images
        .iter()
        .map(|image| {
            let size: i64 = image.manifest.layers().iter().map(|l| l.size() as i64).sum::<i64>()
                + image.manifest.config().size() as i64;
            let mut names = image.names.clone();
            if let Some(name) = image.names.first().and_then(|n| n.rsplit_once(':')).map(|(repo, _)| repo) {
                names.push(format!("{name}@{}", image.manifest_digest));
            }
            json!({"names": names, "sizeBytes": size})
        })
        .collect();
    listed.sort_by_key(|i| std::cmp::Reverse(i["sizeBytes"].as_i64()));
    listed.truncate(50);
    Value::Array(listed)
}

/// Where the local-path volumes of this node go (absolute: volumes name it as a hostPath).
pub fn storage_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()).join("storage")
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
    let storage = nix::sys::statvfs::statvfs(&node.data_dir).map_or(0, |fs| fs.blocks() * fs.fragment_size());
    let capacity = json!({
        "cpu": format!("{}", c.cpu_millis / 1000),
        "memory": format!("{}Ki", c.memory_bytes / 1024),
        "pods": c.pods.to_string(),
        "ephemeral-storage": format!("{}Ki", storage / 1024),
    });
    let arch = images::Platform::host().architecture;
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
    });
    for (key, value) in &node.labels {
        labels[key] = json!(value);
    }
    let mut spec = json!({"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]});
    if !node.taints.is_empty() {
        spec["taints"] = json!(node.taints);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": {
            // Where the local-path provisioner's volumes of this node go.
            crate::controllers::LOCAL_STORAGE: storage_dir(&node.data_dir),
        }},
        "spec": spec,
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.address.to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node.port}},
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions(node, &[]),
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
/// Returns the pod CIDR the Node has: the control plane's, when it gave an existing Node one.
pub async fn register(client: &kube::Client, node: &NodeIdentity) -> Result<Option<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let object = node_object(node);
    let typed: Node = serde_json::from_value(object.clone()).context("the Node object")?;
    let registered = match nodes.create(&PostParams::default(), &typed).await {
        Ok(registered) => registered,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let annotations = Patch::Merge(json!({"metadata": {"annotations": object["metadata"]["annotations"]}}));
            nodes
                .patch(&node.name, &PatchParams::default(), &annotations)
                .await
                .map_err(|e| anyhow::anyhow!("update node {}: {}", node.name, message(&e)))?;
            let patch = Patch::Merge(json!({"status": object["status"]}));
            nodes
                .patch_status(&node.name, &PatchParams::default(), &patch)
                .await
                .map_err(|e| anyhow::anyhow!("update node {}: {}", node.name, message(&e)))?
        }
        Err(e) => bail!("register node {}: {}", node.name, message(&e)),
    };
    Ok(registered.spec.and_then(|s| s.pod_cidr))
}

/// Looks at the node's status every 10 s and writes it when it changed (heartbeat times
/// aside) or 5 minutes went by. Runs until dropped.
pub async fn keep_status(client: kube::Client, node: NodeIdentity, store: images::Store) {
    let nodes: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    let mut reported: Option<(Value, std::time::Instant)> = None;
    loop {
        tick.tick().await;
        let previous =
            reported.as_ref().map(|(s, _)| s["conditions"].as_array().cloned().unwrap_or_default()).unwrap_or_default();
        let mut status = node_object(&node)["status"].take();
        status["conditions"] = json!(conditions(&node, &previous));
        status["images"] = image_list(&store);
        let without_heartbeats = |s: &Value| {
            let mut s = s.clone();
            for c in s["conditions"].as_array_mut().into_iter().flatten() {
                c.as_object_mut().map(|c| c.remove("lastHeartbeatTime"));
            }
            s
        };
        let due = match &reported {
            Some((last, at)) => {
                without_heartbeats(last) != without_heartbeats(&status) || at.elapsed() >= REPORT_INTERVAL
            }
            None => true,
        };
        if !due {
            continue;
        }
        match nodes.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => reported = Some((status, std::time::Instant::now())),
            Err(e) => tracing::warn!("node {} status: {}", node.name, message(&e)),
        }
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
