//! The nftables backend, in kube-proxy's nftables layout (pkg/proxy/nftables/proxier.go)
//! so operators recognise it: table `ip kube-proxy`; the verdict maps `service-ips`
//! (`ip . proto . port`) and `service-nodeports` (`proto . port`) send a connection's first
//! packet to its service's chain in one lookup whatever the number of services; per
//! service chains (`service-HASH-ns/name/proto/port`, `local-…` for the Local traffic
//! policies, `external-…` for node ports and external IPs); `no-endpoint-services` /
//! `no-endpoint-nodeports` reject (or drop, when a Local policy finds endpoints on other
//! nodes only); `mark-for-masquerade` / `masquerading`; ClientIP affinity in dynamic sets
//! with timeouts.
//!
//! Where we differ, and why (ARCHITECTURE.md has the figures):
//! - A service chain draws its endpoint with one rule, `dnat ip to numgen random mod N
//!   offset K map @endpoints-tcp-S`, from keys `K…K+N-1` of an endpoint map, where
//!   kube-proxy jumps through a `numgen` vmap to one chain per endpoint. Each commit that
//!   adds a rule with a jump or a DNAT makes the kernel validate the whole table from every
//!   base chain (`nf_tables_validate`), and endpoint chains made that walk 620,000 rules at
//!   10,000 services × 10 endpoints; now it walks 40,000, and a change of endpoints that
//!   keeps their number writes map elements only, which need no validation. Each chain owns
//!   a block of keys ([`Blocks`]); the maps are shared by the chains, by protocol and block
//!   ([`EndpointMap`]).
//! - Hairpin traffic (a pod that reaches itself through a service) is found after DNAT by
//!   one set, `hairpin-endpoints` (`ct status dnat ip saddr . ip daddr`, every endpoint as
//!   `IP . IP`),
//!   where kube-proxy matches the source in each endpoint chain; its IPVS mode's
//!   KUBE-LOOP-BACK set does the same.
//! - Services with ClientIP affinity keep kube-proxy's endpoint chains
//!   (`endpoint-HASH-…__ip/port`): a chain per endpoint remembers the source in that
//!   endpoint's affinity set. Their endpoint is drawn by one `numgen random mod N-i == 0`
//!   rule per endpoint rather than a vmap: each vmap is an anonymous set, which the kernel
//!   binds by walking the whole transaction (`__nft_set_trans_bind`).
//!
//! The rules of one service port are one unit: a sync rewrites, in one transaction, the
//! chains, sets and map elements that changed in the units that changed; a full sync
//! rewrites them all, empties the maps first, and flushes chains and deletes sets no
//! service wants. Emptied chains are deleted once nothing refers to them: at once on
//! Linux ≥ 6.2, after the kernel's grace period (on a later sync) before.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Protocol, ProxyConfig, Route, ServicePort, SyncReport, hash};
use crate::Error;
use crate::nft::{Action, ChainKind, Element, Hook, HookPoint, Key, KeyType, Match, Nft, Rule, Script, Verdict};

pub const TABLE: &str = "kube-proxy";

/// The fwmark bit that asks `masquerading` to masquerade (kube-proxy's default bit 14).
const MASQ_MARK: u32 = 0x4000;

const SERVICES: &str = "services";
const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
const MARK_MASQ: &str = "mark-for-masquerade";
const MASQUERADING: &str = "masquerading";
const REJECT_CHAIN: &str = "reject-chain";
/// The endpoint maps a chain's DNAT rule draws from, one per protocol and shard of the
/// blocks: a chain's block modulo `SHARDS`. The kernel checks each element of a map against
/// each rule bound to it (`nft_add_set_elem`, `nf_tables_bind_set`), which made one map for
/// 10,000 chains take 12 s to write; and it finds a set by name in a list
/// (`nft_set_lookup`), which made a map per chain take 11 s.
const SHARDS: u32 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct EndpointMap {
    protocol: Protocol,
    shard: u32,
}

impl EndpointMap {
    const PREFIX: &str = "endpoints-";

    /// The map of the chain whose block starts at `first`.
    fn of(protocol: Protocol, first: u32) -> EndpointMap {
        EndpointMap { protocol, shard: first / BLOCK % SHARDS }
    }

    fn name(&self) -> String {
        format!("{}{}-{}", Self::PREFIX, self.protocol.as_str(), self.shard)
    }

    fn declare(&self, script: &mut Script) {
        script.endpoint_map(&self.name(), self.protocol, BLOCK, ENDPOINT_MAP_COMMENT);
    }

    fn declare_anew(&self, script: &mut Script) {
        script.new_endpoint_map(&self.name(), self.protocol, BLOCK, ENDPOINT_MAP_COMMENT);
    }
}

const ENDPOINT_MAP_COMMENT: &str = "endpoints service chains draw from, by block";
const HAIRPINS: &str = "hairpin-endpoints";

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const FIREWALL_IPS: &str = "firewall-ips";
const FIREWALL_CHECK: &str = "firewall-check";

/// The verdict maps: name, key type, comment.
const MAPS: [(&str, KeyType, &str); 5] = [
    (SERVICE_IPS, KeyType::Destination, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    (SERVICE_NODEPORTS, KeyType::Port, "NodePort traffic"),
    (NO_ENDPOINT_SERVICES, KeyType::Destination, "vmap to drop or reject packets to services with no endpoints"),
    (NO_ENDPOINT_NODEPORTS, KeyType::Port, "vmap to drop or reject packets to service nodeports with no endpoints"),
    (FIREWALL_IPS, KeyType::Destination, "destinations that are subject to LoadBalancerSourceRanges"),
];

/// The chains and sets of a service port have a `/` in their names; the fixed ones do not.
fn is_service_object(name: &str) -> bool {
    name.contains('/')
}

/// A chain: its name, its hook if it is a base chain, its rules.
type Chain = (String, Option<Hook>, Vec<Rule>);

/// The sources ClientIP affinity sent to one endpoint, each kept `timeout` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AffinitySet {
    name: String,
    timeout: u32,
}

impl AffinitySet {
    fn declare(&self, script: &mut Script) {
        script.dynamic_set(&self.name, self.timeout);
    }
}

/// What one service port adds to the table: what a change to it rewrites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceRules {
    chains: Vec<Chain>,
    affinity_sets: Vec<AffinitySet>,
    /// Elements of the verdict maps.
    elements: Vec<(&'static str, Element)>,
    /// Elements of the endpoint maps: the endpoints its chains draw from, under the keys
    /// of their blocks.
    endpoints: Vec<(EndpointMap, u32, SocketAddrV4)>,
    /// The addresses of its endpoints, each once: elements of the hairpin set.
    hairpins: Vec<Ipv4Addr>,
}

/// The keys of the endpoint map a chain draws from: a block of `BLOCK`, or as many blocks
/// as its endpoints need. A chain's block is the one its name hashes to, else the next
/// free one; a port that does not change keeps its blocks.
const BLOCK: u32 = 1 << 14;
const BLOCKS: u32 = 1 << (32 - 14);

/// The blocks of the endpoint map that chains have taken.
#[derive(Default)]
struct Blocks(HashSet<u32>);

impl Blocks {
    /// Marks the blocks `unit` (kept from the last sync) draws from as taken.
    fn keep(&mut self, unit: &ServiceRules) {
        self.0.extend(unit.endpoints.iter().map(|(_, key, _)| key / BLOCK));
    }

