//! The service proxy: Services and their endpoints turned into netfilter rules by a pure
//! function, applied in one transaction per sync. Two backends in kube-proxy's layouts:
//! nftables (the default where the kernel and `nft` have it) and iptables (for old
//! kernels). A sync writes only what changed since the last one; a full sync (the first,
//! after a failure, and periodically) rewrites everything, deletes what is stale and so
//! repairs rules someone else flushed.

mod iptables;
mod nftables;
mod objects;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

#[cfg(test)]
pub(crate) use nftables::rules as nftables_rules;
pub use objects::service_ports;

use crate::conntrack::{Conntrack, Flow};
use crate::{Error, Firewall};

/// One port of one Service, with the ready endpoints that serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The Service port's name ("" when the Service has a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Addresses outside the cluster that reach the service too: `spec.externalIPs` and
    /// the load balancer's (`status.loadBalancer.ingress`).
    pub external_ips: Vec<Ipv4Addr>,
    /// The load balancer's addresses among `external_ips`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges`: when any, the only sources that may reach the load
    /// balancer's addresses.
    pub source_ranges: Vec<Ipv4Net>,
    /// `internalTrafficPolicy: Local`: traffic to the cluster IP goes to this node's
    /// endpoints only.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: traffic from outside (node port, external IPs) goes
    /// to this node's endpoints only, and keeps its client's address.
    pub external_local: bool,
    /// ClientIP session affinity: how long (seconds) a client sticks to its endpoint.
    pub affinity_timeout: Option<u32>,
    /// Ready endpoints, each with the target port resolved.
    pub endpoints: Vec<SocketAddrV4>,
    /// The endpoints on this node, for the Local policies: ready ones, else the
    /// terminating ones that still serve.
    pub local_endpoints: Vec<SocketAddrV4>,
}

/// Where one kind of traffic to a service port goes: to the cluster IP, or from outside.
/// Both backends write what kube-proxy decides (its CategorizeEndpoints and policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To any of its endpoints: the service chain.
    Cluster,
    /// To this node's endpoints: the local chain.
    Local,
    /// Refused at once: the service has no endpoints.
    Reject,
    /// Dropped: the policy is Local and the endpoints are all on other nodes.
    Drop,
}

impl Route {
    /// The chain the route leads to, of the service's cluster and local chains.
    pub(crate) fn chain(self, cluster: &str, local: &str) -> Option<String> {
        match self {
            Route::Cluster => Some(cluster.to_string()),
            Route::Local => Some(local.to_string()),
            Route::Reject | Route::Drop => None,
        }
    }
}

impl ServicePort {
    fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The load balancer addresses that only `source_ranges` may reach (kube-proxy's
    /// firewall chains); none when there are no ranges.
    pub(crate) fn firewalled_ips(&self) -> Vec<Ipv4Addr> {
        let firewalled = |ip: &&Ipv4Addr| !self.source_ranges.is_empty() && self.load_balancer_ips.contains(ip);
        self.external_ips.iter().filter(firewalled).copied().collect()
    }

    pub(crate) fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }

    /// The endpoints the service chain picks from; none when no route leads there (an
    /// external Local policy still short-circuits the node's own traffic to it).
    pub(crate) fn cluster_endpoints(&self) -> &[SocketAddrV4] {
        if !self.internal_local || self.externally_accessible() { &self.endpoints } else { &[] }
    }

    /// The endpoints the local chain picks from; none when no route leads there.
    pub(crate) fn local_chain_endpoints(&self) -> &[SocketAddrV4] {
        let used = self.internal_local || (self.external_local && self.externally_accessible());
        if used { &self.local_endpoints } else { &[] }
    }

    /// Every endpoint a chain of this port sends to.
    pub(crate) fn routed_endpoints(&self) -> Vec<SocketAddrV4> {
        let mut all = self.cluster_endpoints().to_vec();
        for endpoint in self.local_chain_endpoints() {
            if !all.contains(endpoint) {
                all.push(*endpoint);
            }
        }
        all
    }

    pub(crate) fn internal_route(&self) -> Route {
        self.route(self.internal_local)
    }

    pub(crate) fn external_route(&self) -> Route {
        self.route(self.external_local)
    }

    /// Whether traffic from outside goes through the external chain (kube-proxy's
    /// usesExternalTrafficChain).
    pub(crate) fn uses_external_chain(&self) -> bool {
        self.has_endpoints() && self.externally_accessible()
    }

    fn route(&self, local: bool) -> Route {
        // Local endpoints are among `endpoints` (both fall back to terminating ones alike),
        // so a port with none has no local ones either.
        match (local, self.has_endpoints()) {
            (_, false) => Route::Reject,
            (true, true) if self.local_endpoints.is_empty() => Route::Drop,
            (true, true) => Route::Local,
            (false, true) => Route::Cluster,
        }
    }

