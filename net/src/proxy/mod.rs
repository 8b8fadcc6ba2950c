//! The service proxy: Services and their endpoints turned into netfilter rules by a pure
//! function, applied in one transaction per sync. Two backends in kube-proxy's layouts:
//! nftables (the default where the kernel and `nft` have it) and iptables (for old
//! kernels). A sync writes only what changed since the last one; a full sync (the first,
//! after a failure, and periodically) rewrites everything, deletes what is stale and so
//! repairs rules someone else flushed.

mod iptables;
mod nftables;
mod objects;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

#[cfg(test)]
pub(crate) use nftables::rules as nftables_rules;
pub use objects::service_ports;

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
    /// ClientIP session affinity: how long (seconds) a client sticks to its endpoint.
    pub affinity_timeout: Option<u32>,
    /// Ready endpoints, each with the target port resolved.
    pub endpoints: Vec<SocketAddrV4>,
}

impl ServicePort {
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
        Proxier { backend, full_sync_period, last_full_sync: None }
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

    /// Whether rules are left to remove that the kernel could not let go of yet; a sync
    /// a second later removes them.
    pub fn has_leftovers(&self) -> bool {
        match &self.backend {
            Backend::Nftables(proxier) => proxier.has_leftovers(),
            Backend::Iptables(_) => false,
        }
    }
}

/// The rules `services` call for, as the backend's own input (an `nft -f` script or
/// iptables-restore input), and how many rules that is.
pub fn render(firewall: &Firewall, services: &[ServicePort], config: &ProxyConfig) -> (String, usize) {
    match firewall {
        Firewall::Nftables => {
            let rules = nftables::rules(services, config);
            (rules.render_full(&[], &[]).text(), rules.rule_count())
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
    use super::{Protocol, ServicePort};

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
            affinity_timeout: None,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }
}
