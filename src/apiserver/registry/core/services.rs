//! services (core/v1): SetDefaults_Service, the rules of a Service's ports, types and
//! cluster IPs, and what a change of type drops. Cluster IPs and node ports are allocated
//! beside the store (`apiserver::services`).

use k8s_openapi::api::core::v1::{ClientIPConfig, Service, ServiceSpec, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_string, unset};
use super::super::{Cause, Column, FieldLabel, Rules};

pub struct Services;

const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

impl Rules for Services {
    type Object = Service;
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn name_rule() -> fn(&str) -> Vec<String> {
        crate::validation::dns_label
    }

    fn default(service: &mut Service) {
        let spec = service.spec.get_or_insert_with(ServiceSpec::default);
        default_string(&mut spec.session_affinity, "None");
        match spec.session_affinity.as_deref() {
            Some("None") => spec.session_affinity_config = None,
            Some("ClientIP") => {
                let timeout = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()?.timeout_seconds);
                if timeout.is_none() {
                    spec.session_affinity_config = Some(SessionAffinityConfig {
                        client_ip: Some(ClientIPConfig { timeout_seconds: Some(10800) }),
                    });
                }
            }
            _ => {}
        }
        default_string(&mut spec.type_, "ClusterIP");
        for port in spec.ports.iter_mut().flatten() {
            default_string(&mut port.protocol, "TCP");
            // No target port, 0 or "": the port itself.
            let unset_target = match &port.target_port {
                None => true,
                Some(IntOrString::Int(0)) => true,
                Some(IntOrString::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset_target {
                port.target_port = Some(IntOrString::Int(port.port));
            }
        }
        let kind = spec.type_.clone().unwrap_or_default();
        let external = kind == "NodePort"
            || kind == "LoadBalancer"
            || spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty());
        if external && unset(&spec.external_traffic_policy) {
            spec.external_traffic_policy = Some("Cluster".into());
        }
        if spec.internal_traffic_policy.is_none() && kind != "ExternalName" {
            spec.internal_traffic_policy = Some("Cluster".into());
        }
        if kind == "LoadBalancer" {
            spec.allocate_load_balancer_node_ports.get_or_insert(true);
        }
    }

    fn prepare_for_create(service: &mut Service) {
        service.status = Some(Default::default());
    }

    fn prepare_for_update(new: &mut Service, old: &Service) {
        // dropTypeDependentFields: what the old type had and the new one does not, unless
        // the client changed it itself.
        let (Some(spec), Some(previous)) = (new.spec.as_mut(), old.spec.as_ref()) else { return };
        // A health check port goes with the need for it, type changed or not.
        if needs_health_check_port(previous)
            && !needs_health_check_port(spec)
            && spec.health_check_node_port == previous.health_check_node_port
        {
            spec.health_check_node_port = None;
        }
        if spec.type_ == previous.type_ {
            return;
        }
        let kind = spec.type_.clone().unwrap_or_default();
        if kind == "ExternalName" && spec.cluster_ip == previous.cluster_ip {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
            spec.ip_families = None;
            spec.ip_family_policy = None;
        }
        if (kind == "ClusterIP" || kind == "ExternalName") && ports_unchanged(spec, previous) {
            for port in spec.ports.iter_mut().flatten() {
                port.node_port = None;
            }
        }
        if kind != "LoadBalancer" {
            spec.allocate_load_balancer_node_ports = None;
            spec.load_balancer_class = None;
        }
        if kind == "ClusterIP" || kind == "ExternalName" {
            spec.external_traffic_policy = None;
        }
    }

