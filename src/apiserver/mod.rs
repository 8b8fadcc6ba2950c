//! `podctl apiserver`: a small Kubernetes-compatible API server that real kubectl drives.
//! Objects are JSON checked against k8s-openapi's types and kept in a store with one
//! global revision (`store`); the REST surface (`http`) serves discovery, CRUD, patches and
//! watches.

mod admission;
mod aggregation;
mod authentication;
mod authorization;
mod bootstrap;
mod cache;
mod discovery;
mod errors;
mod eviction;
mod http;
mod managed;
mod metrics;
mod node_proxy;
mod objects;
mod openapi;
mod patch;
mod protobuf;
mod registry;
mod rest;
mod reviews;
mod selectors;
mod serviceaccounts;
mod services;
mod signing;
mod store;
mod table;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::json;

use self::http::Server;
use self::objects::Validation;
use self::registry::Registry;
/// How long ago a time was, as kubectl prints ages (`podctl ps` shows them too).
pub use self::registry::columns::human_age;
use self::rest::Target;
use self::services::Allocator;
use self::store::{EtcdStore, SqliteStore, Store};
use crate::pki;

/// How the server is set up.
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Keep objects in this etcd cluster instead of the embedded store.
    pub etcd_endpoints: Vec<String>,
    /// Bearer tokens (kube-apiserver's token file: `token,user,uid[,"groups"]` per line);
    /// by default `DATA_DIR/apiserver/tokens.csv`, made at first start.
    pub token_file: Option<PathBuf>,
    /// No authentication at all, and plain HTTP unless `tls` is given.
    pub allow_unauthenticated: bool,
    /// Serve HTTPS with this PEM certificate (chain) and key instead of one from the
    /// cluster's authority.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub service_cidr: net::Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
    /// How often history is compacted; a watch can resume from anything newer than one
    /// interval.
    pub compaction_interval: Duration,
    /// The controllers and scheduler run in this process.
    pub controllers: crate::controllers::Config,
    /// How long pods tolerate a not-ready and an unreachable node by default (seconds).
    pub default_toleration_seconds: (i64, i64),
}

/// How long requests in flight at SIGTERM may go on.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who may call the server and how it proves itself, from its data directory (made there
/// at first start, k3s-style) or the flags.
struct Credentials {
    /// The users of the token file; `None`: no authentication, everything allowed.
    tokens: Option<Arc<authentication::Tokens>>,
    /// The token the admin kubeconfig carries.
    admin_token: Option<String>,
    /// The token the controllers call the API with.
    controllers_token: Option<String>,
    /// HTTPS, and the certificate authority clients trust for it.
    serving: Option<(tokio_rustls::TlsAcceptor, Vec<u8>)>,
    /// TLS to nodes' endpoints with the server's client certificate.
    nodes: tokio_rustls::TlsConnector,
    /// The service account token signing key (private, public), PEM.
    service_account_key: (String, String),
    /// The cluster's certificate authority (PEM), which pods are given to trust.
    root_ca: String,
    /// The authority itself, which signs approved certificate signing requests.
    authority: Arc<pki::Authority>,
}

