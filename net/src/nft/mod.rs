//! nftables: rules as typed statements, gathered in a script that prints as `nft` syntax
//! (what `podctl proxy --print` shows, and what `nft -f` would take) and goes to the
//! kernel over netlink as one batch: one transaction, that commits whole or not at all.
//!
//! Netlink rather than the `nft` binary: nft 1.0.6 reads the whole ruleset before it adds
//! a rule, 0.9 s per call once 10,000 services are in the table, and spends 3.4 s parsing
//! their 340,000 commands; the kernel itself takes 1.8 s to commit them.

mod netlink;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

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
    /// `ip saddr . ip daddr @SET`
    SourceAndDestinationInSet(String),
    DestinationIs(Ipv4Addr),
    DestinationIn(Ipv4Net),
    DestinationNotIn(Ipv4Net),
    /// `tcp dport 80`: the protocol and its destination port.
    Port(Protocol, u16),
    /// `meta l4proto tcp`
    Protocol(Protocol),
    /// A new connection (`ct state new`).
    NewConnection,
    /// A connection whose destination was translated (`ct status dnat`).
    Dnatted,
    /// The destination is an address of this node (`fib daddr type local`).
    LocalDestination,
    /// The source is an address of this node (`fib saddr type local`).
    LocalSource,
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
    Drop,
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
    /// DNAT to one of the `count` endpoints under keys `first..` of an [endpoint
    /// map](Script::new_endpoint_map), drawn at random (the rule must have matched its
    /// protocol).
    DnatToOneOf {
        map: String,
        first: u32,
        count: usize,
    },
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
            Match::SourceAndDestinationInSet(set) => write!(f, "ip saddr . ip daddr @{set}"),
            Match::DestinationIs(ip) => write!(f, "ip daddr {ip}"),
            Match::DestinationIn(net) => write!(f, "ip daddr {net}"),
            Match::DestinationNotIn(net) => write!(f, "ip daddr != {net}"),
            Match::Port(protocol, port) => write!(f, "{} dport {port}", protocol.as_str()),
            Match::Protocol(protocol) => write!(f, "meta l4proto {}", protocol.as_str()),
            Match::NewConnection => f.write_str("ct state new"),
            Match::Dnatted => f.write_str("ct status dnat"),
            Match::LocalDestination => f.write_str("fib daddr type local"),
            Match::LocalSource => f.write_str("fib saddr type local"),
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
            Action::Drop => f.write_str("drop"),
            Action::Reject => f.write_str("reject"),
            Action::SetMark(bits) => write!(f, "mark set mark or {bits:#x}"),
            Action::ToggleMark(bits) => write!(f, "mark set mark xor {bits:#x}"),
            Action::Masquerade { fully_random: true } => f.write_str("masquerade fully-random"),
            Action::Masquerade { fully_random: false } => f.write_str("masquerade"),
            Action::Dnat(to) => write!(f, "dnat to {to}"),
            Action::DnatToOneOf { map, first: 0, count } => {
                write!(f, "dnat ip to numgen random mod {count} map @{map}")
            }
            Action::DnatToOneOf { map, first, count } => {
                write!(f, "dnat ip to numgen random mod {count} offset {first} map @{map}")
            }
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
    pub kind: ChainKind,
    pub hook: HookPoint,
    pub priority: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn new(kind: ChainKind, hook: HookPoint, priority: i32) -> Hook {
        Hook { kind, hook, priority }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        };
        let hook = match self.hook {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Input => "input",
            HookPoint::Forward => "forward",
            HookPoint::Output => "output",
            HookPoint::Postrouting => "postrouting",
        };
        write!(f, "type {kind} hook {hook} priority {}", self.priority)
    }
}

/// What a verdict map is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr . inet_proto . inet_service`
    Destination,
    /// `inet_proto . inet_service`
    Port,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Destination => "ipv4_addr . inet_proto . inet_service",
            KeyType::Port => "inet_proto . inet_service",
        })
    }
}

/// One key of a verdict map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Destination(Ipv4Addr, Protocol, u16),
    Port(Protocol, u16),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Destination(ip, protocol, port) => write!(f, "{ip} . {} . {port}", protocol.as_str()),
            Key::Port(protocol, port) => write!(f, "{} . {port}", protocol.as_str()),
        }
    }
}

/// One element of a verdict map: what becomes of packets with this key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub key: Key,
    pub verdict: Verdict,
    pub comment: Option<String>,
}