    /// Takes blocks for `count` endpoints of `chain`; the first key.
    fn take(&mut self, chain: &str, count: usize) -> u32 {
        let needed = (count as u32).div_ceil(BLOCK);
        let digest = Sha256::digest(chain.as_bytes());
        let home = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % BLOCKS;
        let first = (0..BLOCKS)
            .map(|probe| (home + probe) % BLOCKS)
            .find(|&first| first + needed <= BLOCKS && (first..first + needed).all(|b| !self.0.contains(&b)))
            .expect("the endpoint map holds 262,144 blocks: more than any node's service chains");
        self.0.extend(first..first + needed);
        first * BLOCK
    }
}

/// A service port's identity: namespace, name, port name, protocol.
type PortKey = (String, String, String, Protocol);

/// The complete table for a set of service ports.
#[derive(Clone, Debug)]
pub struct RuleSet {
    fixed: Vec<Chain>,
    /// Each service port, with what it adds to the table.
    services: BTreeMap<PortKey, (ServicePort, Arc<ServiceRules>)>,
    /// Each endpoint address, with the number of ports that send to it: it stays in the
    /// hairpin set while any does.
    hairpins: HashMap<Ipv4Addr, u32>,
    /// The endpoint maps the ports use.
    endpoint_maps: BTreeSet<EndpointMap>,
}

/// What a full sync finds in the table that no service wants.
#[derive(Default)]
pub struct Stale<'a> {
    pub chains: Vec<String>,
    /// Sets this process made, declared again before they are deleted: someone may have
    /// deleted the table since.
    known_sets: Vec<&'a AffinitySet>,
    known_endpoint_maps: Vec<EndpointMap>,
    /// Sets listed from the kernel.
    pub listed_sets: Vec<String>,
}

/// What a sync writes besides map elements, in the order the kernel takes it: sets before
/// the rules that name them, and sets deleted only once the chains whose rules named them
/// are emptied.
#[derive(Default)]
struct Writes<'a> {
    affinity_sets: Vec<&'a AffinitySet>,
    endpoint_maps: Vec<EndpointMap>,
    chains: Vec<&'a Chain>,
    emptied_chains: Vec<&'a str>,
    deleted_sets: Vec<String>,
    /// Endpoint maps made anew once the chains are emptied: every chain that refers to
    /// them is rewritten.
    endpoint_maps_anew: Vec<EndpointMap>,
}

impl Writes<'_> {
    fn render(&self, script: &mut Script) {
        for set in &self.affinity_sets {
            set.declare(script);
        }
        for map in &self.endpoint_maps {
            map.declare(script);
        }
        for (name, hook, _) in &self.chains {
            script.fresh_chain(name, *hook);
        }
        // Made if missing before it is emptied: the name may come from what this process
        // applied, which someone may have deleted since.
        for chain in &self.emptied_chains {
            script.fresh_chain(chain, None);
        }
        for set in &self.deleted_sets {
            script.delete_set(set);
        }
        for map in &self.endpoint_maps_anew {
            map.declare_anew(script);
        }
        for (name, _, rules) in &self.chains {
            for rule in rules {
                script.rule(name, rule);
            }
        }
    }
}

/// Endpoint map elements, by map.
fn by_map<'a, T: 'a>(elements: impl Iterator<Item = (&'a EndpointMap, T)>) -> BTreeMap<EndpointMap, Vec<T>> {
    let mut maps: BTreeMap<EndpointMap, Vec<T>> = BTreeMap::new();
    for (map, element) in elements {
        maps.entry(*map).or_default().push(element);
    }
    maps
}

impl RuleSet {
    pub fn rule_count(&self) -> usize {
        let chains = self.fixed.iter().chain(self.units().flat_map(|s| &s.chains));
        chains.map(|(_, _, rules)| rules.len()).sum()
    }

    fn units(&self) -> impl Iterator<Item = &ServiceRules> + Clone {
        self.services.values().map(|(_, rules)| rules.as_ref())
    }

    fn is_fixed_chain(&self, name: &str) -> bool {
        self.fixed.iter().any(|(chain, _, _)| chain == name)
    }

    /// The names of the per-service chains and sets.
    fn service_objects(&self) -> HashSet<&str> {
        let units = self.units();
        let chains = units.clone().flat_map(|s| s.chains.iter().map(|(name, _, _)| name.as_str()));
        chains.chain(units.flat_map(|s| s.affinity_sets.iter().map(|set| set.name.as_str()))).collect()
    }

    /// What of `applied` (written by this process) this set does not want.
    fn stale_in<'a>(&self, applied: &'a RuleSet) -> Stale<'a> {
        let wanted = self.service_objects();
        Stale {
            chains: applied
                .units()
                .flat_map(|u| &u.chains)
                .map(|(name, _, _)| name)
                .filter(|name| !wanted.contains(name.as_str()))
                .cloned()
                .collect(),
            known_sets: applied
                .units()
                .flat_map(|u| &u.affinity_sets)
                .filter(|s| !wanted.contains(s.name.as_str()))
                .collect(),
            known_endpoint_maps: applied.endpoint_maps.difference(&self.endpoint_maps).copied().collect(),
            listed_sets: Vec::new(),
        }
    }

    /// What of the table's `chains` and `sets` (listed from the kernel) this set does not
    /// want: any chain (a fixed one of an older layout goes too), the sets of services.
    fn stale_listed(&self, chains: Vec<String>, sets: Vec<String>) -> Stale<'static> {
        let wanted = self.service_objects();
        let unwanted = |n: &String| !wanted.contains(n.as_str()) && !self.is_fixed_chain(n);
        let wanted_maps: HashSet<String> = self.endpoint_maps.iter().map(EndpointMap::name).collect();
        let stale_set = |n: &String| {
            (is_service_object(n) && unwanted(n)) || (n.starts_with(EndpointMap::PREFIX) && !wanted_maps.contains(n))
        };
        Stale {
            chains: chains.into_iter().filter(unwanted).collect(),
            listed_sets: sets.into_iter().filter(stale_set).collect(),
            ..Stale::default()
        }
    }

    /// The script that writes the whole table, whatever it held: maps emptied and
    /// refilled, every chain rewritten, `stale` chains emptied and sets deleted.
    pub fn render_full(&self, stale: &Stale) -> Script {
        let mut script = Script::new(TABLE);
        script.table("rules for kube-proxy");
        for (map, key, comment) in MAPS {
            script.fresh_vmap(map, key, comment);
        }
        script.fresh_pair_set(HAIRPINS, "endpoints as source . destination: a pod reaching itself through a service");
        let units: Vec<&ServiceRules> = self.units().collect();
        let writes = Writes {
            affinity_sets: units
                .iter()
                .flat_map(|u| &u.affinity_sets)
                .chain(stale.known_sets.iter().copied())
                .collect(),
            endpoint_maps: stale.known_endpoint_maps.clone(),
            chains: self.fixed.iter().chain(units.iter().flat_map(|u| &u.chains)).collect(),
            emptied_chains: stale.chains.iter().map(String::as_str).collect(),
            deleted_sets: stale
                .known_sets
                .iter()
                .map(|s| s.name.clone())
                .chain(stale.known_endpoint_maps.iter().map(EndpointMap::name))
                .chain(stale.listed_sets.iter().cloned())
                .collect(),
            endpoint_maps_anew: self.endpoint_maps.iter().copied().collect(),
        };
        writes.render(&mut script);
        for (map, element) in units.iter().flat_map(|u| &u.elements) {
            script.add_element(map, element);
        }
        let endpoints = units.iter().flat_map(|u| &u.endpoints).map(|(map, key, endpoint)| (map, (*key, *endpoint)));
        for (map, endpoints) in by_map(endpoints) {
            script.add_endpoints(&map.name(), &endpoints);
        }
        let mut hairpins: Vec<Ipv4Addr> = self.hairpins.keys().copied().collect();
        hairpins.sort();
        script.add_pairs(HAIRPINS, &hairpins);
        script
    }

    /// The script that takes the table from `applied` to this set (empty when nothing
    /// changed), and the chains it empties that are to be deleted.
    pub fn render_changes<'a>(&'a self, applied: &'a RuleSet) -> (Script, Vec<String>) {
        let mut script = Script::new(TABLE);
        let empty = ServiceRules::default();
        let unit = |set: &'a RuleSet, key| set.services.get(key).map_or(&empty, |(_, rules)| rules.as_ref());
        let changed: Vec<(&ServiceRules, &ServiceRules)> = self
            .services
            .keys()
            .chain(applied.services.keys().filter(|k| !self.services.contains_key(*k)))
            .map(|key| (unit(applied, key), unit(self, key)))
            .filter(|(before, now)| !std::ptr::eq(*before, *now) && before != now)
            .collect();
        // Within a changed port, only the chains and sets that differ: a rule written makes
        // the kernel validate the whole table, map elements do not.
        let mut writes = Writes {
            endpoint_maps: self.endpoint_maps.difference(&applied.endpoint_maps).copied().collect(),
            deleted_sets: applied.endpoint_maps.difference(&self.endpoint_maps).map(EndpointMap::name).collect(),
            ..Writes::default()
        };
        for (before, now) in &changed {
            writes.affinity_sets.extend(now.affinity_sets.iter().filter(|s| !before.affinity_sets.contains(s)));
            writes.chains.extend(now.chains.iter().filter(|c| !before.chains.contains(c)));
            writes.emptied_chains.extend(
                before
                    .chains
                    .iter()
                    .map(|(name, _, _)| name.as_str())
                    .filter(|n| !now.chains.iter().any(|c| c.0 == *n)),
            );
            writes.deleted_sets.extend(
                before
                    .affinity_sets
                    .iter()
                    .filter(|s| !now.affinity_sets.iter().any(|n| n.name == s.name))
                    .map(|s| s.name.clone()),
            );
        }
        writes.render(&mut script);
        // Every element that goes before any that comes: a key may pass from one port to
        // another (a cluster IP given again, an external IP its first owner let go), and a
        // map takes no second verdict for a key.
        for (before, now) in &changed {
            for (map, element) in &before.elements {
                if !now.elements.iter().any(|(m, e)| m == map && e == element) {
                    script.delete_element(map, element.key);
                }
            }
        }
        for (before, now) in &changed {
            for (map, element) in &now.elements {
                if !before.elements.iter().any(|(m, e)| m == map && e == element) {
                    script.add_element(map, element);
                }
            }
        }
        // The same for the endpoint maps: a block may pass from one chain to another. (A
        // map deleted above goes with its elements.)
        let gone = changed
            .iter()
            .flat_map(|(before, now)| before.endpoints.iter().filter(|e| !now.endpoints.contains(e)))
            .filter(|(map, _, _)| self.endpoint_maps.contains(map))
            .map(|(map, key, _)| (map, *key));
        for (map, keys) in by_map(gone) {
            script.delete_endpoints(&map.name(), &keys);
        }
        let new = changed
            .iter()
            .flat_map(|(before, now)| now.endpoints.iter().filter(|e| !before.endpoints.contains(e)))
            .map(|(map, key, endpoint)| (map, (*key, *endpoint)));
        for (map, endpoints) in by_map(new) {
            script.add_endpoints(&map.name(), &endpoints);
        }
        let touched: BTreeSet<Ipv4Addr> =
            changed.iter().flat_map(|(before, now)| before.hairpins.iter().chain(&now.hairpins)).copied().collect();
        let (gone, new): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) = touched
            .into_iter()
            .filter(|ip| applied.hairpins.contains_key(ip) != self.hairpins.contains_key(ip))
            .partition(|ip| applied.hairpins.contains_key(ip));
        script.delete_pairs(HAIRPINS, &gone);
        script.add_pairs(HAIRPINS, &new);
        let emptied = writes.emptied_chains.iter().map(|c| c.to_string()).collect();
        (script, emptied)
    }
}

