//! nftables: rules as typed statements that print as `nft` syntax, and the `nft` binary
//! that applies a script of them as one kernel transaction (`nft -f -`: the whole batch
//! commits or none of it does).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::Error;
use crate::proxy::Protocol;

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    SourceIs(Ipv4Addr),
    SourceIn(Ipv4Net),
    SourceNotIn(Ipv4Net),
    SourceInSet(String),
    DestinationIs(Ipv4Addr),
    DestinationIn(Ipv4Net),
    DestinationNotIn(Ipv4Net),
    /// `tcp dport 80`: the protocol and its destination port.
    Port(Protocol, u16),
    /// `meta l4proto tcp`
    Protocol(Protocol),
    /// A new connection (`ct state new`).
    NewConnection,
    /// The destination is an address of this node (`fib daddr type local`).
    LocalDestination,
    /// All bits of the mark are set.
    MarkSet(u32),
    /// None of the bits of the mark is set.
    MarkClear(u32),
    /// `numgen random mod N == 0`: true once in N, drawn afresh for each rule.
    OneIn(usize),
}

/// What a rule does once its conditions hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Jump(String),
    Goto(String),
    Return,
    Accept,
    Reject,
    /// `meta mark set mark or BITS`
    SetMark(u32),
    /// `meta mark set mark xor BITS`
    ToggleMark(u32),
    Masquerade {
        fully_random: bool,
    },
    /// DNAT to an address and port (the rule must have matched its protocol).
    Dnat(SocketAddrV4),
    /// Adds (or refreshes) the source address in a dynamic set.
    RememberSource(String),
    /// Looks `ip daddr . meta l4proto . th dport` up in a verdict map.
    DestinationVmap(String),
    /// Looks `meta l4proto . th dport` up in a verdict map.
    PortVmap(String),
}

/// One rule: conditions, then actions in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub actions: Vec<Action>,
}

impl Rule {
    pub fn new(matches: impl Into<Vec<Match>>, actions: impl Into<Vec<Action>>) -> Rule {
        Rule { matches: matches.into(), actions: actions.into() }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::SourceIs(ip) => write!(f, "ip saddr {ip}"),
            Match::SourceIn(net) => write!(f, "ip saddr {net}"),
            Match::SourceNotIn(net) => write!(f, "ip saddr != {net}"),
            Match::SourceInSet(set) => write!(f, "ip saddr @{set}"),
            Match::DestinationIs(ip) => write!(f, "ip daddr {ip}"),
            Match::DestinationIn(net) => write!(f, "ip daddr {net}"),
            Match::DestinationNotIn(net) => write!(f, "ip daddr != {net}"),
            Match::Port(protocol, port) => write!(f, "{} dport {port}", protocol.as_str()),
            Match::Protocol(protocol) => write!(f, "meta l4proto {}", protocol.as_str()),
            Match::NewConnection => f.write_str("ct state new"),
            Match::LocalDestination => f.write_str("fib daddr type local"),
            Match::MarkSet(bits) => write!(f, "mark and {bits:#x} == {bits:#x}"),
            Match::MarkClear(bits) => write!(f, "mark and {bits:#x} == 0"),
            Match::OneIn(n) => write!(f, "numgen random mod {n} == 0"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Jump(chain) => write!(f, "jump {chain}"),
            Action::Goto(chain) => write!(f, "goto {chain}"),
            Action::Return => f.write_str("return"),
            Action::Accept => f.write_str("accept"),
            Action::Reject => f.write_str("reject"),
            Action::SetMark(bits) => write!(f, "mark set mark or {bits:#x}"),
            Action::ToggleMark(bits) => write!(f, "mark set mark xor {bits:#x}"),
            Action::Masquerade { fully_random: true } => f.write_str("masquerade fully-random"),
            Action::Masquerade { fully_random: false } => f.write_str("masquerade"),
            Action::Dnat(to) => write!(f, "dnat to {to}"),
            Action::RememberSource(set) => write!(f, "update @{set} {{ ip saddr }}"),
            Action::DestinationVmap(map) => write!(f, "ip daddr . meta l4proto . th dport vmap @{map}"),
            Action::PortVmap(map) => write!(f, "meta l4proto . th dport vmap @{map}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = self.matches.iter().map(ToString::to_string).chain(self.actions.iter().map(ToString::to_string));
        f.write_str(&words.collect::<Vec<_>>().join(" "))
    }
}

/// A base chain's place in netfilter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub kind: &'static str,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: &'static str,
    pub priority: i32,
}

/// Builds an `nft -f` script for one table of the `ip` family.
pub struct Script {
    table: &'static str,
    text: String,
}

impl Script {
    pub fn new(table: &'static str) -> Script {
        Script { table, text: String::new() }
    }

    /// The table exists (with `comment`); nothing in it changes.
    pub fn table(&mut self, comment: &str) {
        self.line(format!("add table ip {} {{ comment \"{comment}\" ; }}", self.table));
    }

    /// The chain exists, empty.
    pub fn fresh_chain(&mut self, chain: &str, hook: Option<Hook>) {
        match hook {
            Some(Hook { kind, hook, priority }) => self.line(format!(
                "add chain ip {} {chain} {{ type {kind} hook {hook} priority {priority} ; }}",
                self.table
            )),
            None => self.line(format!("add chain ip {} {chain}", self.table)),
        }
        self.flush_chain(chain);
    }

    /// The chain exists with exactly these rules.
    pub fn chain(&mut self, chain: &str, hook: Option<Hook>, rules: &[Rule]) {
        self.fresh_chain(chain, hook);
        for rule in rules {
            self.rule(chain, rule);
        }
    }

