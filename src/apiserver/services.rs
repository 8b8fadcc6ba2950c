//! A Service's allocations: a cluster IP from the service CIDR and node ports from the
//! node-port range (its ports', and the health check's of a LoadBalancer with
//! `externalTrafficPolicy: Local`), each checked free against the Services stored, given
//! when the Service is made or changed to a type that needs them (its defaults and validation are its
//! strategy's, `registry::core::services`). The caller holds the server's write lock, so
//! two writes never take the same one.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use net::Ipv4Net;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::store::Store;

/// Where Services are stored (registry::ResourceInfo::prefix of core/v1 services).
const SERVICES: &str = "/registry/core/services/";

/// The first address of the Service range: the `kubernetes` Service's.
pub fn first_address(service_cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(service_cidr.network()) + 1)
}

pub struct Allocator {
    pub service_cidr: Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
}

impl Allocator {
    /// `service` with its cluster IP and node ports; `current` is the stored one it
    /// replaces, whose own allocations it may keep.
    pub fn allocate(&self, store: &dyn Store, mut service: Value, current: Option<&Value>) -> Result<Value, ApiError> {
        let name = service["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let invalid = |field: &str, message: String| ApiError::invalid("Service", &name, vec![(field.into(), message)]);
        let page = store.list(SERVICES, None, 0).map_err(|e| ApiError::from_store(e, "services", &name))?;
        let uid = current.map(|c| c["metadata"]["uid"].clone());
        let stored: Vec<Value> = page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter(|s| uid.is_none() || Some(&s["metadata"]["uid"]) != uid.as_ref())
            .collect();
        let used_ips: HashSet<Ipv4Addr> =
            stored.iter().filter_map(|s| s["spec"]["clusterIP"].as_str()?.parse().ok()).collect();
        let mut used_ports: HashSet<i64> = stored
            .iter()
            .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["nodePort"].as_i64())
            .chain(stored.iter().filter_map(|s| s["spec"]["healthCheckNodePort"].as_i64()))
            .collect();

        let spec = &mut service["spec"];
        // An update that leaves out what the Service was given keeps it (kube's
        // patchAllocatedValues): its node ports, matched by protocol and port, and its health
        // check port while it needs one.
        if let Some(current) = current.map(|c| &c["spec"]) {
            let given = if needs_node_ports(current) && needs_node_ports(spec) {
                current["ports"].as_array().cloned().unwrap_or_default()
            } else {
                Vec::new()
            };
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                let same = |p: &&Value| p["port"] == port["port"] && p["protocol"] == port["protocol"];
                if port["nodePort"].as_i64().is_none_or(|p| p == 0)
                    && let Some(node_port) = given.iter().find(same).and_then(|p| p["nodePort"].as_i64())
                {
                    port["nodePort"] = node_port.into();
                }
            }
            if needs_health_check_port(current)
                && needs_health_check_port(spec)
                && spec["healthCheckNodePort"].as_i64().is_none_or(|p| p == 0)
            {
                spec["healthCheckNodePort"] = current["healthCheckNodePort"].clone();
            }
        }
        let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
        if kind == "ExternalName" {
            return Ok(service);
        }
        // An address the Service already has stays its own (an update keeps it).
        let kept = current.and_then(|c| c["spec"]["clusterIP"].as_str()).filter(|ip| !ip.is_empty() && *ip != "None");
        match spec["clusterIP"].as_str().filter(|ip| !ip.is_empty()) {
            Some(requested) if Some(requested) == kept => {}
            Some("None") => {}
            Some(requested) => {
                let ip: Ipv4Addr = requested.parse().map_err(|_| {
                    invalid("spec.clusterIP", format!("Invalid value: \"{requested}\": must be a valid IP address"))
                })?;
                if !self.service_cidr.contains(&ip) {
                    return Err(invalid(
                        "spec.clusterIP",
                        format!(
                            "Invalid value: \"{requested}\": provided IP is not in the valid range ({})",
                            self.service_cidr
                        ),
                    ));
                }
                if used_ips.contains(&ip) {
                    return Err(invalid(
                        "spec.clusterIP",
                        format!("Invalid value: \"{requested}\": provided IP is already allocated"),
                    ));
                }
            }
            None => {
                // The first address is the `kubernetes` Service's.
                let ip = self
                    .service_cidr
                    .hosts()
                    .skip(1)
                    .find(|ip| !used_ips.contains(ip))
                    .ok_or_else(|| ApiError::internal(format!("no cluster IP left in {}", self.service_cidr)))?;
                spec["clusterIP"] = ip.to_string().into();
            }
        }
        spec["clusterIPs"] = json!([spec["clusterIP"]]);
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = "SingleStack".into();
        let (low, high) = (*self.node_ports.start() as i64, *self.node_ports.end() as i64);
        let mut take = |requested: Option<i64>, field: &str| -> Result<i64, ApiError> {
            match requested.filter(|p| *p != 0) {
                Some(requested) if !(low..=high).contains(&requested) => Err(invalid(
                    field,
                    format!(
                        "Invalid value: {requested}: provided port is not in the valid range. The range of valid ports is {low}-{high}"
                    ),
                )),
                Some(requested) if !used_ports.insert(requested) => {
                    Err(invalid(field, format!("Invalid value: {requested}: provided port is already allocated")))
                }
                Some(requested) => Ok(requested),
                None => {
                    let free = (low..=high)
                        .find(|p| !used_ports.contains(p))
                        .ok_or_else(|| ApiError::internal(format!("no node port left in {low}-{high}")))?;
                    used_ports.insert(free);
                    Ok(free)
                }
            }
        };
        if needs_node_ports(spec) {
            for (i, port) in spec["ports"].as_array_mut().into_iter().flatten().enumerate() {
                port["nodePort"] = take(port["nodePort"].as_i64(), &format!("spec.ports[{i}].nodePort"))?.into();
            }
        }
        if needs_health_check_port(spec) {
            // kube-apiserver answers a health check port it cannot give with a 500.
            let requested = spec["healthCheckNodePort"].as_i64();
            let port =
                take(requested, "spec.healthCheckNodePort").map_err(|e| match requested.filter(|p| *p != 0) {
                    Some(port) => ApiError::internal(format!(
                        "failed to allocate requested HealthCheck NodePort {port}: {}",
                        e.message.rsplit(": ").next().unwrap_or_default()
                    )),
                    None => e,
                })?;
            spec["healthCheckNodePort"] = port.into();
        }
        Ok(service)
    }
}

fn needs_node_ports(spec: &Value) -> bool {
    spec["type"] == "NodePort" || spec["type"] == "LoadBalancer"
}

/// kube-apiserver's needsHCNodePort: a load balancer that keeps client addresses asks
/// each node whether it has endpoints.
fn needs_health_check_port(spec: &Value) -> bool {
    spec["type"] == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local"
}