/// kube-proxy's hashAndTruncate: the name behind 8 characters of its hash, cut to what
/// nftables allows once a prefix is added.
fn hash_and_truncate(name: &str) -> String {
    const MAX: usize = 256 - 16;
    let named = format!("{}-{name}", hash(name, 8));
    if named.len() > MAX { format!("{}...", &named[..MAX - 3]) } else { named }
}

/// `HASH-namespace/name/protocol/port`.
fn service_base(svc: &ServicePort) -> String {
    hash_and_truncate(&format!("{}/{}/{}/{}", svc.namespace, svc.name, svc.protocol.as_str(), svc.port_name))
}

/// `HASH-namespace/name/protocol/port__ip/port`.
fn endpoint_base(svc: &ServicePort, endpoint: SocketAddrV4) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{}/{}",
        svc.namespace,
        svc.name,
        svc.protocol.as_str(),
        svc.port_name,
        endpoint.ip(),
        endpoint.port()
    ))
}

/// The whole table for `services`.
pub fn rules(services: &[ServicePort], config: &ProxyConfig) -> RuleSet {
    rules_after(services, config, None)
}

/// [`rules`], taking from `previous` (derived with the same `config`) what it holds for
/// the ports that did not change: a sync derives only the services that changed.
fn rules_after(services: &[ServicePort], config: &ProxyConfig, previous: Option<&RuleSet>) -> RuleSet {
    let mut ports: Vec<(PortKey, &ServicePort)> = services
        .iter()
        .map(|svc| ((svc.namespace.clone(), svc.name.clone(), svc.port_name.clone(), svc.protocol), svc))
        .collect();
    ports.sort_by(|a, b| a.0.cmp(&b.0));
    let mut claimed = HashSet::new();
    let ports: Vec<(PortKey, Cow<ServicePort>)> =
        ports.into_iter().filter_map(|(key, svc)| Some((key, claim_keys(svc, &mut claimed)?))).collect();
    // The ports that did not change keep their rules, and so their blocks of the endpoint
    // map; the others take blocks after them.
    let mut blocks = Blocks::default();
    let kept: Vec<Option<Arc<ServiceRules>>> = ports
        .iter()
        .map(|(key, svc)| {
            let (_, rules) = previous?.services.get(key).filter(|(port, _)| port == svc.as_ref())?;
            blocks.keep(rules);
            Some(rules.clone())
        })
        .collect();
    let services = ports
        .into_iter()
        .zip(kept)
        .map(|((key, svc), kept)| {
            let rules = kept.unwrap_or_else(|| Arc::new(service_rules(&svc, config, &mut blocks)));
            (key, (svc.into_owned(), rules))
        })
        .collect::<BTreeMap<_, _>>();
    let mut hairpins = HashMap::new();
    for ip in services.values().flat_map(|(_, rules)| &rules.hairpins) {
        *hairpins.entry(*ip).or_insert(0) += 1;
    }
    let endpoint_maps = services.values().flat_map(|(_, rules)| &rules.endpoints).map(|(map, _, _)| *map).collect();
    RuleSet { fixed: fixed_chains(config), services, hairpins, endpoint_maps }
}

