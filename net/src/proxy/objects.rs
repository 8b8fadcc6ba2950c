//! Service ports from the Kubernetes objects: Services with their Endpoints and/or
//! EndpointSlices, read as kube-proxy reads them.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort as K8sServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Protocol, ServicePort};
use crate::Error;

/// Kubernetes' default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// One `ServicePort` per port of each Service that has an IPv4 cluster IP (headless and
/// ExternalName Services have none), with the ready endpoints the Endpoints and
/// EndpointSlices give for that port, those on node `node` apart too. An endpoint port is
/// matched to the Service port by name, as the endpoints controller names it after the
/// Service port, so named and numbered target ports both arrive resolved.
pub fn service_ports(
    services: &[Service],
    endpoints: &[Endpoints],
    slices: &[EndpointSlice],
    node: Option<&str>,
) -> Result<Vec<ServicePort>, Error> {
    let mut ports = Vec::new();
    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let Some(spec) = &service.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => continue,
            Some(ip) => match ip.parse::<Ipv4Addr>() {
                Ok(ip) => ip,
                // An IPv6 cluster IP belongs to the IPv6 proxy, which we do not run.
                Err(_) if ip.contains(':') => continue,
                Err(_) => return Err(Error::Invalid(format!("service {namespace}/{name}: bad clusterIP {ip:?}"))),
            },
        };
        let load_balancer = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .filter(|_| spec.type_.as_deref() == Some("LoadBalancer"));
        // A load balancer in `Proxy` mode sends from its own address: its IP is not ours
        // to capture (KEP-1860).
        let ingress = load_balancer.and_then(|l| l.ingress.as_ref()).into_iter().flatten();
        let ingress = ingress.filter(|i| i.ip_mode.as_deref() != Some("Proxy")).filter_map(|i| i.ip.as_ref());
        let load_balancer_ips: Vec<Ipv4Addr> = ingress.filter_map(|ip| ip.parse().ok()).collect();
        let external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .chain(load_balancer_ips.iter().copied())
            .collect();
        let source_ranges = source_ranges(service, namespace, name)?;
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map_or(DEFAULT_AFFINITY_SECONDS, |t| t as u32)
        });
        for port in spec.ports.iter().flatten() {
            let protocol = protocol(port, namespace, name)?;
            let port_name = port.name.clone().unwrap_or_default();
            let service_port = u16::try_from(port.port)
                .map_err(|_| Error::Invalid(format!("service {namespace}/{name}: port {} out of range", port.port)))?;
            let node_port = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
            let (mut everywhere, mut here) = (Found::default(), Found::default());
            let mut found = |address, ready, local| {
                everywhere.add(address, ready);
                if local {
                    here.add(address, ready);
                }
            };
            let wanted = (namespace, name, port_name.as_str(), protocol);
            collect_endpoints(endpoints, wanted, node, &mut found);
            collect_slices(slices, wanted, node, &mut found);
            ports.push(ServicePort {
                namespace: namespace.into(),
                name: name.into(),
                port_name,
                protocol,
                cluster_ip,
                port: service_port,
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                source_ranges: source_ranges.clone(),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                // Only a service reached from outside has an external policy (kube-proxy's
                // ExternallyAccessible: a node port, a load balancer, or external IPs).
                external_local: spec.external_traffic_policy.as_deref() == Some("Local")
                    && (matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"))
                        || !external_ips.is_empty()),
                affinity_timeout,
                endpoints: everywhere.serving(),
                local_endpoints: here.serving(),
            });
        }
    }
    Ok(ports)
}

/// A LoadBalancer service's `spec.loadBalancerSourceRanges`, else the older annotation
/// kube-proxy also reads; IPv6 ranges belong to the IPv6 proxy, which we do not run.
fn source_ranges(service: &Service, namespace: &str, name: &str) -> Result<Vec<Ipv4Net>, Error> {
    const ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    let Some(spec) = service.spec.as_ref().filter(|s| s.type_.as_deref() == Some("LoadBalancer")) else {
        return Ok(Vec::new());
    };
    let ranges: Vec<String> = match spec.load_balancer_source_ranges.as_ref().filter(|r| !r.is_empty()) {
        Some(ranges) => ranges.clone(),
        None => {
            let annotations = service.metadata.annotations.as_ref();
            let listed = annotations.and_then(|a| a.get(ANNOTATION)).map(String::as_str).unwrap_or_default();
            listed.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect()
        }
    };
    ranges
        .iter()
        .filter(|range| !range.contains(':'))
        .map(|range| {
            range.trim().parse::<Ipv4Net>().map(|net| net.trunc()).map_err(|_| {
                Error::Invalid(format!("service {namespace}/{name}: bad load balancer source range {range:?}"))
            })
        })
        .collect()
}

