//! The iptables backend: the complete rule set in kube-proxy's iptables layout
//! (pkg/proxy/iptables/proxier.go) as a pure function of the service ports, chain by chain,
//! applied with one `iptables-restore --noflush` per sync that writes just the chains that
//! changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddrV4;

use super::{ProxyConfig, Route, ServicePort, SyncReport, hash};
use crate::Error;
use crate::iptables::{Iptables, Jump};

const PORTALS: &str = "-m comment --comment \"kubernetes service portals\"";
const NEW_PORTALS: &str = "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\"";
const NEW_EXTERNAL: &str =
    "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\"";
const NEW_FIREWALL: &str = "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\"";

/// kube-proxy's jumps from the built-in chains into its own.
const JUMPS: [Jump; 11] = [
    Jump { table: "nat", chain: "PREROUTING", matches: PORTALS, target: SERVICES },
    Jump { table: "nat", chain: "OUTPUT", matches: PORTALS, target: SERVICES },
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        matches: "-m comment --comment \"kubernetes postrouting rules\"",
        target: POSTROUTING,
    },
    Jump { table: "filter", chain: "INPUT", matches: NEW_EXTERNAL, target: EXTERNAL_SERVICES },
    Jump { table: "filter", chain: "FORWARD", matches: NEW_EXTERNAL, target: EXTERNAL_SERVICES },
    Jump { table: "filter", chain: "FORWARD", matches: NEW_PORTALS, target: SERVICES },
    Jump { table: "filter", chain: "OUTPUT", matches: NEW_PORTALS, target: SERVICES },
    Jump { table: "filter", chain: "INPUT", matches: NEW_FIREWALL, target: FIREWALL },
    Jump { table: "filter", chain: "FORWARD", matches: NEW_FIREWALL, target: FIREWALL },
    Jump { table: "filter", chain: "OUTPUT", matches: NEW_FIREWALL, target: FIREWALL },
    Jump {
        table: "filter",
        chain: "FORWARD",
        matches: "-m comment --comment \"kubernetes forwarding rules\"",
        target: FORWARD,
    },
];

pub struct Proxier {
    iptables: Iptables,
    config: ProxyConfig,
    /// What the node holds, as of the last successful sync; `None` forces a full sync.
    applied: Option<RuleSet>,
}

impl Proxier {
    pub fn new(iptables: Iptables, config: ProxyConfig) -> Proxier {
        Proxier { iptables, config, applied: None }
    }

