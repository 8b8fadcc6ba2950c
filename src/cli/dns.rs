//! `podctl dns`: the cluster DNS on its own, as CoreDNS runs beside a cluster: Services and
//! EndpointSlices watched through a kubeconfig, answered at the addresses given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::NodeOptions;

#[derive(Args)]
pub struct DnsArgs {
    /// How to reach the API server (default: DATA_DIR/kubeconfig)
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The API server's URL, instead of the kubeconfig's
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Address and port to answer on (UDP and TCP); may be repeated
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:53")]
    listen: Vec<SocketAddr>,
    /// The cluster's DNS domain
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The resolvers other names are forwarded to
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

impl DnsArgs {
    pub fn run(self, opts: &NodeOptions) -> Result<ExitCode> {
        let kubeconfig = self.kubeconfig.unwrap_or_else(|| opts.data_dir.join("kubeconfig"));
        let resolv_conf = std::fs::read_to_string(&self.resolv_conf)
            .with_context(|| format!("read {}", self.resolv_conf.display()))?;
        let upstreams = crate::dns::upstreams(&resolv_conf, &self.listen, None);
        let config = crate::dns::Config { domain: self.cluster_domain, listen: self.listen, upstreams };
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        tokio.block_on(async move {
            let listening = crate::dns::bind(config).await?;
            let (client, _) = crate::client::connect(&kubeconfig, self.server.as_deref()).await?;
            tokio::select! {
                served = listening.serve(client) => served,
                () = crate::shutdown::signalled() => Ok(()),
            }
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