fn protocol(port: &K8sServicePort, namespace: &str, name: &str) -> Result<Protocol, Error> {
    match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(Error::Invalid(format!("service {namespace}/{name}: unknown protocol {other:?}"))),
    }
}

fn same_object(namespace: Option<&String>, object_name: Option<&String>, ns: &str, name: &str) -> bool {
    namespace.map_or("default", String::as_str) == ns && object_name.map(String::as_str) == Some(name)
}

/// Endpoints that may serve: ready ones, and terminating ones that still serve.
#[derive(Default)]
struct Found {
    ready: BTreeSet<SocketAddrV4>,
    terminating: BTreeSet<SocketAddrV4>,
}

impl Found {
    fn add(&mut self, address: SocketAddrV4, ready: bool) {
        if ready { &mut self.ready } else { &mut self.terminating }.insert(address);
    }

    /// kube-proxy's fallback (KEP-1669): with no ready endpoint, the terminating ones that
    /// still serve take the traffic rather than none.
    fn serving(self) -> Vec<SocketAddrV4> {
        if self.ready.is_empty() { self.terminating } else { self.ready }.into_iter().collect()
    }
}

/// A service port as endpoints name it: namespace, service, port name, protocol.
type Wanted<'a> = (&'a str, &'a str, &'a str, Protocol);

/// Calls `found(address, ready, on node)` for each ready address of the Endpoints.
fn collect_endpoints(
    endpoints: &[Endpoints],
    (namespace, name, port_name, protocol): Wanted,
    node: Option<&str>,
    found: &mut impl FnMut(SocketAddrV4, bool, bool),
) {
    let objects = endpoints
        .iter()
        .filter(|e| same_object(e.metadata.namespace.as_ref(), e.metadata.name.as_ref(), namespace, name));
    for subset in objects.flat_map(|e| e.subsets.iter().flatten()) {
        let Some(port) = subset.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol_name(protocol)
        }) else {
            continue;
        };
        let Ok(port) = u16::try_from(port.port) else { continue };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<Ipv4Addr>() {
                let local = node.is_some() && address.node_name.as_deref() == node;
                found(SocketAddrV4::new(ip, port), true, local);
            }
        }
    }
}