impl Credentials {
    fn load(config: &Config, dir: &Path) -> Result<Credentials> {
        let token_file = match (&config.token_file, config.allow_unauthenticated) {
            (Some(file), _) => Some(file.clone()),
            (None, false) => Some(authentication::ensure_admin_file(&dir.join("tokens.csv"))?),
            (None, true) => None,
        };
        let mut tokens = token_file.as_deref().map(authentication::Tokens::read).transpose()?;
        let admin_token = tokens.as_ref().map(|t| t.first().to_string());
        let controllers_token = tokens.as_mut().map(|t| t.add_internal("system:kube-controller-manager"));
        let tokens = tokens.map(Arc::new);
        let authority = pki::Authority::open_or_create(&dir.join("pki"))?;
        let serving = match (&config.tls, config.allow_unauthenticated) {
            // The kubeconfig trusts the given certificate for the server, and the
            // cluster's authority too: nodes take the authority of the server's client
            // certificate from it.
            (Some((cert, key)), _) => {
                let mut trusted = std::fs::read(cert).with_context(|| format!("read {}", cert.display()))?;
                trusted.extend_from_slice(authority.cert_pem.as_bytes());
                let serving = pki::read_files(cert, key)?;
                let acceptor = pki::acceptor_for_clients(&serving, authority.cert_pem.as_bytes())
                    .with_context(|| format!("{} and {}", cert.display(), key.display()))?;
                Some((acceptor, trusted))
            }
            (None, false) => {
                let names = serving_names(config.listen.ip(), config.service_cidr);
                let serving = authority.issue_server(&names)?;
                let ca = authority.cert_pem.clone().into_bytes();
                Some((pki::acceptor_for_clients(&serving, &ca)?, ca))
            }
            (None, true) => None,
        };
        let nodes = pki::connector_to_nodes(&authority.issue_kubelet_client()?)?;
        let service_account_key = pki::service_account_key(&dir.join("pki"))?;
        let root_ca = match &serving {
            Some((_, trusted)) => String::from_utf8_lossy(trusted).into_owned(),
            None => authority.cert_pem.clone(),
        };
        Ok(Credentials {
            tokens,
            admin_token,
            controllers_token,
            serving,
            nodes,
            service_account_key,
            root_ca,
            authority: Arc::new(authority),
        })
    }
}

/// What the serving certificate names: loopback, the address served on (every address of
/// the machine when that is all of them), the host name, and the names and cluster IP of
/// the `kubernetes` Service.
fn serving_names(listen: IpAddr, service_cidr: net::Ipv4Net) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    if listen.is_unspecified() {
        let addresses = nix::ifaddrs::getifaddrs().into_iter().flatten();
        names.extend(addresses.filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip().to_string())));
    } else {
        names.push(listen.to_string());
    }
    if let Ok(host) = nix::unistd::gethostname() {
        names.push(host.to_string_lossy().to_lowercase());
    }
    for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"] {
        names.push(name.to_string());
    }
    names.push(services::first_address(service_cidr).to_string());
    names.dedup();
    names
}

/// A server ready to serve: its data directory locked, its credentials and store open.
pub struct Prepared {
    config: Config,
    credentials: Credentials,
    store: Arc<dyn Store>,
    _one_server: std::fs::File,
}

/// Serves until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<()> {
    let prepared = prepare(config)?;
    // Store writes block their thread until their commit is on disk: more workers than
    // cores let writes that arrive together share one commit (see the SQLite store).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads()).enable_all().build()?;
    runtime.block_on(prepared.serve(None))
}

/// How many threads the server's runtime has.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

/// Locks the data directory and opens the credentials and the store (outside any async
/// runtime: the etcd client makes its own).
pub fn prepare(config: Config) -> Result<Prepared> {
    crate::serve::prepare_process()?;
    let _ = registry::core::pods::DEFAULT_TOLERATION_SECONDS.set(config.default_toleration_seconds);
    let dir = config.data_dir.join("apiserver");
    runtime::state::create_private_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    runtime::state::set_mode(&dir, 0o700)?;
    let one_server = crate::files::lock_exclusive(&dir.join("lock"))
        .with_context(|| format!("{} is in use by another podctl apiserver", config.data_dir.display()))?;
    let credentials = Credentials::load(&config, &dir)?;
    let store: Arc<dyn Store> = if config.etcd_endpoints.is_empty() {
        // SQLite makes its WAL and shared-memory files with the database's mode.
        let db = dir.join("state.db");
        if !db.exists() {
            crate::files::write_private(&db, b"")?;
        }
        for file in ["state.db", "state.db-wal", "state.db-shm"] {
            crate::files::make_private(&dir.join(file))?;
        }
        Arc::new(SqliteStore::open(&db)?)
    } else {
        Arc::new(EtcdStore::connect(&config.etcd_endpoints)?)
    };
    Ok(Prepared { config, credentials, store, _one_server: one_server })
}

