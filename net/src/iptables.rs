//! The iptables on this machine: nf_tables or legacy backend, driven through
//! `iptables-restore --noflush` so a whole rule set lands in one transaction.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::Error;

/// Which iptables binaries hold the node's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iptables {
    /// `iptables-nft`, `iptables-legacy` or plain `iptables`.
    command: String,
}

impl Iptables {
    /// The backend that already holds rules of ours or kube-proxy's or kubelet's, else the
    /// one with more rules, else nf_tables: what kubelet's iptables-wrapper decides, so a
    /// node's rules never end up split over two backends.
    pub fn detect() -> Iptables {
        let (nft, legacy) = ("iptables-nft", "iptables-legacy");
        if !exists(legacy) {
            return Iptables { command: if exists(nft) { nft } else { "iptables" }.into() };
        }
        if !exists(nft) {
            return Iptables { command: legacy.into() };
        }
        let dump = |command: &str| {
            // Without `-t`: asking iptables-legacy for a table creates it.
            Command::new(format!("{command}-save"))
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let ours = |dump: &str| dump.lines().any(|l| l.starts_with(":PODCTL-") || l.starts_with(":KUBE-"));
        let rules = |dump: &str| dump.lines().filter(|l| l.starts_with("-A ")).count();
        let (nft_dump, legacy_dump) = (dump(nft), dump(legacy));
        let command = if ours(&nft_dump) {
            nft
        } else if ours(&legacy_dump) || rules(&legacy_dump) > rules(&nft_dump) {
            legacy
        } else {
            nft
        };
        Iptables { command: command.into() }
    }

    /// A given backend (`iptables-nft`, `iptables-legacy`), if installed.
    pub fn named(command: &str) -> Option<Iptables> {
        exists(command).then(|| Iptables { command: command.into() })
    }

    pub fn name(&self) -> &str {
        &self.command
    }

    /// Applies `input` (iptables-save form) atomically per table, leaving chains it does
    /// not name alone.
    pub fn restore(&self, input: &str) -> Result<(), Error> {
        let program = format!("{}-restore", self.command);
        let mut child = Command::new(&program)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("run {program}")))?;
        let written = child.stdin.take().expect("piped").write_all(input.as_bytes());
        let output = child.wait_with_output().map_err(Error::io(format!("run {program}")))?;
        if !output.status.success() {
            return Err(Error::Iptables(format!("{program}: {}", String::from_utf8_lossy(&output.stderr).trim())));
        }
        written.map_err(Error::io(format!("write to {program}")))
    }

    /// The rules of one table, in iptables-save form.
    pub fn save(&self, table: &str) -> Result<String, Error> {
        let program = format!("{}-save", self.command);
        let output =
            Command::new(&program).args(["-t", table]).output().map_err(Error::io(format!("run {program}")))?;
        if !output.status.success() {
            return Err(Error::Iptables(format!("{program}: {}", String::from_utf8_lossy(&output.stderr).trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Applies `rules` and, in the same restore, inserts at the head of the built-in chains
    /// whichever of `jumps` are missing (as kube-proxy's EnsureRule(Prepend) does).
    pub fn apply_with_jumps(&self, rules: &str, jumps: &[Jump]) -> Result<(), Error> {
        let mut input = rules.to_string();
        let mut tables: Vec<&str> = jumps.iter().map(|j| j.table).collect();
        tables.dedup();
        for table in tables {
            let dump = self.save(table)?;
            let missing: Vec<&Jump> = jumps.iter().filter(|j| j.table == table && !j.present_in(&dump)).collect();
            if missing.is_empty() {
                continue;
            }
            input += &format!("*{table}\n");
            for jump in missing {
                input += &format!("-I {} {} -j {}\n", jump.chain, jump.matches, jump.target);
            }
            input += "COMMIT\n";
        }
        if input.is_empty() { Ok(()) } else { self.restore(&input) }
    }
}

/// A rule in a built-in chain that sends traffic into one of our chains.
#[derive(Clone, Copy, Debug)]
pub struct Jump {
    pub table: &'static str,
    pub chain: &'static str,
    /// Matches before `-j`, e.g. `-m comment --comment "kubernetes service portals"`.
    pub matches: &'static str,
    pub target: &'static str,
}

impl Jump {
    /// Whether `dump` (iptables-save of the jump's table) has a rule in the chain that
    /// jumps to the target.
    fn present_in(&self, dump: &str) -> bool {
        let head = format!("-A {} ", self.chain);
        let tail = format!("-j {}", self.target);
        dump.lines().any(|l| l.starts_with(&head) && l.trim_end().ends_with(&tail))
    }
}

fn exists(command: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).exists()))
        .unwrap_or(false)
}
