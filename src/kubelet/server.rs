//! The node's HTTP endpoint, on kubelet's paths, for the API server to proxy `kubectl
//! logs` and `kubectl exec` to: `/containerLogs/{namespace}/{pod}/{container}` and
//! `/exec/{namespace}/{pod}/{container}` (WebSocket or SPDY), plus `/healthz`, `/pods`,
//! `/metrics` and `/stats/summary`. Pods are found by
//! namespace and name among those the runtime has on this node.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod as ApiPod;
use kube::runtime::reflector::Store;
use runtime::{Pod, Runtime};

use super::metrics::Metrics;
use super::stats::Stats;
use tokio::sync::mpsc;

use super::exec::{self, ExecRequest};
use super::logs::{self, LogOptions};
use super::{portforward, spdy};

/// Who reaches it is the API server: the TLS handshake checked its client certificate.
pub struct NodeServer {
    pub runtime: Runtime,
    /// The pods bound to this node, as the API has them.
    pub pods: Store<ApiPod>,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<Stats>,
}

/// A refusal, as kubelet gives it: a status and a line of text.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

pub fn router(server: Arc<NodeServer>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/stats/summary", get(summary))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(|s, t, q, u| over_websocket(s, t, q, u, Session::Exec))
                .post(|s, t, q, r| over_spdy(s, t, q, r, Session::Exec)),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(|s, t, q, u| over_websocket(s, t, q, u, Session::Attach))
                .post(|s, t, q, r| over_spdy(s, t, q, r, Session::Attach)),
        )
        .route("/portForward/{namespace}/{pod}", get(port_forward).post(port_forward))
        .with_state(server)
}

/// kubelet's `/pods`: a PodList of the pods bound to this node.
async fn pods(State(server): State<Arc<NodeServer>>) -> Response {
    let mut items: Vec<ApiPod> = server.pods.state().iter().map(|p| (**p).clone()).collect();
    items.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
    let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], list.to_string()).into_response()
}

async fn metrics(State(server): State<Arc<NodeServer>>) -> Response {
    let pods = server.runtime.pods().unwrap_or_default();
    let running: Vec<&Pod> = pods.iter().filter(|p| p.is_running()).collect();
    let containers = running.iter().map(|p| p.running_containers().len()).sum();
    let text = server.metrics.render(running.len(), containers);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}

async fn summary(State(server): State<Arc<NodeServer>>) -> Response {
    axum::Json(server.stats.summary()).into_response()
}

fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()).into_owned().collect()
}

/// The pod of that namespace and name on this node: the running one, else the newest.
fn find_pod(runtime: &Runtime, namespace: &str, name: &str) -> Result<Pod, Refusal> {
    let pods = runtime.pods().map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    pods.into_iter()
        .filter(|p| p.record.spec.namespace == namespace && p.name() == name)
        .max_by_key(|p| (p.is_running(), p.record.created_at.clone()))
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("pod {namespace}/{name} is not on this node")))
}

async fn container_logs(
    State(server): State<Arc<NodeServer>>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let pairs = query_pairs(&query);
    let options = LogOptions::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let runtime = server.runtime.clone();
    let pod = find_pod(&runtime, &namespace, &name)?;
    let spec = pod.containers().into_iter().find(|c| c.name == container).ok_or_else(|| {
        Refusal(StatusCode::NOT_FOUND, format!("container {container:?} in pod {namespace}/{name} has not started"))
    })?;
    let path = if options.previous {
        logs::previous_log(&spec.log_path).filter(|p| p.exists()).ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {name:?} not found"),
            )
        })?
    } else {
        spec.log_path
    };
    let follow = options.follow && !options.previous;
    let (chunks, receiver) = mpsc::channel::<Bytes>(16);
    std::thread::spawn(move || {
        let running = || follow && pod.running_containers().contains(&container);
        logs::stream(&path, &options, running, chunks);
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), receiver))
    });
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], Body::from_stream(body)).into_response())
}

/// What an exec request names, checked: the command and streams, the pod, and that the
/// container runs.
fn exec_target(
    server: &NodeServer,
    (namespace, name, container): &(String, String, String),
    query: &Option<String>,
    session: Session,
) -> Result<(Pod, ExecRequest), Refusal> {
    let pairs = query_pairs(query);
    let pairs = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let request = match session {
        Session::Exec => ExecRequest::parse(pairs),
        Session::Attach => ExecRequest::parse_attach(pairs),
    }
    .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let pod = find_pod(&server.runtime, namespace, name)?;
    if !pod.running_containers().contains(container) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {namespace}/{name} is not running"),
        ));
    }
    Ok((pod, request))
}

/// What a streaming request runs: a command in the container, or the container's own
/// process joined.
#[derive(Clone, Copy, PartialEq)]
enum Session {
    Exec,
    Attach,
}

/// An exec or attach session over a WebSocket (kubectl 1.30 and newer).
async fn over_websocket(
    State(server): State<Arc<NodeServer>>,
    Path(target): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
    session: Session,
) -> Result<Response, Refusal> {
    let upgrade = upgrade.protocols(exec::PROTOCOLS);
    if upgrade.selected_protocol().is_none() {
        let wanted = exec::PROTOCOLS.join(", ");
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("no subprotocol the node speaks was offered: {wanted}")));
    }
    let (pod, request) = exec_target(&server, &target, &query, session)?;
    let runtime = server.runtime.clone();
    Ok(upgrade.on_upgrade(move |socket| exec::serve(socket, runtime, pod, target.2, request)))
}

/// `kubectl port-forward`: SPDY/3.1 in `portforward.k8s.io` (a kubectl that asks for a
/// WebSocket first is refused and falls back to SPDY).
async fn port_forward(
    State(server): State<Arc<NodeServer>>,
    Path((namespace, name)): Path<(String, String)>,
    mut request: Request,
) -> Result<Response, Refusal> {
    if !offers_spdy(request.headers(), portforward::PROTOCOL) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("port forwarding needs SPDY/3.1 with {}", portforward::PROTOCOL),
        ));
    }
    let pod = find_pod(&server.runtime, &namespace, &name)?;
    if !pod.is_running() {
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("pod {namespace}/{name} is not running")));
    }
    let network = portforward::network_of(&pod);
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(io) = upgraded.await {
            portforward::serve(TokioIo::new(io), format!("{namespace}/{name}"), network).await;
        }
    });
    Ok(switched_to_spdy(portforward::PROTOCOL))
}

/// Whether the request asks to upgrade to SPDY/3.1 and offers `protocol` in it.
fn offers_spdy(headers: &axum::http::HeaderMap, protocol: &str) -> bool {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let offered = headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == protocol));
    upgrade.eq_ignore_ascii_case("SPDY/3.1") && offered
}

fn switched_to_spdy(protocol: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Body::empty())
        .expect("valid response")
}

/// The same over SPDY/3.1 (kubectl before 1.30, or `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`).
async fn over_spdy(
    State(server): State<Arc<NodeServer>>,
    Path(target): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    mut request: Request,
    session: Session,
) -> Result<Response, Refusal> {
    if !offers_spdy(request.headers(), spdy::PROTOCOL) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("exec needs a WebSocket ({}) or SPDY/3.1 with {}", exec::PROTOCOLS.join(", "), spdy::PROTOCOL),
        ));
    }
    let (pod, exec_request) = exec_target(&server, &target, &query, session)?;
    let runtime = server.runtime.clone();
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(io) = upgraded.await {
            spdy::serve(TokioIo::new(io), runtime, pod, target.2, exec_request).await;
        }
    });
    Ok(switched_to_spdy(spdy::PROTOCOL))
}