/// A verdict map's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Goto(String),
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Drop => f.write_str("drop"),
        }
    }
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    /// The table exists (with this comment).
    AddTable {
        comment: String,
    },
    DeleteTable,
    /// The chain exists (a base chain when hooked).
    AddChain {
        name: String,
        hook: Option<Hook>,
    },
    FlushChain(String),
    DeleteChain(String),
    AddRule {
        chain: String,
        rule: Rule,
    },
    /// The verdict map exists.
    AddMap {
        name: String,
        key: KeyType,
        comment: String,
    },
    FlushMap(String),
    /// A map from numbers to endpoints of one protocol (`typeof numgen random mod BLOCK :
    /// ip daddr . PROTOCOL dport`): the endpoints DNAT rules draw from.
    AddEndpointMap {
        name: String,
        protocol: Protocol,
        block: u32,
        comment: String,
    },
    AddEndpoints {
        map: String,
        endpoints: Vec<(u32, SocketAddrV4)>,
    },
    DeleteEndpoints {
        map: String,
        keys: Vec<u32>,
    },
    /// A set of `ipv4_addr . ipv4_addr` pairs.
    AddPairSet {
        name: String,
        comment: String,
    },
    FlushSet(String),
    /// `ADDRESS . ADDRESS` elements of a pair set, added or deleted.
    AddPairs {
        set: String,
        addresses: Vec<Ipv4Addr>,
    },
    DeletePairs {
        set: String,
        addresses: Vec<Ipv4Addr>,
    },
    /// A set of source addresses that rules add to, each forgotten `timeout` seconds after
    /// it was last added.
    AddDynamicSet {
        name: String,
        timeout: u32,
    },
    DeleteSet(String),
    AddElement {
        map: String,
        element: Element,
    },
    DeleteElement {
        map: String,
        key: Key,
    },
}

/// How many elements one command adds: a netlink attribute holds at most 64 KiB, and the
/// elements of one message are one attribute.
const ELEMENTS_PER_MESSAGE: usize = 1000;

/// Changes to one table of the `ip` family, applied as one transaction.
pub struct Script {
    table: &'static str,
    commands: Vec<Command>,
}

impl Script {
    pub fn new(table: &'static str) -> Script {
        Script { table, commands: Vec::new() }
    }

    /// The table exists (with `comment`); nothing in it changes.
    pub fn table(&mut self, comment: &str) {
        self.commands.push(Command::AddTable { comment: comment.into() });
    }

    /// The table and all in it are gone (it must exist).
    pub fn delete_table(&mut self) {
        self.commands.push(Command::DeleteTable);
    }

    /// The chain exists, empty.
    pub fn fresh_chain(&mut self, chain: &str, hook: Option<Hook>) {
        self.commands.push(Command::AddChain { name: chain.into(), hook });
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
        self.commands.push(Command::AddRule { chain: chain.into(), rule: rule.clone() });
    }

    pub fn flush_chain(&mut self, chain: &str) {
        self.commands.push(Command::FlushChain(chain.into()));
    }

    pub fn delete_chain(&mut self, chain: &str) {
        self.commands.push(Command::DeleteChain(chain.into()));
    }

    /// The verdict map exists, empty.
    pub fn fresh_vmap(&mut self, map: &str, key: KeyType, comment: &str) {
        self.commands.push(Command::AddMap { name: map.into(), key, comment: comment.into() });
        self.commands.push(Command::FlushMap(map.into()));
    }

    pub fn dynamic_set(&mut self, set: &str, timeout: u32) {
        self.commands.push(Command::AddDynamicSet { name: set.into(), timeout });
    }

    pub fn delete_set(&mut self, set: &str) {
        self.commands.push(Command::DeleteSet(set.into()));
    }

    /// The endpoint map of `protocol` exists anew, empty: made if missing, deleted, made
    /// again (no rule may refer to it). Its key type names `block`, the keys each DNAT rule
    /// may draw from. Anew rather than emptied: a rule that binds a map in a chain makes the
    /// kernel check each element the map holds, emptied ones too (`nf_tables_bind_set`).
    /// One map per protocol: nft 1.0.6 takes a `th dport` map for a TCP rule only in the
    /// call that declares it.
    pub fn new_endpoint_map(&mut self, map: &str, protocol: Protocol, block: u32, comment: &str) {
        self.endpoint_map(map, protocol, block, comment);
        self.delete_set(map);
        self.endpoint_map(map, protocol, block, comment);
    }

    /// The endpoint map exists (see [`Script::new_endpoint_map`]).
    pub fn endpoint_map(&mut self, map: &str, protocol: Protocol, block: u32, comment: &str) {
        self.commands.push(Command::AddEndpointMap { name: map.into(), protocol, block, comment: comment.into() });
    }

