//! A pod's sandbox on the node's network, shared by `podctl run` and the node agent: the
//! address it gets on the bridge, and the removal of everything it leaves (processes,
//! mounts, state, address, logs).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use runtime::{NetworkMode, Pod, Runtime};

/// Gives the pod its address on the node's bridge, and names it in the pod's /etc/hosts
/// (`hosts` of the address).
pub fn attach_network(
    runtime: &Runtime,
    network: &net::PodNetwork,
    pod: &Pod,
    hosts: &dyn Fn(Ipv4Addr) -> String,
) -> Result<Ipv4Addr> {
    let address = network.setup(pod.uid(), &pod.dirs.netns).with_context(|| format!("pod {}: network", pod.name()))?;
    runtime.write_hosts(pod, &hosts(address.address))?;
    Ok(address.address)
}

/// The directory of the pod's container logs (`LOG_DIR/<ns>_<name>_<uid>`).
pub fn log_dir(log_root: &Path, spec: &runtime::PodSpec) -> std::path::PathBuf {
    log_root.join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid))
}

/// Removes the pod, its address and its logs.
pub fn remove(runtime: &Runtime, network: &net::PodNetwork, pod: &Pod, log_root: &Path) -> Result<()> {
    runtime.remove_pod(pod)?;
    if pod.record.spec.network == NetworkMode::Pod {
        network.teardown(pod.uid(), &pod.dirs.netns)?;
    }
    Ok(runtime::state::remove_dir_all_if_present(&log_dir(log_root, &pod.record.spec))?)
}
