//! The nftables backend, in kube-proxy's nftables layout (pkg/proxy/nftables/proxier.go)
//! so operators recognise it: table `ip kube-proxy`; the verdict maps `service-ips`
//! (`ip . proto . port`) and `service-nodeports` (`proto . port`) send a connection's first
//! packet to its service's chain in one lookup whatever the number of services; per
//! service and per endpoint chains (`service-HASH-ns/name/proto/port`, `local-…` for the
//! Local traffic policies, `external-…` for node ports and external IPs,
//! `endpoint-HASH-…__ip/port`); `no-endpoint-services` / `no-endpoint-nodeports` reject
//! (or drop, when a Local policy finds endpoints on other nodes only);
//! `mark-for-masquerade` / `masquerading`; ClientIP affinity in dynamic sets with timeouts.
//!
//! One difference: an endpoint is picked by one `numgen random mod N-i == 0` rule per
//! endpoint rather than kube-proxy's `numgen random mod N vmap { … }`. Each such vmap is an
//! anonymous set, and the kernel binds an anonymous set by walking the whole transaction
//! (`__nft_set_trans_bind`): writing 10,000 services at once with `nft -f` took 88 s that
//! way, 5.7 s with the rules (Linux 6.18, nft 1.0.6).
//!
//! The rules of one service port are one unit: a sync rewrites the units that changed
//! (their chains, sets and map elements) in one transaction; a full sync rewrites
//! them all, empties the maps first, and flushes chains and deletes sets no service wants.
//! Emptied chains are deleted once nothing refers to them: at once on Linux ≥ 6.2, after
//! the kernel's grace period (on a later sync) before.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

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

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";

/// The verdict maps: name, key type, comment.
const MAPS: [(&str, KeyType, &str); 4] = [
    (SERVICE_IPS, KeyType::Destination, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    (SERVICE_NODEPORTS, KeyType::Port, "NodePort traffic"),
    (NO_ENDPOINT_SERVICES, KeyType::Destination, "vmap to drop or reject packets to services with no endpoints"),
    (NO_ENDPOINT_NODEPORTS, KeyType::Port, "vmap to drop or reject packets to service nodeports with no endpoints"),
];

/// kube-proxy's chains and sets per service have a `/` in their names; its fixed ones do not.
fn is_service_chain(chain: &str) -> bool {
    chain.contains('/')
}

fn is_affinity_set(set: &str) -> bool {
    set.starts_with("affinity-")
}

/// A chain: its name, its hook if it is a base chain, its rules.
type Chain = (String, Option<Hook>, Vec<Rule>);

/// What one service port adds to the table: what a change to it rewrites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceRules {
    chains: Vec<Chain>,
    /// ClientIP affinity sets with their timeouts (seconds).
    affinity_sets: Vec<(String, u32)>,
    /// Elements of the verdict maps.
    elements: Vec<(&'static str, Element)>,
}

/// A service port's identity: namespace, name, port name, protocol.
type PortKey = (String, String, String, Protocol);

/// The complete table for a set of service ports.
#[derive(Clone, Debug)]
pub struct RuleSet {
    fixed: Vec<Chain>,
    /// Each service port, with what it adds to the table.
    services: BTreeMap<PortKey, (ServicePort, Arc<ServiceRules>)>,
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
        chains.chain(units.flat_map(|s| s.affinity_sets.iter().map(|(name, _)| name.as_str()))).collect()
    }

    /// The script that writes the whole table, whatever it held: maps emptied and
    /// refilled, every chain rewritten, the `stale_chains` emptied, `stale_sets` deleted.
    pub fn render_full(&self, stale_chains: &[String], stale_sets: &[String]) -> Script {
        let mut script = Script::new(TABLE);
        script.table("rules for kube-proxy");
        for (map, key, comment) in MAPS {
            script.fresh_vmap(map, key, comment);
        }
        let units: Vec<&ServiceRules> = self.units().collect();
        write_units(&mut script, &self.fixed, &units);
        for (map, element) in units.iter().flat_map(|u| &u.elements) {
            script.add_element(map, element);
        }
        // Made if missing before it is emptied: stale names may come from what this
        // process applied, which someone may have deleted since.
        for chain in stale_chains {
            script.fresh_chain(chain, None);
        }
        for set in stale_sets {
            script.delete_set(set);
        }
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
        write_units(&mut script, &[], &changed.iter().map(|(_, now)| *now).collect::<Vec<_>>());
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
        let mut stale_chains = Vec::new();
        let mut stale_sets = Vec::new();
        for (before, now) in &changed {
            for (chain, _, _) in &before.chains {
                if !now.chains.iter().any(|(c, _, _)| c == chain) {
                    script.flush_chain(chain);
                    stale_chains.push(chain.clone());
                }
            }
            stale_sets.extend(
                before.affinity_sets.iter().filter(|(set, _)| !now.affinity_sets.iter().any(|(s, _)| s == set)),
            );
        }
        for (set, _) in stale_sets {
            script.delete_set(set);
        }
        (script, stale_chains)
    }
}

