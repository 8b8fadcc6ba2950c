//! The iptables on this machine: nf_tables or legacy backend, driven through
//! `iptables-restore --noflush` so a whole rule set lands in one transaction.

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

    /// Every backend installed here (`iptables-nft`, `iptables-legacy`, or plain
    /// `iptables` when neither is).
    pub fn installed() -> Vec<Iptables> {
        let named: Vec<Iptables> =
            ["iptables-nft", "iptables-legacy"].into_iter().filter_map(Iptables::named).collect();
        if named.is_empty() { Iptables::named("iptables").into_iter().collect() } else { named }
    }

    pub fn name(&self) -> &str {
        &self.command
    }

    /// Applies `input` (iptables-save form) atomically per table, leaving chains it does
    /// not name alone.
    pub fn restore(&self, input: &str) -> Result<(), Error> {
        run_with_input(&format!("{}-restore", self.command), &["-w", "--noflush"], input)
    }

    /// The rules of one table, in iptables-save form.
    pub fn save(&self, table: &str) -> Result<String, Error> {
        self.dump(&["-t", table])
    }

    /// iptables-save with `args`.
    fn dump(&self, args: &[&str]) -> Result<String, Error> {
        let program = format!("{}-save", self.command);
        let output = Command::new(&program).args(args).output().map_err(Error::io(format!("run {program}")))?;
        if !output.status.success() {
            return Err(Error::Iptables(format!("{program}: {}", String::from_utf8_lossy(&output.stderr).trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Deletes the chains `is_ours` names, and every rule elsewhere that jumps to them, in
    /// whichever tables have them; nothing happens when none has.
    pub fn remove_chains(&self, is_ours: impl Fn(&str) -> bool) -> Result<(), Error> {
        // Without `-t`: only the tables that exist (asking for one creates it).
        let input = removal(&self.dump(&[])?, is_ours);
        if input.is_empty() { Ok(()) } else { self.restore(&input) }
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

/// iptables-restore input that deletes, table by table, the chains of `dump` that
/// `is_ours` names and the rules of other chains that jump to them.
fn removal(dump: &str, is_ours: impl Fn(&str) -> bool) -> String {
    let mut input = String::new();
    for table in dump.split('\n').collect::<Vec<_>>().split(|l| *l == "COMMIT") {
        let Some(name) = table.iter().find_map(|l| l.strip_prefix('*')) else { continue };
        let ours: Vec<&str> =
            table.iter().filter_map(|l| l.strip_prefix(':')?.split(' ').next()).filter(|c| is_ours(c)).collect();
        if ours.is_empty() {
            continue;
        }
        input += &format!("*{name}\n");
        for rule in table.iter().filter_map(|l| l.strip_prefix("-A ")) {
            let chain = rule.split(' ').next().unwrap_or_default();
            let target = rule.rsplit_once(" -j ").map(|(_, t)| t.split(' ').next().unwrap_or_default());
            if !is_ours(chain) && target.is_some_and(&is_ours) {
                input += &format!("-D {rule}\n");
            }
        }
        for chain in &ours {
            input += &format!(":{chain} - [0:0]\n");
        }
        for chain in &ours {
            input += &format!("-X {chain}\n");
        }
        input += "COMMIT\n";
    }
    input
}

/// Runs `program` with `input` as its standard input, written whole before the program
/// starts: a podctl killed mid-sync can never hand iptables-restore a truncated rule set
/// that still parses (it runs on to the end with all of it, or never starts).
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
    Err(Error::Iptables(format!("{program}: {}", String::from_utf8_lossy(&output.stderr).trim())))
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

#[cfg(test)]
mod tests {
    #[test]
    fn removal_deletes_our_chains_and_the_jumps_to_them() {
        let dump = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:OTHER - [0:0]\n\
                    -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
                    -A PREROUTING -j OTHER\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(
            super::removal(dump, |c| c.starts_with("KUBE-")),
            "*nat\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             :KUBE-SERVICES - [0:0]\n-X KUBE-SERVICES\nCOMMIT\n"
        );
        assert_eq!(super::removal(dump, |c| c.starts_with("PODCTL-")), "");
    }
}
