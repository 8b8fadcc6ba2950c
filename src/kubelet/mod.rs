//! The node agent, kubelet's part: the pods bound to this node run and kept as their
//! objects ask (`pods`: the watch and one `pod_worker` per pod; `status`, `probes`,
//! `image_manager`, `env`, `volumes`), turned into what the runtime runs (`spec`, `sandbox`);
//! the node's own objects in the API server (`registration`); and the HTTP endpoint the
//! API server proxies logs and exec to (`server`).

pub mod backoff;
pub mod env;
mod exec;
mod healthcheck;
pub mod image_manager;
mod local_storage;
mod logs;
mod metrics;
mod pod_worker;
mod pods;
mod portforward;
mod probes;
pub mod registration;
pub mod sandbox;
pub mod server;
mod services;
mod spdy;
pub mod spec;
mod stats;
mod status;
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
    /// At most this many pods (kubelet's --max-pods).
    pub max_pods: usize,
    /// How often every pod is synced even when nothing wakes it (--sync-frequency).
    pub sync_frequency: Duration,
    /// The cluster's DNS server for ClusterFirst pods, and the cluster's domain.
    pub cluster_dns: Option<std::net::IpAddr>,
    pub cluster_domain: String,
    /// Serve the cluster DNS on the pod network's gateway, behind `cluster_dns`.
    pub serve_cluster_dns: bool,
    /// The host's resolver configuration (kubelet's --resolv-conf).
    pub resolv_conf: PathBuf,
    /// Registries pulled from over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub log_dir: PathBuf,
    pub network: net::PodNetwork,
    pub node_labels: Vec<(String, String)>,
    pub taints: Vec<serde_json::Value>,
    pub data_dir: PathBuf,
}

/// Registers the node, keeps its lease, and serves its endpoint until SIGTERM or SIGINT.
/// The endpoint serves HTTPS (with a certificate of its own, as kubelet's `kubelet.crt`)
/// and lets in only the API server's client certificate, unless told to let anyone in.
pub fn run(config: Config, runtime: runtime::Runtime, store: images::Store) -> Result<()> {
    crate::serve::prepare_process()?;
    crate::serve::few_malloc_arenas();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    tokio.block_on(serve(config, runtime, store))
}

