//! The cluster's DNS records, derived from Services and EndpointSlices by one pure function
//! (as the proxy derives its rules), and the answers to queries from them, as the Kubernetes
//! DNS-based service discovery specification and CoreDNS's kubernetes plugin give them
//! (https://github.com/kubernetes/dns/blob/master/docs/specification.md):
//!
//! - `<svc>.<ns>.svc.<domain>`: the ClusterIPs; a headless Service's ready endpoints; an
//!   ExternalName Service's CNAME.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV per named port (to the Service, or
//!   to each endpoint of a headless one).
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: a headless Service's endpoint (its hostname, as
//!   a StatefulSet's pods have, or its address with dashes).
//! - `<a-b-c-d>.<ns>.pod.<domain>`: any such address (CoreDNS's `pods insecure`).
//! - PTR for ClusterIPs and headless endpoints; `dns-version.<domain>` TXT.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The records' time to live (CoreDNS's kubernetes plugin's default).
pub const TTL: u32 = 5;

/// The version of the specification answered at `dns-version.<domain>`.
const SPEC_VERSION: &str = "1.1.0";

/// What the zone says about a query.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The name has records of the type (or a CNAME); `additional` holds the addresses of
    /// SRV targets.
    Records { answers: Vec<Record>, additional: Vec<Record> },
    /// The name exists, with no records of the type.
    NoData,
    /// No such name in the cluster's domain.
    NxDomain,
    /// Not the cluster's to answer: forward it.
    NotOurs,
}

/// The records of every Service, by lowercase name.
pub struct Zone {
    domain: Name,
    records: HashMap<Name, Vec<Record>>,
    /// Names that exist only because names below them do (the spec's empty non-terminals,
    /// such as `<ns>.svc.<domain>`): NODATA rather than NXDOMAIN.
    parents: HashSet<Name>,
    reverse: HashMap<IpAddr, Vec<Name>>,
}

