//! A scratch node for integration tests: temporary data, run and log directories, a network
//! namespace of its own (its "host" network: bridge, veths and iptables rules go there), and
//! the `podctl` binary run inside it against them. Every pod still there when it drops is
//! removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::netns::Netns;

pub struct Node {
    // Dropped before `dir`, which holds its file.
    pub netns: Netns,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    env: Vec<(String, String)>,
    on_host_network: bool,
}

impl Node {
    /// `bin` is the podctl under test: `env!("CARGO_BIN_EXE_podctl")`.
    pub fn new(bin: &str) -> Node {
        crate::assert_root();
        let dir = crate::temp_dir();
        let netns = Netns::new(&dir.path().join("netns"));
        Node { netns, dir, bin: PathBuf::from(bin), env: Vec::new(), on_host_network: false }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// This node's cgroups go below the test's own, in a cgroup named after its directory.
    pub fn cgroup_root(&self) -> String {
        self.dir.path().file_name().unwrap().to_string_lossy().into_owned()
    }

    /// `podctl` with this node's directories, in this node's network namespace.
    pub fn command(&self) -> Command {
        self.command_in(!self.on_host_network)
    }

    /// `podctl` with this node's directories in the host's network namespace: for a node
    /// agent that talks to a test's API server on loopback and serves on loopback, and
    /// touches no link, route or rule.
    pub fn host_command(&self) -> Command {
        self.command_in(false)
    }

    fn command_in(&self, node_netns: bool) -> Command {
        let mut cmd = Command::new(&self.bin);
        if node_netns {
            self.netns.enter(&mut cmd);
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--log-dir")
            .arg(self.log_dir())
            .arg("--cgroup-root")
            .arg(self.cgroup_root())
            .env("HOME", self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// podctl runs in the host's network namespace, to reach a test registry on the host's
    /// loopback: only for image commands, which never touch links, routes or iptables.
    pub fn on_host_network(mut self) -> Node {
        self.on_host_network = true;
        self
    }

    /// Every podctl of this node runs with `key=value` in its environment
    /// (`PODCTL_POD_CIDR`, say).
    pub fn with_env(mut self, key: &str, value: &str) -> Node {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The address of a running pod, as `podctl ps` shows it.
    pub fn pod_ip(&self, name: &str) -> String {
        let ps = self.ok(&["ps", "--format", "json"]);
        let pods: Vec<serde_json::Value> = serde_json::from_str(&ps).expect("ps --format json");
        let pod = pods.iter().find(|p| p["Name"] == name);
        pod.and_then(|p| p["IP"].as_str())
            .unwrap_or_else(|| panic!("pod {name} not running with an address:\n{ps}"))
            .to_string()
    }

    pub fn podctl(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("podctl runs")
    }

    /// Runs podctl, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podctl(args);
        assert!(out.status.success(), "podctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs podctl, expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.podctl(args);
        assert!(!out.status.success(), "podctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// `podctl run --rm FLAGS busybox -- sh -c SCRIPT`: (exit code, stdout, stderr).
    pub fn sh(&self, flags: &[&str], script: &str) -> (i32, String, String) {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "--", "sh", "-c", script]);
        outcome(self.podctl(&args))
    }

    /// Imports the busybox test image as `busybox:latest`.
    pub fn with_busybox(self) -> Node {
        self.with_busybox_as("busybox:latest")
    }

    /// Imports the busybox test image under `name`.
    pub fn with_busybox_as(self, name: &str) -> Node {
        let archive = self.dir.path().join("busybox.tar");
        crate::busybox_image().write_docker_archive(&archive, Some(name));
        self.ok(&["image", "import", archive.to_str().unwrap()]);
        self
    }

    /// The pid of the named pod's init, as its state records it.
    pub fn pod_init_pid(&self, name: &str) -> i32 {
        let pods = std::fs::read_dir(self.run_dir().join("pods")).unwrap();
        for pod in pods.filter_map(|e| e.ok()) {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(pod.path().join("pod.json")).unwrap_or_default())
                    .unwrap_or_default();
            if record["spec"]["name"] == name {
                let init: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(pod.path().join("init.json")).unwrap()).unwrap();
                return init["pid"].as_i64().unwrap() as i32;
            }
        }
        panic!("no pod {name}")
    }

    /// Every mount point under this node's directories but its own network namespace.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.dir.path()).into_iter().filter(|m| Path::new(m) != self.netns.path()).collect()
    }
}

/// (exit code, stdout, stderr) of a finished podctl.
pub fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect()
}

/// Pids of pod inits (`podctl __pod-init STATE_DIR`) whose state dir is below `dir`.
fn pod_inits_under(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() >= 3
                && args[1] == b"__pod-init"
                && Path::new(std::str::from_utf8(args[2]).unwrap_or("")).starts_with(dir)
        })
        .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        // In the node's namespace whatever the node's commands use: `ps` tidies the network.
        if let Ok(out) = self.command_in(true).args(["ps", "-a", "-q"]).output() {
            for name in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.command_in(true).args(["rm", "-f", name]).output();
            }
        }
        // A pod the test left broken (not listed) still ends: its pod init names our dir.
        for pid in pod_inits_under(self.dir.path()) {
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for mount in self.mounts().iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        if let Ok(cgroups) = runtime::Cgroups::detect(Some(&self.cgroup_root())) {
            let _ = cgroups.root().remove();
        }
    }
}