/// The node agent's work, in a runtime of the caller's (`podctl up` shares one with the
/// API server).
pub async fn serve(config: Config, runtime: runtime::Runtime, store: images::Store) -> Result<()> {
    let address = match config.node_ip {
        Some(ip) => ip,
        None if !config.listen.ip().is_unspecified() => config.listen.ip(),
        None => bail!("--listen {} names no address the API server could reach: give --node-ip", config.listen),
    };
    // State an older podctl left open to all is put right before anything is served, and
    // what an agent killed half-way through left is cleaned.
    runtime.secure().context("set the modes of the node's state")?;
    runtime.recover().context("recover the node's pods")?;
    let pods = runtime.pods()?;
    let live = pods.iter().map(|p| p.uid().to_string()).collect();
    config.network.reconcile(&live).context("recover the pod network")?;
    if pods.iter().any(|p| !p.record.spec.host_ports.is_empty()) {
        sandbox::sync_host_ports(&runtime, &config.network).context("recover the host ports")?;
    }
    let serving = pki::self_signed_server(&[config.node_name.clone(), address.to_string(), "localhost".into()])?;
    {
        let (client, authority) = crate::client::connect(&config.kubeconfig, config.server.as_deref()).await?;
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
        let capacity = registration::Capacity::of_machine(config.max_pods);
        let node = NodeIdentity {
            name: config.node_name.clone(),
            address,
            port,
            pod_cidr: config.pod_cidr,
            capacity: capacity.clone(),
            labels: config.node_labels,
            taints: config.taints,
            data_dir: config.data_dir,
        };
        let assigned = registration::register(&client, &node).await?;
        // spec.podCIDR, once set (by the control plane), is the node's: it wins over --pod-cidr.
        let mut network_config = config.network.config().clone();
        if let Some(cidr) =
            assigned.and_then(|c| c.parse::<net::Ipv4Net>().ok()).filter(|c| *c != network_config.pod_cidr)
        {
            eprintln!(
                "podctl node: the Node's pod CIDR is {cidr}: pods get addresses from it, not from {}",
                network_config.pod_cidr
            );
            network_config.pod_cidr = cidr;
        }
        tokio::spawn(registration::renew_lease(client.clone(), config.node_name.clone()));
        let storage = registration::storage_dir(&node.data_dir);
        tokio::spawn(local_storage::run(client.clone(), config.node_name.clone(), storage));
        tokio::spawn(registration::keep_status(client.clone(), node, store.clone()));
        // One watch of the Services: for the containers' environment and the proxy.
        let services_changed = Arc::new(tokio::sync::Notify::new());
        let services = crate::client::reflect::<k8s_openapi::api::core::v1::Service>(
            client.clone(),
            Some(services_changed.clone()),
        );
        let objects = pods::ApiStore::start(client.clone(), services.clone()).await;
        let metrics = Arc::new(metrics::Metrics::default());
        let services_network = net::PodNetwork::new(network_config.clone());
        // A host without the file resolves nothing by it, as kubelet goes on without one.
        let host_resolv_conf = match std::fs::read_to_string(&config.resolv_conf) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "podctl node: {} does not exist: pods with dnsPolicy Default get no resolvers",
                    config.resolv_conf.display()
                );
                String::new()
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", config.resolv_conf.display())),
        };
        if config.serve_cluster_dns {
            let (cluster_ip, domain) = (config.cluster_dns, config.cluster_domain.as_str());
            serve_cluster_dns(&client, &config.node_name, &services_network, cluster_ip, domain, &host_resolv_conf)
                .await?;
        }
        let context = Arc::new(pod_worker::NodeContext {
            name: config.node_name.clone(),
            host_ip: address.to_string(),
            runtime: runtime.clone(),
            network: net::PodNetwork::new(network_config),
            images: image_manager::ImageManager::new(store, config.insecure_registries),
            log_dir: config.log_dir,
            host_resolv_conf,
            cluster_dns: config.cluster_dns.map(|ip| ip.to_string()),
            cluster_domain: config.cluster_domain,
            objects: Box::new(objects),
            admission: std::sync::Mutex::new(pod_worker::Admission::new(
                config.max_pods,
                capacity.cpu_millis,
                capacity.memory_bytes,
            )),
            metrics: metrics.clone(),
        });
        let (pod_store, pod_writer) = kube::runtime::reflector::store();
        let pods =
            tokio::spawn(pods::run(client.clone(), context, config.sync_frequency, (pod_store.clone(), pod_writer)));
        tokio::spawn(services::run(client, config.node_name.clone(), services_network, services, services_changed));
        eprintln!("podctl node: {} registered; serving logs and exec on {address}:{port}", config.node_name);
        let stats = Arc::new(stats::Stats::default());
        tokio::spawn(stats::run(stats.clone(), config.node_name.clone(), runtime.clone()));
        let router = server::router(Arc::new(NodeServer { runtime, pods: pod_store, metrics, stats }));
        // No grace: a followed log or an exec session may last as long as its container,
        // and the pods keep running without us.
        let served =
            crate::serve::serve(listener, Some(acceptor), router, crate::shutdown::signalled(), Duration::ZERO);
        tokio::select! {
            served = served => served,
            ended = pods => match ended {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("the pod workers failed: {e}")),
            },
        }
    }
}

/// Starts the cluster DNS on the pod network's gateway (made now, so that the address is
/// there to listen on) and puts it behind the kube-system/kube-dns Service.
async fn serve_cluster_dns(
    client: &kube::Client,
    node_name: &str,
    network: &net::PodNetwork,
    cluster_ip: Option<std::net::IpAddr>,
    domain: &str,
    resolv_conf: &str,
) -> Result<()> {
    let cluster_ip = cluster_ip.context(
        "--serve-cluster-dns needs --cluster-dns: the address of the kube-system/kube-dns Service pods are told",
    )?;
    let gateway = std::net::IpAddr::V4(network.ensure_bridge().context("make the pod network's bridge")?);
    let listen = vec![std::net::SocketAddr::new(gateway, crate::dns::PORT)];
    let upstreams = crate::dns::upstreams(resolv_conf, &listen, Some(cluster_ip));
    let dns = crate::dns::Config { domain: domain.to_string(), listen, upstreams };
    let listening = crate::dns::bind(dns).await.context("the cluster DNS")?;
    let serving = client.clone();
    tokio::spawn(async move {
        if let Err(e) = listening.serve(serving).await {
            tracing::error!("the cluster DNS stopped: {e:#}");
        }
    });
    crate::dns::register(client.clone(), node_name, cluster_ip, gateway).await
}