/// `svc` as far as the verdict maps can hold it. A map holds one verdict per key, and
/// the kernel refuses a second with the whole transaction: a port whose cluster IP and
/// port an earlier port has is left out, external addresses and a node port an earlier
/// one has are dropped from it. The earlier port (in name order) keeps them, as the first
/// of two matching rules would with iptables.
fn claim_keys<'a>(svc: &'a ServicePort, claimed: &mut HashSet<Key>) -> Option<Cow<'a, ServicePort>> {
    let (proto, port) = (svc.protocol, svc.port);
    if !claimed.insert(Key::Destination(svc.cluster_ip, proto, port)) {
        return None;
    }
    let external_ips: Vec<Ipv4Addr> =
        svc.external_ips.iter().copied().filter(|ip| claimed.insert(Key::Destination(*ip, proto, port))).collect();
    let node_port = svc.node_port.filter(|p| claimed.insert(Key::Port(proto, *p)));
    if external_ips == svc.external_ips && node_port == svc.node_port {
        return Some(Cow::Borrowed(svc));
    }
    Some(Cow::Owned(ServicePort { external_ips, node_port, ..svc.clone() }))
}

fn hook(kind: ChainKind, hook: HookPoint, priority: i32) -> Option<Hook> {
    Some(Hook::new(kind, hook, priority))
}

/// The chains every node has, whatever its services.
fn fixed_chains(config: &ProxyConfig) -> Vec<Chain> {
    let loopback: ipnet::Ipv4Net = "127.0.0.0/8".parse().expect("a CIDR");
    let check = |chain: &str| Rule::new([Match::NewConnection], [Action::Jump(chain.into())]);
    // Filter before DNAT (priority dstnat - 10), on the addresses the client used. Node
    // ports only on the way in: the node's own traffic to one of its node ports keeps to
    // the cluster policy (the external chain's short-circuit), as kube-proxy's.
    let mut chains: Vec<Chain> = vec![
        // A load balancer's sources: checked on the address the client used, before DNAT.
        ("filter-prerouting".into(), hook(ChainKind::Filter, HookPoint::Prerouting, -110), vec![check(FIREWALL_CHECK)]),
        (
            "filter-input".into(),
            hook(ChainKind::Filter, HookPoint::Input, -110),
            vec![check(NODEPORT_ENDPOINTS_CHECK), check(SERVICE_ENDPOINTS_CHECK)],
        ),
        (
            "filter-forward".into(),
            hook(ChainKind::Filter, HookPoint::Forward, -110),
            vec![check(SERVICE_ENDPOINTS_CHECK)],
        ),
        (
            "filter-output".into(),
            hook(ChainKind::Filter, HookPoint::Output, -110),
            vec![check(SERVICE_ENDPOINTS_CHECK), check(FIREWALL_CHECK)],
        ),
    ];
    for (name, point) in [("nat-prerouting", HookPoint::Prerouting), ("nat-output", HookPoint::Output)] {
        let jump = vec![Rule::new([], [Action::Jump(SERVICES.into())])];
        chains.push((name.into(), hook(ChainKind::Nat, point, -100), jump));
    }
    // Hairpin: a pod that reached itself through a service is masqueraded, or its reply
    // would not come back through the DNAT. Only DNATed connections: an endpoint on the
    // host's network (the API server on 127.0.0.1) talks to itself directly too.
    chains.push((
        "nat-postrouting".into(),
        hook(ChainKind::Nat, HookPoint::Postrouting, 100),
        vec![
            Rule::new(
                [Match::Dnatted, Match::SourceAndDestinationInSet(HAIRPINS.into())],
                [Action::Jump(MARK_MASQ.into())],
            ),
            Rule::new([], [Action::Jump(MASQUERADING.into())]),
        ],
    ));
    let by_destination = |map: &str| Rule::new([], [Action::DestinationVmap(map.into())]);
    let by_node_port = |map: &str| {
        Rule::new([Match::LocalDestination, Match::DestinationNotIn(loopback)], [Action::PortVmap(map.into())])
    };
    chains.push((SERVICE_ENDPOINTS_CHECK.into(), None, vec![by_destination(NO_ENDPOINT_SERVICES)]));
    chains.push((FIREWALL_CHECK.into(), None, vec![by_destination(FIREWALL_IPS)]));
    chains.push((NODEPORT_ENDPOINTS_CHECK.into(), None, vec![by_node_port(NO_ENDPOINT_NODEPORTS)]));
    chains.push((SERVICES.into(), None, vec![by_destination(SERVICE_IPS), by_node_port(SERVICE_NODEPORTS)]));
    chains.push((MARK_MASQ.into(), None, vec![Rule::new([], [Action::SetMark(MASQ_MARK)])]));
    chains.push((
        MASQUERADING.into(),
        None,
        vec![
            Rule::new([Match::MarkClear(MASQ_MARK)], [Action::Return]),
            Rule::new([], [Action::ToggleMark(MASQ_MARK)]),
            Rule::new([], [Action::Masquerade { fully_random: config.random_fully }]),
        ],
    ));
    // No endpoints: refuse at once (ICMP port unreachable), not a timeout.
    chains.push((REJECT_CHAIN.into(), None, vec![Rule::new([], [Action::Reject])]));
    chains
}