/// Declares the units' sets, then the chains (emptied), then writes the chains' rules: a
/// rule may only name sets and chains that exist.
fn write_units(script: &mut Script, fixed: &[Chain], units: &[&ServiceRules]) {
    for (set, timeout) in units.iter().flat_map(|u| &u.affinity_sets) {
        script.dynamic_set(set, *timeout);
    }
    let chains = || fixed.iter().chain(units.iter().flat_map(|u| &u.chains));
    for (name, hook, _) in chains() {
        script.fresh_chain(name, *hook);
    }
    for (name, _, rules) in chains() {
        for rule in rules {
            script.rule(name, rule);
        }
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
    let services = ports
        .into_iter()
        .filter_map(|(key, svc)| {
            let svc = claim_keys(svc, &mut claimed)?;
            let rules = previous
                .and_then(|p| p.services.get(&key))
                .filter(|(port, _)| *port == *svc)
                .map(|(_, rules)| rules.clone())
                .unwrap_or_else(|| Arc::new(service_rules(&svc, config)));
            Some((key, (svc.into_owned(), rules)))
        })
        .collect();
    RuleSet { fixed: fixed_chains(config), services }
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
            vec![check(SERVICE_ENDPOINTS_CHECK)],
        ),
    ];
    for (name, point) in [("nat-prerouting", HookPoint::Prerouting), ("nat-output", HookPoint::Output)] {
        let jump = vec![Rule::new([], [Action::Jump(SERVICES.into())])];
        chains.push((name.into(), hook(ChainKind::Nat, point, -100), jump));
    }
    chains.push((
        "nat-postrouting".into(),
        hook(ChainKind::Nat, HookPoint::Postrouting, 100),
        vec![Rule::new([], [Action::Jump(MASQUERADING.into())])],
    ));
    let by_destination = |map: &str| Rule::new([], [Action::DestinationVmap(map.into())]);
    let by_node_port = |map: &str| {
        Rule::new([Match::LocalDestination, Match::DestinationNotIn(loopback)], [Action::PortVmap(map.into())])
    };
    chains.push((SERVICE_ENDPOINTS_CHECK.into(), None, vec![by_destination(NO_ENDPOINT_SERVICES)]));
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

