//! Cluster DNS: a DNS server kept from watches of Services and EndpointSlices (never a
//! poll), answering the Kubernetes DNS specification for the cluster's domain and
//! forwarding every other name to the node's resolvers. `podctl up` and the node agent
//! (`--serve-cluster-dns`) run it on the pod network's gateway behind the
//! `kube-system/kube-dns` Service; `podctl dns` runs it alone.

mod server;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::Notify;

use self::server::Responder;
use self::zone::Zone;
use crate::client::reflect;

/// The Service pods reach the cluster's DNS server through, and its port.
pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "kube-dns";
pub const PORT: u16 = 53;

/// Who writes this node's EndpointSlice of the DNS Service (its field manager and
/// `endpointslice.kubernetes.io/managed-by`).
const MANAGER: &str = "podctl-dns";

pub struct Config {
    /// The cluster's domain (`cluster.local`).
    pub domain: String,
    /// Where to serve, over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Where other names are forwarded.
    pub upstreams: Vec<SocketAddr>,
}

/// The resolvers a resolv.conf names (port 53), but none of `ours` (a loopback resolver
/// is ours when we listen on every address) nor the cluster DNS's Service address, which
/// leads back here: forwarding to itself would loop (CoreDNS's `loop` plugin's case).
pub fn upstreams(resolv_conf: &str, ours: &[SocketAddr], service: Option<IpAddr>) -> Vec<SocketAddr> {
    let is_ours = |upstream: &SocketAddr| {
        ours.iter()
            .any(|o| o == upstream || (o.ip().is_unspecified() && upstream.ip().is_loopback() && o.port() == PORT))
    };
    let upstreams: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| Some(*ip) != service)
        .map(|ip| SocketAddr::new(ip, PORT))
        .filter(|upstream| !is_ours(upstream))
        .collect();
    if upstreams.is_empty() {
        eprintln!("podctl: the resolv.conf names no resolver of its own: names outside the cluster get SERVFAIL");
    }
    upstreams
}

/// The DNS server's sockets, bound.
pub struct Listening {
    config: Config,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<tokio::net::TcpListener>,
}

/// Binds `config.listen` (UDP and TCP), so that an address in use fails at once: over
/// UDP one socket per CPU on each address, sharing it (SO_REUSEPORT), each served by a
/// thread of its own.
pub async fn bind(config: Config) -> Result<Listening> {
    let sockets = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut udp, mut tcp) = (Vec::new(), Vec::new());
    for address in &config.listen {
        for _ in 0..sockets {
            let socket = udp_sharing(*address).with_context(|| format!("listen on {address}/udp"))?;
            udp.push(socket);
        }
        tcp.push(tokio::net::TcpListener::bind(address).await.with_context(|| format!("listen on {address}/tcp"))?);
    }
    Ok(Listening { config, udp, tcp })
}

/// A UDP socket bound to `address` with SO_REUSEPORT (socket(7)): the kernel spreads
/// clients over the sockets that share the address.
fn udp_sharing(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, setsockopt, socket, sockopt};
    let family = if address.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Datagram, flags, None)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(address))?;
    Ok(std::net::UdpSocket::from(fd))
}