fn service_rules(svc: &ServicePort, config: &ProxyConfig, blocks: &mut Blocks) -> ServiceRules {
    let name = svc.port_name_string();
    let proto = svc.protocol;
    let mut unit = ServiceRules::default();
    let base = service_base(svc);
    let service_chain = format!("service-{base}");
    let local_chain = format!("local-{base}");
    let external_chain = format!("external-{base}");
    let chain_of = |route: Route| route.chain(&service_chain, &local_chain);
    // Where a route with no endpoint to take leaves the packets, in the filter maps.
    let refusal = |route: Route| match route {
        Route::Reject => Some((Verdict::Goto(REJECT_CHAIN.into()), name.clone())),
        Route::Drop => Some((Verdict::Drop, format!("{name} has no local endpoints"))),
        Route::Cluster | Route::Local => None,
    };
    let element = |key: Key, verdict: Verdict, comment: Option<String>| Element { key, verdict, comment };

    let cluster_key = Key::Destination(svc.cluster_ip, proto, svc.port);
    let internal = svc.internal_route();
    if let Some(chain) = chain_of(internal) {
        unit.elements.push((SERVICE_IPS, element(cluster_key, Verdict::Goto(chain), None)));
    }
    if let Some((verdict, comment)) = refusal(internal) {
        unit.elements.push((NO_ENDPOINT_SERVICES, element(cluster_key, verdict, Some(comment))));
    }
    let external = svc.external_route();
    let external_keys = svc
        .external_ips
        .iter()
        .map(|ip| (SERVICE_IPS, NO_ENDPOINT_SERVICES, Key::Destination(*ip, proto, svc.port)))
        .chain(svc.node_port.map(|p| (SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS, Key::Port(proto, p))));
    for (map, no_endpoint_map, key) in external_keys {
        if svc.uses_external_chain() {
            unit.elements.push((map, element(key, Verdict::Goto(external_chain.clone()), None)));
        }
        if let Some((verdict, comment)) = refusal(external) {
            unit.elements.push((no_endpoint_map, element(key, verdict, Some(comment))));
        }
    }

    // loadBalancerSourceRanges: other sources are dropped before DNAT.
    let firewalled = svc.firewalled_ips();
    if !firewalled.is_empty() {
        let chain = format!("firewall-{base}");
        for ip in firewalled {
            let key = Key::Destination(ip, proto, svc.port);
            unit.elements.push((FIREWALL_IPS, element(key, Verdict::Goto(chain.clone()), None)));
        }
        let allowed = svc.source_ranges.iter().map(|range| Rule::new([Match::SourceIn(*range)], [Action::Return]));
        let rules = allowed.chain([Rule::new([], [Action::Drop])]).collect();
        unit.chains.push((chain, None, rules));
    }

    if svc.uses_external_chain() {
        let mut rules = Vec::new();
        if svc.external_local {
            // Traffic that did not come from outside keeps to the cluster policy, as if it
            // had gone out to a load balancer and come back: pods', then the node's own
            // (masqueraded: its source is an address of the node, maybe the external IP).
            if let Some(cidr) = config.cluster_cidr {
                rules.push(Rule::new([Match::SourceIn(cidr)], [Action::Goto(service_chain.clone())]));
            }
            rules.push(Rule::new([Match::LocalSource], [Action::Jump(MARK_MASQ.into())]));
            rules.push(Rule::new([Match::LocalSource], [Action::Goto(service_chain.clone())]));
        } else {
            // It may go to another node's endpoint: masqueraded, or the reply would not
            // come back through this node.
            rules.push(Rule::new([], [Action::Jump(MARK_MASQ.into())]));
        }
        if let Some(chain) = chain_of(external) {
            rules.push(Rule::new([], [Action::Goto(chain)]));
        }
        unit.chains.push((external_chain, None, rules));
    }

    let endpoints = svc.routed_endpoints();
    unit.hairpins = endpoints.iter().map(|e| *e.ip()).collect::<BTreeSet<_>>().into_iter().collect();
    // Traffic to the cluster IP from outside the cluster may go to another node's
    // endpoint: masqueraded, in whichever chain the cluster IP leads to.
    let off_cluster = |chain: &str| {
        config.cluster_cidr.filter(|_| chain_of(internal).as_deref() == Some(chain)).map(|cidr| {
            Rule::new(
                [Match::DestinationIs(svc.cluster_ip), Match::Port(proto, svc.port), Match::SourceNotIn(cidr)],
                [Action::Jump(MARK_MASQ.into())],
            )
        })
    };
    for (chain, chosen) in [(&service_chain, svc.cluster_endpoints()), (&local_chain, svc.local_chain_endpoints())] {
        if chosen.is_empty() {
            continue;
        }
        let mut rules: Vec<Rule> = off_cluster(chain).into_iter().collect();
        if svc.affinity_timeout.is_some() {
            rules.extend(affinity_picks(svc, chosen));
        } else {
            let first = blocks.take(chain, chosen.len());
            let map = EndpointMap::of(proto, first);
            let pick = Action::DnatToOneOf { map: map.name(), first, count: chosen.len() };
            rules.push(Rule::new([Match::Protocol(proto)], [pick]));
            unit.endpoints.extend(chosen.iter().zip(first..).map(|(endpoint, key)| (map, key, *endpoint)));
        }
        unit.chains.push((chain.clone(), None, rules));
    }

    if let Some(timeout) = svc.affinity_timeout {
        for endpoint in endpoints {
            let base = endpoint_base(svc, endpoint);
            unit.affinity_sets.push(AffinitySet { name: format!("affinity-{base}"), timeout });
            let rules = vec![
                Rule::new([], [Action::RememberSource(format!("affinity-{base}"))]),
                Rule::new([Match::Protocol(proto)], [Action::Dnat(endpoint)]),
            ];
            unit.chains.push((format!("endpoint-{base}"), None, rules));
        }
    }
    unit
}

/// With ClientIP affinity: a source seen lately goes to the endpoint it went to; another is
/// sent to one of `chosen` at random, in the endpoint's chain, which remembers it.
fn affinity_picks(svc: &ServicePort, chosen: &[SocketAddrV4]) -> Vec<Rule> {
    let bases: Vec<String> = chosen.iter().map(|e| endpoint_base(svc, *e)).collect();
    let mut rules: Vec<Rule> = bases
        .iter()
        .map(|base| {
            Rule::new([Match::SourceInSet(format!("affinity-{base}"))], [Action::Goto(format!("endpoint-{base}"))])
        })
        .collect();
    let n = bases.len();
    for (i, base) in bases.iter().enumerate() {
        let pick = if i + 1 < n { vec![Match::OneIn(n - i)] } else { Vec::new() };
        rules.push(Rule::new(pick, [Action::Goto(format!("endpoint-{base}"))]));
    }
    rules
}

pub struct Proxier {
    config: ProxyConfig,
    /// Opened at the first sync, kept after.
    nft: Option<Nft>,
    /// What the table holds, as of the last successful sync; `None` forces a full sync.
    applied: Option<RuleSet>,
    /// Emptied chains, to delete once the kernel lets go of them.
    leftovers: Vec<String>,
}

impl Proxier {
    pub fn new(config: ProxyConfig) -> Proxier {
        Proxier { config, nft: None, applied: None, leftovers: Vec::new() }
    }

    pub fn has_leftovers(&self) -> bool {
        !self.leftovers.is_empty()
    }

    /// Brings the table to what `services` call for; in full when `full_due`.
    pub fn sync(&mut self, services: &[ServicePort], full_due: bool) -> Result<SyncReport, Error> {
        let nft = match &mut self.nft {
            Some(nft) => nft,
            slot => slot.insert(Nft::open()?),
        };
        let wanted = rules_after(services, &self.config, self.applied.as_ref());
        if !self.leftovers.is_empty() {
            let wanted_objects = wanted.service_objects();
            self.leftovers.retain(|chain| !wanted_objects.contains(chain.as_str()));
        }
        let (full, script, emptied) = match &self.applied {
            Some(applied) if !full_due => {
                let (script, emptied) = wanted.render_changes(applied);
                (false, script, emptied)
            }
            _ => {
                // What the table holds beside what is wanted: known from the last sync when
                // there was one (a periodic full sync rewrites every chain anyway, so this
                // process's own chains are all it must empty); listed from the kernel when
                // this process does not know (its first sync, or after a failed one).
                // Listing 110,000 chains costs 0.7 s.
                let stale = match &self.applied {
                    Some(applied) => wanted.stale_in(applied),
                    None => {
                        let (chains, sets) = nft.contents(TABLE)?;
                        wanted.stale_listed(chains, sets)
                    }
                };
                let script = wanted.render_full(&stale);
                (true, script, stale.chains)
            }
        };
        if let Err(e) = nft.apply(&script) {
            self.applied = None;
            return Err(e);
        }
        let rules = wanted.rule_count();
        self.applied = Some(wanted);
        self.leftovers.extend(emptied);
        self.delete_leftovers();
        Ok(SyncReport { full, rules, lines_written: script.lines() })
    }

