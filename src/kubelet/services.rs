//! The node's service proxy and routes, kept from the API: kube-proxy's loop (Services and
//! EndpointSlices watched, the whole rule set derived from them and applied when they
//! change — at most once a second — and in full every hour), and routes to the other
//! nodes' pod CIDRs through their InternalIPs, from their Node objects; and the health
//! checks of the Services whose load balancers ask nodes for local endpoints.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::reflector::Store;
use net::proxy::{Proxier, ProxyConfig, service_ports};
use net::{Ipv4Net, PodNetwork};
use tokio::sync::Notify;

use super::healthcheck::{self, HealthChecks};
use crate::client::reflect;

/// kube-proxy's minSyncPeriod and syncPeriod.
const MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
const RETRY_PERIOD: Duration = Duration::from_secs(10);

/// Keeps the proxy rules and the routes to other nodes until the process ends; `services`
/// is the agent's watch of them, which wakes `changed`.
pub async fn run(
    client: Client,
    node_name: String,
    network: PodNetwork,
    services: Store<Service>,
    changed: Arc<Notify>,
) {
    let slices = reflect::<EndpointSlice>(client.clone(), Some(changed.clone()));
    let nodes = reflect::<Node>(client, Some(changed.clone()));
    for ready in [services.wait_until_ready().await, slices.wait_until_ready().await, nodes.wait_until_ready().await] {
        if ready.is_err() {
            return;
        }
    }
    let config = ProxyConfig { cluster_cidr: Some(network.config().pod_cidr), random_fully: true };
    let firewall = match network.firewall() {
        Ok(firewall) => firewall.clone(),
        Err(e) => {
            tracing::error!("the service proxy cannot run: {e}");
            return;
        }
    };
    if let Err(e) = net::proxy::remove_other_backend(&firewall) {
        tracing::warn!("remove the other proxy mode's rules: {e}");
    }
    let proxier = Arc::new(Mutex::new(Proxier::new(&firewall, config, FULL_SYNC_PERIOD)));
    let network = Arc::new(network);
    let mut health_checks = HealthChecks::default();
    loop {
        let services = services.state().iter().map(|s| (**s).clone()).collect::<Vec<_>>();
        let slices = slices.state().iter().map(|s| (**s).clone()).collect::<Vec<_>>();
        let routes = node_routes(&nodes.state(), &node_name);
        let (proxier, network, node_name) = (proxier.clone(), network.clone(), node_name.clone());
        let synced = tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, _)> {
            let ports = service_ports(&services, &[], &slices, Some(&node_name))?;
            let mut proxier = proxier.lock().expect("proxier");
            proxier.sync(&ports)?;
            if let Err(e) = proxier.forget_stale_flows(&ports) {
                tracing::warn!("delete stale UDP flows: {e}");
            }
            network.sync_node_routes(&routes)?;
            Ok((proxier.has_leftovers(), healthcheck::wanted(&services, &slices, &node_name)))
        })
        .await;
        // The next sync: at the next change or the periodic one; sooner to finish deleting
        // what the kernel held on to, or to retry a failure.
        let next = match synced {
            Ok(Ok((leftovers, (health, conflicts)))) => {
                // A port taken on the node may be let go (tried again soon); two Services
                // given one port stay so until one changes.
                let errors = health_checks.sync(health).await;
                for error in errors.iter().chain(&conflicts) {
                    tracing::warn!("{error}");
                }
                match (leftovers, errors.is_empty()) {
                    (true, _) => Duration::ZERO,
                    (false, false) => RETRY_PERIOD,
                    (false, true) => FULL_SYNC_PERIOD,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("sync the service proxy: {e:#}");
                RETRY_PERIOD
            }
            Err(e) => {
                tracing::error!("sync the service proxy: {e}");
                RETRY_PERIOD
            }
        };
        tokio::time::sleep(MIN_SYNC_PERIOD).await;
        let _ = tokio::time::timeout(next, changed.notified()).await;
    }
}

/// (InternalIP, pod CIDR) of every other node that has both.
fn node_routes(nodes: &[Arc<Node>], own: &str) -> Vec<(Ipv4Addr, Ipv4Net)> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(own))
        .filter_map(|n| {
            let cidr: Ipv4Net = n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
            let addresses = n.status.as_ref()?.addresses.as_ref()?;
            let ip: Ipv4Addr = addresses.iter().find(|a| a.type_ == "InternalIP")?.address.parse().ok()?;
            Some((ip, cidr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_go_to_the_other_nodes_with_a_cidr() {
        let node = |name: &str, cidr: Option<&str>, ip: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"podCIDR": cidr},
                    "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]},
                }))
                .unwrap(),
            )
        };
        let nodes = [
            node("a", Some("10.88.1.0/24"), "192.0.2.1"),
            node("b", Some("10.88.2.0/24"), "192.0.2.2"),
            node("c", None, "192.0.2.3"),
        ];
        assert_eq!(node_routes(&nodes, "a"), vec![("192.0.2.2".parse().unwrap(), "10.88.2.0/24".parse().unwrap())]);
    }
}