impl Zone {
    /// The records that `services` and `slices` make under `domain` (e.g. `cluster.local`).
    pub fn build(domain: &str, services: &[Service], slices: &[EndpointSlice]) -> Result<Zone, String> {
        let domain = fqdn(domain).map_err(|e| format!("cluster domain {domain:?}: {e}"))?;
        let mut zone = Zone { domain, records: HashMap::new(), parents: HashSet::new(), reverse: HashMap::new() };
        let mut endpoints: HashMap<(&str, &str), Vec<Endpoint>> = HashMap::new();
        for slice in slices {
            let labels = slice.metadata.labels.as_ref();
            let Some(service) = labels.and_then(|l| l.get("kubernetes.io/service-name")) else { continue };
            let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
            endpoints.entry((namespace, service)).or_default().extend(Endpoint::of_slice(slice));
        }
        for service in services {
            let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
                continue;
            };
            let found = endpoints.get(&(namespace.as_str(), name.as_str())).map(Vec::as_slice).unwrap_or_default();
            // A name that is no DNS label (never, for a validated object) has no records.
            let _ = zone.add_service(service, namespace, name, found);
        }
        Ok(zone)
    }

    fn add_service(&mut self, service: &Service, namespace: &str, name: &str, endpoints: &[Endpoint]) -> Option<()> {
        let spec = service.spec.as_ref()?;
        let service_name = self.name(&format!("{name}.{namespace}.svc"))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = fqdn(spec.external_name.as_deref()?).ok()?;
            self.add(Record::from_rdata(service_name, TTL, RData::CNAME(CNAME(target))));
            return Some(());
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, protocol(p.protocol.as_deref()), p.port)));
        if headless {
            let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
            let mut seen = HashSet::new();
            let chosen: Vec<&Endpoint> =
                endpoints.iter().filter(|e| (e.ready || publish_not_ready) && seen.insert(e.address)).collect();
            let weight = (100 / chosen.len().max(1)) as u16;
            for endpoint in chosen {
                let host = endpoint.hostname.clone().unwrap_or_else(|| dashed(endpoint.address));
                let Some(endpoint_name) = self.name(&format!("{host}.{name}.{namespace}.svc")) else { continue };
                self.add(address_record(service_name.clone(), endpoint.address));
                self.add(address_record(endpoint_name.clone(), endpoint.address));
                self.reverse.entry(endpoint.address).or_default().push(endpoint_name.clone());
                for (port_name, proto, port) in &endpoint.ports {
                    let srv = SRV::new(0, weight, *port, endpoint_name.clone());
                    if let Some(srv_name) = self.name(&format!("_{port_name}._{proto}.{name}.{namespace}.svc")) {
                        self.add(Record::from_rdata(srv_name, TTL, RData::SRV(srv.clone())));
                    }
                    self.add(Record::from_rdata(service_name.clone(), TTL, RData::SRV(srv)));
                }
            }
            // A headless Service without endpoints still exists.
            self.parents.insert(service_name.clone());
        } else {
            for ip in &cluster_ips {
                self.add(address_record(service_name.clone(), *ip));
                self.reverse.entry(*ip).or_default().push(service_name.clone());
            }
            for (port_name, proto, port) in ports {
                let srv = SRV::new(0, 100, port as u16, service_name.clone());
                if let Some(srv_name) = self.name(&format!("_{port_name}._{proto}.{name}.{namespace}.svc")) {
                    self.add(Record::from_rdata(srv_name, TTL, RData::SRV(srv.clone())));
                }
                self.add(Record::from_rdata(service_name.clone(), TTL, RData::SRV(srv)));
            }
            self.parents.insert(service_name.clone());
        }
        self.add_parents(&service_name);
        Some(())
    }

    /// `relative` under the cluster's domain.
    fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(relative).ok()?.to_lowercase().append_domain(&self.domain).ok()
    }

    fn add(&mut self, record: Record) {
        let name = record.name.clone();
        let records = self.records.entry(name.clone()).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
        self.add_parents(&name);
    }

    fn add_parents(&mut self, name: &Name) {
        let mut parent = name.base_name();
        while self.domain.zone_of(&parent) && self.parents.insert(parent.clone()) {
            parent = parent.base_name();
        }
    }

    /// The answer to a query for `name` (any case) of type `kind`.
    pub fn answer(&self, name: &Name, kind: RecordType) -> Answer {
        let name = name.to_lowercase();
        if kind == RecordType::PTR
            && let Some(address) = reverse_address(&name)
        {
            return match self.reverse.get(&address) {
                Some(names) => Answer::Records {
                    answers: names
                        .iter()
                        .map(|target| Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(target.clone()))))
                        .collect(),
                    additional: vec![],
                },
                None => Answer::NotOurs,
            };
        }
        if !self.domain.zone_of(&name) {
            return Answer::NotOurs;
        }
        if let Some(records) = self.records.get(&name) {
            let matching: Vec<Record> =
                records.iter().filter(|r| kind == RecordType::ANY || r.record_type() == kind).cloned().collect();
            if !matching.is_empty() {
                let additional = self.srv_targets(&matching);
                return Answer::Records { answers: matching, additional };
            }
            let cname: Vec<Record> = records.iter().filter(|r| r.record_type() == RecordType::CNAME).cloned().collect();
            return if cname.is_empty() {
                Answer::NoData
            } else {
                Answer::Records { answers: cname, additional: vec![] }
            };
        }
        if name == self.domain {
            return match kind {
                RecordType::SOA => Answer::Records { answers: vec![self.soa()], additional: vec![] },
                _ => Answer::NoData,
            };
        }
        if let Ok(version) = Name::from_ascii("dns-version").and_then(|n| n.append_domain(&self.domain))
            && name == version
        {
            return match kind {
                RecordType::TXT | RecordType::ANY => Answer::Records {
                    answers: vec![Record::from_rdata(name, TTL, RData::TXT(TXT::new(vec![SPEC_VERSION.into()])))],
                    additional: vec![],
                },
                _ => Answer::NoData,
            };
        }
        if let Some(address) = self.pod_address(&name) {
            return match (kind, address) {
                (RecordType::A | RecordType::ANY, IpAddr::V4(_))
                | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_)) => {
                    Answer::Records { answers: vec![address_record(name, address)], additional: vec![] }
                }
                _ => Answer::NoData,
            };
        }
        if self.parents.contains(&name) || self.is_pod_namespace(&name) { Answer::NoData } else { Answer::NxDomain }
    }

    /// The SOA that negative answers carry in their authority section.
    pub fn soa(&self) -> Record {
        let at = |label: &str| Name::from_ascii(label).and_then(|n| n.append_domain(&self.domain)).expect("valid name");
        let soa = SOA::new(at("ns.dns"), at("hostmaster"), 1, 7200, 1800, 86400, TTL);
        Record::from_rdata(self.domain.clone(), TTL, RData::SOA(soa))
    }

    /// Whether `name` is `<a-b-c-d>.<ns>.pod.<domain>`, and the address it spells.
    fn pod_address(&self, name: &Name) -> Option<IpAddr> {
        let labels = self.relative_labels(name)?;
        let [host, _namespace, pod] = labels.as_slice() else { return None };
        if pod != "pod" {
            return None;
        }
        host.replace('-', ".")
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .ok()
            .or_else(|| host.replace('-', ":").parse::<Ipv6Addr>().map(IpAddr::V6).ok())
    }

    /// `pod.<domain>` and `<ns>.pod.<domain>` exist whatever the pods.
    fn is_pod_namespace(&self, name: &Name) -> bool {
        matches!(self.relative_labels(name).as_deref(), Some([_, pod]) | Some([pod]) if pod == "pod")
    }

    fn relative_labels(&self, name: &Name) -> Option<Vec<String>> {
        let count = name.num_labels().checked_sub(self.domain.num_labels())?;
        Some(name.iter().take(count as usize).map(|l| String::from_utf8_lossy(l).into_owned()).collect())
    }

    fn srv_targets(&self, answers: &[Record]) -> Vec<Record> {
        let mut additional = Vec::new();
        for record in answers {
            if let RData::SRV(srv) = &record.data
                && let Some(targets) = self.records.get(&srv.target)
            {
                for target in targets.iter().filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA)) {
                    if !additional.contains(target) {
                        additional.push(target.clone());
                    }
                }
            }
        }
        additional
    }
}

