//! `podctl up`: a whole cluster in one process, as `k3s server` is: the API server on the
//! embedded store, the controllers and scheduler, this host's node agent, and the cluster
//! DNS (at the tenth address of the Services' range unless told otherwise).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::NodeOptions;
use super::apiserver::ApiserverArgs;
use super::node::{AgentArgs, Connection, lock_node};
use crate::{apiserver, kubelet};

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    apiserver: ApiserverArgs,
    /// Address and port of this node's endpoint (logs, exec, port-forward for the API server)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10250")]
    node_listen: SocketAddr,
    #[command(flatten)]
    agent: AgentArgs,
}

impl UpArgs {
    pub fn run(mut self, opts: &NodeOptions) -> Result<ExitCode> {
        let _one_agent = lock_node(opts, "podctl up")?;
        if self.agent.serve_cluster_dns != Some(false) {
            self.agent.serve_cluster_dns = Some(true);
            self.agent.cluster_dns.get_or_insert(self.apiserver.cluster_dns_ip().into());
        }
        let kubeconfig = opts.data_dir.join("kubeconfig");
        let connection = Connection {
            kubeconfig: kubeconfig.clone(),
            server: None,
            listen: self.node_listen,
            client_ca_file: None,
            // Without TLS the kubeconfig names no authority to check the server's client
            // certificate with.
            allow_unauthenticated: self.apiserver.unauthenticated(),
        };
        crate::serve::few_malloc_arenas();
        let server = apiserver::prepare(self.apiserver.config(opts)?)?;
        let (node, store) = self.agent.config(connection, opts)?;
        let runtime = opts.runtime()?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(apiserver::worker_threads())
            .enable_all()
            .build()?;
        tokio.block_on(async move {
            let (ready, serving) = tokio::sync::oneshot::channel();
            let api = tokio::spawn(server.serve(Some(ready)));
            if serving.await.is_err() {
                return api.await.context("the API server")?;
            }
            println!(
                "podctl up: the cluster is up; use it with\n  export KUBECONFIG={}\n  kubectl get nodes\n\
                 Stop it with SIGTERM or Ctrl-C: its pods keep running, and `podctl up` again takes them back.",
                kubeconfig.display()
            );
            kubelet::serve(node, runtime, store).await?;
            api.await.context("the API server")?
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
