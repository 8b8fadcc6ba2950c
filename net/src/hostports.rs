//! Host ports, as the CNI portmap plugin makes them: a port of the node forwarded to a
//! pod's port (a container's `hostPort`, `podctl run -p`). The whole rule set is a pure
//! function of the mappings, applied at once: traffic to a local address on the host port
//! (from outside, from the node itself, from the pod itself) is DNATed to the pod;
//! what comes from loopback or hairpins back to its own pod is masqueraded so the answer
//! returns the way it came.

use std::net::Ipv4Addr;

use crate::iptables::Jump;

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
}