    /// Deletes the emptied chains; those the kernel still holds (Linux < 6.2 lets go of a
    /// chain a grace period after the last map element naming it went) stay for later.
    fn delete_leftovers(&mut self) {
        if self.leftovers.is_empty() {
            return;
        }
        let mut script = Script::new(TABLE);
        for chain in &self.leftovers {
            script.delete_chain(chain);
        }
        if self.nft.as_ref().is_some_and(|nft| nft.apply(&script).is_ok()) {
            self.leftovers.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::svc;

    fn config() -> ProxyConfig {
        ProxyConfig { cluster_cidr: Some("10.0.0.0/8".parse().unwrap()), random_fully: true }
    }

    /// The lines of `script` that mention `needle`.
    fn lines_with(script: &Script, needle: &str) -> Vec<String> {
        script.text().lines().filter(|l| l.contains(needle)).map(String::from).collect()
    }

    /// The endpoint map of the TCP chain whose block starts at `first`.
    fn tcp_map(first: u32) -> String {
        EndpointMap::of(Protocol::Tcp, first).name()
    }

    /// The rule by which TCP `chain` draws from its `count` endpoints at keys `first..`.
    fn pick_rule(chain: &str, first: u32, count: usize) -> String {
        let pick = Action::DnatToOneOf { map: tcp_map(first), first, count };
        format!("add rule ip kube-proxy {chain} {}", Rule::new([Match::Protocol(Protocol::Tcp)], [pick]))
    }

    #[test]
    fn chain_names_match_kube_proxy() {
        // From kube-proxy's own tests (pkg/proxy/nftables/proxier_test.go).
        let s = svc("ns1", "svc1", "p80", "172.30.0.41", 80, &[]);
        assert_eq!(service_base(&s), "ULMVA6XW-ns1/svc1/tcp/p80");
        assert_eq!(endpoint_base(&s, "10.180.0.1:80".parse().unwrap()), "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80");
        let long = "x".repeat(300);
        assert_eq!(hash_and_truncate(&long).len(), 240);
        assert!(hash_and_truncate(&long).ends_with("..."));
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let set =
            rules(&[svc("ns1", "svc1", "p80", "172.30.0.41", 80, &["10.180.0.1:80", "10.180.0.2:80"])], &config());
        let script = set.render_full(&Default::default());
        let chain = "service-ULMVA6XW-ns1/svc1/tcp/p80";
        let first = Blocks::default().take(chain, 2);
        assert_eq!(first % BLOCK, 0);
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy {chain} ")),
            [
                format!(
                    "add rule ip kube-proxy {chain} ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                ),
                pick_rule(chain, first, 2),
            ]
        );
        assert_eq!(
            lines_with(&script, "add element ip kube-proxy endpoints-tcp"),
            [format!(
                "add element ip kube-proxy {} {{ {first} : 10.180.0.1 . 80, {} : 10.180.0.2 . 80 }}",
                tcp_map(first),
                first + 1
            )]
        );
        assert!(lines_with(&script, "add chain").iter().all(|l| !l.contains("endpoint-")), "{}", script.text());
        assert_eq!(
            lines_with(&script, "add element ip kube-proxy service-ips"),
            [format!("add element ip kube-proxy service-ips {{ 172.30.0.41 . tcp . 80 : goto {chain} }}")]
        );
        // Hairpin: each endpoint as source and destination, masqueraded after DNAT.
        assert_eq!(
            lines_with(&script, "add element ip kube-proxy hairpin-endpoints"),
            ["add element ip kube-proxy hairpin-endpoints { 10.180.0.1 . 10.180.0.1, 10.180.0.2 . 10.180.0.2 }"]
        );
    }

    #[test]
    fn fixed_chains_hook_in_where_kube_proxy_does() {
        let script = rules(&[], &config()).render_full(&Default::default());
        for line in [
            "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }",
            "add chain ip kube-proxy filter-forward { type filter hook forward priority -110 ; }",
            "add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check",
            "add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check",
            "add rule ip kube-proxy nodeport-endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
            "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
            "add rule ip kube-proxy nat-output jump services",
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
            "add rule ip kube-proxy masquerading mark and 0x4000 == 0 return",
            "add rule ip kube-proxy masquerading masquerade fully-random",
            "add rule ip kube-proxy nat-postrouting ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade",
            "add rule ip kube-proxy reject-chain reject",
            "flush map ip kube-proxy service-ips",
        ] {
            assert!(script.text().lines().any(|l| l == line), "{line} missing from:\n{}", script.text());
        }
        // Maps are declared before the rules that look them up.
        let map = script.text().find("add map ip kube-proxy service-ips").unwrap();
        assert!(map < script.text().find("vmap @service-ips").unwrap());
    }

    #[test]
    fn node_port_goes_through_the_external_chain() {
        let mut s = svc("ns3", "svc3", "p80", "172.30.0.43", 80, &["10.180.0.3:80"]);
        s.node_port = Some(3003);
        let script = rules(&[s.clone()], &config()).render_full(&Default::default());
        let base = service_base(&s);
        assert!(
            lines_with(&script, "service-nodeports {").contains(&format!(
                "add element ip kube-proxy service-nodeports {{ tcp . 3003 : goto external-{base} }}"
            ))
        );
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy external-{base} ")),
            [
                format!("add rule ip kube-proxy external-{base} jump mark-for-masquerade"),
                format!("add rule ip kube-proxy external-{base} goto service-{base}"),
            ]
        );
    }

    /// loadBalancerSourceRanges: the load balancer's address (not the external IP) goes
    /// through a firewall chain that lets the ranges by and drops the rest, before DNAT.
    #[test]
    fn load_balancer_source_ranges_guard_the_load_balancer_address() {
        let s = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap(), "192.168.97.10".parse().unwrap()],
            load_balancer_ips: vec!["192.168.97.10".parse().unwrap()],
            source_ranges: vec!["192.168.99.0/24".parse().unwrap(), "10.1.2.3/32".parse().unwrap()],
            ..svc("ns9", "lb", "", "172.30.0.49", 80, &["10.180.0.9:80"])
        };
        let script = rules(std::slice::from_ref(&s), &config()).render_full(&Default::default());
        let base = service_base(&s);
        assert_eq!(
            lines_with(&script, "add element ip kube-proxy firewall-ips"),
            [format!("add element ip kube-proxy firewall-ips {{ 192.168.97.10 . tcp . 80 : goto firewall-{base} }}")]
        );
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy firewall-{base} ")),
            [
                format!("add rule ip kube-proxy firewall-{base} ip saddr 192.168.99.0/24 return"),
                format!("add rule ip kube-proxy firewall-{base} ip saddr 10.1.2.3/32 return"),
                format!("add rule ip kube-proxy firewall-{base} drop"),
            ]
        );
        for line in [
            "add chain ip kube-proxy filter-prerouting { type filter hook prerouting priority -110 ; }",
            "add rule ip kube-proxy filter-prerouting ct state new jump firewall-check",
            "add rule ip kube-proxy filter-output ct state new jump firewall-check",
            "add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        ] {
            assert!(script.text().lines().any(|l| l == line), "{line} missing from:\n{}", script.text());
        }
        // Without ranges, no firewall.
        let open = ServicePort { source_ranges: Vec::new(), ..s };
        let script = rules(&[open], &config()).render_full(&Default::default());
        assert!(!script.text().contains(&format!("firewall-{base}")), "{}", script.text());
    }

    #[test]
    fn external_ips_and_the_local_policies() {
        let local_endpoint = "10.180.0.4:80".parse().unwrap();
        let s = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap()],
            node_port: Some(3004),
            internal_local: true,
            external_local: true,
            local_endpoints: vec![local_endpoint],
            ..svc("ns4", "svc4", "p80", "172.30.0.44", 80, &["10.180.0.4:80", "10.180.1.4:80"])
        };
        let script = rules(std::slice::from_ref(&s), &config()).render_full(&Default::default());
        let base = service_base(&s);
        let mut blocks = Blocks::default();
        let service_first = blocks.take(&format!("service-{base}"), 2);
        let local_first = blocks.take(&format!("local-{base}"), 1);
        let elements = lines_with(&script, "add element ip kube-proxy endpoints-tcp").join("\n");
        for (first, endpoints) in [
            (service_first, format!("{service_first} : 10.180.0.4 . 80, {} : 10.180.1.4 . 80", service_first + 1)),
            (local_first, format!("{local_first} : 10.180.0.4 . 80")),
        ] {
            let line = format!("add element ip kube-proxy {} {{ ", tcp_map(first));
            assert!(elements.lines().any(|l| l.starts_with(&line) && l.contains(&endpoints)), "{elements}");
        }
        assert_eq!(
            lines_with(&script, "add element ip kube-proxy service-"),
            [
                format!("add element ip kube-proxy service-ips {{ 172.30.0.44 . tcp . 80 : goto local-{base} }}"),
                format!("add element ip kube-proxy service-ips {{ 192.168.99.10 . tcp . 80 : goto external-{base} }}"),
                format!("add element ip kube-proxy service-nodeports {{ tcp . 3004 : goto external-{base} }}"),
            ]
        );
        // From outside: the local endpoint, unmasqueraded; pods and the node itself keep
        // to the cluster policy.
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy external-{base} ")),
            [
                format!("add rule ip kube-proxy external-{base} ip saddr 10.0.0.0/8 goto service-{base}"),
                format!("add rule ip kube-proxy external-{base} fib saddr type local jump mark-for-masquerade"),
                format!("add rule ip kube-proxy external-{base} fib saddr type local goto service-{base}"),
                format!("add rule ip kube-proxy external-{base} goto local-{base}"),
            ]
        );
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy local-{base} ")),
            [
                format!(
                    "add rule ip kube-proxy local-{base} ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                ),
                pick_rule(&format!("local-{base}"), local_first, 1),
            ]
        );
        // The service chain (for the cluster policy) draws from both endpoints.
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy service-{base} ")),
            [pick_rule(&format!("service-{base}"), service_first, 2)]
        );

        // Endpoints on other nodes only: the Local policies drop, rather than refuse.
        let elsewhere = ServicePort { local_endpoints: Vec::new(), ..s };
        let script = rules(&[elsewhere], &config()).render_full(&Default::default());
        let drops = lines_with(&script, "has no local endpoints");
        assert_eq!(drops.len(), 3, "{}", script.text());
        assert!(drops.iter().all(|l| l.ends_with(": drop }")), "{drops:?}");
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy external-{base} ")).last().unwrap(),
            &format!("add rule ip kube-proxy external-{base} fib saddr type local goto service-{base}")
        );
    }

    #[test]
    fn internal_local_alone_picks_this_nodes_endpoints() {
        let s = ServicePort {
            internal_local: true,
            local_endpoints: vec!["10.180.0.5:80".parse().unwrap()],
            ..svc("ns5", "svc5", "p80", "172.30.0.45", 80, &["10.180.0.5:80", "10.180.1.5:80"])
        };
        let script = rules(std::slice::from_ref(&s), &config()).render_full(&Default::default());
        let base = service_base(&s);
        let first = Blocks::default().take(&format!("local-{base}"), 1);
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy local-{base} ")).last().unwrap(),
            &pick_rule(&format!("local-{base}"), first, 1)
        );
        assert_eq!(
            lines_with(&script, "add element ip kube-proxy endpoints-tcp"),
            [format!("add element ip kube-proxy {} {{ {first} : 10.180.0.5 . 80 }}", tcp_map(first))]
        );
        // No service chain, and nothing for the other node's endpoint.
        assert!(!script.text().contains(&format!("service-{base}")), "{}", script.text());
        assert!(!script.text().contains("10.180.1.5"), "{}", script.text());
    }

    #[test]
    fn a_key_passing_to_another_port_is_deleted_before_it_is_added() {
        // The address of `b` (gone) is given to `a`, which sorts before it.
        let a = svc("ns8", "a", "", "172.30.0.49", 80, &["10.180.0.9:80"]);
        let b = svc("ns8", "b", "", "172.30.0.50", 80, &["10.180.0.10:80"]);
        let before = rules(&[a.clone(), b], &config());
        let a2 = ServicePort { cluster_ip: "172.30.0.50".parse().unwrap(), ..a };
        let (script, _) = rules(&[a2], &config()).render_changes(&before);
        let text = script.text();
        let deleted = text.find("delete element ip kube-proxy service-ips { 172.30.0.50 . tcp . 80 }").unwrap();
        let added = text.find("add element ip kube-proxy service-ips { 172.30.0.50 . tcp . 80 :").unwrap();
        assert!(deleted < added, "{text}");
    }

    #[test]
    fn keys_another_port_has_are_left_to_it() {
        let first = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap()],
            node_port: Some(3007),
            ..svc("ns7", "a", "", "172.30.0.47", 80, &["10.180.0.7:80"])
        };
        let second = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap(), "192.168.99.11".parse().unwrap()],
            node_port: Some(3007),
            ..svc("ns7", "b", "", "172.30.0.48", 80, &["10.180.0.8:80"])
        };
        let twin = svc("ns7", "c", "", "172.30.0.47", 80, &["10.180.0.9:80"]);
        let script = rules(&[twin, second, first], &config()).render_full(&Default::default());
        let elements = lines_with(&script, "add element");
        let with = |key: &str| elements.iter().filter(|l| l.contains(key)).count();
        assert_eq!((with("192.168.99.10 "), with("192.168.99.11 "), with("3007 "), with("172.30.0.47 ")), (1, 1, 1, 1));
        let base_a = service_base(&svc("ns7", "a", "", "172.30.0.47", 80, &[]));
        assert!(elements.iter().any(|l| l.contains("192.168.99.10 ") && l.contains(&base_a)), "{elements:?}");
    }

    #[test]
    fn no_endpoints_rejects() {
        let mut s = svc("ns6", "svc6", "p80", "172.30.0.46", 80, &[]);
        s.node_port = Some(3006);
        let set = rules(&[s], &config());
        let script = set.render_full(&Default::default());
        assert_eq!(
            lines_with(&script, "add element"),
            [
                "add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain }",
                "add element ip kube-proxy no-endpoint-nodeports { tcp . 3006 comment \"ns6/svc6:p80\" : goto reject-chain }",
            ]
        );
        assert!(lines_with(&script, "add chain").iter().all(|l| !is_service_object(l)), "{}", script.text());
    }

    #[test]
    fn client_ip_affinity_checks_then_remembers() {
        let mut s = svc("ns5", "svc5", "p80", "172.30.0.45", 80, &["10.180.0.3:80"]);
        s.affinity_timeout = Some(10800);
        let script = rules(&[s.clone()], &config()).render_full(&Default::default());
        let ep = endpoint_base(&s, "10.180.0.3:80".parse().unwrap());
        assert!(script.text().contains(&format!(
            "add set ip kube-proxy affinity-{ep} {{ type ipv4_addr ; size 65535 ; flags dynamic,timeout ; timeout 10800s ; }}"
        )));
        let service = lines_with(&script, &format!("rule ip kube-proxy service-{} ", service_base(&s)));
        assert_eq!(
            service[1],
            format!("add rule ip kube-proxy service-{} ip saddr @affinity-{ep} goto endpoint-{ep}", service_base(&s))
        );
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy endpoint-{ep} "))[0],
            format!("add rule ip kube-proxy endpoint-{ep} update @affinity-{ep} {{ ip saddr }}")
        );
    }

    #[test]
    fn changes_rewrite_only_what_differs() {
        let a = svc("ns", "a", "", "10.96.0.1", 80, &["10.1.0.2:80"]);
        let b = svc("ns", "b", "", "10.96.0.2", 80, &["10.1.0.3:80"]);
        let before = rules(&[a.clone(), b.clone()], &config());
        let (script, emptied) = before.render_changes(&before);
        assert!(script.is_empty() && emptied.is_empty(), "{}", script.text());
        let chain = format!("service-{}", service_base(&b));
        let text = before.render_full(&Default::default()).text();
        let rule = text.lines().find(|l| l.starts_with(&format!("add rule ip kube-proxy {chain} meta"))).unwrap();
        let first: u32 = rule.split(" offset ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        let map = tcp_map(first);

        // b's endpoint moves: an element of the endpoint map and of the hairpin set change,
        // no rule (a rule would make the kernel validate the whole table); a is not touched.
        let mut b2 = b.clone();
        b2.endpoints = vec!["10.1.0.4:80".parse().unwrap()];
        let (script, emptied) = rules(&[a.clone(), b2.clone()], &config()).render_changes(&before);
        assert_eq!(
            script.text(),
            format!(
                "delete element ip kube-proxy {map} {{ {first} }}\n\
                 add element ip kube-proxy {map} {{ {first} : 10.1.0.4 . 80 }}\n\
                 delete element ip kube-proxy hairpin-endpoints {{ 10.1.0.3 . 10.1.0.3 }}\n\
                 add element ip kube-proxy hairpin-endpoints {{ 10.1.0.4 . 10.1.0.4 }}\n"
            )
        );
        assert!(emptied.is_empty());

        // b gets a second endpoint, a's: its chain draws from two keys of its block; a's
        // address is in the hairpin set already.
        b2.endpoints = vec!["10.1.0.3:80".parse().unwrap(), "10.1.0.2:80".parse().unwrap()];
        let (script, emptied) = rules(&[a.clone(), b2], &config()).render_changes(&before);
        assert_eq!(
            script.text(),
            format!(
                "add chain ip kube-proxy {chain}\n\
                 flush chain ip kube-proxy {chain}\n\
                 add rule ip kube-proxy {chain} ip daddr 10.96.0.2 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade\n\
                 {}\n\
                 add element ip kube-proxy {map} {{ {} : 10.1.0.2 . 80 }}\n",
                pick_rule(&chain, first, 2),
                first + 1
            )
        );
        assert!(emptied.is_empty());

        // b goes: its element leaves service-ips and its chain is emptied; its endpoint map,
        // which a does not use, is deleted once the chain is, elements and all; its
        // endpoint's address leaves the hairpin set.
        let (script, emptied) = rules(std::slice::from_ref(&a), &config()).render_changes(&before);
        assert_ne!(before.services[&("ns".into(), "a".into(), "".into(), Protocol::Tcp)].1.endpoints[0].0.name(), map);
        assert_eq!(
            lines_with(&script, "element"),
            [
                "delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }",
                "delete element ip kube-proxy hairpin-endpoints { 10.1.0.3 . 10.1.0.3 }",
            ]
        );
        let text = script.text();
        let deleted = text.find(&format!("delete set ip kube-proxy {map}\n")).unwrap();
        assert!(text.find(&format!("flush chain ip kube-proxy {chain}\n")).unwrap() < deleted, "{text}");
        assert_eq!(emptied, [chain]);
    }

    /// A chain takes the block its name hashes to, else the next free one; the blocks of a
    /// port that did not change stay as they are.
    #[test]
    fn blocks_are_taken_once_and_kept() {
        let mut blocks = Blocks::default();
        let home = blocks.take("service-A", 3);
        blocks.0.clear();
        blocks.0.insert(home / BLOCK);
        assert_eq!(blocks.take("service-A", 3), (home / BLOCK + 1) % BLOCKS * BLOCK);
        // A chain with more endpoints than a block takes consecutive blocks.
        let mut blocks = Blocks::default();
        let big = blocks.take("service-B", BLOCK as usize + 1);
        assert!(blocks.0.contains(&(big / BLOCK)) && blocks.0.contains(&(big / BLOCK + 1)));

        // A new port never moves the block of one that did not change.
        let ports: Vec<ServicePort> =
            (0..50).map(|i| svc("ns", &format!("s{i}"), "", &format!("10.96.0.{i}"), 80, &["10.1.0.2:80"])).collect();
        let before = rules(&ports[1..], &config());
        let after = rules_after(&ports, &config(), Some(&before));
        for (key, (_, rules)) in &before.services {
            assert!(Arc::ptr_eq(rules, &after.services[key].1));
        }
        let keys: HashSet<u32> = after.units().flat_map(|u| &u.endpoints).map(|(_, k, _)| k / BLOCK).collect();
        assert_eq!(keys.len(), 50);
    }

    #[test]
    fn a_full_sync_empties_stale_chains_and_deletes_stale_sets() {
        let known = AffinitySet { name: "affinity-X-ns/gone".into(), timeout: 60 };
        let script = rules(&[], &config()).render_full(&Stale {
            chains: vec!["service-X-ns/old/tcp/".into()],
            known_sets: vec![&known],
            known_endpoint_maps: vec![EndpointMap { protocol: Protocol::Udp, shard: 5 }],
            listed_sets: vec!["affinity-X-ns/old".into()],
        });
        // Each made if missing, emptied, and only then deleted.
        let text = script.text();
        let at = |line: &str| text.find(&format!("{line}\n")).unwrap_or_else(|| panic!("{line} missing: {text}"));
        assert!(
            at(
                "add set ip kube-proxy affinity-X-ns/gone { type ipv4_addr ; size 65535 ; flags dynamic,timeout ; timeout 60s ; }"
            ) < at("delete set ip kube-proxy affinity-X-ns/gone")
        );
        assert!(
            at("flush chain ip kube-proxy service-X-ns/old/tcp/") < at("delete set ip kube-proxy affinity-X-ns/old")
        );
        assert!(
            at(
                "add map ip kube-proxy endpoints-udp-5 { typeof numgen random mod 16384 : ip daddr . udp dport ; comment \"endpoints service chains draw from, by block\" ; }"
            ) < at("delete set ip kube-proxy endpoints-udp-5")
        );
        assert!(
            at("add chain ip kube-proxy service-X-ns/old/tcp/") < at("flush chain ip kube-proxy service-X-ns/old/tcp/")
        );
    }
}