impl Prepared {
    /// Serves until SIGTERM or SIGINT; `ready` is told once the kubeconfig is written and
    /// requests are answered.
    pub async fn serve(self, ready: Option<tokio::sync::oneshot::Sender<()>>) -> Result<()> {
        let Prepared { config, credentials, store, _one_server } = self;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let address = listener.local_addr()?;
        let registry = Arc::new(Registry::builtin());
        let cache = Arc::new(admission::cache_of(&registry));
        let defined = registry.clone();
        cache.listen(registry::DEFINITIONS, Box::new(move |definitions| defined.define(definitions)));
        cache.load(&*store)?;
        tokio::spawn(cache.clone().follow(store.clone()));
        let server = Arc::new(Server {
            store: store.clone(),
            registry,
            cache,
            tokens: credentials.tokens.clone(),
            issuer: serviceaccounts::Issuer::new(
                &credentials.service_account_key.0,
                &credentials.service_account_key.1,
            )?,
            root_ca: credentials.root_ca.clone(),
            authority: credentials.authority.clone(),
            nodes: credentials.nodes.clone(),
            allocator: Allocator { service_cidr: config.service_cidr, node_ports: config.node_ports.clone() },
            writes: tokio::sync::RwLock::new(()),
        });
        ensure_system_objects(&server).await?;
        // Like the kubeconfig, not worth refusing to serve reads for (a full disk).
        if let Err(e) = ensure_kubernetes_service(&server, address, config.service_cidr).await {
            eprintln!("podctl apiserver: {e:#}; serving anyway");
        }
        let (wake, woken) = tokio::sync::mpsc::channel(1);
        server.cache.listen(aggregation::CLUSTER_ROLES, aggregation::notifier(wake));
        tokio::spawn(aggregation::run(server.clone(), woken));
        let kubeconfig = config.data_dir.join("kubeconfig");
        let ca = credentials.serving.as_ref().map(|(_, ca)| ca.as_slice());
        write_kubeconfig(&kubeconfig, &kubeconfig_for(address, credentials.admin_token.clone(), ca))?;
        if !config.controllers.enabled.is_empty() {
            let own = kubeconfig_for(address, credentials.controllers_token.clone(), ca);
            let client = crate::client::config_of(serde_json::from_value(own)?).await?;
            crate::controllers::start(&client, &config.controllers)?;
        }
        let scheme = if credentials.serving.is_some() { "https" } else { "http" };
        eprintln!("podctl apiserver: serving on {scheme}://{address}; kubeconfig at {}", kubeconfig.display());
        tokio::spawn(compact_periodically(store, config.compaction_interval));
        // What the first patch or protobuf request would otherwise wait for.
        tokio::task::spawn_blocking(|| {
            openapi::index();
            protobuf::prepare();
        });
        let router = axum::Router::new().fallback(http::handle).with_state(server);
        let tls = credentials.serving.map(|(acceptor, _)| acceptor);
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        crate::serve::serve(listener, tls, router, crate::shutdown::signalled(), SHUTDOWN_GRACE).await
    }
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

/// The objects every cluster has from its start (`bootstrap`): made when missing, left
/// alone otherwise.
async fn ensure_system_objects(server: &Arc<Server>) -> Result<()> {
    for (group, plural, namespace, object) in bootstrap::objects() {
        let strategy = server.registry.find(group, "v1", plural).expect("system objects are served");
        let target = Target::collection(strategy, namespace);
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if server.store.get(&target.info().key(namespace, &name))?.is_none() {
            rest::create(server, &target, object, &Default::default(), &mut Validation::from_query(None))
                .await
                .map_err(|e| anyhow::anyhow!("create {plural} {name}: {}", e.message))?;
        }
    }
    // Namespaces made before this server knew to fill them.
    for kv in server.store.list("/registry/core/namespaces/", None, 0)?.items {
        let name = kv.key.rsplit('/').next().unwrap_or_default();
        rest::populate_namespace(server, name).map_err(|e| anyhow::anyhow!("fill namespace {name}: {}", e.message))?;
    }
    Ok(())
}

/// The `default/kubernetes` Service, the API server's own (cluster IP: the first of the
/// range, which is kept for it), and its Endpoints and EndpointSlice: where this server
/// is reached, rewritten when that changed since the last start.
async fn ensure_kubernetes_service(
    server: &Arc<Server>,
    address: SocketAddr,
    service_cidr: net::Ipv4Net,
) -> Result<()> {
    let host = advertised(address.ip());
    let port = address.port();
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": services::first_address(service_cidr).to_string(), "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    for (group, plural, object) in
        [("", "services", service), ("", "endpoints", endpoints), ("discovery.k8s.io", "endpointslices", slice)]
    {
        let strategy = server.registry.find(group, "v1", plural).expect("core kinds are served");
        let target = Target::collection(strategy, Some("default"));
        let current = server.store.get(&target.info().key(Some("default"), "kubernetes"))?;
        let outcome = match current {
            None => rest::create(server, &target, object, &Default::default(), &mut Validation::from_query(None))
                .await
                .map(drop),
            // The Service stays as it is (its cluster IP was given once); where the server
            // is may have changed.
            Some(_) if plural == "services" => Ok(()),
            Some(_) => {
                let replace = |current: &serde_json::Value| {
                    let mut next = object.clone();
                    next["metadata"] = current["metadata"].clone();
                    Ok(next)
                };
                rest::update(
                    server,
                    &target,
                    "kubernetes",
                    None,
                    replace,
                    &Default::default(),
                    &mut Validation::from_query(None),
                )
                .await
                .map(drop)
            }
        };
        outcome.map_err(|e| anyhow::anyhow!("the kubernetes {plural}: {}", e.message))?;
    }
    Ok(())
}

/// The address other hosts and pods reach this server at: the one it listens on, or, on
/// every address, the machine's first non-loopback IPv4 address.
fn advertised(listen: IpAddr) -> String {
    if !listen.is_unspecified() {
        return listen.to_string();
    }
    let addresses = nix::ifaddrs::getifaddrs().into_iter().flatten();
    addresses
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback())
        .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
}