    pub fn add_endpoints(&mut self, map: &str, endpoints: &[(u32, SocketAddrV4)]) {
        self.in_chunks(endpoints, |endpoints| Command::AddEndpoints { map: map.into(), endpoints });
    }

    pub fn delete_endpoints(&mut self, map: &str, keys: &[u32]) {
        self.in_chunks(keys, |keys| Command::DeleteEndpoints { map: map.into(), keys });
    }

    /// One command for each `ELEMENTS_PER_MESSAGE` of `elements`.
    fn in_chunks<T: Clone>(&mut self, elements: &[T], command: impl Fn(Vec<T>) -> Command) {
        self.commands.extend(elements.chunks(ELEMENTS_PER_MESSAGE).map(|chunk| command(chunk.to_vec())));
    }

    /// The set of address pairs exists, empty.
    pub fn fresh_pair_set(&mut self, set: &str, comment: &str) {
        self.commands.push(Command::AddPairSet { name: set.into(), comment: comment.into() });
        self.commands.push(Command::FlushSet(set.into()));
    }

    /// Adds `address . address` to the pair set for each of `addresses`.
    pub fn add_pairs(&mut self, set: &str, addresses: &[Ipv4Addr]) {
        self.in_chunks(addresses, |addresses| Command::AddPairs { set: set.into(), addresses });
    }

    pub fn delete_pairs(&mut self, set: &str, addresses: &[Ipv4Addr]) {
        self.in_chunks(addresses, |addresses| Command::DeletePairs { set: set.into(), addresses });
    }

    pub fn add_element(&mut self, map: &str, element: &Element) {
        self.commands.push(Command::AddElement { map: map.into(), element: element.clone() });
    }

    pub fn delete_element(&mut self, map: &str, key: Key) {
        self.commands.push(Command::DeleteElement { map: map.into(), key });
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// How many commands the script holds.
    pub fn lines(&self) -> usize {
        self.commands.len()
    }

    /// The script in `nft -f` syntax.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for command in &self.commands {
            text += &self.line(command);
            text.push('\n');
        }
        text
    }

    fn line(&self, command: &Command) -> String {
        let table = self.table;
        match command {
            Command::AddTable { comment } => format!("add table ip {table} {{ comment \"{comment}\" ; }}"),
            Command::DeleteTable => format!("delete table ip {table}"),
            Command::AddChain { name, hook: Some(hook) } => format!("add chain ip {table} {name} {{ {hook} ; }}"),
            Command::AddChain { name, hook: None } => format!("add chain ip {table} {name}"),
            Command::FlushChain(chain) => format!("flush chain ip {table} {chain}"),
            Command::DeleteChain(chain) => format!("delete chain ip {table} {chain}"),
            Command::AddRule { chain, rule } => format!("add rule ip {table} {chain} {rule}"),
            Command::AddMap { name, key, comment } => {
                format!("add map ip {table} {name} {{ type {key} : verdict ; comment \"{comment}\" ; }}")
            }
            Command::FlushMap(map) => format!("flush map ip {table} {map}"),
            Command::AddEndpointMap { name, protocol, block, comment } => format!(
                "add map ip {table} {name} {{ typeof numgen random mod {block} : ip daddr . {} dport ; comment \"{comment}\" ; }}",
                protocol.as_str()
            ),
            Command::AddEndpoints { map, endpoints } => {
                let elements: Vec<String> =
                    endpoints.iter().map(|(key, e)| format!("{key} : {} . {}", e.ip(), e.port())).collect();
                format!("add element ip {table} {map} {{ {} }}", elements.join(", "))
            }
            Command::DeleteEndpoints { map, keys } => {
                let keys: Vec<String> = keys.iter().map(u32::to_string).collect();
                format!("delete element ip {table} {map} {{ {} }}", keys.join(", "))
            }
            Command::AddPairSet { name, comment } => {
                format!("add set ip {table} {name} {{ type ipv4_addr . ipv4_addr ; comment \"{comment}\" ; }}")
            }
            Command::FlushSet(set) => format!("flush set ip {table} {set}"),
            Command::AddPairs { set, addresses } | Command::DeletePairs { set, addresses } => {
                let verb = if matches!(command, Command::AddPairs { .. }) { "add" } else { "delete" };
                let pairs: Vec<String> = addresses.iter().map(|a| format!("{a} . {a}")).collect();
                format!("{verb} element ip {table} {set} {{ {} }}", pairs.join(", "))
            }
            Command::AddDynamicSet { name, timeout } => format!(
                "add set ip {table} {name} {{ type ipv4_addr ; size 65535 ; flags dynamic,timeout ; timeout {timeout}s ; }}"
            ),
            Command::DeleteSet(set) => format!("delete set ip {table} {set}"),
            Command::AddElement { map, element } => {
                let comment = element.comment.as_ref().map(|c| format!(" comment \"{c}\"")).unwrap_or_default();
                format!("add element ip {table} {map} {{ {}{comment} : {} }}", element.key, element.verdict)
            }
            Command::DeleteElement { map, key } => format!("delete element ip {table} {map} {{ {key} }}"),
        }
    }
}

