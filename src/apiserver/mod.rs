//! `podctl apiserver`: a small Kubernetes-compatible API server that real kubectl drives.
//! Objects are JSON checked against k8s-openapi's types and kept in a store with one
//! global revision (`store`); the REST surface (`http`) serves discovery, CRUD, patches and
//! watches.

mod discovery;
mod errors;
mod http;
mod node_proxy;
mod objects;
mod patch;
mod protobuf;
mod resources;
mod selectors;
mod services;
mod store;
mod table;
mod tls;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use self::http::Server;
use self::resources::Resource;
use self::services::Allocator;
use self::store::{EtcdStore, SqliteStore, Store};

/// How the server is set up.
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Keep objects in this etcd cluster instead of the embedded store.
    pub etcd_endpoints: Vec<String>,
    /// Bearer tokens (kube-apiserver's token file: `token,user,uid[,"groups"]` per line).
    pub token_file: Option<PathBuf>,
    /// Serve beyond loopback with no authentication.
    pub allow_unauthenticated: bool,
    /// A token file whose first token is presented to nodes' endpoints (logs, exec).
    pub kubelet_token_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate (chain) and key. kubectl sends bearer tokens
    /// only over HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub service_cidr: net::Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
    /// How often history is compacted; a watch can resume from anything newer than one
    /// interval.
    pub compaction_interval: Duration,
}

/// How long requests in flight at SIGTERM may go on.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

pub fn run(config: Config) -> Result<()> {
    let tokens = config.token_file.as_deref().map(crate::tokens::read).transpose()?;
    crate::tokens::check_exposure(config.listen, tokens.as_ref(), config.allow_unauthenticated)?;
    let kubelet_token = config.kubelet_token_file.as_deref().map(crate::tokens::first).transpose()?;
    let dir = config.data_dir.join("apiserver");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let store: Arc<dyn Store> = if config.etcd_endpoints.is_empty() {
        Arc::new(SqliteStore::open(&dir.join("state.db"))?)
    } else {
        Arc::new(EtcdStore::connect(&config.etcd_endpoints)?)
    };
    // Store writes block their thread until their commit is on disk: more workers than
    // cores let writes that arrive together share one commit (see the SQLite store).
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let address = listener.local_addr()?;
        let tls = config.tls.as_ref().map(|(cert, key)| tls::acceptor(cert, key)).transpose()?;
        let server = Arc::new(Server {
            store: store.clone(),
            tokens: tokens.clone(),
            kubelet_token,
            allocator: Allocator { service_cidr: config.service_cidr, node_ports: config.node_ports.clone() },
            writes: tokio::sync::Mutex::new(()),
        });
        ensure_system_namespaces(&server).await?;
        let kubeconfig = config.data_dir.join("kubeconfig");
        let token = tokens.as_ref().and_then(|t| t.iter().min().cloned());
        let ca = config.tls.as_ref().map(|(cert, _)| std::fs::read(cert)).transpose()?;
        write_kubeconfig(&kubeconfig, address, token, ca.as_deref())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("podctl apiserver: serving on {scheme}://{address}; kubeconfig at {}", kubeconfig.display());
        tokio::spawn(compact_periodically(store, config.compaction_interval));
        let router = axum::Router::new().fallback(http::handle).with_state(server);
        // In-flight requests get a moment to finish; watches and followed logs, which
        // could go on for as long as their clients stay, are then cut.
        let served = async {
            match tls {
                Some(acceptor) => {
                    let listener = tls::TlsListener::new(listener, acceptor)?;
                    axum::serve(listener, router).with_graceful_shutdown(crate::shutdown::signalled()).await?
                }
                None => axum::serve(listener, router).with_graceful_shutdown(crate::shutdown::signalled()).await?,
            }
            anyhow::Ok(())
        };
        tokio::select! {
            served = served => served?,
            () = crate::shutdown::signalled_then(SHUTDOWN_GRACE) => {}
        }
        Ok(())
    })
}

/// Every interval, forgets history older than the previous interval's revision, so a
/// watch can resume from anything in the last few minutes (kube-apiserver compacts etcd
/// every 5 minutes the same way).
async fn compact_periodically(store: Arc<dyn Store>, interval: Duration) {
    let mut previous = None;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(revision) = previous
            && let Err(e) = store.compact(revision)
        {
            tracing::warn!("compaction at {revision}: {e}");
        }
        previous = store.revision().ok();
    }
}

async fn ensure_system_namespaces(server: &Arc<Server>) -> Result<()> {
    let namespaces = Resource::find("", "v1", "namespaces").expect("namespaces");
    for name in SYSTEM_NAMESPACES {
        if server.store.get(&namespaces.key(None, name))?.is_none() {
            let target = http::Target::cluster(namespaces);
            http::create_object(server, &target, json!({"metadata": {"name": name}}))
                .await
                .map_err(|e| anyhow::anyhow!("create namespace {name}: {}", e.message))?;
        }
    }
    Ok(())
}

/// An admin kubeconfig for this server, replaced atomically; with TLS, the server's
/// certificate is the authority kubectl trusts.
fn write_kubeconfig(
    path: &std::path::Path,
    address: SocketAddr,
    token: Option<String>,
    ca: Option<&[u8]>,
) -> Result<()> {
    let user = match token {
        Some(token) => json!({"token": token}),
        None => json!({}),
    };
    let cluster = match ca {
        Some(ca) => json!({"server": format!("https://{address}"), "certificate-authority-data": protobuf::base64(ca)}),
        None => json!({"server": format!("http://{address}")}),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podctl", "cluster": cluster}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "podctl", "context": {"cluster": "podctl", "user": "admin", "namespace": "default"}}],
        "current-context": "podctl",
    });
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_vec_pretty(&config)?).with_context(|| format!("write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
