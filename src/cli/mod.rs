//! The command line: one subcommand per role of the binary.

mod apiserver;
mod dns;
mod exec;
mod image;
mod manifest;
mod network;
mod node;
mod pods;
mod run;
mod stats;
mod terminal;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "podctl", version, about = "A Kubernetes node built from Linux primitives")]
pub struct Cli {
    #[command(flatten)]
    pub opts: NodeOptions,
    #[command(subcommand)]
    command: Command,
}

/// The heading the node's options are listed under, after each command's own.
const NODE_OPTIONS: &str = "Node options (for every command)";

/// Where the node keeps its state and how its pod network is laid out; every flag may come
/// before or after the subcommand.
#[derive(Args, Clone)]
pub struct NodeOptions {
    /// Images, pod state and leases
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "DIR", default_value = "/var/lib/podctl", env = "PODCTL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Runtime state that does not survive a reboot (netns bind mounts, sockets)
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "DIR", default_value = "/run/podctl", env = "PODCTL_RUN_DIR")]
    pub run_dir: PathBuf,
    /// Container logs, in the CRI layout
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "DIR", default_value = "/var/log/pods", env = "PODCTL_LOG_DIR")]
    pub log_dir: PathBuf,
    /// Parent of the kubepods cgroup: absolute, or relative to podctl's own cgroup (default)
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "PATH", env = "PODCTL_CGROUP_ROOT")]
    pub cgroup_root: Option<String>,
    /// The bridge pods are attached to
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "NAME", default_value = "podctl0", env = "PODCTL_BRIDGE")]
    pub bridge: String,
    /// This node's pod CIDR: pods get addresses from it, its first address is the gateway
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "CIDR", default_value = "10.88.0.0/16", env = "PODCTL_POD_CIDR")]
    pub pod_cidr: net::Ipv4Net,
    /// Where the node's packet filter rules go (service proxy, pod masquerade, host ports):
    /// nftables or iptables [default: nftables where the kernel and nft have it]
    #[arg(long, global = true, help_heading = NODE_OPTIONS, value_name = "MODE", env = "PODCTL_PROXY_MODE")]
    pub proxy_mode: Option<net::Mode>,
}

impl NodeOptions {
    /// These options as flags, for a podctl process of our own to run with.
    pub fn as_flags(&self) -> Vec<std::ffi::OsString> {
        let mut flags: Vec<std::ffi::OsString> = Vec::new();
        for (flag, value) in
            [("--data-dir", &self.data_dir), ("--run-dir", &self.run_dir), ("--log-dir", &self.log_dir)]
        {
            flags.push(flag.into());
            flags.push(value.into());
        }
        for (flag, value) in [("--bridge", self.bridge.clone()), ("--pod-cidr", self.pod_cidr.to_string())] {
            flags.push(flag.into());
            flags.push(value.into());
        }
        if let Some(root) = &self.cgroup_root {
            flags.push("--cgroup-root".into());
            flags.push(root.into());
        }
        if let Some(mode) = self.proxy_mode {
            flags.push("--proxy-mode".into());
            flags.push(mode.as_str().into());
        }
        flags
    }

    /// The runtime on these directories and this machine's cgroups.
    pub fn runtime(&self) -> Result<runtime::Runtime> {
        let cgroups =
            runtime::Cgroups::detect(self.cgroup_root.as_deref()).map_err(|e| anyhow::anyhow!("cgroups: {e}"))?;
        Ok(runtime::Runtime::new(&self.run_dir, &self.data_dir, cgroups))
    }