/// One address of a Service's EndpointSlice.
struct Endpoint {
    address: IpAddr,
    hostname: Option<String>,
    ready: bool,
    /// The slice's named ports: (name, protocol in lowercase, port).
    ports: Vec<(String, &'static str, u16)>,
}

impl Endpoint {
    fn of_slice(slice: &EndpointSlice) -> Vec<Endpoint> {
        let ports: Vec<(String, &'static str, u16)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().filter(|n| !n.is_empty())?,
                    protocol(p.protocol.as_deref()),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        let mut found = Vec::new();
        for endpoint in &slice.endpoints {
            // An unset ready condition means ready (the EndpointSlice API's rule).
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                found.push(Endpoint { address, hostname: endpoint.hostname.clone(), ready, ports: ports.clone() });
            }
        }
        found
    }
}

fn protocol(protocol: Option<&str>) -> &'static str {
    match protocol {
        Some("UDP") => "udp",
        Some("SCTP") => "sctp",
        _ => "tcp",
    }
}

fn address_record(name: Name, address: IpAddr) -> Record {
    let data = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, TTL, data)
}

/// An address as one DNS label: `10-244-0-5`, or an IPv6 address with its colons dashed.
fn dashed(address: IpAddr) -> String {
    address.to_string().replace(['.', ':'], "-")
}