/// Calls `found(address, ready, on node)` for each address of the EndpointSlices that
/// is ready, or terminating and still serving.
fn collect_slices(
    slices: &[EndpointSlice],
    (namespace, name, port_name, protocol): Wanted,
    node: Option<&str>,
    found: &mut impl FnMut(SocketAddrV4, bool, bool),
) {
    let of_service = slices.iter().filter(|s| {
        s.address_type == "IPv4"
            && s.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(String::as_str)
                == Some(name)
    });
    for slice in of_service {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol_name(protocol)
        }) else {
            continue;
        };
        let Some(Ok(port)) = port.port.map(u16::try_from) else { continue };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // kube-proxy treats a missing `ready` as ready, a missing `serving` as `ready`.
            let ready = conditions.and_then(|c| c.ready) != Some(false);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let is_terminating = conditions.and_then(|c| c.terminating) == Some(true);
            let may_serve = ready || (serving && is_terminating);
            if !may_serve {
                continue;
            }
            let local = node.is_some() && endpoint.node_name.as_deref() == node;
            for ip in endpoint.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                found(SocketAddrV4::new(ip, port), ready, local);
            }
        }
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn endpoints_match_service_ports_by_name() {
        let service: Service = parse(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "clusterIP": "10.96.0.20", "type": "NodePort", "sessionAffinity": "ClientIP",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}
                ]
            }
        }));
        let endpoints: Endpoints = parse(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "subsets": [{
                "addresses": [{"ip": "10.1.0.2"}, {"ip": "10.1.0.3"}],
                "notReadyAddresses": [{"ip": "10.1.0.9"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]
            }]
        }));
        let slice: EndpointSlice = parse(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.1.0.4"], "conditions": {"ready": true}},
                {"addresses": ["10.1.0.5"], "conditions": {"ready": false}},
                {"addresses": ["10.1.0.2"]}
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }));
        let ports = service_ports(&[service], &[endpoints], &[slice], None).unwrap();
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.port_name_string(), "shop/web:http");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_timeout, Some(10800));
        let addrs: Vec<String> = http.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.4:8080"]);
        let dns = &ports[1];
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.endpoints.len(), 2);
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let service: Service = parse(serde_json::json!({
            "metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 80}]}
        }));
        let slice = |endpoints: serde_json::Value| -> EndpointSlice {
            parse(serde_json::json!({
                "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": endpoints, "ports": [{"port": 8080}]
            }))
        };
        let going = serde_json::json!({"addresses": ["10.1.0.7"], "conditions": {"ready": false, "serving": true, "terminating": true}});
        let gone = serde_json::json!({"addresses": ["10.1.0.8"], "conditions": {"ready": false, "serving": false, "terminating": true}});
        let up = serde_json::json!({"addresses": ["10.1.0.6"], "conditions": {"ready": true}});
        let endpoints = |endpoints: serde_json::Value| -> Vec<String> {
            let ports = service_ports(std::slice::from_ref(&service), &[], &[slice(endpoints)], None).unwrap();
            ports[0].endpoints.iter().map(ToString::to_string).collect()
        };
        assert_eq!(endpoints(serde_json::json!([up, going, gone])), ["10.1.0.6:8080"]);
        assert_eq!(endpoints(serde_json::json!([going, gone])), ["10.1.0.7:8080"]);
    }

    #[test]
    fn external_addresses_policies_and_this_nodes_endpoints() {
        let service: Service = parse(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "type": "LoadBalancer", "clusterIP": "10.96.0.22", "externalIPs": ["192.168.99.10", "fd00::1"],
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                "ports": [{"port": 80, "nodePort": 30090}]
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.168.99.20"}, {"ip": "192.168.99.21", "ipMode": "Proxy"}, {"hostname": "lb.example"}
            ]}}
        }));
        let mut ranged = service.clone();
        ranged.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.1/8".into(), "fd00::/64".into()]);
        let slice: EndpointSlice = parse(serde_json::json!({
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.1.0.2"], "nodeName": "a"},
                {"addresses": ["10.1.0.3"], "nodeName": "b"},
                {"addresses": ["10.1.0.4"], "nodeName": "a", "conditions": {"ready": false, "serving": true, "terminating": true}}
            ],
            "ports": [{"port": 8080}]
        }));
        let ports =
            service_ports(std::slice::from_ref(&service), &[], std::slice::from_ref(&slice), Some("a")).unwrap();
        let port = &ports[0];
        let ips: Vec<String> = port.external_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["192.168.99.10", "192.168.99.20"]);
        assert_eq!(port.load_balancer_ips, ["192.168.99.20".parse::<Ipv4Addr>().unwrap()]);
        assert!(port.source_ranges.is_empty() && port.firewalled_ips().is_empty());
        // Source ranges (the IPv4 ones, as networks) guard the load balancer's address;
        // the older annotation counts when the field is empty.
        let ports = service_ports(std::slice::from_ref(&ranged), &[], std::slice::from_ref(&slice), None).unwrap();
        assert_eq!(ports[0].source_ranges, ["10.0.0.0/8".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(ports[0].firewalled_ips(), ["192.168.99.20".parse::<Ipv4Addr>().unwrap()]);
        let mut annotated = service.clone();
        annotated.metadata.annotations = Some(
            [(
                "service.beta.kubernetes.io/load-balancer-source-ranges".to_string(),
                " 10.2.0.0/16, 10.3.0.0/16".into(),
            )]
            .into(),
        );
        let ports = service_ports(&[annotated], &[], std::slice::from_ref(&slice), None).unwrap();
        assert_eq!(ports[0].source_ranges.len(), 2);
        ranged.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0/8".into()]);
        let error = service_ports(&[ranged], &[], std::slice::from_ref(&slice), None).unwrap_err().to_string();
        assert!(error.contains("bad load balancer source range \"10.0.0/8\""), "{error}");
        assert!(port.internal_local && port.external_local);
        let text = |e: &[SocketAddrV4]| e.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(text(&port.endpoints), ["10.1.0.2:8080", "10.1.0.3:8080"]);
        assert_eq!(text(&port.local_endpoints), ["10.1.0.2:8080"]);
        // On node b, its own; on c, none; on a, once its ready one goes, the terminating one.
        let on = |node| service_ports(std::slice::from_ref(&service), &[], std::slice::from_ref(&slice), Some(node));
        assert_eq!(text(&on("b").unwrap()[0].local_endpoints), ["10.1.0.3:8080"]);
        assert!(on("c").unwrap()[0].local_endpoints.is_empty());
        let mut draining = slice.clone();
        draining.endpoints.remove(0);
        let ports = service_ports(std::slice::from_ref(&service), &[], &[draining], Some("a")).unwrap();
        assert_eq!(text(&ports[0].local_endpoints), ["10.1.0.4:8080"]);
    }

    #[test]
    fn headless_and_external_name_services_have_no_rules() {
        let headless: Service = parse(serde_json::json!({
            "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let external: Service = parse(serde_json::json!({
            "metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}
        }));
        assert!(service_ports(&[headless, external], &[], &[], None).unwrap().is_empty());
        let bad: Service = parse(serde_json::json!({
            "metadata": {"name": "b", "namespace": "x"}, "spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}
        }));
        let err = service_ports(&[bad], &[], &[], None).unwrap_err().to_string();
        assert_eq!(err, "service x/b: bad clusterIP \"10.96.0.300\"");
    }
}
