//! Node IPAM (kube-controller-manager's nodeipam, range allocator): a node without a pod
//! CIDR gets the first /24 of `--cluster-cidr` that no node has; its agent gives its pods
//! addresses from it and routes to the other nodes' CIDRs.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use net::Ipv4Net;
use serde_json::json;
use tokio::sync::Notify;

use super::informers::Informers;
use crate::events::{Event, Involved, Recorder};

/// The size of each node's pod CIDR.
const NODE_PREFIX: u8 = 24;

/// For each node without a pod CIDR, the one it gets (None: the cluster CIDR is used up).
pub fn allocate(cluster_cidr: Ipv4Net, nodes: &[&Node]) -> Vec<(String, Option<Ipv4Net>)> {
    let mut taken: Vec<Ipv4Net> =
        nodes.iter().filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()).collect();
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_none_or(str::is_empty))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    let prefix = NODE_PREFIX.max(cluster_cidr.prefix_len());
    names
        .into_iter()
        .map(|name| {
            let free = cluster_cidr
                .subnets(prefix)
                .ok()
                .and_then(|mut all| all.find(|c| !taken.iter().any(|t| overlaps(c, t))));
            if let Some(cidr) = free {
                taken.push(cidr);
            }
            (name, free)
        })
        .collect()
}

/// Gives nodes their pod CIDRs until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>, cluster_cidr: Ipv4Net) {
    let wake = Arc::new(Notify::new());
    informers.nodes().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), "cidrAllocator", None));
    super::level_triggered(wake, move || {
        let (client, informers, recorder) = (client.clone(), informers.clone(), recorder.clone());
        async move {
            if !informers.nodes().ready().await {
                return None;
            }
            let nodes = informers.nodes().all();
            let refs = super::refs(&nodes);
            let api: Api<Node> = Api::all(client);
            let mut all_done = true;
            for (name, cidr) in allocate(cluster_cidr, &refs) {
                match cidr {
                    Some(cidr) => {
                        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
                        all_done &= super::report(
                            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                            "node",
                            &name,
                        );
                    }
                    None => {
                        if let Some(node) = refs.iter().find(|n| n.metadata.name.as_deref() == Some(&name)) {
                            let message = format!("Node {name} status is now: CIDRNotAvailable");
                            let mut involved = Involved::of(*node);
                            involved.namespace = "default".into();
                            recorder.record(&involved, &Event::warning("CIDRNotAvailable", message)).await;
                        }
                    }
                }
            }
            (!all_done).then_some(std::time::Duration::from_secs(1))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}})).unwrap()
    }

    #[test]
    fn nodes_get_the_first_free_24s_and_none_when_the_range_is_used_up() {
        let cluster: Ipv4Net = "10.244.0.0/23".parse().unwrap();
        let (a, b, c) = (node("a", Some("10.244.0.0/24")), node("b", None), node("c", None));
        assert_eq!(
            allocate(cluster, &[&a, &b, &c]),
            vec![("b".to_string(), Some("10.244.1.0/24".parse().unwrap())), ("c".to_string(), None)]
        );
        // A CIDR given by hand that overlaps the range keeps its part of it.
        let wide = node("x", Some("10.244.0.0/16"));
        assert_eq!(allocate(cluster, &[&wide, &b]), vec![("b".to_string(), None)]);
    }
}
