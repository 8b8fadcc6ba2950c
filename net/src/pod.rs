//! The node's pod network, as the CNI bridge plugin makes it: one bridge with the gateway
//! address, a veth per pod with its end in the pod's namespace as `eth0`, an address from
//! the node's pod CIDR, a default route via the gateway, and masquerade of traffic that
//! leaves the cluster's pod networks.

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ipnet::Ipv4Net;

use crate::ipam::Ipam;
use crate::iptables::Jump;
use crate::nft::{Action, ChainKind, Hook, HookPoint, Match, Nft, Rule, Script};
use crate::{Error, Firewall, Mode, link};

/// How the node's pod network is laid out.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The bridge (`podctl0`).
    pub bridge: String,
    /// This node's pod CIDR; its first address is the gateway, on the bridge.
    pub pod_cidr: Ipv4Net,
    /// The bridge's MTU; `None` keeps what the bridge has (1500 when new).
    pub mtu: Option<u32>,
    /// Where the IP leases live.
    pub lease_dir: PathBuf,
    /// The packet filter for the node's rules; `None` picks one (see [`Firewall::new`]).
    pub mode: Option<Mode>,
}

/// A pod's place on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodAddress {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
}

pub struct PodNetwork {
    config: NetworkConfig,
    ipam: Ipam,
    /// Chosen when first needed: most commands never touch the node's rules.
    firewall: OnceLock<Firewall>,
    /// Set once the other packet filter's rules of ours are gone.
    other_removed: OnceLock<()>,
    /// The nf_tables socket, opened at the first write and kept: closing one costs the
    /// kernel ~10 ms, and the node agent writes the node's rules at every proxy sync.
    nft: Mutex<Option<Nft>>,
}

