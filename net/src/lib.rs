//! Pod network and service proxy. Knows nothing of containers: only network
//! namespaces by path.

pub mod hostports;
mod ipam;
mod iptables;
mod link;
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

/// Runs `program` with `input` as its standard input, written whole before the program
/// starts: a podctl killed mid-sync can never hand iptables-restore or nft a truncated rule
/// set that still parses (it runs on to the end with all of it, or never starts).
fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<(), Error> {
    use std::io::{Seek, Write};
    let fd = nix::sys::memfd::memfd_create(c"podctl-rules", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::io(format!("run {program}"))(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(input.as_bytes()).and_then(|()| file.rewind()).map_err(Error::io(format!("run {program}")))?;
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(Error::io(format!("run {program}")))?;
    if output.status.success() {
        return Ok(());
    }
    let message = format!("{program}: {}", String::from_utf8_lossy(&output.stderr).trim());
    Err(if program.starts_with("nft") { Error::Nftables(message) } else { Error::Iptables(message) })
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
    /// and `nft` works, else iptables.
    pub fn new(mode: Option<Mode>) -> Result<Firewall, Error> {
        match mode {
            Some(Mode::Iptables) => Ok(Firewall::Iptables(Iptables::detect())),
            Some(Mode::Nftables) if nft::Nft::available() => Ok(Firewall::Nftables),
            Some(Mode::Nftables) => Err(Error::Invalid(
                "proxy mode nftables: `nft list tables` fails here (no nft binary, or a kernel without nf_tables)"
                    .into(),
            )),
            None if kernel_version().is_some_and(|v| v >= NFTABLES_KERNEL) && nft::Nft::available() => {
                Ok(Firewall::Nftables)
            }
            None => Ok(Firewall::Iptables(Iptables::detect())),
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            Firewall::Nftables => Mode::Nftables,
            Firewall::Iptables(_) => Mode::Iptables,
        }
    }
}

/// The running kernel's (major, minor).
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
