//! `pods/log` and `pods/exec`, proxied to the node the pod is bound to, as kube-apiserver
//! does: the pod names its node, the Node its address (`status.addresses`) and port
//! (`status.daemonEndpoints.kubeletEndpoint.Port`); the request goes to the node's
//! `/containerLogs/...` or `/exec/...` and the answer streams back. An exec's upgraded
//! connection (WebSocket, or SPDY if the node speaks it) is spliced through byte for byte.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::errors::ApiError;
use super::http::{Query, Shared};
use super::rest::{self, Target};

/// kubelet's default port, for a Node that does not give its own.
const KUBELET_PORT: u64 = 10250;

/// Headers an upgrade needs to reach the node and come back.
const UPGRADE_HEADERS: [&str; 7] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// A pod subresource served by its node.
pub struct NodeStream {
    pub namespace: String,
    pub pod: String,
    kind: StreamKind,
}

#[derive(Clone, PartialEq)]
enum StreamKind {
    Log,
    Exec,
    Attach,
    PortForward,
    /// `nodes/{name}/proxy/{path}`: any path of the node's endpoint.
    NodeProxy(String),
}

impl NodeStream {
    /// The resource it is a subresource of (`pods`, `nodes`), as authorization names it.
    pub fn resource(&self) -> &'static str {
        match self.kind {
            StreamKind::NodeProxy(_) => "nodes",
            _ => "pods",
        }
    }

    /// The subresource it is (`log`, `exec`, `proxy`), as authorization names it.
    pub fn subresource(&self) -> &'static str {
        match self.kind {
            StreamKind::Log => "log",
            StreamKind::Exec => "exec",
            StreamKind::Attach => "attach",
            StreamKind::PortForward => "portforward",
            StreamKind::NodeProxy(_) => "proxy",
        }
    }

    /// `/api/v1/namespaces/{ns}/pods/{name}/log|exec`, `/api/v1/nodes/{name}/proxy/…`.
    pub fn of(path: &str) -> Option<NodeStream> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let ["api", "v1", "nodes", node, "proxy", rest @ ..] = segments.as_slice() {
            let path = format!("/{}", rest.join("/"));
            return Some(NodeStream {
                namespace: String::new(),
                pod: node.to_string(),
                kind: StreamKind::NodeProxy(path),
            });
        }
        let ["api", "v1", "namespaces", namespace, "pods", pod, sub] = segments.as_slice() else { return None };
        let kind = match *sub {
            "log" => StreamKind::Log,
            "exec" => StreamKind::Exec,
            "attach" => StreamKind::Attach,
            "portforward" => StreamKind::PortForward,
            _ => return None,
        };
        Some(NodeStream { namespace: namespace.to_string(), pod: pod.to_string(), kind })
    }
}

pub async fn proxy(
    server: &Shared,
    stream: NodeStream,
    query: &Query,
    mut parts: Parts,
) -> Result<Response<Body>, ApiError> {
    if let StreamKind::NodeProxy(path) = &stream.kind {
        let path = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        return forward(server, &stream.pod, &path, false, &mut parts).await;
    }
    let pods = server.registry.find("", "v1", "pods").expect("pods are served");
    let pod = rest::get(server, &Target::collection(pods, Some(&stream.namespace)), &stream.pod)?;
    let name = &stream.pod;
    let node_name = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
    let node_name =
        node_name.ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let (path, is_upgrade) = match &stream.kind {
        StreamKind::PortForward => {
            if !parts.headers.contains_key(header::UPGRADE) {
                return Err(ApiError::bad_request("Upgrade request required"));
            }
            (format!("/portForward/{}", segments(&[&stream.namespace, name])), true)
        }
        StreamKind::Log => {
            let container = container(&pod, query.get("container"))?;
            let options = ["follow", "previous", "timestamps", "tailLines", "limitBytes", "sinceSeconds", "sinceTime"];
            let pairs = options.iter().filter_map(|key| query.get(key).map(|value| (*key, value)));
            (format!("/containerLogs/{}?{}", segments(&[&stream.namespace, name, &container]), encode(pairs)), false)
        }
        StreamKind::Exec | StreamKind::Attach => {
            let container = container(&pod, query.get("container"))?;
            let phase = pod["status"]["phase"].as_str().unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                let verb = if stream.kind == StreamKind::Exec { "exec into" } else { "attach to" };
                return Err(ApiError::bad_request(format!(
                    "cannot {verb} a container in a completed pod; current phase is {phase}"
                )));
            }
            if !parts.headers.contains_key(header::UPGRADE) {
                return Err(ApiError::bad_request("Upgrade request required"));
            }
            let streams = [("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty")];
            let flags = streams.into_iter().filter(|(ours, _)| query.flag(ours)).map(|(_, node)| (node, "1"));
            let pairs = query.all("command").map(|c| ("command", c)).chain(flags);
            let kind = if stream.kind == StreamKind::Exec { "exec" } else { "attach" };
            (format!("/{kind}/{}?{}", segments(&[&stream.namespace, name, &container]), encode(pairs)), true)
        }
        StreamKind::NodeProxy(_) => unreachable!("proxied above"),
    };
    forward(server, node_name, &path, is_upgrade, &mut parts).await
}