    /// Brings the node's rules to what `services` call for; in full when `full_due`.
    pub fn sync(&mut self, services: &[ServicePort], full_due: bool) -> Result<SyncReport, Error> {
        let wanted = rules(services, &self.config);
        let (full, result) = match &self.applied {
            Some(applied) if !full_due => {
                let input = wanted.render_changes(applied);
                (false, if input.is_empty() { Ok(0) } else { self.iptables.restore(&input).map(|_| lines(&input)) })
            }
            _ => (true, self.full_sync(&wanted)),
        };
        match result {
            Ok(lines_written) => {
                let rules = wanted.rule_count();
                self.applied = Some(wanted);
                Ok(SyncReport { full, rules, lines_written })
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    fn full_sync(&self, wanted: &RuleSet) -> Result<usize, Error> {
        let existing = self.iptables.save("nat")?;
        let stale: Vec<String> =
            chains_in(&existing).into_iter().filter(|c| is_service_chain(c) && !wanted.nat.contains_key(c)).collect();
        let input = wanted.render_full(&stale);
        self.iptables.apply_with_jumps(&input, &JUMPS)?;
        Ok(lines(&input))
    }
}

/// The chains an iptables-save dump declares.
fn chains_in(dump: &str) -> BTreeSet<String> {
    dump.lines().filter_map(|l| l.strip_prefix(':')).filter_map(|l| l.split(' ').next()).map(String::from).collect()
}

fn lines(input: &str) -> usize {
    input.lines().count()
}

/// Whether `chain` is one of this proxy's (kubelet's own KUBE- chains are not).
pub fn is_ours(chain: &str) -> bool {
    is_service_chain(chain) || FIXED_CHAINS.contains(&chain)
}

/// The fwmark bit that asks KUBE-POSTROUTING to masquerade (kube-proxy's default bit 14).
const MASQ_MARK: &str = "0x4000";

pub const SERVICES: &str = "KUBE-SERVICES";
pub const EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const NODE_PORTS: &str = "KUBE-NODEPORTS";
pub const POSTROUTING: &str = "KUBE-POSTROUTING";
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const FORWARD: &str = "KUBE-FORWARD";
pub const FIREWALL: &str = "KUBE-PROXY-FIREWALL";

const FIXED_CHAINS: [&str; 7] = [SERVICES, EXTERNAL_SERVICES, NODE_PORTS, POSTROUTING, MARK_MASQ, FORWARD, FIREWALL];

/// Prefixes of the per-service chains; those no longer wanted are deleted.
pub const SERVICE_CHAIN_PREFIXES: [&str; 5] = ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-SVL-", "KUBE-FW-"];

/// A table's chains and their rules, each rule without its `-A CHAIN` head.
pub type Chains = BTreeMap<String, Vec<String>>;

/// The complete rule set of the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub filter: Chains,
    pub nat: Chains,
}

impl RuleSet {
    pub fn rule_count(&self) -> usize {
        self.filter.values().chain(self.nat.values()).map(Vec::len).sum()
    }

    /// iptables-restore input that writes every chain of the set, and deletes `stale`
    /// nat chains.
    pub fn render_full(&self, stale: &[String]) -> String {
        render(&self.filter, &self.nat, &[], stale)
    }

    /// iptables-restore input that takes the node from `applied` to this set: chains whose
    /// rules differ are rewritten, service chains no longer wanted are deleted, the rest is
    /// not mentioned (and so left as it is by `--noflush`). Empty when nothing changed.
    pub fn render_changes(&self, applied: &RuleSet) -> String {
        let changed = |now: &Chains, before: &Chains| -> Chains {
            now.iter()
                .filter(|(name, rules)| before.get(*name) != Some(rules))
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect()
        };
        let filter = changed(&self.filter, &applied.filter);
        let nat = changed(&self.nat, &applied.nat);
        let stale: Vec<String> = applied.nat.keys().filter(|c| !self.nat.contains_key(*c)).cloned().collect();
        if filter.is_empty() && nat.is_empty() && stale.is_empty() {
            return String::new();
        }
        render(&filter, &nat, &[], &stale)
    }
}

fn render(filter: &Chains, nat: &Chains, stale_filter: &[String], stale_nat: &[String]) -> String {
    let mut out = String::with_capacity(64 * (filter.len() + nat.len()) * 4);
    for (table, chains, stale) in [("filter", filter, stale_filter), ("nat", nat, stale_nat)] {
        if chains.is_empty() && stale.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for chain in chains.keys().chain(stale) {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (chain, rules) in chains {
            for rule in rules {
                let _ = writeln!(out, "-A {chain} {rule}");
            }
        }
        for chain in stale {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

fn chain_hash(input: &str) -> String {
    hash(input, 16)
}

fn service_chain(prefix: &str, svc: &ServicePort) -> String {
    format!("{prefix}{}", chain_hash(&format!("{}{}", svc.port_name_string(), svc.protocol.as_str())))
}

fn endpoint_chain(svc: &ServicePort, endpoint: SocketAddrV4) -> String {
    format!("KUBE-SEP-{}", chain_hash(&format!("{}{}{endpoint}", svc.port_name_string(), svc.protocol.as_str())))
}

/// The probability that rule `i` of `n` matches, so each of the n endpoints gets 1/n.
fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

/// The whole rule set for `services`.
pub fn rules(services: &[ServicePort], config: &ProxyConfig) -> RuleSet {
    let mut set = RuleSet::default();
    for chain in [SERVICES, EXTERNAL_SERVICES, FORWARD, FIREWALL] {
        set.filter.insert(chain.into(), Vec::new());
    }
    for chain in [SERVICES, NODE_PORTS, POSTROUTING, MARK_MASQ] {
        set.nat.insert(chain.into(), Vec::new());
    }
    let mut sorted: Vec<&ServicePort> = services.iter().collect();
    sorted.sort_by_key(|s| (s.port_name_string(), s.protocol));
    for svc in sorted {
        service_rules(&mut set, svc, config);
    }

    let nat = &mut set.nat;
    let push = |chains: &mut Chains, chain: &str, rule: String| chains.get_mut(chain).expect("fixed chain").push(rule);
    push(
        nat,
        SERVICES,
        "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" \
         -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
            .into(),
    );
    push(nat, POSTROUTING, format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"));
    push(nat, POSTROUTING, format!("-j MARK --xor-mark {MASQ_MARK}"));
    let random_fully = if config.random_fully { " --random-fully" } else { "" };
    push(
        nat,
        POSTROUTING,
        format!("-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{random_fully}"),
    );
    push(nat, MARK_MASQ, format!("-j MARK --or-mark {MASQ_MARK}"));
    let filter = &mut set.filter;
    push(filter, FORWARD, "-m conntrack --ctstate INVALID -j DROP".into());
    push(
        filter,
        FORWARD,
        format!(
            "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
        ),
    );
    push(
        filter,
        FORWARD,
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            .into(),
    );
    set
}

fn service_rules(set: &mut RuleSet, svc: &ServicePort, config: &ProxyConfig) {
    let name = svc.port_name_string();
    let proto = svc.protocol.as_str();
    let (ip, port) = (svc.cluster_ip, svc.port);
    let svc_chain = service_chain("KUBE-SVC-", svc);
    let local_chain = service_chain("KUBE-SVL-", svc);
    let ext_chain = service_chain("KUBE-EXT-", svc);
    let capture = format!("-m {proto} -p {proto} -d {ip} --dport {port}");
    let chain_of = |route: Route| route.chain(&svc_chain, &local_chain);
    // No endpoint to take: refused at once (ICMP port unreachable / TCP reset), or dropped
    // when other nodes have endpoints but the policy keeps to this one's.
    let refusal = |route: Route| match route {
        Route::Reject => Some(format!("-m comment --comment \"{name} has no endpoints\"")),
        Route::Drop => Some(format!("-m comment --comment \"{name} has no local endpoints\"")),
        Route::Cluster | Route::Local => None,
    };
    let target = |route: Route| if route == Route::Drop { "DROP" } else { "REJECT" };
    let push = |chains: &mut Chains, chain: &str, rule: String| chains.get_mut(chain).expect("fixed chain").push(rule);

    let internal = svc.internal_route();
    if let Some(chain) = chain_of(internal) {
        push(&mut set.nat, SERVICES, format!("-m comment --comment \"{name} cluster IP\" {capture} -j {chain}"));
    }
    if let Some(comment) = refusal(internal) {
        push(&mut set.filter, SERVICES, format!("{comment} {capture} -j {}", target(internal)));
    }
    let external = svc.external_route();
    // loadBalancerSourceRanges: the load balancer's addresses lead to the firewall chain,
    // which lets the allowed sources on to the external chain; the others go undisturbed
    // by DNAT, to be dropped in the filter table.
    let firewalled = svc.firewalled_ips();
    let fw_chain = service_chain("KUBE-FW-", svc);
    if !firewalled.is_empty() && svc.uses_external_chain() {
        let comment = format!("-m comment --comment \"{name} loadbalancer IP\"");
        let mut rules: Vec<String> =
            svc.source_ranges.iter().map(|range| format!("{comment} -s {range} -j {ext_chain}")).collect();
        rules.push(format!("-m comment --comment \"other traffic to {name} will be dropped by {FIREWALL}\""));
        set.nat.insert(fw_chain.clone(), rules);
    }
    for ip in &firewalled {
        push(
            &mut set.filter,
            FIREWALL,
            format!(
                "-m comment --comment \"{name} traffic not accepted by {fw_chain}\" -m {proto} -p {proto} -d {ip} --dport {port} -j DROP"
            ),
        );
    }
    for external_ip in &svc.external_ips {
        let capture = format!("-m {proto} -p {proto} -d {external_ip} --dport {port}");
        if svc.uses_external_chain() {
            let (what, chain) = if firewalled.contains(external_ip) {
                ("loadbalancer IP", &fw_chain)
            } else {
                ("external IP", &ext_chain)
            };
            push(&mut set.nat, SERVICES, format!("-m comment --comment \"{name} {what}\" {capture} -j {chain}"));
        }
        if let Some(comment) = refusal(external) {
            push(&mut set.filter, EXTERNAL_SERVICES, format!("{comment} {capture} -j {}", target(external)));
        }
    }
    if let Some(node_port) = svc.node_port {
        if svc.uses_external_chain() {
            push(
                &mut set.nat,
                NODE_PORTS,
                format!("-m comment --comment {name} -m {proto} -p {proto} --dport {node_port} -j {ext_chain}"),
            );
        }
        if let Some(comment) = refusal(external) {
            push(
                &mut set.filter,
                EXTERNAL_SERVICES,
                format!(
                    "{comment} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {node_port} -j {}",
                    target(external)
                ),
            );
        }
    }

    if svc.uses_external_chain() {
        let mut rules = Vec::new();
        if svc.external_local {
            // Traffic that did not come from outside keeps to the cluster policy, as if it
            // had gone out to a load balancer and come back: pods', then the node's own
            // (masqueraded: its source is an address of the node, maybe the external IP).
            if let Some(cidr) = config.cluster_cidr {
                rules.push(format!(
                    "-m comment --comment \"pod traffic for {name} external destinations\" -s {cidr} -j {svc_chain}"
                ));
            }
            rules.push(format!(
                "-m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" \
                 -m addrtype --src-type LOCAL -j {MARK_MASQ}"
            ));
            rules.push(format!(
                "-m comment --comment \"route LOCAL traffic for {name} external destinations\" \
                 -m addrtype --src-type LOCAL -j {svc_chain}"
            ));
        } else {
            rules.push(format!(
                "-m comment --comment \"masquerade traffic for {name} external destinations\" -j {MARK_MASQ}"
            ));
        }
        if let Some(chain) = chain_of(external) {
            rules.push(format!("-j {chain}"));
        }
        set.nat.insert(ext_chain, rules);
    }

    let endpoints: Vec<(SocketAddrV4, String)> =
        svc.routed_endpoints().into_iter().map(|e| (e, endpoint_chain(svc, e))).collect();
    for (chain, chosen) in [(&svc_chain, svc.cluster_endpoints()), (&local_chain, svc.local_chain_endpoints())] {
        if chosen.is_empty() {
            continue;
        }
        let mut rules = Vec::new();
        // Traffic to the cluster IP from outside the cluster may go to another node's
        // endpoint: masqueraded, in whichever chain the cluster IP leads to.
        if let Some(cidr) = config.cluster_cidr.filter(|_| chain_of(internal).as_ref() == Some(chain)) {
            rules.push(format!("-m comment --comment \"{name} cluster IP\" {capture} ! -s {cidr} -j {MARK_MASQ}"));
        }
        let chosen: Vec<&(SocketAddrV4, String)> = endpoints.iter().filter(|(e, _)| chosen.contains(e)).collect();
        if let Some(timeout) = svc.affinity_timeout {
            for (endpoint, chain) in &chosen {
                rules.push(format!(
                    "-m comment --comment \"{name} -> {endpoint}\" -m recent --name {chain} --rcheck --seconds {timeout} --reap -j {chain}"
                ));
            }
        }
        let n = chosen.len();
        for (i, (endpoint, chain)) in chosen.iter().enumerate() {
            let statistic = if i + 1 < n {
                format!(" -m statistic --mode random --probability {}", probability(n - i))
            } else {
                String::new()
            };
            rules.push(format!("-m comment --comment \"{name} -> {endpoint}\"{statistic} -j {chain}"));
        }
        set.nat.insert(chain.clone(), rules);
    }
    for (endpoint, chain) in endpoints {
        let recent =
            if svc.affinity_timeout.is_some() { format!(" -m recent --name {chain} --set") } else { String::new() };
        set.nat.insert(
            chain,
            vec![
                // Hairpin: a pod reaching itself through the service is masqueraded, or its
                // reply would not come back through the DNAT.
                format!("-m comment --comment {name} -s {} -j {MARK_MASQ}", endpoint.ip()),
                format!(
                    "-m comment --comment {name}{recent} -m {proto} -p {proto} -j DNAT --to-destination {endpoint}"
                ),
            ],
        );
    }
}

/// Whether `chain` is one of the per-service chains.
pub fn is_service_chain(chain: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::svc;

    fn config() -> ProxyConfig {
        ProxyConfig { cluster_cidr: Some("10.0.0.0/8".parse().unwrap()), random_fully: false }
    }

    /// The rules of one nat chain, as `-A` lines.
    fn nat_chain(set: &RuleSet, chain: &str) -> Vec<String> {
        set.nat[chain].iter().map(|r| format!("-A {chain} {r}")).collect()
    }

    #[test]
    fn chain_names_match_kube_proxy() {
        // Names from kube-proxy's own golden tests and well-known clusters.
        assert_eq!(chain_hash("ns1/svc1:p80tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(chain_hash("ns1/svc1:p80tcp10.180.0.1:80"), "SXIVWICOYRO3J4NJ");
        assert_eq!(chain_hash("kube-system/kube-dns:dnsudp"), "TCOU7JCQXEZGVUNU");
        assert_eq!(chain_hash("default/kubernetes:httpstcp"), "NPX46M4PTMTKRN6Y");
        let s = svc("ns1", "svc1", "", "172.30.0.41", 80, &[]);
        assert_eq!(service_chain("KUBE-SVC-", &s), "KUBE-SVC-AQI2S6QIMU7PVVRP");
    }

    #[test]
    fn probabilities_are_one_over_remaining() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let set =
            rules(&[svc("ns1", "svc1", "p80", "172.30.0.41", 80, &["10.180.0.1:80", "10.180.0.2:80"])], &config());
        assert_eq!(
            nat_chain(&set, "KUBE-SERVICES"),
            [
                "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
                "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS",
            ]
        );
        let sep2 = endpoint_chain(&svc("ns1", "svc1", "p80", "172.30.0.41", 80, &[]), "10.180.0.2:80".parse().unwrap());
        assert_eq!(
            nat_chain(&set, "KUBE-SVC-XPGD46QRK7WJZT7O"),
            [
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ".to_string(),
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ".to_string(),
                format!("-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -j {sep2}"),
            ]
        );
        assert_eq!(
            nat_chain(&set, "KUBE-SEP-SXIVWICOYRO3J4NJ"),
            [
                "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
                "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
            ]
        );
        assert!(set.filter["KUBE-SERVICES"].is_empty());
    }

    #[test]
    fn three_endpoints_split_evenly() {
        let set = rules(
            &[svc("ns", "web", "", "10.96.0.10", 80, &["10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.4:8080"])],
            &config(),
        );
        let chain = service_chain("KUBE-SVC-", &svc("ns", "web", "", "10.96.0.10", 80, &[]));
        let probabilities: Vec<Option<&str>> = set.nat[&chain][1..]
            .iter()
            .map(|r| r.split("--probability ").nth(1).map(|p| p.split(' ').next().unwrap()))
            .collect();
        assert_eq!(probabilities, [Some("0.3333333333"), Some("0.5000000000"), None]);
    }

    /// loadBalancerSourceRanges, as kube-proxy: the load balancer's address leads to
    /// KUBE-FW-, which sends the ranges on to KUBE-EXT-; the rest is not DNATed and is
    /// dropped by KUBE-PROXY-FIREWALL in the filter table.
    #[test]
    fn load_balancer_source_ranges_guard_the_load_balancer_address() {
        let s = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap(), "192.168.97.10".parse().unwrap()],
            load_balancer_ips: vec!["192.168.97.10".parse().unwrap()],
            source_ranges: vec!["192.168.99.0/24".parse().unwrap()],
            ..svc("ns9", "lb", "", "172.30.0.49", 80, &["10.180.0.9:80"])
        };
        let set = rules(std::slice::from_ref(&s), &config());
        let (fw, ext) = (service_chain("KUBE-FW-", &s), service_chain("KUBE-EXT-", &s));
        let services = nat_chain(&set, "KUBE-SERVICES");
        assert!(services.iter().any(|r| r.contains("-d 192.168.97.10 --dport 80") && r.ends_with(&format!("-j {fw}"))));
        assert!(
            services.iter().any(|r| r.contains("-d 192.168.99.10 --dport 80") && r.ends_with(&format!("-j {ext}")))
        );
        assert_eq!(
            nat_chain(&set, &fw),
            [
                format!("-A {fw} -m comment --comment \"ns9/lb loadbalancer IP\" -s 192.168.99.0/24 -j {ext}"),
                format!(
                    "-A {fw} -m comment --comment \"other traffic to ns9/lb will be dropped by KUBE-PROXY-FIREWALL\""
                ),
            ]
        );
        assert_eq!(
            set.filter["KUBE-PROXY-FIREWALL"],
            [format!(
                "-m comment --comment \"ns9/lb traffic not accepted by {fw}\" -m tcp -p tcp -d 192.168.97.10 --dport 80 -j DROP"
            )]
        );
    }

    #[test]
    fn node_port_goes_through_the_external_chain() {
        let mut s = svc("ns3", "svc3", "p80", "172.30.0.43", 80, &["10.180.0.3:80"]);
        s.node_port = Some(3003);
        let set = rules(&[s], &config());
        assert_eq!(
            nat_chain(&set, "KUBE-NODEPORTS"),
            [
                "-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK"
            ]
        );
        assert_eq!(
            nat_chain(&set, "KUBE-EXT-X27LE4BHSL4DOUIK"),
            [
                "-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment \"masquerade traffic for ns3/svc3:p80 external destinations\" -j KUBE-MARK-MASQ",
                "-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK",
            ]
        );
    }

    #[test]
    fn external_ips_and_the_local_policies() {
        let s = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap()],
            node_port: Some(3004),
            internal_local: true,
            external_local: true,
            local_endpoints: vec!["10.180.0.4:80".parse().unwrap()],
            ..svc("ns4", "svc4", "p80", "172.30.0.44", 80, &["10.180.0.4:80", "10.180.1.4:80"])
        };
        let set = rules(std::slice::from_ref(&s), &config());
        let (svc_chain, local, ext) =
            (service_chain("KUBE-SVC-", &s), service_chain("KUBE-SVL-", &s), service_chain("KUBE-EXT-", &s));
        let sep = endpoint_chain(&s, "10.180.0.4:80".parse().unwrap());
        let services = nat_chain(&set, "KUBE-SERVICES");
        assert_eq!(
            services[..2],
            [
                format!(
                    "-A KUBE-SERVICES -m comment --comment \"ns4/svc4:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j {local}"
                ),
                format!(
                    "-A KUBE-SERVICES -m comment --comment \"ns4/svc4:p80 external IP\" -m tcp -p tcp -d 192.168.99.10 --dport 80 -j {ext}"
                ),
            ]
        );
        assert_eq!(
            nat_chain(&set, &ext),
            [
                format!(
                    "-A {ext} -m comment --comment \"pod traffic for ns4/svc4:p80 external destinations\" -s 10.0.0.0/8 -j {svc_chain}"
                ),
                format!(
                    "-A {ext} -m comment --comment \"masquerade LOCAL traffic for ns4/svc4:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
                ),
                format!(
                    "-A {ext} -m comment --comment \"route LOCAL traffic for ns4/svc4:p80 external destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"
                ),
                format!("-A {ext} -j {local}"),
            ]
        );
        assert_eq!(
            nat_chain(&set, &local),
            [
                format!(
                    "-A {local} -m comment --comment \"ns4/svc4:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"
                ),
                format!("-A {local} -m comment --comment \"ns4/svc4:p80 -> 10.180.0.4:80\" -j {sep}"),
            ]
        );
        assert_eq!(nat_chain(&set, &svc_chain).len(), 2, "the cluster chain picks among both, unmasqueraded");

        // Endpoints on other nodes only: the Local policies drop, rather than refuse.
        let elsewhere = ServicePort { local_endpoints: Vec::new(), ..s };
        let set = rules(&[elsewhere], &config());
        assert_eq!(
            set.filter["KUBE-SERVICES"],
            [
                "-m comment --comment \"ns4/svc4:p80 has no local endpoints\" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j DROP"
            ]
        );
        assert_eq!(set.filter["KUBE-EXTERNAL-SERVICES"].len(), 2);
        assert!(set.filter["KUBE-EXTERNAL-SERVICES"].iter().all(|r| r.ends_with("-j DROP")));
        assert!(!set.nat.contains_key(&local));
    }

    #[test]
    fn no_endpoints_rejects_in_filter() {
        let mut s = svc("ns6", "svc6", "p80", "172.30.0.46", 80, &[]);
        s.node_port = Some(3006);
        let set = rules(&[s], &config());
        assert_eq!(
            set.filter["KUBE-SERVICES"],
            [
                "-m comment --comment \"ns6/svc6:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT"
            ]
        );
        assert_eq!(
            set.filter["KUBE-EXTERNAL-SERVICES"],
            [
                "-m comment --comment \"ns6/svc6:p80 has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3006 -j REJECT"
            ]
        );
        assert!(!set.nat.keys().any(|c| is_service_chain(c)), "no service chains: {:?}", set.nat.keys());
    }

    #[test]
    fn client_ip_affinity_checks_then_sets_recent() {
        let mut s = svc("ns5", "svc5", "p80", "172.30.0.45", 80, &["10.180.0.3:80"]);
        s.affinity_timeout = Some(10800);
        let set = rules(&[s], &config());
        assert_eq!(
            nat_chain(&set, "KUBE-SVC-NUKIZ6OKUXPJNT4C")[1..],
            [
                "-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment \"ns5/svc5:p80 -> 10.180.0.3:80\" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN",
                "-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment \"ns5/svc5:p80 -> 10.180.0.3:80\" -j KUBE-SEP-I77PXRDZVX7PMWMN",
            ]
        );
        assert_eq!(
            nat_chain(&set, "KUBE-SEP-I77PXRDZVX7PMWMN")[1],
            "-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80"
        );
    }

    #[test]
    fn udp_uses_its_own_match_and_chains() {
        let mut s = svc("kube-system", "kube-dns", "dns", "10.96.0.10", 53, &["10.1.0.5:53"]);
        s.protocol = crate::proxy::Protocol::Udp;
        let set = rules(&[s], &config());
        assert_eq!(
            nat_chain(&set, "KUBE-SERVICES")[0],
            "-A KUBE-SERVICES -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU"
        );
        assert!(set.nat.values().flatten().any(|r| r.ends_with("-m udp -p udp -j DNAT --to-destination 10.1.0.5:53")));
    }

    #[test]
    fn fixed_chains_and_full_render() {
        let set = rules(&[], &ProxyConfig { cluster_cidr: None, random_fully: true });
        assert_eq!(
            set.render_full(&["KUBE-SVC-OLD".into()]),
            "*filter\n\
             :KUBE-EXTERNAL-SERVICES - [0:0]\n\
             :KUBE-FORWARD - [0:0]\n\
             :KUBE-PROXY-FIREWALL - [0:0]\n\
             :KUBE-SERVICES - [0:0]\n\
             -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             COMMIT\n\
             *nat\n\
             :KUBE-MARK-MASQ - [0:0]\n\
             :KUBE-NODEPORTS - [0:0]\n\
             :KUBE-POSTROUTING - [0:0]\n\
             :KUBE-SERVICES - [0:0]\n\
             :KUBE-SVC-OLD - [0:0]\n\
             -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
             -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
             -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS\n\
             -X KUBE-SVC-OLD\n\
             COMMIT\n"
        );
    }

    #[test]
    fn changes_rewrite_only_what_differs() {
        let a = svc("ns", "a", "", "10.96.0.1", 80, &["10.1.0.2:80"]);
        let b = svc("ns", "b", "", "10.96.0.2", 80, &["10.1.0.3:80"]);
        let before = rules(&[a.clone(), b.clone()], &config());
        assert_eq!(before.render_changes(&before), "");

        // One endpoint of b moves: b's service chain, its new SEP, and the old SEP's removal.
        let mut b2 = b.clone();
        b2.endpoints = vec!["10.1.0.4:80".parse().unwrap()];
        let after = rules(&[a.clone(), b2.clone()], &config());
        let changes = after.render_changes(&before);
        let old_sep = endpoint_chain(&b, "10.1.0.3:80".parse().unwrap());
        let new_sep = endpoint_chain(&b2, "10.1.0.4:80".parse().unwrap());
        let b_chain = service_chain("KUBE-SVC-", &b);
        let a_chain = service_chain("KUBE-SVC-", &a);
        assert!(!changes.contains("*filter"), "{changes}");
        assert!(!changes.contains(":KUBE-SERVICES"), "KUBE-SERVICES is unchanged: {changes}");
        assert!(!changes.contains(&a_chain), "a is unchanged: {changes}");
        assert!(changes.contains(&format!(":{b_chain} - [0:0]")));
        assert!(changes.contains(&format!(":{new_sep} - [0:0]")));
        assert!(changes.contains(&format!(":{old_sep} - [0:0]\n")));
        assert!(changes.contains(&format!("-X {old_sep}\n")));

        // b goes away: its capture rule leaves KUBE-SERVICES, and its chains are deleted.
        let gone = rules(&[a], &config()).render_changes(&before);
        assert!(gone.contains(":KUBE-SERVICES - [0:0]"));
        assert!(gone.contains(&format!("-X {b_chain}")));
        assert!(!gone.contains(&format!("-A {b_chain}")));
    }

    #[test]
    fn chains_of_a_dump() {
        let dump = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-ABC - [0:0]\n-A PREROUTING -j KUBE-SVC-ABC\nCOMMIT\n";
        assert_eq!(chains_in(dump).into_iter().collect::<Vec<_>>(), ["KUBE-SVC-ABC", "PREROUTING"]);
    }
}