fn fqdn(name: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(name).map_err(|e| e.to_string())?.to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

/// The address a reverse name (`d.c.b.a.in-addr.arpa.` or the nibbles of `ip6.arpa.`)
/// stands for.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let labels: Vec<String> = name.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            format!("{a}.{b}.{c}.{d}").parse().ok().map(IpAddr::V4)
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let hex: String = nibbles.iter().rev().map(String::as_str).collect();
            u128::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 32).map(|v| IpAddr::V6(Ipv6Addr::from(v)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn zone() -> Zone {
        let services = [
            service(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                         "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            service(json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            service(json!({"metadata": {"name": "search", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "search.example.com"}})),
        ];
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "db-x", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {}},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}
            ]
        }))
        .unwrap();
        Zone::build("cluster.local", &services, &[slice]).unwrap()
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn data(answer: Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services_answer_their_address_srv_and_ptr() {
        let zone = zone();
        assert_eq!(data(zone.answer(&name("WEB.default.svc.cluster.local."), RecordType::A)), ["10.96.0.20"]);
        assert_eq!(zone.answer(&name("web.default.svc.cluster.local."), RecordType::AAAA), Answer::NoData);
        let Answer::Records { answers, additional } =
            zone.answer(&name("_http._tcp.web.default.svc.cluster.local."), RecordType::SRV)
        else {
            panic!("no SRV")
        };
        assert_eq!(answers[0].data.to_string(), "0 100 80 web.default.svc.cluster.local.");
        assert_eq!(additional[0].data.to_string(), "10.96.0.20");
        assert_eq!(data(zone.answer(&name("_dns._udp.web.default.svc.cluster.local."), RecordType::SRV)).len(), 1);
        assert_eq!(
            data(zone.answer(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR)),
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(zone.answer(&name("21.0.96.10.in-addr.arpa."), RecordType::PTR), Answer::NotOurs);
    }

    #[test]
    fn headless_services_answer_each_ready_endpoint_by_its_hostname_or_address() {
        let zone = zone();
        let mut addresses = data(zone.answer(&name("db.prod.svc.cluster.local."), RecordType::A));
        addresses.sort();
        assert_eq!(addresses, ["10.244.0.5", "10.244.0.6"], "the not-ready endpoint is left out");
        assert_eq!(data(zone.answer(&name("db-0.db.prod.svc.cluster.local."), RecordType::A)), ["10.244.0.5"]);
        assert_eq!(data(zone.answer(&name("10-244-0-6.db.prod.svc.cluster.local."), RecordType::A)), ["10.244.0.6"]);
        assert_eq!(zone.answer(&name("10-244-0-7.db.prod.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        let mut targets = data(zone.answer(&name("_pg._tcp.db.prod.svc.cluster.local."), RecordType::SRV));
        targets.sort();
        assert_eq!(targets.len(), 2);
        assert!(targets[0].ends_with("5432 10-244-0-6.db.prod.svc.cluster.local."), "{targets:?}");
        assert_eq!(
            data(zone.answer(&name("5.0.244.10.in-addr.arpa."), RecordType::PTR)),
            ["db-0.db.prod.svc.cluster.local."]
        );
    }

    #[test]
    fn external_names_pods_and_missing_names() {
        let zone = zone();
        assert_eq!(
            data(zone.answer(&name("search.default.svc.cluster.local."), RecordType::A)),
            ["search.example.com."]
        );
        assert_eq!(data(zone.answer(&name("10-244-1-9.default.pod.cluster.local."), RecordType::A)), ["10.244.1.9"]);
        assert_eq!(zone.answer(&name("10-244-1-9.default.pod.cluster.local."), RecordType::AAAA), Answer::NoData);
        assert_eq!(zone.answer(&name("nope.default.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(zone.answer(&name("default.svc.cluster.local."), RecordType::A), Answer::NoData);
        assert_eq!(zone.answer(&name("svc.cluster.local."), RecordType::A), Answer::NoData);
        assert_eq!(zone.answer(&name("other.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(data(zone.answer(&name("dns-version.cluster.local."), RecordType::TXT)), ["1.1.0"]);
        assert_eq!(zone.answer(&name("example.com."), RecordType::A), Answer::NotOurs);
        assert_eq!(zone.answer(&name("cluster.localhost."), RecordType::A), Answer::NotOurs);
    }
}
