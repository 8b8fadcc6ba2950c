//! Debian's dnsmasq as an upstream resolver for the cluster DNS's tests: on the loopback
//! of a scratch network namespace, port 53, knowing the names it is given.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A dnsmasq, killed and reaped when dropped.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Answers `name → address` for each of `names` (and everything under them) at
    /// 127.0.0.1:53 of the namespace bound at `netns`; nothing else.
    pub fn start(netns: &Path, names: &[(&str, &str)]) -> Dnsmasq {
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--port=53", "--user=root", "--pid-file="])
            .args(names.iter().map(|(name, address)| format!("--address=/{name}/{address}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::netns::enter_path(netns, &mut cmd);
        Dnsmasq(cmd.spawn().expect("dnsmasq (Debian's dnsmasq-base)"))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
