//! kube-proxy's service health checks (pkg/proxy/healthcheck/service_health.go): for each
//! LoadBalancer Service with `externalTrafficPolicy: Local`, an HTTP server on its
//! `healthCheckNodePort` answers how many of its endpoints run on this node — 200 with
//! some, 503 with none — so that the load balancer sends clients only to nodes that can
//! serve them without another hop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::task::JoinHandle;

/// What a health check server says: its Service and its endpoints on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

/// The health check each port should serve, of the Services that need one, with their
/// ready endpoints on node `node` (distinct addresses, kube-proxy's LocalReadyEndpoints:
/// a node with terminating endpoints only is one to drain); and what could not be served
/// (two Services on one port: the first, by namespace and name, keeps it).
pub fn wanted(services: &[Service], slices: &[EndpointSlice], node: &str) -> (BTreeMap<u16, Health>, Vec<String>) {
    let mut local: HashMap<(&str, &str), HashSet<&str>> = HashMap::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get("kubernetes.io/service-name")) else { continue };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        let ready = slice.endpoints.iter().filter(|e| {
            e.node_name.as_deref() == Some(node) && e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
        });
        let addresses = ready.flat_map(|e| e.addresses.iter().map(String::as_str));
        local.entry((namespace, service.as_str())).or_default().extend(addresses);
    }
    let mut ordered: Vec<&Service> = services.iter().collect();
    ordered.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    let (mut wanted, mut conflicts) = (BTreeMap::new(), Vec::new());
    for service in ordered {
        let Some(spec) = &service.spec else { continue };
        let local_balancer =
            spec.type_.as_deref() == Some("LoadBalancer") && spec.external_traffic_policy.as_deref() == Some("Local");
        let Some(port) = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) else {
            continue;
        };
        if !local_balancer {
            continue;
        }
        let namespace = service.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = service.metadata.name.clone().unwrap_or_default();
        if let Some(first) = wanted.get(&port) {
            let Health { namespace: n, name: m, .. } = first;
            conflicts.push(format!("health check of {namespace}/{name}: port {port} is {n}/{m}'s"));
            continue;
        }
        let local_endpoints = local.get(&(namespace.as_str(), name.as_str())).map_or(0, HashSet::len);
        wanted.insert(port, Health { namespace, name, local_endpoints });
    }
    (wanted, conflicts)
}

/// The running health check servers, by port.
#[derive(Default)]
pub struct HealthChecks {
    servers: HashMap<u16, (Arc<Mutex<Health>>, JoinHandle<()>)>,
}

impl HealthChecks {
    /// Serves exactly `wanted`: new ports listened on, gone ones closed, the rest told
    /// their new counts. A port that cannot be listened on (taken) is tried again at the
    /// next sync; the errors say which.
    pub async fn sync(&mut self, wanted: BTreeMap<u16, Health>) -> Vec<String> {
        self.servers.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut errors = Vec::new();
        for (port, health) in wanted {
            if let Some((shared, _)) = self.servers.get(&port) {
                *shared.lock().expect("health") = health;
                continue;
            }
            let listener = match tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await {
                Ok(listener) => listener,
                Err(e) => {
                    errors.push(format!("health check of {}/{} on port {port}: {e}", health.namespace, health.name));
                    continue;
                }
            };
            let shared = Arc::new(Mutex::new(health));
            let state = shared.clone();
            let app = axum::Router::new().fallback(move || {
                let health = state.lock().expect("health").clone();
                async move { answer(&health) }
            });
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            self.servers.insert(port, (shared, task));
        }
        errors
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for (_, task) in self.servers.values() {
            task.abort();
        }
    }
}

/// kube-proxy's answer, headers and body alike.
fn answer(health: &Health) -> Response {
    let status = if health.local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": true\n}}",
        health.namespace, health.name, health.local_endpoints
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // One answer per connection: a server that stops (its Service gone) leaves no kept-alive
    // connection answering what it last knew.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(weight) = HeaderValue::from_str(&health.local_endpoints.to_string()) {
        headers.insert("x-load-balancing-endpoint-weight", weight);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, kind: &str, policy: &str, port: Option<i32>) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"type": kind, "externalTrafficPolicy": policy, "healthCheckNodePort": port}
        }))
        .unwrap()
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-1"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn local_load_balancers_count_their_endpoints_on_this_node() {
        let services = [
            service("web", "LoadBalancer", "Local", Some(31000)),
            service("idle", "LoadBalancer", "Local", Some(31001)),
            service("spread", "LoadBalancer", "Cluster", Some(31002)),
            service("np", "NodePort", "Local", None),
            service("zzz", "LoadBalancer", "Local", Some(31000)),
        ];
        let slices = [
            slice(
                "web",
                serde_json::json!([
                    {"addresses": ["10.88.0.2"], "nodeName": "a"},
                    {"addresses": ["10.88.0.3"], "nodeName": "a", "conditions": {"ready": true}},
                    {"addresses": ["10.88.0.4"], "nodeName": "a", "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["10.88.1.2"], "nodeName": "b"}
                ]),
            ),
            slice("idle", serde_json::json!([{"addresses": ["10.88.1.3"], "nodeName": "b"}])),
        ];
        let (wanted, conflicts) = wanted(&services, &slices, "a");
        let counts: Vec<(u16, &str, usize)> =
            wanted.iter().map(|(p, h)| (*p, h.name.as_str(), h.local_endpoints)).collect();
        assert_eq!(counts, [(31000, "web", 2), (31001, "idle", 0)]);
        assert_eq!(conflicts, ["health check of shop/zzz: port 31000 is shop/web's"]);
        assert_eq!(answer(&wanted[&31000]).status(), StatusCode::OK);
        assert_eq!(answer(&wanted[&31001]).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