/// The kernel's nftables, over one netlink socket of the caller's network namespace. Keep
/// it: closing a netlink socket that sent a batch waits for the kernel (10 ms and more).
pub struct Nft {
    socket: crate::nfnetlink::Socket,
}

impl Nft {
    pub fn open() -> Result<Nft, Error> {
        Ok(Nft { socket: crate::nfnetlink::Socket::open()? })
    }

    /// Whether nftables can be used here: the kernel answers a listing of tables.
    pub fn available() -> bool {
        Nft::open().and_then(|nft| netlink::dump_names(&nft.socket, netlink::Listing::Tables, "")).is_ok()
    }

    /// Applies `script` as one transaction: all of it, or (with an error that names the
    /// command the kernel refused) none.
    pub fn apply(&self, script: &Script) -> Result<(), Error> {
        if script.is_empty() {
            return Ok(());
        }
        netlink::apply(&self.socket, script)
    }

    /// The names of the chains and of the sets (maps included) in table `ip <table>`;
    /// empty when the table does not exist.
    pub fn contents(&self, table: &str) -> Result<(Vec<String>, Vec<String>), Error> {
        let chains = netlink::dump_names(&self.socket, netlink::Listing::Chains, table)?;
        Ok((chains, netlink::dump_names(&self.socket, netlink::Listing::Sets, table)?))
    }