/// Sends the request on to `path` of the node's endpoint and relays the answer (an upgraded
/// connection, spliced byte for byte).
async fn forward(
    server: &Shared,
    node_name: &str,
    path: &str,
    is_upgrade: bool,
    parts: &mut Parts,
) -> Result<Response<Body>, ApiError> {
    let nodes = server.registry.find("", "v1", "nodes").expect("nodes are served");
    let node = rest::get(server, &Target::collection(nodes, None), node_name)?;
    let endpoint = endpoint(&node)?;
    let mut request = Request::builder().method(parts.method.clone()).uri(format!("https://{endpoint}{path}"));
    if is_upgrade {
        for name in UPGRADE_HEADERS {
            for value in parts.headers.get_all(name) {
                request = request.header(name, value);
            }
        }
    }
    let request = request.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut answer = crate::http_client::send(request, Some(&server.nodes))
        .await
        .map_err(|e| ApiError::internal(format!("error dialing backend: {e:#}")))?;
    let status = answer.status();
    if is_upgrade && status == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let client = client.ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))?;
        let node_side = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            if let (Ok(client), Ok(node_side)) = (client.await, node_side.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(node_side)).await;
            }
        });
        return Ok(relayed(status, answer.headers(), Body::empty()));
    }
    if !status.is_success() {
        return Err(node_refusal(answer).await);
    }
    let headers = answer.headers().clone();
    Ok(relayed(status, &headers, Body::new(answer.into_body())))
}

/// What a node's endpoint answers at `path` (its summary API), as JSON.
pub async fn get_json(server: &Shared, node: &Value, path: &str) -> Result<Value, ApiError> {
    let endpoint = endpoint(node)?;
    let request = Request::builder()
        .uri(format!("https://{endpoint}{path}"))
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = crate::http_client::send(request, Some(&server.nodes))
        .await
        .map_err(|e| ApiError::internal(format!("error dialing backend: {e:#}")))?;
    if !answer.status().is_success() {
        return Err(node_refusal(answer).await);
    }
    let body = axum::body::to_bytes(Body::new(answer.into_body()), 64 << 20)
        .await
        .map_err(|e| ApiError::internal(format!("the node's answer: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::internal(format!("the node's answer: {e}")))
}

/// The container a request means: the one named, or the pod's only one.
fn container(pod: &Value, named: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match named.filter(|n| !n.is_empty()) {
        Some(container) if names.contains(&container) => Ok(container.to_string()),
        Some(container) => Err(ApiError::bad_request(format!("container {container} is not valid for pod {name}"))),
        None => match pod["spec"]["containers"].as_array().map(Vec::as_slice) {
            Some([only]) => Ok(only["name"].as_str().unwrap_or_default().to_string()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

/// `host:port` of the node's endpoint: its InternalIP (else ExternalIP, else Hostname) and
/// the port it registered.
fn endpoint(node: &Value) -> Result<String, ApiError> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let addresses = node["status"]["addresses"].as_array().cloned().unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| addresses.iter().find(|a| a["type"] == *kind).and_then(|a| a["address"].as_str()))
        .ok_or_else(|| ApiError::bad_request(format!("node {name} has no address")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().filter(|p| *p > 0);
    let host = if address.contains(':') { format!("[{address}]") } else { address.to_string() };
    Ok(format!("{host}:{}", port.unwrap_or(KUBELET_PORT)))
}

/// Path segments, each percent-encoded: a name never adds a `/`, `?` or `#` of its own.
fn segments(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

fn encode<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// The node's answer passed on with its own status and headers, except hop-by-hop ones
/// that an upgrade does not need.
fn relayed(status: axum::http::StatusCode, headers: &HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::builder().status(status);
    let upgrade = status == axum::http::StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        let hop_by_hop = [header::CONNECTION, header::TRANSFER_ENCODING, HeaderName::from_static("keep-alive")];
        if upgrade || !hop_by_hop.contains(name) {
            response = response.header(name, value);
        }
    }
    response.body(body).expect("valid response")
}

/// A node's refusal as a Status: its code, its text as the message (kube-apiserver's
/// GenericHttpResponseChecker does the same).
async fn node_refusal(answer: Response<Incoming>) -> ApiError {
    let code = answer.status().as_u16();
    let text = axum::body::to_bytes(Body::new(answer.into_body()), 64 << 10).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    ApiError::from_node(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_log_and_exec_of_a_pod_go_to_its_node() {
        let log = NodeStream::of("/api/v1/namespaces/default/pods/web/log").unwrap();
        assert!((log.namespace.as_str(), log.pod.as_str()) == ("default", "web") && log.kind == StreamKind::Log);
        assert!(NodeStream::of("/api/v1/namespaces/default/pods/web/exec").is_some_and(|s| s.kind == StreamKind::Exec));
        assert!(NodeStream::of("/api/v1/namespaces/default/pods/web/status").is_none());
        assert!(NodeStream::of("/api/v1/namespaces/default/services/web/log").is_none());
    }

    #[test]
    fn names_stay_within_their_path_segment() {
        assert_eq!(segments(&["default", "web", "a/../b?x#y"]), "default/web/a%2F..%2Fb%3Fx%23y");
    }

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(container(&pod, Some("b")).unwrap(), "b");
        assert_eq!(container(&pod, Some("c")).unwrap_err().message, "container c is not valid for pod p");
        assert!(container(&pod, None).unwrap_err().message.contains("choose one of: [a b]"));
        let single = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&single, None).unwrap(), "a");
    }

    #[test]
    fn the_endpoint_is_the_internal_address_and_registered_port() {
        let node = json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}}}});
        assert_eq!(endpoint(&node).unwrap(), "10.0.0.5:11250");
        let bare =
            json!({"metadata": {"name": "n"}, "status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}});
        assert_eq!(endpoint(&bare).unwrap(), "[fd00::1]:10250");
        assert!(endpoint(&json!({"metadata": {"name": "n"}})).is_err());
    }
}