/// A kubeconfig for this server with `token`; with TLS, the authority it trusts.
fn kubeconfig_for(address: SocketAddr, token: Option<String>, ca: Option<&[u8]>) -> serde_json::Value {
    let user = match token {
        Some(token) => json!({"token": token}),
        None => json!({}),
    };
    // A server on every address is reached on loopback from here.
    let host = match address.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port()),
        _ => address,
    };
    let cluster = match ca {
        Some(ca) => {
            json!({"server": format!("https://{host}"), "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca)})
        }
        None => json!({"server": format!("http://{host}")}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podctl", "cluster": cluster}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "podctl", "context": {"cluster": "podctl", "user": "admin", "namespace": "default"}}],
        "current-context": "podctl",
    })
}

/// The admin kubeconfig, replaced atomically when it says something new. When it cannot
/// be written (a full disk), the server still serves: it says so, and the kubeconfig
/// there is left as it was.
fn write_kubeconfig(path: &Path, config: &serde_json::Value) -> Result<()> {
    let content = serde_json::to_vec_pretty(config)?;
    crate::files::make_private(path)?;
    if std::fs::read(path).is_ok_and(|existing| existing == content) {
        return Ok(());
    }
    if let Err(e) = crate::files::write_private(path, &content) {
        eprintln!("podctl apiserver: {e:#}; serving anyway");
    }
    Ok(())
}
