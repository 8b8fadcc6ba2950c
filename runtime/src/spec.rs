//! What the runtime is asked to run: a pod and its containers, already resolved from the
//! Kubernetes objects and the image config (the runtime knows neither).

use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroups::QosClass;
pub use crate::devices::{Device, DeviceKind};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodSpec {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The pod's hostname (UTS namespace), normally its name.
    pub hostname: String,
    pub network: NetworkMode,
    /// Contents of the pod's /etc/hosts and /etc/resolv.conf.
    pub hosts: String,
    pub resolv_conf: String,
    /// Volumes the pod's containers may mount, by name.
    pub volumes: Vec<Volume>,
    /// Decides where the pod's cgroup goes (see [`crate::cgroups::QosClass::of`]).
    pub qos: QosClass,
    /// One PID namespace for all the pod's containers (Kubernetes'
    /// `shareProcessNamespace`), the pod init's; else each container has its own, nested
    /// in the pod's, and its first process is its PID 1.
    #[serde(default)]
    pub share_process_namespace: bool,
    /// Who made the pod, and so who may remove it: the node agent takes no pod of `podctl run`.
    #[serde(default)]
    pub origin: Origin,
    /// Ports of the node forwarded to the pod's (containers' hostPorts, `podctl run -p`).
    #[serde(default)]
    pub host_ports: Vec<HostPort>,
    /// When `podctl run`'s supervisor starts an exited container again (the node agent
    /// keeps its pods by their objects instead).
    #[serde(default)]
    pub restart: Restart,
}

/// A restart policy, as docker's `--restart` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    No,
    /// After a non-zero exit, at most `max_retries` times when given.
    OnFailure {
        max_retries: Option<u32>,
    },
    Always,
}

impl Restart {
    /// Whether a container that exited with `code`, restarted `restarts` times already,
    /// starts again.
    pub fn again(&self, code: i32, restarts: u32) -> bool {
        match self {
            Restart::No => false,
            Restart::Always => true,
            Restart::OnFailure { max_retries } => code != 0 && max_retries.is_none_or(|max| restarts < max),
        }
    }
}

/// A port of the node forwarded to a port of the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// Only this address of the node (all of them when `None`).
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

impl HostPort {
    /// Whether both take the same port of the node.
    pub fn overlaps(&self, other: &HostPort) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `podctl run`.
    #[default]
    Run,
    /// The node agent, for a Pod bound to its node.
    Node,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace of its own, wired by the `net` crate.
    Pod,
    /// The node's network namespace (`hostNetwork: true`).
    Host,
    /// A network namespace of its own with only loopback.
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    /// A directory the pod owns, on disk or (`memory`) on tmpfs.
    EmptyDir { memory: bool, size_limit: Option<u64> },
    /// A path on the node.
    HostPath { path: PathBuf },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// An init container: it runs to completion before the others start.
    #[serde(default)]
    pub init: bool,
    /// The image as the user named it (for display; the runtime uses `lower_dirs`).
    pub image: String,
    /// Image layer snapshots, topmost first (overlayfs `lowerdir=` order).
    pub lower_dirs: Vec<PathBuf>,
    /// argv: the image's Entrypoint/Cmd merged with the pod spec's command/args.
    pub args: Vec<String>,
    /// `KEY=VALUE`, image first, pod spec last (later entries win).
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: User,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    pub mounts: Vec<Mount>,
    /// Device nodes the container is given besides the default ones.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// The capabilities it runs with (`CAP_…` names, from [`crate::capabilities`]) instead
    /// of the default set; ignored when privileged.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    pub resources: Resources,
    /// Keep a stdin for one client to attach to (Kubernetes `stdin` with `stdinOnce`).
    #[serde(default)]
    pub stdin: bool,
    /// stdin, stdout and stderr are a terminal made inside the container (Kubernetes
    /// `tty`); its output is logged as stdout, and an attached client writes to it.
    #[serde(default)]
    pub tty: bool,
    /// With `tty`, the terminal's size from the start (the client's, when it relays its
    /// own), so the command never sees it unset.
    #[serde(default)]
    pub window: Option<WindowSize>,
    /// Where the CRI log goes (`LOG_DIR/<ns>_<pod>_<uid>/<container>/<restart>.log`).
    pub log_path: PathBuf,
    /// Run in the PID namespace of this running container of the pod rather than in one of
    /// its own: an ephemeral container's `targetContainerName`, to see its processes.
    #[serde(default)]
    pub target: Option<String>,
}

impl ContainerSpec {
    /// `TERM` for a process on a terminal: `term` (the client's), else xterm, unless the
    /// environment already names one (as containerd and docker do).
    pub fn set_terminal_type(&mut self, term: Option<&str>) {
        if !self.env.iter().any(|e| e.starts_with("TERM=")) {
            self.env.push(format!("TERM={}", term.filter(|t| !t.is_empty()).unwrap_or("xterm")));
        }
    }
}

/// A terminal's size in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

impl WindowSize {
    /// The size of the terminal `fd`, if it has one (tty_ioctl(4) TIOCGWINSZ).
    pub fn of(fd: RawFd) -> Option<WindowSize> {
        // SAFETY: winsize is plain data; the ioctl fills it.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        let known = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0;
        known.then_some(WindowSize { rows: size.ws_row, cols: size.ws_col })
    }

    /// Gives the terminal `fd` (either side of a pty) this size (TIOCSWINSZ).
    pub fn apply_to(self, fd: RawFd) -> std::io::Result<()> {
        let size = libc::winsize { ws_row: self.rows, ws_col: self.cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize we own.
        if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mount {
    /// A volume of the pod, by name.
    pub volume: String,
    pub destination: String,
    pub read_only: bool,
}

/// Limits applied through the container's cgroup. `None` is "no limit".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU request in millicores (cpu.shares / cpu.weight).
    pub cpu_request_millis: Option<u64>,
    /// CPU limit in millicores (CFS quota / cpu.max).
    pub cpu_limit_millis: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub pids_limit: Option<u64>,
}
