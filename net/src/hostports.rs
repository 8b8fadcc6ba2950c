//! Host ports, as the CNI portmap plugin makes them: a port of the node forwarded to a
//! pod's port (a container's `hostPort`, `podctl run -p`). The whole rule set is a pure
//! function of the mappings, applied at once: traffic to a local address on the host port
//! (from outside, from the node itself, from the pod itself) is DNATed to the pod;
//! what comes from loopback or hairpins back to its own pod is masqueraded so the answer
//! returns the way it came.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::iptables::Jump;
use crate::nft::{Action, ChainKind, Hook, HookPoint, Match, Rule, Script};
use crate::proxy::Protocol;

/// One forwarded port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Only traffic to this address of the node (all of them when `None`).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub pod_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// The mark of packets to masquerade (portmap's default bit).
const MASQ_MARK: &str = "0x2000/0x2000";
const MASQ_BIT: u32 = 0x2000;

pub const JUMPS: [Jump; 3] = [
    Jump {
        table: "nat",
        chain: "PREROUTING",
        matches: "-m addrtype --dst-type LOCAL -m comment --comment \"podctl host ports\"",
        target: "PODCTL-HOSTPORTS",
    },
    Jump {
        table: "nat",
        chain: "OUTPUT",
        matches: "-m addrtype --dst-type LOCAL -m comment --comment \"podctl host ports\"",
        target: "PODCTL-HOSTPORTS",
    },
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        matches: "-m comment --comment \"podctl host ports\"",
        target: "PODCTL-HOSTPORTS-MASQ",
    },
];

/// The nat table's host port chains for `mappings` (iptables-restore input, chains
/// flushed and rewritten whole).
pub fn rules(mappings: &[Mapping]) -> String {
    let mut rules = String::from("*nat\n:PODCTL-HOSTPORTS - [0:0]\n:PODCTL-HOSTPORTS-MASQ - [0:0]\n");
    // The protocol is written into the rules: only the three iptables knows by name.
    for m in mappings.iter().filter(|m| matches!(m.protocol.as_str(), "tcp" | "udp" | "sctp")) {
        let destination = m.host_ip.map(|ip| format!("-d {ip}/32 ")).unwrap_or_default();
        let port = format!("{destination}-p {p} -m {p} --dport {}", m.host_port, p = m.protocol);
        let comment = format!("-m comment --comment \"{}:{} -> {}:{}\"", m.protocol, m.host_port, m.pod_ip, m.pod_port);
        rules += &format!("-A PODCTL-HOSTPORTS {port} -s 127.0.0.0/8 {comment} -j MARK --set-xmark {MASQ_MARK}\n");
        rules += &format!("-A PODCTL-HOSTPORTS {port} -s {}/32 {comment} -j MARK --set-xmark {MASQ_MARK}\n", m.pod_ip);
        rules +=
            &format!("-A PODCTL-HOSTPORTS {port} {comment} -j DNAT --to-destination {}:{}\n", m.pod_ip, m.pod_port);
    }
    rules += &format!("-A PODCTL-HOSTPORTS-MASQ -m mark --mark {MASQ_MARK} -j MASQUERADE\nCOMMIT\n");
    rules
}

/// [`rules`] for nftables: the host port chains of table `ip podctl`, rewritten whole.
pub fn nft_script(mappings: &[Mapping]) -> Script {
    let loopback: ipnet::Ipv4Net = "127.0.0.0/8".parse().expect("a CIDR");
    let mut forwards = Vec::new();
    for m in mappings {
        let protocol = match m.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => continue,
        };
        let port: Vec<Match> =
            m.host_ip.map(Match::DestinationIs).into_iter().chain([Match::Port(protocol, m.host_port)]).collect();
        let with = |extra: Match| port.iter().cloned().chain([extra]).collect::<Vec<_>>();
        forwards.push(Rule::new(with(Match::SourceIn(loopback)), [Action::SetMark(MASQ_BIT)]));
        forwards.push(Rule::new(with(Match::SourceIs(m.pod_ip)), [Action::SetMark(MASQ_BIT)]));
        forwards.push(Rule::new(port, [Action::Dnat(SocketAddrV4::new(m.pod_ip, m.pod_port))]));
    }
    let to_local = [Rule::new([Match::LocalDestination], [Action::Jump("hostports".into())])];
    let mut script = Script::new(crate::pod::NFT_TABLE);
    script.table("podctl pod network");
    script.chain("hostports", None, &forwards);
    script.chain("hostports-prerouting", Some(Hook::new(ChainKind::Nat, HookPoint::Prerouting, -100)), &to_local);
    script.chain("hostports-output", Some(Hook::new(ChainKind::Nat, HookPoint::Output, -100)), &to_local);
    script.chain(
        "hostports-postrouting",
        Some(Hook::new(ChainKind::Nat, HookPoint::Postrouting, 100)),
        &[Rule::new([Match::MarkSet(MASQ_BIT)], [Action::Masquerade { fully_random: false }])],
    );
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mapping_is_dnat_with_loopback_and_hairpin_masqueraded() {
        let mapping = Mapping {
            host_ip: None,
            host_port: 8080,
            pod_ip: "10.88.0.5".parse().unwrap(),
            pod_port: 80,
            protocol: "tcp".into(),
        };
        let bound = Mapping { host_ip: Some("192.0.2.1".parse().unwrap()), protocol: "udp".into(), ..mapping.clone() };
        let rules = rules(&[mapping, bound]);
        assert!(rules.contains(
            "-A PODCTL-HOSTPORTS -p tcp -m tcp --dport 8080 -m comment --comment \"tcp:8080 -> 10.88.0.5:80\" -j DNAT --to-destination 10.88.0.5:80\n"
        ));
        assert!(rules.contains("-A PODCTL-HOSTPORTS -p tcp -m tcp --dport 8080 -s 127.0.0.0/8"));
        assert!(rules.contains("-A PODCTL-HOSTPORTS -p tcp -m tcp --dport 8080 -s 10.88.0.5/32"));
        assert!(rules.contains("-A PODCTL-HOSTPORTS -d 192.0.2.1/32 -p udp -m udp --dport 8080"));
        assert!(rules.ends_with("-A PODCTL-HOSTPORTS-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE\nCOMMIT\n"));
        assert_eq!(super::rules(&[]).lines().filter(|l| l.starts_with("-A PODCTL-HOSTPORTS ")).count(), 0);
    }

    #[test]
    fn nftables_has_the_same_rules() {
        let mapping = Mapping {
            host_ip: Some("192.0.2.1".parse().unwrap()),
            host_port: 8080,
            pod_ip: "10.88.0.5".parse().unwrap(),
            pod_port: 80,
            protocol: "udp".into(),
        };
        let script = nft_script(&[mapping]).text();
        let rules: Vec<&str> = script.lines().filter(|l| l.starts_with("add rule ip podctl hostports ")).collect();
        assert_eq!(
            rules,
            [
                "add rule ip podctl hostports ip daddr 192.0.2.1 udp dport 8080 ip saddr 127.0.0.0/8 mark set mark or 0x2000",
                "add rule ip podctl hostports ip daddr 192.0.2.1 udp dport 8080 ip saddr 10.88.0.5 mark set mark or 0x2000",
                "add rule ip podctl hostports ip daddr 192.0.2.1 udp dport 8080 dnat to 10.88.0.5:80",
            ]
        );
        assert!(script.contains("add rule ip podctl hostports-output fib daddr type local jump hostports\n"));
        assert!(script.contains("add rule ip podctl hostports-postrouting mark and 0x2000 == 0x2000 masquerade\n"));
    }
}