    /// `namespace/name:port`, kube-proxy's ServicePortName.
    pub fn port_name_string(&self) -> String {
        match self.port_name.as_str() {
            "" => format!("{}/{}", self.namespace, self.name),
            port => format!("{}/{}:{port}", self.namespace, self.name),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Node-wide settings of the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Traffic to a cluster IP from outside this CIDR is masqueraded (kube-proxy's
    /// --cluster-cidr); `None` leaves such traffic alone.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Masquerade with a fully random source port (iptables' `--random-fully`, needs
    /// iptables ≥ 1.6.2; nftables' `fully-random`).
    pub random_fully: bool,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub full: bool,
    /// Rules in the complete rule set.
    pub rules: usize,
    /// Lines handed to iptables-restore or nft (0: nothing had changed).
    pub lines_written: usize,
}

/// Keeps the node's proxy rules, with one of the backends.
pub struct Proxier {
    backend: Backend,
    full_sync_period: Duration,
    last_full_sync: Option<Instant>,
    /// Opened at the first sync with a UDP service, kept after.
    conntrack: Option<Conntrack>,
}

enum Backend {
    Nftables(nftables::Proxier),
    Iptables(iptables::Proxier),
}

impl Proxier {
    pub fn new(firewall: &Firewall, config: ProxyConfig, full_sync_period: Duration) -> Proxier {
        let backend = match firewall {
            Firewall::Nftables => Backend::Nftables(nftables::Proxier::new(config)),
            Firewall::Iptables(iptables) => Backend::Iptables(iptables::Proxier::new(iptables.clone(), config)),
        };
        Proxier { backend, full_sync_period, last_full_sync: None, conntrack: None }
    }

    /// Brings the node's rules to what `services` call for.
    pub fn sync(&mut self, services: &[ServicePort]) -> Result<SyncReport, Error> {
        let due = self.last_full_sync.is_none_or(|t| t.elapsed() >= self.full_sync_period);
        let report = match &mut self.backend {
            Backend::Nftables(proxier) => proxier.sync(services, due),
            Backend::Iptables(proxier) => proxier.sync(services, due),
        }?;
        if report.full {
            self.last_full_sync = Some(Instant::now());
        }
        Ok(report)
    }

    /// Deletes the UDP flows to `services` that go where none of them is served any more
    /// (after a sync, whose rules send the flows' next packets to today's endpoints);
    /// returns how many. Its own step, so that a kernel without conntrack's netlink fails
    /// only this, as kube-proxy, which logs it, does.
    pub fn forget_stale_flows(&mut self, services: &[ServicePort]) -> Result<usize, Error> {
        if !services.iter().any(|s| s.protocol == Protocol::Udp) {
            return Ok(0);
        }
        let conntrack = match &mut self.conntrack {
            Some(conntrack) => conntrack,
            slot => slot.insert(Conntrack::open()?),
        };
        let flows = conntrack.udp_flows()?;
        conntrack.delete(&stale_udp_flows(services, &flows))
    }

    /// Whether rules are left to remove that the kernel could not let go of yet; a sync
    /// a second later removes them.
    pub fn has_leftovers(&self) -> bool {
        match &self.backend {
            Backend::Nftables(proxier) => proxier.has_leftovers(),
            Backend::Iptables(_) => false,
        }
    }
}

/// The UDP flows to a service (its cluster or external IPs and port, or its node port) whose replies
/// come from an address that is not one of its endpoints: DNATed to an endpoint that has
/// gone, or sent on untranslated while the service had none. Deleted, their next packet
/// is a new flow that the rules send to an endpoint of today. kube-proxy's
/// CleanStaleEntries, which also compares addresses only, and keeps flows to any endpoint
/// that serves whatever the traffic policies (here: the ready ones, else the terminating
/// ones that serve, as `endpoints` holds them).
fn stale_udp_flows<'a>(services: &[ServicePort], flows: &'a [Flow]) -> Vec<&'a Flow> {
    let mut by_address: HashMap<SocketAddrV4, HashSet<Ipv4Addr>> = HashMap::new();
    let mut by_node_port: HashMap<u16, HashSet<Ipv4Addr>> = HashMap::new();
    for svc in services.iter().filter(|s| s.protocol == Protocol::Udp) {
        let serving = svc.endpoints.iter().chain(&svc.local_endpoints);
        let endpoints: Vec<Ipv4Addr> = serving.map(|e| *e.ip()).collect();
        for ip in std::iter::once(svc.cluster_ip).chain(svc.external_ips.iter().copied()) {
            by_address.entry(SocketAddrV4::new(ip, svc.port)).or_default().extend(&endpoints);
        }
        if let Some(port) = svc.node_port {
            by_node_port.entry(port).or_default().extend(&endpoints);
        }
    }
    let serves =
        |endpoints: Option<&HashSet<Ipv4Addr>>, flow: &Flow| endpoints.is_none_or(|e| e.contains(&flow.reply_source));
    flows
        .iter()
        .filter(|f| !serves(by_address.get(&f.destination), f) || !serves(by_node_port.get(&f.destination.port()), f))
        .collect()
}

/// The rules `services` call for, as the backend's own input (an `nft -f` script or
/// iptables-restore input), and how many rules that is.
pub fn render(firewall: &Firewall, services: &[ServicePort], config: &ProxyConfig) -> (String, usize) {
    match firewall {
        Firewall::Nftables => {
            let rules = nftables::rules(services, config);
            (rules.render_full(&Default::default()).text(), rules.rule_count())
        }
        Firewall::Iptables(_) => {
            let rules = iptables::rules(services, config);
            (rules.render_full(&[]), rules.rule_count())
        }
    }
}

/// How many rules `services` call for (what a sync derives, without printing it).
pub fn rule_count(firewall: &Firewall, services: &[ServicePort], config: &ProxyConfig) -> usize {
    match firewall {
        Firewall::Nftables => nftables::rules(services, config).rule_count(),
        Firewall::Iptables(_) => iptables::rules(services, config).rule_count(),
    }
}

/// Removes every proxy rule of the backend other than `firewall`'s.
pub fn remove_other_backend(firewall: &Firewall) -> Result<(), Error> {
    firewall.remove_from_other(iptables::is_ours, nftables::TABLE)
}

/// kube-proxy's chain-name hash: the first `len` characters of base32(sha256(input)).
fn hash(input: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(input.as_bytes());
    // Enough of the digest for 16 characters of 5 bits: the first 80 bits (10 bytes).
    let bits = digest[..10].iter().fold(0u128, |acc, &b| (acc << 8) | b as u128);
    (0..len.min(16)).map(|i| ALPHABET[((bits >> (75 - 5 * i)) & 31) as usize] as char).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Flow, Protocol, ServicePort, stale_udp_flows};