impl PodNetwork {
    pub fn new(config: NetworkConfig) -> PodNetwork {
        let ipam = Ipam::new(&config.lease_dir, config.pod_cidr);
        PodNetwork { config, ipam, firewall: OnceLock::new(), other_removed: OnceLock::new(), nft: Mutex::default() }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The packet filter this node's rules go to.
    pub fn firewall(&self) -> Result<&Firewall, Error> {
        if let Some(firewall) = self.firewall.get() {
            return Ok(firewall);
        }
        let firewall = Firewall::new(self.config.mode)?;
        Ok(self.firewall.get_or_init(|| firewall))
    }

    /// Wires the pod whose network namespace is bound at `netns`. Either the pod ends up
    /// with an address, a veth on the bridge and a default route, or nothing of it is left.
    pub fn setup(&self, pod_uid: &str, netns: &Path) -> Result<PodAddress, Error> {
        let address = self.ipam.allocate(pod_uid)?;
        let result = self.wire(pod_uid, netns, address);
        if result.is_err() {
            let _ = self.teardown(pod_uid, netns);
        }
        result
    }

    fn wire(&self, pod_uid: &str, netns: &Path, address: Ipv4Addr) -> Result<PodAddress, Error> {
        let gateway = self.ipam.gateway();
        let prefix_len = self.config.pod_cidr.prefix_len();
        let bridge_net = Ipv4Net::new(gateway, prefix_len).expect("prefix of a parsed CIDR");
        let (bridge, mtu, host_name) = (self.config.bridge.clone(), self.config.mtu, veth_name(pod_uid));
        let netns_file = File::open(netns).map_err(Error::io(format!("open netns {}", netns.display())))?;
        let created = link::in_netns(None, move |handle| async move {
            let (bridge, created) = link::ensure_bridge(&handle, &bridge, bridge_net, mtu).await?;
            // A veth left by an interrupted setup of this same pod is replaced.
            link::delete_link(&handle, &host_name).await?;
            link::add_veth(&handle, &host_name, &bridge, &netns_file).await?;
            Ok(created)
        })?;
        if created {
            self.ensure_node()?;
        }
        let pod_net = Ipv4Net::new(address, prefix_len).expect("prefix of a parsed CIDR");
        link::in_netns(
            Some(netns),
            move |handle| async move { link::configure_pod_side(&handle, pod_net, gateway).await },
        )?;
        Ok(PodAddress { address, gateway, prefix_len })
    }

    /// The bridge with the gateway address, made now rather than with the first pod: for a
    /// service of the node's own that pods reach at the gateway (the cluster DNS).
    pub fn ensure_bridge(&self) -> Result<Ipv4Addr, Error> {
        let gateway = self.ipam.gateway();
        let bridge_net = Ipv4Net::new(gateway, self.config.pod_cidr.prefix_len()).expect("prefix of a parsed CIDR");
        let (bridge, mtu) = (self.config.bridge.clone(), self.config.mtu);
        let created = link::in_netns(None, move |handle| async move {
            Ok(link::ensure_bridge(&handle, &bridge, bridge_net, mtu).await?.1)
        })?;
        if created {
            self.ensure_node()?;
        }
        Ok(gateway)
    }

    /// Frees the pod's address, and deletes its veth while its network namespace is still
    /// bound at `netns`. Once the namespace is gone the kernel destroys the veth pair with
    /// it, in the background: deleting a link ourselves waits for RCU grace periods (~20 ms,
    /// what CNI's bridge plugin pays at every pod removal). A veth that a leaked reference
    /// to the namespace keeps alive is removed by [`PodNetwork::reconcile`]. Safe to repeat.
    pub fn teardown(&self, pod_uid: &str, netns: &Path) -> Result<(), Error> {
        if netns.exists() {
            let host_name = veth_name(pod_uid);
            link::in_netns(None, move |handle| async move { link::delete_link(&handle, &host_name).await })?;
        }
        self.ipam.release(pod_uid)
    }

    /// The address leased to a pod.
    pub fn address(&self, pod_uid: &str) -> Result<Option<Ipv4Addr>, Error> {
        self.ipam.lookup(pod_uid)
    }

    /// Frees what pods that no longer exist left (leases, veths on our bridge), and puts
    /// back the node's settings and masquerade rules if someone removed them.
    pub fn reconcile(&self, live_pods: &HashSet<String>) -> Result<(), Error> {
        self.ipam.reconcile(live_pods)?;
        let wanted: HashSet<String> = live_pods.iter().map(|uid| veth_name(uid)).collect();
        let bridge = self.config.bridge.clone();
        let bridge_exists = link::in_netns(None, move |handle| async move {
            let Some(bridge) = link::link_by_name(&handle, &bridge).await? else { return Ok(false) };
            for port in link::links(&handle).await? {
                if port.controller == Some(bridge.index)
                    && port.name.starts_with(VETH_PREFIX)
                    && !wanted.contains(&port.name)
                {
                    link::delete_link(&handle, &port.name).await?;
                }
            }
            Ok(true)
        })?;
        if bridge_exists { self.ensure_node() } else { Ok(()) }
    }

    /// Routes to other nodes' pod CIDRs via their node IPs (exactly these: routes of ours
    /// to nodes not listed are removed), and no masquerade between pod networks.
    pub fn sync_node_routes(&self, nodes: &[(Ipv4Addr, Ipv4Net)]) -> Result<(), Error> {
        let wanted: Vec<(Ipv4Net, Ipv4Addr)> = nodes.iter().map(|&(ip, cidr)| (cidr.trunc(), ip)).collect();
        link::in_netns(None, move |handle| async move { link::sync_routes(&handle, &wanted).await })?;
        self.ensure_node()
    }

    /// Forwards exactly these host ports to their pods (the rules of [`crate::hostports`]);
    /// loopback traffic to them may leave through the bridge (route_localnet), as
    /// `curl localhost:PORT` needs.
    pub fn sync_host_ports(&self, mappings: &[crate::hostports::Mapping]) -> Result<(), Error> {
        if !mappings.is_empty() {
            write_sysctl(&format!("net/ipv4/conf/{}/route_localnet", self.config.bridge), "1")?;
        }
        match self.firewall()? {
            Firewall::Nftables => self.apply_nft(&crate::hostports::nft_script(mappings)),
            Firewall::Iptables(iptables) => {
                iptables.apply_with_jumps(&crate::hostports::rules(mappings), &crate::hostports::JUMPS)
            }
        }
    }

    /// Applies `script` on the kept socket (a new one after a failure).
    fn apply_nft(&self, script: &crate::nft::Script) -> Result<(), Error> {
        let mut slot = self.nft.lock().expect("nft socket lock");
        let nft = match &mut *slot {
            Some(nft) => nft,
            empty => empty.insert(Nft::open()?),
        };
        let applied = nft.apply(script);
        if applied.is_err() {
            *slot = None;
        }
        applied
    }

    /// The node's side: IP forwarding, bridged traffic through iptables (so services work
    /// between pods on one bridge), and the masquerade and forward rules.
    fn ensure_node(&self) -> Result<(), Error> {
        write_sysctl("net/ipv4/ip_forward", "1")?;
        // Only there when the kernel has br_netfilter; without it, traffic between pods on
        // the bridge skips iptables and reaching a service on the same node fails.
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            write_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        }
        let remote = link::in_netns(None, |handle| async move {
            Ok(link::owned_routes(&handle).await?.into_iter().map(|(net, _, _)| net).collect::<Vec<_>>())
        })?;
        match self.firewall()? {
            Firewall::Nftables => self.apply_nft(&node_script(self.config.pod_cidr, &remote))?,
            Firewall::Iptables(iptables) => {
                iptables.apply_with_jumps(&node_rules(self.config.pod_cidr, &remote), &NODE_JUMPS)?
            }
        }
        self.remove_other_backend()
    }

