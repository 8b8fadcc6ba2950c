//! Addresses for pods from the node's pod CIDR: one lease file per address, named by the
//! address and holding the pod's uid, so leases survive restarts of the agent and a crash
//! can never hand one address to two pods.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::Error;

/// The leases of one pod CIDR, in `dir`.
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
}

impl Ipam {
    pub fn new(dir: impl Into<PathBuf>, cidr: Ipv4Net) -> Ipam {
        Ipam { dir: dir.into(), cidr: cidr.trunc() }
    }

    /// The gateway: the first address of the CIDR, kept for the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        first_host(self.cidr)
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The address leased to `pod_uid`, leasing the next free one if it has none.
    pub fn allocate(&self, pod_uid: &str) -> Result<Ipv4Addr, Error> {
        if let Some(address) = self.lookup(pod_uid)? {
            return Ok(address);
        }
        fs::create_dir_all(&self.dir).map_err(Error::io(format!("create {}", self.dir.display())))?;
        let leased: HashSet<Ipv4Addr> = self.leases()?.into_iter().map(|(address, _)| address).collect();
        // Start after the last address handed out, as CNI's host-local does, so an address
        // just freed is not given straight to the next pod.
        let last = self.last_reserved().unwrap_or(self.gateway());
        let candidates = self.cidr.hosts().filter(|&a| a != self.gateway());
        let (after, before): (Vec<_>, Vec<_>) = candidates.partition(|&a| a > last);
        for address in after.into_iter().chain(before).filter(|a| !leased.contains(a)) {
            if self.try_lease(address, pod_uid)? {
                let _ = fs::write(self.dir.join("last_reserved"), address.to_string());
                return Ok(address);
            }
        }
        Err(Error::CidrExhausted(self.cidr))
    }

    /// The address leased to `pod_uid`, if any.
    pub fn lookup(&self, pod_uid: &str) -> Result<Option<Ipv4Addr>, Error> {
        Ok(self.leases()?.into_iter().find(|(_, uid)| uid == pod_uid).map(|(address, _)| address))
    }

    /// Frees every lease of `pod_uid`. Safe to repeat.
    pub fn release(&self, pod_uid: &str) -> Result<(), Error> {
        for (address, uid) in self.leases()? {
            if uid == pod_uid {
                self.remove_lease(address)?;
            }
        }
        Ok(())
    }

    /// Frees the leases of pods not in `live`, and any lease outside the CIDR (it changed).
    /// Returns the addresses freed.
    pub fn reconcile(&self, live: &HashSet<String>) -> Result<Vec<Ipv4Addr>, Error> {
        let mut freed = Vec::new();
        for (address, uid) in self.leases()? {
            if !live.contains(&uid) || !self.cidr.contains(&address) {
                self.remove_lease(address)?;
                freed.push(address);
            }
        }
        Ok(freed)
    }

    /// Every lease: address and pod uid.
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io { context: format!("read {}", self.dir.display()), error: e }),
        };
        let mut leases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("read {}", self.dir.display())))?;
            let Some(address) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
            match fs::read_to_string(entry.path()) {
                Ok(uid) => leases.push((address, uid.trim().to_string())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { context: format!("read lease {address}"), error: e }),
            }
        }
        leases.sort();
        Ok(leases)
    }

    /// Takes `address` for `pod_uid` unless someone holds it. The lease appears whole or
    /// not at all: the uid is written to a private file first, then link(2) gives it the
    /// address's name, failing with EEXIST if the address is taken.
    fn try_lease(&self, address: Ipv4Addr, pod_uid: &str) -> Result<bool, Error> {
        let context = || format!("lease {address}");
        let temp = self.dir.join(format!(".{address}.{pod_uid}.{}", std::process::id()));
        let mut file = fs::File::create(&temp).map_err(Error::io(context()))?;
        file.write_all(pod_uid.as_bytes()).and_then(|_| file.sync_all()).map_err(Error::io(context()))?;
        let linked = fs::hard_link(&temp, self.dir.join(address.to_string()));
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                sync_dir(&self.dir).map_err(Error::io(context()))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::Io { context: context(), error: e }),
        }
    }

    fn remove_lease(&self, address: Ipv4Addr) -> Result<(), Error> {
        match fs::remove_file(self.dir.join(address.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::Io { context: format!("release {address}"), error: e })
            }
            _ => sync_dir(&self.dir).map_err(Error::io(format!("release {address}"))),
        }
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        let address = fs::read_to_string(self.dir.join("last_reserved")).ok()?.trim().parse().ok()?;
        self.cidr.contains(&address).then_some(address)
    }
}

fn first_host(cidr: Ipv4Net) -> Ipv4Addr {
    cidr.hosts().next().unwrap_or(cidr.network())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(cidr: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path().join("leases"), cidr.parse().unwrap());
        (dir, ipam)
    }

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let (_dir, ipam) = ipam("10.1.0.0/29");
        assert_eq!(ipam.gateway(), addr("10.1.0.1"));
        let got: Vec<_> = (0..5).map(|i| ipam.allocate(&format!("pod{i}")).unwrap()).collect();
        assert_eq!(got, ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"].map(addr));
        match ipam.allocate("pod5") {
            Err(Error::CidrExhausted(cidr)) => assert_eq!(cidr.to_string(), "10.1.0.0/29"),
            other => panic!("expected exhaustion, got {other:?}"),
        }
        assert_eq!(Error::CidrExhausted(ipam.cidr()).to_string(), "no free address left in pod CIDR 10.1.0.0/29");
    }

    #[test]
    fn a_pod_keeps_its_address() {
        let (_dir, ipam) = ipam("10.1.0.0/24");
        let a = ipam.allocate("a").unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), a);
        assert_eq!(ipam.lookup("a").unwrap(), Some(a));
        // A new Ipam on the same directory (the agent restarted) sees the same lease.
        let again = Ipam::new(ipam.dir.clone(), ipam.cidr);
        assert_eq!(again.allocate("a").unwrap(), a);
    }

    #[test]
    fn release_frees_and_the_next_pod_gets_a_fresh_address() {
        let (_dir, ipam) = ipam("10.1.0.0/24");
        let a = ipam.allocate("a").unwrap();
        ipam.release("a").unwrap();
        ipam.release("a").unwrap();
        assert_eq!(ipam.lookup("a").unwrap(), None);
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b, "a just-freed address is not reused at once");
        // Once the range wraps, freed addresses come back.
        let (_dir, small) = self::ipam("10.2.0.0/30");
        let only = small.allocate("x").unwrap();
        small.release("x").unwrap();
        assert_eq!(small.allocate("y").unwrap(), only);
    }

    #[test]
    fn reconcile_frees_leases_of_departed_pods_and_outside_the_cidr() {
        let (dir, ipam) = ipam("10.1.0.0/24");
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        fs::write(dir.path().join("leases/10.9.0.5"), "c").unwrap();
        let live: HashSet<String> = ["a".to_string(), "c".to_string()].into();
        let mut freed = ipam.reconcile(&live).unwrap();
        freed.sort();
        assert_eq!(freed, [b, addr("10.9.0.5")]);
        assert_eq!(ipam.leases().unwrap(), [(a, "a".to_string())]);
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let (_dir, ipam) = ipam("10.1.0.0/24");
        let ipam = std::sync::Arc::new(ipam);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ipam = ipam.clone();
                std::thread::spawn(move || {
                    (0..20).map(|i| ipam.allocate(&format!("p{t}-{i}")).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 160);
        assert_eq!(ipam.leases().unwrap().len(), 160);
    }
}
