//! Pod network and service proxy. Knows nothing of containers: only network
//! namespaces by path.

mod conntrack;
pub mod hostports;
mod ipam;
mod iptables;
mod link;
mod nfnetlink;
pub mod nft;
mod pod;
pub mod proxy;

use std::io;
use std::str::FromStr;

pub use ipam::Ipam;
pub use ipnet::Ipv4Net;
pub use iptables::Iptables;
pub use pod::{NetworkConfig, PodAddress, PodNetwork, node_rules};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("{context}: {message}")]
    Netlink { context: String, message: String },
    #[error("no free address left in pod CIDR {0}")]
    CidrExhausted(Ipv4Net),
    #[error("{0}")]
    Iptables(String),
    #[error("{0}")]
    Nftables(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |error| Error::Io { context, error }
    }
}

/// Which of the kernel's packet filters a node's rules go to: its pod network's
/// masquerade, its host ports and its service proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firewall {
    Nftables,
    Iptables(Iptables),
}

/// The `--proxy-mode` a node is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nftables,
    Iptables,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "nftables" => Ok(Mode::Nftables),
            "iptables" => Ok(Mode::Iptables),
            other => Err(format!("unknown proxy mode {other:?}: nftables or iptables")),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
        }
    }
}

/// kube-proxy's floor for its nftables mode.
const NFTABLES_KERNEL: (u32, u32) = (5, 13);

impl Firewall {
    /// The one `mode` names; without a mode, nftables where the kernel is recent enough
    /// and answers nf_tables, else iptables.
    pub fn new(mode: Option<Mode>) -> Result<Firewall, Error> {
        match mode {
            Some(Mode::Iptables) => Ok(Firewall::Iptables(Iptables::detect())),
            Some(Mode::Nftables) if nft::Nft::available() => Ok(Firewall::Nftables),
            Some(Mode::Nftables) => Err(Error::Invalid(
                "proxy mode nftables: this kernel does not answer nf_tables (no nf_tables module?)".into(),
            )),
            None if kernel_version().is_some_and(|v| v >= NFTABLES_KERNEL) && nft::Nft::available() => {
                Ok(Firewall::Nftables)
            }
            None => Ok(Firewall::Iptables(Iptables::detect())),
        }
    }

    /// Removes rules of ours from the packet filter this node does not use (a node that
    /// changed modes, as kube-proxy's `--cleanup` does): in nftables mode, the chains
    /// `iptables_chains` names, from every iptables backend installed; in iptables mode,
    /// the nftables table `nft_table`.
    pub fn remove_from_other(
        &self,
        iptables_chains: impl Fn(&str) -> bool,
        nft_table: &'static str,
    ) -> Result<(), Error> {
        match self {
            Firewall::Nftables => Iptables::installed().iter().try_for_each(|i| i.remove_chains(&iptables_chains)),
            Firewall::Iptables(_) => nft::Nft::delete_table_if_any(nft_table),
        }
    }
}

/// The running kernel's (major, minor).
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
