//! The service proxy, kube-proxy's iptables mode: rules derived from the Services and their
//! endpoints by a pure function (`rules`), applied with one `iptables-restore --noflush`
//! per sync. A sync writes only the chains that changed since the last one; a full sync
//! (the first, after a failure, and periodically) rewrites everything, deletes stale
//! service chains and puts back the jumps from the built-in chains, repairing rules
//! someone else flushed.

mod objects;
mod rules;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub use objects::service_ports;
pub use rules::{Protocol, ProxyConfig, RuleSet, ServicePort, rules};

use crate::Error;
use crate::iptables::{Iptables, Jump};

const PORTALS: &str = "-m comment --comment \"kubernetes service portals\"";
const NEW_PORTALS: &str = "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\"";
const NEW_EXTERNAL: &str =
    "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\"";

/// kube-proxy's jumps from the built-in chains into its own.
const JUMPS: [Jump; 8] = [
    Jump { table: "nat", chain: "PREROUTING", matches: PORTALS, target: rules::SERVICES },
    Jump { table: "nat", chain: "OUTPUT", matches: PORTALS, target: rules::SERVICES },
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        matches: "-m comment --comment \"kubernetes postrouting rules\"",
        target: rules::POSTROUTING,
    },
    Jump { table: "filter", chain: "INPUT", matches: NEW_EXTERNAL, target: rules::EXTERNAL_SERVICES },
    Jump { table: "filter", chain: "FORWARD", matches: NEW_EXTERNAL, target: rules::EXTERNAL_SERVICES },
    Jump { table: "filter", chain: "FORWARD", matches: NEW_PORTALS, target: rules::SERVICES },
    Jump { table: "filter", chain: "OUTPUT", matches: NEW_PORTALS, target: rules::SERVICES },
    Jump {
        table: "filter",
        chain: "FORWARD",
        matches: "-m comment --comment \"kubernetes forwarding rules\"",
        target: rules::FORWARD,
    },
];

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub full: bool,
    /// Rules in the complete rule set.
    pub rules: usize,
    /// Lines handed to iptables-restore (0: nothing had changed).
    pub lines_written: usize,
}

pub struct Proxier {
    iptables: Iptables,
    config: ProxyConfig,
    full_sync_period: Duration,
    /// What the node holds, as of the last successful sync; `None` forces a full sync.
    applied: Option<RuleSet>,
    last_full_sync: Option<Instant>,
}

impl Proxier {
    pub fn new(iptables: Iptables, config: ProxyConfig, full_sync_period: Duration) -> Proxier {
        Proxier { iptables, config, full_sync_period, applied: None, last_full_sync: None }
    }

    /// Brings the node's rules to what `services` call for.
    pub fn sync(&mut self, services: &[ServicePort]) -> Result<SyncReport, Error> {
        let wanted = rules(services, &self.config);
        let due = self.last_full_sync.is_none_or(|t| t.elapsed() >= self.full_sync_period);
        let (full, result) = match &self.applied {
            Some(applied) if !due => {
                let input = wanted.render_changes(applied);
                (false, if input.is_empty() { Ok(0) } else { self.iptables.restore(&input).map(|_| lines(&input)) })
            }
            _ => (true, self.full_sync(&wanted)),
        };
        match result {
            Ok(lines_written) => {
                if full {
                    self.last_full_sync = Some(Instant::now());
                }
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
        let stale: Vec<String> = chains_in(&existing)
            .into_iter()
            .filter(|c| rules::is_service_chain(c) && !wanted.nat.contains_key(c))
            .collect();
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

#[cfg(test)]
mod tests {
    #[test]
    fn chains_of_a_dump() {
        let dump = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-ABC - [0:0]\n-A PREROUTING -j KUBE-SVC-ABC\nCOMMIT\n";
        assert_eq!(super::chains_in(dump).into_iter().collect::<Vec<_>>(), ["KUBE-SVC-ABC", "PREROUTING"]);
    }
}