    /// A TCP service port without node port or affinity.
    pub fn svc(ns: &str, name: &str, port_name: &str, ip: &str, port: u16, endpoints: &[&str]) -> ServicePort {
        ServicePort {
            namespace: ns.into(),
            name: name.into(),
            port_name: port_name.into(),
            protocol: Protocol::Tcp,
            cluster_ip: ip.parse().unwrap(),
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            internal_local: false,
            external_local: false,
            affinity_timeout: None,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            local_endpoints: Vec::new(),
        }
    }

    fn flow(source: &str, destination: &str, reply_source: &str) -> Flow {
        Flow {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            reply_source: reply_source.parse().unwrap(),
            zone: 0,
        }
    }

    #[test]
    fn udp_flows_to_an_address_that_no_longer_serves_are_stale() {
        let dns = ServicePort {
            protocol: Protocol::Udp,
            node_port: Some(30053),
            ..svc("kube-system", "dns", "", "10.96.0.10", 53, &["10.88.0.7:5353", "10.88.0.8:5353"])
        };
        let tcp = svc("shop", "web", "", "10.96.0.20", 80, &["10.88.0.9:8080"]);
        let flows = [
            flow("10.88.0.5:4000", "10.96.0.10:53", "10.88.0.7"), // to a serving endpoint
            flow("10.88.0.5:4001", "10.96.0.10:53", "10.88.0.6"), // to an endpoint that went
            flow("10.88.0.5:4002", "10.96.0.10:53", "10.96.0.10"), // sent on untranslated
            flow("10.88.0.5:4003", "192.168.1.2:30053", "10.88.0.8"), // node port, serving
            flow("10.88.0.5:4004", "192.168.1.2:30053", "10.88.0.6"), // node port, gone
            flow("10.88.0.5:4005", "10.96.0.20:80", "10.88.0.1"), // a TCP service's address
            flow("10.88.0.5:4006", "1.1.1.1:53", "1.1.1.1"),      // not a service
        ];
        let stale: Vec<u16> = stale_udp_flows(&[dns.clone(), tcp], &flows).iter().map(|f| f.source.port()).collect();
        assert_eq!(stale, [4001, 4002, 4004]);
        // A UDP service without endpoints: every flow to it is stale.
        let empty = ServicePort { endpoints: vec![], ..dns };
        assert_eq!(stale_udp_flows(&[empty], &flows[..3]).len(), 3);
    }
}