    /// Deletes table `ip <table>` and all in it, if there is one; a kernel without nf_tables
    /// has none.
    pub fn delete_table_if_any(table: &'static str) -> Result<(), Error> {
        let Ok(nft) = Nft::open() else { return Ok(()) };
        let Ok(tables) = netlink::dump_names(&nft.socket, netlink::Listing::Tables, "") else { return Ok(()) };
        if !tables.iter().any(|t| t == table) {
            return Ok(());
        }
        let mut script = Script::new(table);
        script.delete_table();
        netlink::apply(&nft.socket, &script)
    }
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
        let hook = Hook::new(ChainKind::Nat, HookPoint::Output, -100);
        script.chain("c", Some(hook), &[Rule::new([], [Action::Accept])]);
        let element = Element {
            key: Key::Port(Protocol::Tcp, 80),
            verdict: Verdict::Goto("c".into()),
            comment: Some("x".into()),
        };
        script.add_element("m", &element);
        assert_eq!(
            script.text(),
            "add chain ip t c { type nat hook output priority -100 ; }\n\
             flush chain ip t c\n\
             add rule ip t c accept\n\
             add element ip t m { tcp . 80 comment \"x\" : goto c }\n"
        );
    }

    /// `nft list table` after applying `scripts` in a network namespace of its own: over
    /// netlink, or as text with the nft binary.
    fn listed(table: &'static str, scripts: Vec<Script>, with_nft_binary: bool) -> String {
        std::thread::spawn(move || {
            // SAFETY: unshare acts on this thread only, which ends with the namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET)");
            for script in &scripts {
                if with_nft_binary {
                    let mut nft = std::process::Command::new("nft")
                        .args(["-f", "-"])
                        .stdin(std::process::Stdio::piped())
                        .spawn()
                        .expect("nft");
                    std::io::Write::write_all(nft.stdin.as_mut().unwrap(), script.text().as_bytes()).unwrap();
                    drop(nft.stdin.take());
                    assert!(nft.wait().unwrap().success(), "nft -f:\n{}", script.text());
                } else {
                    Nft::open().and_then(|nft| nft.apply(script)).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            let out = std::process::Command::new("nft").args(["list", "table", "ip", table]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        })
        .join()
        .unwrap()
    }

    /// What the netlink encoding writes is what nft writes for the printed script: every
    /// statement, key and comment, as `nft list` reads them back. As root, with nft.
    #[test]
    fn netlink_writes_what_nft_writes() {
        use crate::proxy::{ProxyConfig, ServicePort};
        let port = |name: &str, ip: &str, protocol, node_port, affinity, endpoints: &[&str]| ServicePort {
            namespace: "shop".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol,
            cluster_ip: ip.parse().unwrap(),
            port: 80,
            node_port,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            internal_local: false,
            external_local: false,
            affinity_timeout: affinity,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            local_endpoints: Vec::new(),
        };
        // External IPs and the Local policies: a local chain, `fib saddr`, drop verdicts.
        let local = ServicePort {
            external_ips: vec!["192.168.99.10".parse().unwrap()],
            internal_local: true,
            external_local: true,
            local_endpoints: vec!["10.88.0.7:8080".parse().unwrap()],
            ..port("local", "10.96.0.14", Protocol::Tcp, Some(30082), None, &["10.88.0.7:8080", "10.89.0.2:8080"])
        };
        let elsewhere = ServicePort {
            external_ips: vec!["192.168.99.11".parse().unwrap()],
            internal_local: true,
            external_local: true,
            ..port("elsewhere", "10.96.0.15", Protocol::Tcp, Some(30083), None, &["10.89.0.3:8080"])
        };
        let services = [
            port(
                "web",
                "10.96.0.10",
                Protocol::Tcp,
                Some(30080),
                None,
                &["10.88.0.2:8080", "10.88.0.3:8080", "10.88.0.4:8080"],
            ),
            port("sticky", "10.96.0.11", Protocol::Tcp, None, Some(600), &["10.88.0.5:8080"]),
            port("dns", "10.96.0.12", Protocol::Udp, None, None, &["10.88.0.6:53"]),
            port("empty", "10.96.0.13", Protocol::Sctp, Some(30081), None, &[]),
            local,
            elsewhere,
        ];
        let config = ProxyConfig { cluster_cidr: Some("10.88.0.0/16".parse().unwrap()), random_fully: true };
        let scripts = || {
            let full = crate::proxy::nftables_rules(&services, &config).render_full(&Default::default());
            let mut changed = services.clone();
            changed[0].endpoints.pop();
            let (changes, _) = crate::proxy::nftables_rules(&changed, &config)
                .render_changes(&crate::proxy::nftables_rules(&services, &config));
            vec![full, changes]
        };
        let ours = listed("kube-proxy", scripts(), false);
        assert_eq!(ours, listed("kube-proxy", scripts(), true));
        // All but the web service go: the endpoint maps only they used go with their
        // elements.
        let emptied = || {
            let mut changed = services.clone();
            changed[0].endpoints.pop();
            let mut scripts = scripts();
            let remaining = crate::proxy::nftables_rules(&changed[..1], &config);
            scripts.push(remaining.render_changes(&crate::proxy::nftables_rules(&changed, &config)).0);
            scripts
        };
        let left = listed("kube-proxy", emptied(), false);
        assert_eq!(left, listed("kube-proxy", emptied(), true));
        assert!(!left.contains("endpoints-udp") && !left.contains("10.88.0.6"), "{left}");
        assert!(left.contains("10.88.0.2 . 8080") && left.contains("10.88.0.3 . 8080"), "{left}");
        // The web service went from 3 endpoints to 2.
        assert!(ours.contains("typeof numgen random mod 16384 : ip daddr . udp dport"), "{ours}");
        let web = ours.split("chain service-KHN6ECMT-shop/web/tcp/http {").nth(1).unwrap();
        assert!(web.contains("meta l4proto tcp dnat ip to numgen random mod 2 offset "), "{ours}");
        assert!(ours.contains("meta l4proto udp dnat ip to numgen random mod 1 offset "), "{ours}");
        assert!(!ours.contains("10.88.0.4 . 8080"), "{ours}");
        assert!(
            ours.contains("ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade"),
            "{ours}"
        );
        assert!(ours.contains("fib saddr type local goto service-"), "{ours}");
        assert!(
            ours.contains("10.96.0.15 . tcp . 80 comment \"shop/elsewhere:http has no local endpoints\" : drop"),
            "{ours}"
        );

        let mapping = crate::hostports::Mapping {
            host_ip: None,
            host_port: 8080,
            pod_ip: "10.88.0.5".parse().unwrap(),
            pod_port: 80,
            protocol: "tcp".into(),
        };
        let scripts = || {
            let node = crate::pod::node_script("10.88.0.0/16".parse().unwrap(), &["10.89.0.0/16".parse().unwrap()]);
            vec![node, crate::hostports::nft_script(std::slice::from_ref(&mapping))]
        };
        assert_eq!(listed("podctl", scripts(), false), listed("podctl", scripts(), true));
    }
}