    /// Removes this node's pod network and host port rules from the packet filter it no
    /// longer uses (once per process: a node changes modes only with a restart).
    fn remove_other_backend(&self) -> Result<(), Error> {
        if self.other_removed.get().is_some() {
            return Ok(());
        }
        self.firewall()?.remove_from_other(|chain| chain.starts_with("PODCTL-"), NFT_TABLE)?;
        let _ = self.other_removed.set(());
        Ok(())
    }
}

/// The nftables table of the pod network and the host ports.
pub const NFT_TABLE: &str = "podctl";

const VETH_PREFIX: &str = "veth";

const NODE_JUMPS: [Jump; 2] = [
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        matches: "-m comment --comment \"podctl pod network\"",
        target: "PODCTL-POSTROUTING",
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        matches: "-m comment --comment \"podctl pod network\"",
        target: "PODCTL-FORWARD",
    },
];

/// The host end of a pod's veth: named from the pod's uid, so teardown finds it without
/// any record (IFNAMSIZ allows 15 characters). FNV-1a, which never changes between builds.
fn veth_name(pod_uid: &str) -> String {
    let hash = pod_uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{VETH_PREFIX}{:011x}", hash & 0xfff_ffff_ffff)
}

fn write_sysctl(name: &str, value: &str) -> Result<(), Error> {
    let path = Path::new("/proc/sys").join(name);
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(Error::io(format!("set {}", path.display())))
}

/// The node's own rules: traffic from pods to anywhere but a pod network is masqueraded
/// (pod-to-pod keeps its source, also across nodes), and forwarding to and from pods is
/// accepted whatever the FORWARD policy.
pub fn node_rules(pod_cidr: Ipv4Net, remote_pod_cidrs: &[Ipv4Net]) -> String {
    let cidr = pod_cidr.trunc();
    let mut rules = String::from("*nat\n:PODCTL-POSTROUTING - [0:0]\n");
    for destination in std::iter::once(&cidr).chain(remote_pod_cidrs) {
        rules += &format!("-A PODCTL-POSTROUTING -s {cidr} -d {destination} -j RETURN\n");
    }
    rules += &format!("-A PODCTL-POSTROUTING -s {cidr} ! -d 224.0.0.0/4 -j MASQUERADE\nCOMMIT\n");
    rules += &format!(
        "*filter\n:PODCTL-FORWARD - [0:0]\n-A PODCTL-FORWARD -s {cidr} -j ACCEPT\n-A PODCTL-FORWARD -d {cidr} -j ACCEPT\nCOMMIT\n"
    );
    rules
}

