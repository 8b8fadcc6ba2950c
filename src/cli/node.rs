//! `podctl node`: flags to the node agent's configuration.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::{NodeOptions, require_root};
use crate::kubelet;

#[derive(Args)]
pub struct NodeArgs {
    /// How to reach the API server (default: DATA_DIR/kubeconfig, which `podctl apiserver`
    /// writes)
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The API server's URL, instead of the kubeconfig's
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Address and port of the node's endpoint, which serves logs and exec to the API server
    /// (HTTPS, to the API server's client certificate only)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10250")]
    listen: SocketAddr,
    /// The certificate authority (PEM) of the API server's client certificate (default: the
    /// kubeconfig's certificate-authority-data)
    #[arg(long, value_name = "FILE")]
    client_ca_file: Option<PathBuf>,
    /// Let any client of the endpoint in (anyone who reaches it can exec into every
    /// container)
    #[arg(long)]
    allow_unauthenticated: bool,
    #[command(flatten)]
    agent: AgentArgs,
}

/// The node agent's flags that `podctl node` and `podctl up` share.
#[derive(Args)]
pub struct AgentArgs {
    /// This node's name (default: the host name)
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// The address the API server reaches the node's endpoint at (default: the endpoint's
    /// listening address)
    #[arg(long, value_name = "IP")]
    node_ip: Option<IpAddr>,
    /// At most this many pods run here; more are refused (OutOfpods)
    #[arg(long, value_name = "N", default_value_t = 110)]
    max_pods: usize,
    /// How often every pod is synced with its object even when nothing changed (seconds)
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    sync_frequency: u64,
    /// The cluster DNS server that ClusterFirst pods resolve with (default: the host's
    /// resolv.conf)
    #[arg(long, value_name = "IP")]
    pub cluster_dns: Option<IpAddr>,
    /// The cluster's DNS domain, searched by ClusterFirst pods
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Serve the cluster DNS here, on the pod network's gateway (port 53), behind the
    /// kube-system/kube-dns Service at --cluster-dns [default: false for `podctl node`,
    /// true for `podctl up`]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub serve_cluster_dns: Option<bool>,
    /// The resolver configuration that pods with dnsPolicy Default get, and that the
    /// cluster DNS forwards other names to
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// A registry (HOST:PORT) to pull from over plain HTTP; may be repeated
    #[arg(long, value_name = "HOST:PORT")]
    insecure_registry: Vec<String>,
    /// Labels the Node is registered with
    #[arg(long, value_name = "KEY=VALUE,...", value_delimiter = ',', value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
    /// Taints the Node is registered with
    #[arg(long, value_name = "KEY[=VALUE]:EFFECT,...", value_delimiter = ',', value_parser = parse_taint)]
    register_with_taints: Vec<serde_json::Value>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?}: KEY=VALUE expected"))?;
    let causes: Vec<String> = crate::validation::check("label key", key, crate::validation::qualified_name)
        .into_iter()
        .chain(crate::validation::check("label value", value, crate::validation::label_value))
        .map(|(field, why)| format!("{field}: {why}"))
        .collect();
    if causes.is_empty() { Ok((key.to_string(), value.to_string())) } else { Err(causes.join("; ")) }
}

/// `key=value:Effect` or `key:Effect`, as kubelet reads --register-with-taints.
fn parse_taint(text: &str) -> Result<serde_json::Value, String> {
    let (kv, effect) = text.rsplit_once(':').ok_or_else(|| format!("{text:?}: KEY[=VALUE]:EFFECT expected"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("{text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute"));
    }
    let (key, value) = kv.split_once('=').map_or((kv, None), |(k, v)| (k, Some(v)));
    if key.is_empty() {
        return Err(format!("{text:?}: a taint needs a key"));
    }
    let mut taint = serde_json::json!({"key": key, "effect": effect});
    if let Some(value) = value {
        taint["value"] = value.into();
    }
    Ok(taint)
}

impl NodeArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        let _one_agent = lock_node(opts, "podctl node")?;
        let connection = Connection {
            kubeconfig: self.kubeconfig.unwrap_or_else(|| opts.data_dir.join("kubeconfig")),
            server: self.server,
            listen: self.listen,
            client_ca_file: self.client_ca_file,
            allow_unauthenticated: self.allow_unauthenticated,
        };
        let (config, store) = self.agent.config(connection, opts)?;
        kubelet::run(config, opts.runtime()?, store)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// How an agent reaches the API server, and how the API server reaches it.
pub struct Connection {
    pub kubeconfig: PathBuf,
    pub server: Option<String>,
    pub listen: SocketAddr,
    pub client_ca_file: Option<PathBuf>,
    pub allow_unauthenticated: bool,
}

/// One agent per node: a second would start and stop the same pods. The lock is held as
/// long as the file is open.
pub fn lock_node(opts: &NodeOptions, command: &str) -> Result<std::fs::File> {
    require_root(command)?;
    runtime::state::create_private_dir(&opts.data_dir)
        .with_context(|| format!("create {}", opts.data_dir.display()))?;
    let lock = opts.data_dir.join("node.lock");
    crate::files::lock_exclusive(&lock)
        .with_context(|| format!("{} is in use by another podctl node", opts.data_dir.display()))
}

impl AgentArgs {
    /// The agent's configuration, and the node's image store.
    pub fn config(self, connection: Connection, opts: &NodeOptions) -> Result<(kubelet::Config, images::Store)> {
        let node_name = match self.node_name {
            Some(name) => name,
            None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
        };
        let config = kubelet::Config {
            kubeconfig: connection.kubeconfig,
            server: connection.server,
            node_name,
            listen: connection.listen,
            node_ip: self.node_ip,
            pod_cidr: opts.pod_cidr.to_string(),
            client_ca_file: connection.client_ca_file,
            allow_unauthenticated: connection.allow_unauthenticated,
            max_pods: self.max_pods,
            sync_frequency: Duration::from_secs(self.sync_frequency.max(1)),
            cluster_dns: self.cluster_dns,
            cluster_domain: self.cluster_domain,
            serve_cluster_dns: self.serve_cluster_dns.unwrap_or(false),
            resolv_conf: self.resolv_conf,
            insecure_registries: self.insecure_registry,
            log_dir: opts.log_dir.clone(),
            network: opts.network(),
            node_labels: self.node_labels,
            taints: self.register_with_taints,
            data_dir: opts.data_dir.clone(),
        };
        let store = images::Store::open(&opts.data_dir)
            .with_context(|| format!("open the image store in {}", opts.data_dir.display()))?;
        Ok((config, store))
    }
}
