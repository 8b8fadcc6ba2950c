//! The node agent's kubelet side: turning a Pod into what the runtime runs (`spec`), the
//! node's own objects in the API server (`registration`), and the HTTP endpoint the API
//! server proxies logs and exec to (`server`).

pub mod client;
mod exec;
mod logs;
pub mod registration;
pub mod server;
mod spdy;
pub mod spec;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use self::client::ApiClient;
use self::registration::NodeIdentity;
use self::server::NodeServer;

/// How the node agent is set up.
pub struct Config {
    pub kubeconfig: PathBuf,
    /// The API server's URL, instead of the kubeconfig's.
    pub server: Option<String>,
    pub node_name: String,
    /// Where the node's HTTP endpoint listens.
    pub listen: SocketAddr,
    /// The address the API server reaches the endpoint at.
    pub node_ip: Option<std::net::IpAddr>,
    pub pod_cidr: String,
    /// Bearer tokens the endpoint accepts; `None`: no authentication.
    pub tokens: Option<HashSet<String>>,
    /// Serve beyond loopback with no authentication.
    pub allow_unauthenticated: bool,
}

/// Registers the node, keeps its lease, and serves its endpoint until SIGTERM or SIGINT.
pub fn run(config: Config, runtime: runtime::Runtime) -> Result<()> {
    crate::tokens::check_exposure(config.listen, config.tokens.as_ref(), config.allow_unauthenticated)?;
    let address = match config.node_ip {
        Some(ip) => ip,
        None if !config.listen.ip().is_unspecified() => config.listen.ip(),
        None => bail!("--listen {} names no address the API server could reach: give --node-ip", config.listen),
    };
    let client = ApiClient::from_kubeconfig(&config.kubeconfig, config.server.as_deref())?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let node = NodeIdentity { name: config.node_name.clone(), address, port, pod_cidr: config.pod_cidr };
        registration::register(&client, &node).await?;
        tokio::spawn(registration::renew_lease(client, config.node_name.clone()));
        eprintln!("podctl node: {} registered; serving logs and exec on {address}:{port}", config.node_name);
        let router = server::router(Arc::new(NodeServer { runtime, tokens: config.tokens }));
        // No graceful wait: a followed log or an exec session may last as long as its
        // container, and the pods keep running without us.
        tokio::select! {
            served = axum::serve(listener, router) => served?,
            () = crate::shutdown::signalled() => {}
        }
        Ok(())
    })
}
