//! The node's HTTP endpoint, on kubelet's paths, for the API server to proxy `kubectl
//! logs` and `kubectl exec` to: `/containerLogs/{namespace}/{pod}/{container}` and
//! `/exec/{namespace}/{pod}/{container}` (WebSocket), plus `/healthz`. Pods are found by
//! namespace and name among those the runtime has on this node.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runtime::{Pod, Runtime};
use tokio::sync::mpsc;

use super::exec::{self, ExecRequest};
use super::logs::{self, LogOptions};

pub struct NodeServer {
    pub runtime: Runtime,
    /// Bearer tokens accepted; `None`: no authentication.
    pub tokens: Option<HashSet<String>>,
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
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(spdy))
        .layer(middleware::from_fn_with_state(server.clone(), authenticate))
        .with_state(server)
}

async fn authenticate(State(server): State<Arc<NodeServer>>, request: Request, next: Next) -> Response {
    if !crate::tokens::admits(server.tokens.as_ref(), request.headers()) {
        return Refusal(StatusCode::UNAUTHORIZED, "Unauthorized".into()).into_response();
    }
    next.run(request).await
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

async fn exec(
    State(server): State<Arc<NodeServer>>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let pairs = query_pairs(&query);
    let request = ExecRequest::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let upgrade = upgrade.protocols(exec::PROTOCOLS);
    if upgrade.selected_protocol().is_none() {
        let wanted = exec::PROTOCOLS.join(", ");
        return Err(Refusal(StatusCode::BAD_REQUEST, format!("no subprotocol the node speaks was offered: {wanted}")));
    }
    let runtime = server.runtime.clone();
    let pod = find_pod(&runtime, &namespace, &name)?;
    if !pod.running_containers().contains(&container) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {namespace}/{name} is not running"),
        ));
    }
    Ok(upgrade.on_upgrade(move |socket| exec::serve(socket, runtime, pod, container, request)))
}

/// kubectl before 1.30 (and `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`) exec over SPDY.
async fn spdy() -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        "this node serves exec over WebSocket (v5.channel.k8s.io) only, not SPDY: use kubectl 1.30 or newer".into(),
    )
}