    pub fn rule(&mut self, chain: &str, rule: &Rule) {
        self.line(format!("add rule ip {} {chain} {rule}", self.table));
    }

    pub fn flush_chain(&mut self, chain: &str) {
        self.line(format!("flush chain ip {} {chain}", self.table));
    }

    pub fn delete_chain(&mut self, chain: &str) {
        self.line(format!("delete chain ip {} {chain}", self.table));
    }

    /// The verdict map exists, empty. `key` is its nft key type.
    pub fn fresh_vmap(&mut self, map: &str, key: &str, comment: &str) {
        self.line(format!("add map ip {} {map} {{ type {key} : verdict ; comment \"{comment}\" ; }}", self.table));
        self.line(format!("flush map ip {} {map}", self.table));
    }

    /// A set of source addresses that rules add to, each forgotten `timeout` seconds after
    /// it was last added.
    pub fn dynamic_set(&mut self, set: &str, timeout: u32) {
        self.line(format!(
            "add set ip {} {set} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}",
            self.table
        ));
    }

    pub fn delete_set(&mut self, set: &str) {
        self.line(format!("delete set ip {} {set}", self.table));
    }

    pub fn add_element(&mut self, map: &str, element: &Element) {
        let comment = element.comment.as_ref().map(|c| format!(" comment \"{c}\"")).unwrap_or_default();
        self.line(format!("add element ip {} {map} {{ {}{comment} : {} }}", self.table, element.key, element.verdict));
    }

    pub fn delete_element(&mut self, map: &str, key: &str) {
        self.line(format!("delete element ip {} {map} {{ {key} }}", self.table));
    }

    fn line(&mut self, line: String) {
        self.text += &line;
        self.text.push('\n');
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn lines(&self) -> usize {
        self.text.lines().count()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// One element of a verdict map: `key : verdict`, e.g. `10.96.0.1 . tcp . 80 : goto service-…`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub key: String,
    pub verdict: String,
    pub comment: Option<String>,
}

/// The `nft` binary.
pub struct Nft;

impl Nft {
    /// Whether nftables can be used here: the `nft` binary runs and the kernel answers it.
    pub fn available() -> bool {
        Command::new("nft")
            .args(["list", "tables"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Applies `script` as one transaction.
    pub fn apply(script: &str) -> Result<(), Error> {
        crate::run_with_input("nft", &["-f", "-"], script)
    }

    /// The names of the chains and of the sets (not maps) in table `ip <table>`; empty
    /// when the table does not exist.
    pub fn contents(table: &str) -> Result<(Vec<String>, Vec<String>), Error> {
        // nft 1.0.6 lists per family only (`list chains ip`); listing the table itself
        // would print every rule, seconds at 10,000 services.
        let list = |what: &str| -> Result<Vec<String>, Error> {
            let output = Command::new("nft").args(["-j", "-t", "list", what, "ip"]).output();
            let output = output.map_err(Error::io("run nft"))?;
            if !output.status.success() {
                return Err(Error::Nftables(format!("nft: {}", String::from_utf8_lossy(&output.stderr).trim())));
            }
            names_in(&output.stdout, table)
        };
        Ok((list("chains")?, list("sets")?))
    }

    /// Deletes table `ip <table>` and all in it; nothing to do when it does not exist.
    pub fn delete_table(table: &str) -> Result<(), Error> {
        Nft::apply(&format!("add table ip {table}\ndelete table ip {table}\n"))
    }
}

/// The names of the objects of `table` in `nft -j list` output.
fn names_in(json: &[u8], table: &str) -> Result<Vec<String>, Error> {
    #[derive(serde::Deserialize)]
    struct Listing {
        nftables: Vec<std::collections::HashMap<String, Object>>,
    }
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        table: String,
        #[serde(default)]
        name: String,
    }
    let listing: Listing =
        serde_json::from_slice(json).map_err(|e| Error::Nftables(format!("nft -j: unexpected output: {e}")))?;
    Ok(listing
        .nftables
        .into_iter()
        .flat_map(|entry| entry.into_values())
        .filter(|o| o.table == table)
        .map(|o| o.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_print_as_nft_syntax() {
        let rule = Rule::new(
            [Match::DestinationIs("10.96.0.1".parse().unwrap()), Match::Port(Protocol::Tcp, 80)],
            [Action::Jump("mark-for-masquerade".into())],
        );
        assert_eq!(rule.to_string(), "ip daddr 10.96.0.1 tcp dport 80 jump mark-for-masquerade");
        let rule = Rule::new([Match::MarkClear(0x4000)], [Action::Return]);
        assert_eq!(rule.to_string(), "mark and 0x4000 == 0 return");
        let rule = Rule::new([Match::Protocol(Protocol::Udp)], [Action::Dnat("10.1.0.2:53".parse().unwrap())]);
        assert_eq!(rule.to_string(), "meta l4proto udp dnat to 10.1.0.2:53");
    }

    #[test]
    fn a_script_names_its_table_everywhere() {
        let mut script = Script::new("t");
        script.chain(
            "c",
            Some(Hook { kind: "nat", hook: "output", priority: -100 }),
            &[Rule::new([], [Action::Accept])],
        );
        script
            .add_element("m", &Element { key: "tcp . 80".into(), verdict: "goto c".into(), comment: Some("x".into()) });
        assert_eq!(
            script.text(),
            "add chain ip t c { type nat hook output priority -100 ; }\n\
             flush chain ip t c\n\
             add rule ip t c accept\n\
             add element ip t m { tcp . 80 comment \"x\" : goto c }\n"
        );
    }

    #[test]
    fn names_come_from_the_json_listing() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 2}},
            {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "handle": 3}}]}"#;
        assert_eq!(names_in(json, "kube-proxy").unwrap(), ["services"]);
    }
}
