//! A pod's sandbox on the node's network, shared by `podctl run` and the node agent: the
//! address it gets on the bridge, its host ports, and the removal of everything it leaves
//! (processes, mounts, state, address, host ports, logs).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use runtime::{NetworkMode, Pod, Runtime};

/// Gives the pod its address on the node's bridge, names it in the pod's /etc/hosts
/// (`hosts` of the address), and forwards its host ports to it. A host port another pod
/// holds is refused, naming that pod.
pub fn attach_network(
    runtime: &Runtime,
    network: &net::PodNetwork,
    pod: &Pod,
    hosts: &dyn Fn(Ipv4Addr) -> String,
) -> Result<Ipv4Addr> {
    if !pod.record.spec.host_ports.is_empty() {
        refuse_taken_ports(runtime, pod)?;
    }
    let address = network.setup(pod.uid(), &pod.dirs.netns).with_context(|| format!("pod {}: network", pod.name()))?;
    runtime.write_hosts(pod, &hosts(address.address))?;
    if !pod.record.spec.host_ports.is_empty() {
        sync_host_ports(runtime, network).with_context(|| format!("pod {}: host ports", pod.name()))?;
    }
    Ok(address.address)
}

/// Refuses a host port another pod on the node's network holds, naming that pod.
fn refuse_taken_ports(runtime: &Runtime, pod: &Pod) -> Result<()> {
    let others = runtime.pods()?;
    for wanted in &pod.record.spec.host_ports {
        let taken = others
            .iter()
            .filter(|p| p.uid() != pod.uid() && p.record.spec.network == NetworkMode::Pod)
            .find(|p| p.record.spec.host_ports.iter().any(|held| held.overlaps(wanted)));
        if let Some(holder) = taken {
            let ip = wanted.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string());
            bail!(
                "pod {}: host port {ip}:{}/{} is already allocated to pod {}",
                pod.name(),
                wanted.host_port,
                wanted.protocol,
                holder.name()
            );
        }
    }
    Ok(())
}

/// Forwards the host ports of every pod on the node's network to its address: the rules
/// derived whole from the pods' records and leases, as any pod comes or goes.
pub fn sync_host_ports(runtime: &Runtime, network: &net::PodNetwork) -> Result<()> {
    let mut mappings = Vec::new();
    for pod in runtime.pods()?.iter().filter(|p| p.record.spec.network == NetworkMode::Pod) {
        let Some(pod_ip) = network.address(pod.uid())? else { continue };
        mappings.extend(pod.record.spec.host_ports.iter().map(|p| net::hostports::Mapping {
            host_ip: p.host_ip,
            host_port: p.host_port,
            pod_ip,
            pod_port: p.container_port,
            protocol: p.protocol.clone(),
        }));
    }
    Ok(network.sync_host_ports(&mappings)?)
}

/// The directory of the pod's container logs (`LOG_DIR/<ns>_<name>_<uid>`).
pub fn log_dir(log_root: &Path, spec: &runtime::PodSpec) -> std::path::PathBuf {
    log_root.join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid))
}

/// Removes the pod, its address and its logs. What it had on disk is moved aside for
/// [`sweep`] to delete, off the caller's path.
pub fn remove(runtime: &Runtime, network: &net::PodNetwork, pod: &Pod, log_root: &Path) -> Result<()> {
    runtime.remove_pod(pod)?;
    if pod.record.spec.network == NetworkMode::Pod {
        network.teardown(pod.uid(), &pod.dirs.netns)?;
        if !pod.record.spec.host_ports.is_empty() {
            sync_host_ports(runtime, network)?;
        }
    }
    let removed = runtime::state::removed_dir(log_root);
    Ok(runtime::state::move_aside(&log_dir(log_root, &pod.record.spec), &removed)?)
}

/// Deletes what removed pods left on disk (their data and logs).
pub fn sweep(runtime: &Runtime, log_root: &Path) -> Result<()> {
    runtime.sweep_removed()?;
    Ok(runtime::state::sweep(&runtime::state::removed_dir(log_root))?)
}