/// A periodic full sync on a live table, as root in a network namespace of its own.
#[cfg(test)]
mod root_tests {
    use super::*;
    use crate::proxy::tests::svc;

    /// A full sync after earlier ones takes the stale chains from what this process
    /// applied (no listing of the table), and still succeeds when someone deleted the
    /// table in between.
    #[test]
    fn a_periodic_full_sync_knows_what_it_applied() {
        let listing = std::thread::spawn(|| {
            // SAFETY: unshare acts on this thread only, which ends with the namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET)");
            let config = ProxyConfig { cluster_cidr: None, random_fully: false };
            let (a, b) = (
                svc("ns", "a", "", "10.96.0.1", 80, &["10.1.0.1:80"]),
                svc("ns", "b", "", "10.96.0.2", 80, &["10.1.0.2:80"]),
            );
            let mut proxier = Proxier::new(config);
            proxier.sync(&[a.clone(), b], true).unwrap();
            let out = std::process::Command::new("nft").args(["delete", "table", "ip", TABLE]).output().unwrap();
            assert!(out.status.success());
            assert!(proxier.sync(&[a], true).unwrap().full);
            let out = std::process::Command::new("nft").args(["list", "table", "ip", TABLE]).output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        })
        .join()
        .unwrap();
        assert!(listing.contains("ns/a/") && !listing.contains("ns/b/"), "{listing}");
    }
}