    fn validate(service: &Service) -> Vec<Cause> {
        let Some(spec) = service.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes = Vec::new();
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if !TYPES.contains(&kind) {
            causes.push(("spec.type".into(), format!("Unsupported value: \"{kind}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if ports.is_empty() && !headless && kind != "ExternalName" {
            causes.push(("spec.ports".into(), "Required value".into()));
        }
        let mut seen: Vec<(String, i32)> = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            if !(1..=65535).contains(&port.port) {
                causes.push((
                    format!("{path}.port"),
                    format!("Invalid value: {}: must be between 1 and 65535, inclusive", port.port),
                ));
            }
            match port.name.as_deref() {
                None | Some("") if ports.len() > 1 => causes.push((format!("{path}.name"), "Required value".into())),
                Some(name) if !name.is_empty() => {
                    causes.extend(crate::validation::check(&format!("{path}.name"), name, crate::validation::dns_label))
                }
                _ => {}
            }
            let key = (port.protocol.clone().unwrap_or_default(), port.port);
            if seen.contains(&key) {
                causes.push((
                    path.clone(),
                    format!("Duplicate value: {{\"protocol\":\"{}\",\"port\":{}}}", key.0, key.1),
                ));
            }
            seen.push(key);
            if kind == "ClusterIP" && port.node_port.is_some_and(|p| p != 0) {
                causes
                    .push((format!("{path}.nodePort"), "Forbidden: may not be used when `type` is 'ClusterIP'".into()));
            }
        }
        if kind == "ExternalName" {
            if unset(&spec.external_name) {
                causes.push(("spec.externalName".into(), "Required value".into()));
            }
            if spec.cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty()) {
                causes.push(("spec.clusterIP".into(), "Forbidden: may not be set for ExternalName services".into()));
            }
        }
        if headless && (kind == "NodePort" || kind == "LoadBalancer") {
            causes.push((
                "spec.clusterIPs[0]".into(),
                format!("Invalid value: [\"None\"]: may not be set to 'None' for {kind} services"),
            ));
        }
        if let Some(port) = spec.health_check_node_port.filter(|p| *p != 0 && !needs_health_check_port(spec)) {
            causes.push((
                "spec.healthCheckNodePort".into(),
                format!("Invalid value: {port}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
            ));
        }
        if spec.session_affinity.as_deref() == Some("None") && spec.session_affinity_config.is_some() {
            causes.push((
                "spec.sessionAffinityConfig".into(),
                "Forbidden: must not be set when session affinity is None".into(),
            ));
        }
        causes
    }

    fn validate_update(new: &Service, old: &Service) -> Vec<Cause> {
        let (Some(spec), Some(previous)) = (new.spec.as_ref(), old.spec.as_ref()) else { return vec![] };
        let was_set = previous.cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty());
        let to_or_from_external =
            spec.type_.as_deref() == Some("ExternalName") || previous.type_.as_deref() == Some("ExternalName");
        if was_set && !to_or_from_external && spec.cluster_ip != previous.cluster_ip {
            let shown = serde_json::to_string(&spec.cluster_ips.clone().unwrap_or_default()).unwrap_or_default();
            return vec![("spec.clusterIPs[0]".into(), format!("Invalid value: {shown}: may not change once set"))];
        }
        vec![]
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Type", 0, |o| o["spec"]["type"].as_str().unwrap_or("ClusterIP").into()),
            columns::string("Cluster-IP", 0, |o| columns::text(&o["spec"]["clusterIP"])),
            columns::string("External-IP", 0, external_ip),
            columns::string("Port(s)", 0, |o| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let proto = p["protocol"].as_str().unwrap_or("TCP");
                        match p["nodePort"].as_i64().filter(|n| *n != 0) {
                            Some(node) => format!("{}:{node}/{proto}", p["port"]),
                            None => format!("{}/{proto}", p["port"]),
                        }
                    })
                    .collect();
                if ports.is_empty() { "<none>".into() } else { ports.join(",").into() }
            }),
            AGE,
            columns::string("Selector", 1, |o| columns::labels(&o["spec"]["selector"])),
        ]
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![
            FieldLabel {
                name: "spec.clusterIP",
                value: |o| o["spec"]["clusterIP"].as_str().unwrap_or_default().into(),
            },
            FieldLabel { name: "spec.type", value: |o| o["spec"]["type"].as_str().unwrap_or_default().into() },
        ]
    }
}

fn ports_unchanged(spec: &ServiceSpec, previous: &ServiceSpec) -> bool {
    let node_ports = |s: &ServiceSpec| s.ports.iter().flatten().map(|p| p.node_port).collect::<Vec<_>>();
    node_ports(spec) == node_ports(previous)
}

fn external_ip(o: &Value) -> Value {
    let external: Vec<&str> =
        o["spec"]["externalIPs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    match o["spec"]["type"].as_str() {
        Some("ExternalName") => columns::text(&o["spec"]["externalName"]),
        Some("LoadBalancer") => {
            let mut all: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(String::from))
                .collect();
            all.extend(external.iter().map(|s| s.to_string()));
            if all.is_empty() { "<pending>".into() } else { all.join(",").into() }
        }
        _ if external.is_empty() => "<none>".into(),
        _ => external.join(",").into(),
    }
}

/// kube-apiserver's needsHCNodePort: a load balancer that keeps client addresses asks
/// each node whether it has endpoints (the allocator reads the same from JSON).
fn needs_health_check_port(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer") && spec.external_traffic_policy.as_deref() == Some("Local")
}
