//! The node agent's kubelet side: turning a Pod into what the runtime runs (`spec`), the
//! node's own objects in the API server (`registration`), and the HTTP endpoint the API
//! server proxies logs and exec to (`server`).

pub mod client;
pub mod env;
mod exec;
mod logs;
pub mod registration;
pub mod sandbox;
pub mod server;
mod spdy;
pub mod spec;
pub mod volumes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use anyhow::{Context, Result, bail};

use self::registration::NodeIdentity;
use self::server::NodeServer;
use crate::pki;

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
    /// The certificate authority of the API server's client certificate (PEM), instead of
    /// the kubeconfig's.
    pub client_ca_file: Option<PathBuf>,
    /// Let any client in.
    pub allow_unauthenticated: bool,
}

/// Registers the node, keeps its lease, and serves its endpoint until SIGTERM or SIGINT.
/// The endpoint serves HTTPS (with a certificate of its own, as kubelet's `kubelet.crt`)
/// and lets in only the API server's client certificate, unless told to let anyone in.
pub fn run(config: Config, runtime: runtime::Runtime) -> Result<()> {
    crate::serve::prepare_process()?;
    let address = match config.node_ip {
        Some(ip) => ip,
        None if !config.listen.ip().is_unspecified() => config.listen.ip(),
        None => bail!("--listen {} names no address the API server could reach: give --node-ip", config.listen),
    };
    // State an older podctl left open to all is put right before anything is served.
    runtime.secure().context("set the modes of the node's state")?;
    let serving = pki::self_signed_server(&[config.node_name.clone(), address.to_string(), "localhost".into()])?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    tokio.block_on(async move {
        let (client, authority) = client::connect(&config.kubeconfig, config.server.as_deref()).await?;
        let acceptor = match (&config.client_ca_file, config.allow_unauthenticated) {
            (_, true) => pki::acceptor(&serving)?,
            (Some(file), false) => {
                let ca = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
                pki::acceptor_for_api_server(&serving, &ca)?
            }
            (None, false) => {
                let ca = authority.context(
                    "the endpoint lets in only the API server's client certificate, and the kubeconfig names no \
                     certificate authority for it: give --client-ca-file (or --allow-unauthenticated)",
                )?;
                pki::acceptor_for_api_server(&serving, &ca)?
            }
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let node = NodeIdentity { name: config.node_name.clone(), address, port, pod_cidr: config.pod_cidr };
        registration::register(&client, &node).await?;
        tokio::spawn(registration::renew_lease(client, config.node_name.clone()));
        eprintln!("podctl node: {} registered; serving logs and exec on {address}:{port}", config.node_name);
        let router = server::router(Arc::new(NodeServer { runtime }));
        // No grace: a followed log or an exec session may last as long as its container,
        // and the pods keep running without us.
        crate::serve::serve(listener, Some(acceptor), router, crate::shutdown::signalled(), Duration::ZERO).await
    })
}
