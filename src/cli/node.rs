//! `podctl node`: flags to the node agent's configuration.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// This node's name (default: the host name)
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Address and port of the node's endpoint, which serves logs and exec to the API server
    /// (HTTPS, to the API server's client certificate only)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10250")]
    listen: SocketAddr,
    /// The address the API server reaches the endpoint at (default: --listen's)
    #[arg(long, value_name = "IP")]
    node_ip: Option<IpAddr>,
    /// The certificate authority (PEM) of the API server's client certificate (default: the
    /// kubeconfig's certificate-authority-data)
    #[arg(long, value_name = "FILE")]
    client_ca_file: Option<PathBuf>,
    /// Let any client of the endpoint in (anyone who reaches it can exec into every
    /// container)
    #[arg(long)]
    allow_unauthenticated: bool,
}

impl NodeArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        require_root("podctl node")?;
        // One agent per node: a second would start and stop the same pods.
        runtime::state::create_private_dir(&opts.data_dir)
            .with_context(|| format!("create {}", opts.data_dir.display()))?;
        let lock = opts.data_dir.join("node.lock");
        let _one_agent = crate::files::lock_exclusive(&lock)
            .with_context(|| format!("{} is in use by another podctl node", opts.data_dir.display()))?;
        let node_name = match self.node_name {
            Some(name) => name,
            None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
        };
        let config = kubelet::Config {
            kubeconfig: self.kubeconfig.unwrap_or_else(|| opts.data_dir.join("kubeconfig")),
            server: self.server,
            node_name,
            listen: self.listen,
            node_ip: self.node_ip,
            pod_cidr: opts.pod_cidr.to_string(),
            client_ca_file: self.client_ca_file,
            allow_unauthenticated: self.allow_unauthenticated,
        };
        kubelet::run(config, opts.runtime()?)?;
        Ok(ExitCode::SUCCESS)
    }
}