/// [`node_rules`] for nftables: chains of table `ip podctl`, rewritten whole.
pub fn node_script(pod_cidr: Ipv4Net, remote_pod_cidrs: &[Ipv4Net]) -> Script {
    let cidr = pod_cidr.trunc();
    let multicast: Ipv4Net = "224.0.0.0/4".parse().expect("a CIDR");
    let mut postrouting: Vec<Rule> = std::iter::once(&cidr)
        .chain(remote_pod_cidrs)
        .map(|&destination| Rule::new([Match::SourceIn(cidr), Match::DestinationIn(destination)], [Action::Return]))
        .collect();
    postrouting.push(Rule::new(
        [Match::SourceIn(cidr), Match::DestinationNotIn(multicast)],
        [Action::Masquerade { fully_random: false }],
    ));
    let mut script = Script::new(NFT_TABLE);
    script.table("podctl pod network");
    script.chain("nat-postrouting", Some(Hook::new(ChainKind::Nat, HookPoint::Postrouting, 100)), &postrouting);
    script.chain(
        "filter-forward",
        Some(Hook::new(ChainKind::Filter, HookPoint::Forward, 0)),
        &[
            Rule::new([Match::SourceIn(cidr)], [Action::Accept]),
            Rule::new([Match::DestinationIn(cidr)], [Action::Accept]),
        ],
    );
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_ifnamsiz_and_differ() {
        let a = veth_name("3f2c6a1e-0000-4000-8000-000000000001");
        let b = veth_name("3f2c6a1e-0000-4000-8000-000000000002");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert_ne!(a, b);
        assert_eq!(a, veth_name("3f2c6a1e-0000-4000-8000-000000000001"));
    }

    #[test]
    fn node_script_keeps_pod_to_pod_unmasqueraded() {
        let script = node_script("10.1.0.7/24".parse().unwrap(), &["10.2.0.0/24".parse().unwrap()]);
        assert_eq!(
            script.text(),
            "add table ip podctl { comment \"podctl pod network\" ; }\n\
             add chain ip podctl nat-postrouting { type nat hook postrouting priority 100 ; }\n\
             flush chain ip podctl nat-postrouting\n\
             add rule ip podctl nat-postrouting ip saddr 10.1.0.0/24 ip daddr 10.1.0.0/24 return\n\
             add rule ip podctl nat-postrouting ip saddr 10.1.0.0/24 ip daddr 10.2.0.0/24 return\n\
             add rule ip podctl nat-postrouting ip saddr 10.1.0.0/24 ip daddr != 224.0.0.0/4 masquerade\n\
             add chain ip podctl filter-forward { type filter hook forward priority 0 ; }\n\
             flush chain ip podctl filter-forward\n\
             add rule ip podctl filter-forward ip saddr 10.1.0.0/24 accept\n\
             add rule ip podctl filter-forward ip daddr 10.1.0.0/24 accept\n"
        );
    }

    #[test]
    fn node_rules_keep_pod_to_pod_unmasqueraded() {
        let rules = node_rules("10.1.0.7/24".parse().unwrap(), &["10.2.0.0/24".parse().unwrap()]);
        assert_eq!(
            rules,
            "*nat\n\
             :PODCTL-POSTROUTING - [0:0]\n\
             -A PODCTL-POSTROUTING -s 10.1.0.0/24 -d 10.1.0.0/24 -j RETURN\n\
             -A PODCTL-POSTROUTING -s 10.1.0.0/24 -d 10.2.0.0/24 -j RETURN\n\
             -A PODCTL-POSTROUTING -s 10.1.0.0/24 ! -d 224.0.0.0/4 -j MASQUERADE\n\
             COMMIT\n\
             *filter\n\
             :PODCTL-FORWARD - [0:0]\n\
             -A PODCTL-FORWARD -s 10.1.0.0/24 -j ACCEPT\n\
             -A PODCTL-FORWARD -d 10.1.0.0/24 -j ACCEPT\n\
             COMMIT\n"
        );
    }
}