impl Listening {
    /// Serves DNS until the process ends: queries are answered once the watches have
    /// listed everything, never from a half-known zone.
    pub async fn serve(self, client: kube::Client) -> Result<()> {
        let changed = Arc::new(Notify::new());
        let services = reflect::<Service>(client.clone(), Some(changed.clone()));
        let slices = reflect::<EndpointSlice>(client, Some(changed.clone()));
        services.wait_until_ready().await.context("watch the Services")?;
        slices.wait_until_ready().await.context("watch the EndpointSlices")?;
        let domain = self.config.domain;
        let build = || -> Result<Zone> {
            let services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
            let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
            Zone::build(&domain, &services, &slices).map_err(anyhow::Error::msg)
        };
        let zone = Arc::new(RwLock::new(Arc::new(build()?)));
        let responder = Arc::new(Responder::new(zone.clone(), self.config.upstreams));
        let mut servers = tokio::task::JoinSet::new();
        let (failed, mut udp_failed) = tokio::sync::mpsc::channel(1);
        for (i, socket) in self.udp.into_iter().enumerate() {
            let (responder, runtime, failed) = (responder.clone(), tokio::runtime::Handle::current(), failed.clone());
            std::thread::Builder::new().name(format!("dns-udp-{i}")).spawn(move || {
                let error = server::serve_udp(responder, socket, runtime).unwrap_err();
                let _ = failed.blocking_send(error);
            })?;
        }
        for listener in self.tcp {
            servers.spawn(server::serve_tcp(responder.clone(), listener));
        }
        let rebuild = async {
            loop {
                changed.notified().await;
                match build() {
                    Ok(built) => *zone.write().expect("zone lock") = Arc::new(built),
                    Err(e) => tracing::warn!("rebuild the cluster's DNS records: {e:#}"),
                }
            }
        };
        tokio::select! {
            () = rebuild => Ok(()),
            Some(error) = udp_failed.recv() => Err(anyhow::Error::from(error).context("serve DNS over UDP")),
            Some(ended) = servers.join_next() => match ended {
                Ok(served) => served.context("serve DNS"),
                Err(e) => Err(anyhow::anyhow!("serve DNS: {e}")),
            },
        }
    }
}

/// Puts this node's DNS server behind the `kube-system/kube-dns` Service at `cluster_ip`
/// (creating the Service when there is none): an EndpointSlice of its own, named for the
/// node and owned by the Service, with `address` on port 53. A Service someone made with
/// a selector (their own DNS pods) is left to them.
pub async fn register(client: kube::Client, node_name: &str, cluster_ip: IpAddr, address: IpAddr) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    let wanted: Service = serde_json::from_value(json!({
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": {
            "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "podctl-dns"}},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [
            {"name": "dns", "port": PORT, "protocol": "UDP", "targetPort": PORT},
            {"name": "dns-tcp", "port": PORT, "protocol": "TCP", "targetPort": PORT},
        ]},
    }))?;
    let service = match services.get_opt(SERVICE_NAME).await? {
        Some(service) => service,
        None => match services.create(&PostParams::default(), &wanted).await {
            Ok(created) => created,
            Err(kube::Error::Api(e)) if e.code == 409 => services.get(SERVICE_NAME).await?,
            Err(e) => return Err(e).context("create the kube-system/kube-dns Service"),
        },
    };
    let spec = service.spec.clone().unwrap_or_default();
    if spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
        eprintln!("podctl: kube-system/kube-dns selects pods: this node's DNS server is not added to it");
        return Ok(());
    }
    if spec.cluster_ip.as_deref() != Some(&cluster_ip.to_string()) {
        eprintln!(
            "podctl: kube-system/kube-dns has the address {}, not {cluster_ip}: pods here are told {cluster_ip}",
            spec.cluster_ip.as_deref().unwrap_or("(none)")
        );
    }
    let slice_name = format!("{SERVICE_NAME}-{node_name}");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name, "namespace": SERVICE_NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE_NAME, "endpointslice.kubernetes.io/managed-by": MANAGER},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": SERVICE_NAME,
                                 "uid": service.metadata.uid.clone().unwrap_or_default()}],
        },
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "nodeName": node_name,
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": PORT, "protocol": "UDP"}, {"name": "dns-tcp", "port": PORT, "protocol": "TCP"}],
    });
    let slices: Api<EndpointSlice> = Api::namespaced(client, SERVICE_NAMESPACE);
    slices
        .patch(&slice_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&slice))
        .await
        .context("write this node's EndpointSlice of kube-system/kube-dns")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_the_nameservers_but_ourselves() {
        let conf = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver 10.88.0.1\noptions ndots:2\n";
        let ours: SocketAddr = "10.88.0.1:53".parse().unwrap();
        assert_eq!(
            upstreams(conf, &[ours], None),
            ["10.0.0.2:53".parse::<SocketAddr>().unwrap(), "[fe80::1]:53".parse().unwrap()]
        );
        let everywhere: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert!(upstreams("nameserver 127.0.0.1\n", &[everywhere], None).is_empty());
        let service = "10.96.0.10".parse().ok();
        assert!(upstreams("nameserver 10.96.0.10\n", &[ours], service).is_empty(), "the Service leads back here");
    }
}