    /// The node's pod network: bridge, leases, masquerade.
    pub fn network(&self) -> net::PodNetwork {
        net::PodNetwork::new(net::NetworkConfig {
            bridge: self.bridge.clone(),
            pod_cidr: self.pod_cidr,
            mtu: None,
            lease_dir: self.data_dir.join("net").join("leases"),
            mode: self.proxy_mode,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a pod on this host from an image, without an API server
    Run(Box<run::RunArgs>),
    /// List the pods podctl run made
    Ps(pods::PsArgs),
    /// Print a container's log
    Logs(pods::LogsArgs),
    /// Show pods as JSON: spec, each container's state and exit, address, paths
    Inspect(pods::InspectArgs),
    /// Show what pods use: CPU, memory, network, processes
    Stats(stats::StatsArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Stop pods: SIGTERM, then SIGKILL after the grace period
    Stop(pods::StopArgs),
    /// Start the exited containers of pods again (and their supervisor, with --restart)
    Start(pods::StartArgs),
    /// Stop pods, then start them again
    Restart(pods::StopArgs),
    /// Remove pods and everything they left on the node
    Rm(pods::RmArgs),
    /// Apply (or print) the service proxy's iptables rules for Services and their endpoints
    Proxy(network::ProxyArgs),
    /// Route to other nodes' pod CIDRs via their node IPs
    Routes(network::RoutesArgs),
    /// Serve a Kubernetes-compatible API that kubectl drives
    Apiserver(apiserver::ApiserverArgs),
    /// The node agent: register this node and serve its pods' logs and exec to the API server
    Node(node::NodeArgs),
    /// A whole cluster on this host in one process: API server, controllers, scheduler and
    /// node agent; writes DATA_DIR/kubeconfig
    Up(Box<up::UpArgs>),
    /// Serve the cluster DNS alone, from an API server's Services and EndpointSlices
    Dns(dns::DnsArgs),
    /// Manage the local image store
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Print a shell's completion script (bash: `podctl completion bash >
    /// /etc/bash_completion.d/podctl`)
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write podctl's manual pages, one per command (`podctl manpage /usr/local/share/man/man1`)
    Manpage {
        /// The directory to write podctl.1, podctl-run.1, … into
        dir: PathBuf,
    },
}

impl Cli {
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Run(args) => args.run(&self.opts),
            Command::Ps(args) => pods::ps(args, &self.opts),
            Command::Logs(args) => pods::logs(args, &self.opts),
            Command::Inspect(args) => pods::inspect(args, &self.opts),
            Command::Stats(args) => stats::stats(args, &self.opts),
            Command::Exec(args) => args.run(&self.opts),
            Command::Stop(args) => pods::stop(args, &self.opts),
            Command::Start(args) => pods::start(args, &self.opts),
            Command::Restart(args) => pods::restart(args, &self.opts),
            Command::Rm(args) => pods::rm(args, &self.opts),
            Command::Proxy(args) => args.run(&self.opts),
            Command::Routes(args) => args.run(&self.opts),
            Command::Apiserver(args) => args.run(&self.opts),
            Command::Node(args) => args.run(&self.opts),
            Command::Up(args) => args.run(&self.opts),
            Command::Dns(args) => args.run(&self.opts),
            Command::Image(cmd) => cmd.run(&self.opts),
            Command::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "podctl", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Manpage { dir } => {
                use clap::CommandFactory;
                clap_mangen::generate_to(Cli::command(), &dir)
                    .map_err(|e| anyhow::anyhow!("write the manual pages into {}: {e}", dir.display()))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// podctl's own background processes, not commands of the command line (help and
/// completions do not offer them; `main` dispatches them): for a `podctl run -d` pod,
/// `__cleanup UID` removes it once its containers are done (`--rm`) and `__supervise UID`
/// keeps them up by its restart policy (`--restart`); `__sweep` deletes what removed pods
/// left on disk, so that no command waits for the disk to free it.
pub const HELPERS: [&str; 3] = ["__cleanup", "__supervise", "__sweep"];

#[derive(Parser)]
struct Helper {
    #[command(flatten)]
    opts: NodeOptions,
    uid: Option<String>,
}

pub fn helper(name: &str, args: impl Iterator<Item = std::ffi::OsString>) -> Result<ExitCode> {
    let helper = Helper::parse_from(std::iter::once(format!("podctl {name}").into()).chain(args));
    let uid = || helper.uid.as_deref().context("the pod's uid");
    match name {
        "__supervise" => pods::supervise(uid()?, &helper.opts),
        "__sweep" => {
            crate::kubelet::sandbox::sweep(&helper.opts.runtime()?, &helper.opts.log_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => pods::cleanup(uid()?, &helper.opts),
    }
}

/// Prints rows as columns, the first row being the header.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// podctl creates device nodes, sets ownership and mounts: it runs as root.
fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} must run as root");
    }
    Ok(())
}