fn service_rules(svc: &ServicePort, config: &ProxyConfig) -> ServiceRules {
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

    let endpoints: Vec<(SocketAddrV4, String)> =
        svc.routed_endpoints().into_iter().map(|e| (e, endpoint_base(svc, e))).collect();
    let picks = |chosen: &[SocketAddrV4]| -> Vec<Rule> {
        let chosen: Vec<&String> = endpoints.iter().filter(|(e, _)| chosen.contains(e)).map(|(_, b)| b).collect();
        let mut rules = Vec::new();
        if svc.affinity_timeout.is_some() {
            for base in &chosen {
                rules.push(Rule::new(
                    [Match::SourceInSet(format!("affinity-{base}"))],
                    [Action::Goto(format!("endpoint-{base}"))],
                ));
            }
        }
        let n = chosen.len();
        for (i, base) in chosen.iter().enumerate() {
            let pick = if i + 1 < n { vec![Match::OneIn(n - i)] } else { Vec::new() };
            rules.push(Rule::new(pick, [Action::Goto(format!("endpoint-{base}"))]));
        }
        rules
    };
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
        if !chosen.is_empty() {
            let rules = off_cluster(chain).into_iter().chain(picks(chosen)).collect();
            unit.chains.push((chain.clone(), None, rules));
        }
    }

    for (endpoint, base) in endpoints {
        if let Some(timeout) = svc.affinity_timeout {
            unit.affinity_sets.push((format!("affinity-{base}"), timeout));
        }
        // Hairpin: a pod reaching itself through the service is masqueraded, or its reply
        // would not come back through the DNAT.
        let mut rules = vec![Rule::new([Match::SourceIs(*endpoint.ip())], [Action::Jump(MARK_MASQ.into())])];
        if svc.affinity_timeout.is_some() {
            rules.push(Rule::new([], [Action::RememberSource(format!("affinity-{base}"))]));
        }
        rules.push(Rule::new([Match::Protocol(proto)], [Action::Dnat(endpoint)]));
        unit.chains.push((format!("endpoint-{base}"), None, rules));
    }
    unit
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
                let (chains, sets) = match &self.applied {
                    Some(applied) => {
                        let known = applied.service_objects();
                        let names =
                            |ours: fn(&str) -> bool| known.iter().filter(|n| ours(n)).map(|n| n.to_string()).collect();
                        (names(is_service_chain), names(is_affinity_set))
                    }
                    None => nft.contents(TABLE)?,
                };
                let wanted_objects = wanted.service_objects();
                let unwanted = |n: &String| !wanted_objects.contains(n.as_str()) && !wanted.is_fixed_chain(n);
                // Any chain of the table: a fixed one of an older layout goes too.
                let stale_chains: Vec<String> = chains.into_iter().filter(unwanted).collect();
                let stale_sets: Vec<String> = sets.into_iter().filter(|n| is_affinity_set(n) && unwanted(n)).collect();
                (true, wanted.render_full(&stale_chains, &stale_sets), stale_chains)
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
        let script = set.render_full(&[], &[]);
        let chain = "service-ULMVA6XW-ns1/svc1/tcp/p80";
        let ep1 = "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80";
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy {chain} ")),
            [
                format!(
                    "add rule ip kube-proxy {chain} ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                ),
                format!("add rule ip kube-proxy {chain} numgen random mod 2 == 0 goto {ep1}"),
                format!(
                    "add rule ip kube-proxy {chain} goto endpoint-{}",
                    endpoint_base(&svc("ns1", "svc1", "p80", "172.30.0.41", 80, &[]), "10.180.0.2:80".parse().unwrap())
                ),
            ]
        );
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy {ep1} ")),
            [
                format!("add rule ip kube-proxy {ep1} ip saddr 10.180.0.1 jump mark-for-masquerade"),
                format!("add rule ip kube-proxy {ep1} meta l4proto tcp dnat to 10.180.0.1:80"),
            ]
        );
        assert_eq!(
            lines_with(&script, "add element"),
            [format!("add element ip kube-proxy service-ips {{ 172.30.0.41 . tcp . 80 : goto {chain} }}")]
        );
    }

    #[test]
    fn fixed_chains_hook_in_where_kube_proxy_does() {
        let script = rules(&[], &config()).render_full(&[], &[]);
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
        let script = rules(&[s.clone()], &config()).render_full(&[], &[]);
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
        let script = rules(std::slice::from_ref(&s), &config()).render_full(&[], &[]);
        let (base, local) = (service_base(&s), endpoint_base(&s, local_endpoint));
        assert_eq!(
            lines_with(&script, "add element"),
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
                format!("add rule ip kube-proxy local-{base} goto endpoint-{local}"),
            ]
        );
        assert_eq!(lines_with(&script, &format!("rule ip kube-proxy service-{base} ")).len(), 2, "{}", script.text());

        // Endpoints on other nodes only: the Local policies drop, rather than refuse.
        let elsewhere = ServicePort { local_endpoints: Vec::new(), ..s };
        let script = rules(&[elsewhere], &config()).render_full(&[], &[]);
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
        let script = rules(std::slice::from_ref(&s), &config()).render_full(&[], &[]);
        let (base, here) = (service_base(&s), endpoint_base(&s, "10.180.0.5:80".parse().unwrap()));
        assert_eq!(
            lines_with(&script, &format!("rule ip kube-proxy local-{base} ")).last().unwrap(),
            &format!("add rule ip kube-proxy local-{base} goto endpoint-{here}")
        );
        // No service chain, and no chain for the other node's endpoint.
        let chains = lines_with(&script, "add chain");
        assert!(
            chains.iter().all(|l| !l.contains(&format!("service-{base}")) && !l.contains("10.180.1.5")),
            "{chains:?}"
        );
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
        let script = rules(&[twin, second, first], &config()).render_full(&[], &[]);
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
        let script = set.render_full(&[], &[]);
        assert_eq!(
            lines_with(&script, "add element"),
            [
                "add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain }",
                "add element ip kube-proxy no-endpoint-nodeports { tcp . 3006 comment \"ns6/svc6:p80\" : goto reject-chain }",
            ]
        );
        assert!(lines_with(&script, "add chain").iter().all(|l| !is_service_chain(l)), "{}", script.text());
    }

    #[test]
    fn client_ip_affinity_checks_then_remembers() {
        let mut s = svc("ns5", "svc5", "p80", "172.30.0.45", 80, &["10.180.0.3:80"]);
        s.affinity_timeout = Some(10800);
        let script = rules(&[s.clone()], &config()).render_full(&[], &[]);
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
            lines_with(&script, &format!("rule ip kube-proxy endpoint-{ep} "))[1],
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

        // b's endpoint moves: b's service chain and new endpoint chain are written, the
        // old endpoint chain emptied; a and the maps are not touched.
        let mut b2 = b.clone();
        b2.endpoints = vec!["10.1.0.4:80".parse().unwrap()];
        let (script, emptied) = rules(&[a.clone(), b2.clone()], &config()).render_changes(&before);
        let old = format!("endpoint-{}", endpoint_base(&b, "10.1.0.3:80".parse().unwrap()));
        let new = format!("endpoint-{}", endpoint_base(&b2, "10.1.0.4:80".parse().unwrap()));
        assert!(!script.text().contains("ns/a/"), "{}", script.text());
        assert!(!script.text().contains("element"), "the service-ips element stays: {}", script.text());
        assert!(script.text().contains(&format!("add chain ip kube-proxy {new}\n")));
        assert!(script.text().contains(&format!("flush chain ip kube-proxy {old}\n")));
        assert_eq!(emptied, [old]);

        // b goes: its element leaves the map and its chains are emptied.
        let (script, emptied) = rules(&[a], &config()).render_changes(&before);
        assert_eq!(
            lines_with(&script, "element"),
            ["delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }"]
        );
        assert_eq!(emptied.len(), 2, "{emptied:?}");
    }

    #[test]
    fn a_full_sync_empties_stale_chains_and_deletes_stale_sets() {
        let script =
            rules(&[], &config()).render_full(&["service-X-ns/old/tcp/".into()], &["affinity-X-ns/old".into()]);
        let text = script.text();
        assert!(text.ends_with(
            "add chain ip kube-proxy service-X-ns/old/tcp/\nflush chain ip kube-proxy service-X-ns/old/tcp/\ndelete set ip kube-proxy affinity-X-ns/old\n"
        ));
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
