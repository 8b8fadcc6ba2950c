//! The resource metrics API, `metrics.k8s.io/v1beta1` (what metrics-server serves behind
//! the aggregator, served here directly): NodeMetrics and PodMetrics made at each request
//! from the nodes' summary APIs (`/stats/summary`), so that `kubectl top` and the HPA work.
//! Nothing is stored; a node that cannot be reached, or has no rate yet, is left out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::errors::ApiError;
use super::http::{Query, Shared};
use super::registry::{Cause, Decoded, FieldLabel, ResourceInfo, Strategy};
use super::rest::{self, Target};
use super::selectors::Selector;

pub const GROUP: &str = "metrics.k8s.io";
const VERSION: &str = "v1beta1";

/// The window a node's rates are measured over (its sampling interval).
const WINDOW: &str = "10s";

/// How long a node has to send its summary.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// `nodes` or `pods` of metrics.k8s.io: read-only, made on request.
pub struct MetricsResource {
    info: ResourceInfo,
}

impl MetricsResource {
    pub fn shared(plural: &str, kind: &str, namespaced: bool) -> Arc<dyn Strategy> {
        Arc::new(MetricsResource {
            info: ResourceInfo {
                group: GROUP.into(),
                version: VERSION.into(),
                plural: plural.into(),
                kind: kind.into(),
                namespaced,
                short_names: vec![],
                categories: vec![],
                subresources: vec![],
                verbs: vec!["get".into(), "list".into()],
                storage_group: None,
            },
        })
    }
}

impl Strategy for MetricsResource {
    fn info(&self) -> &ResourceInfo {
        &self.info
    }

    fn decode(&self, _: Value) -> Result<Decoded, ApiError> {
        Err(ApiError::method_not_allowed("POST"))
    }

    fn prepare_create(&self, _: &mut Value) -> Vec<Cause> {
        vec![]
    }

    fn prepare_update(&self, _: &mut Value, _: &Value) -> Vec<Cause> {
        vec![]
    }

    fn prepare_status_update(&self, _: &mut Value, _: &Value) -> Vec<Cause> {
        vec![]
    }

    fn tracks_generation(&self) -> bool {
        false
    }

    fn column_definitions(&self) -> Vec<Value> {
        vec![]
    }

    fn cells(&self, _: &Value) -> Vec<Value> {
        vec![]
    }

    fn field_labels(&self) -> &[FieldLabel] {
        &[]
    }

    fn is_stored(&self) -> bool {
        false
    }

    fn has_protobuf(&self) -> bool {
        false
    }
}

/// A usage as metrics-server writes it: CPU in nanocores, memory in KiB.
fn usage(stats: &Value) -> Option<Value> {
    let cpu = stats["cpu"]["usageNanoCores"].as_u64()?;
    let memory = stats["memory"]["workingSetBytes"].as_u64()?;
    Some(json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", memory / 1024)}))
}

fn metadata(name: &str, namespace: Option<&str>, labels: &Value) -> Value {
    let mut meta = json!({"name": name, "creationTimestamp": crate::client::now()});
    if let Some(namespace) = namespace {
        meta["namespace"] = namespace.into();
    }
    if labels.is_object() {
        meta["labels"] = labels.clone();
    }
    meta
}

/// NodeMetrics of a node, from its summary.
pub fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let name = node["metadata"]["name"].as_str()?;
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(name, None, &node["metadata"]["labels"]),
        "timestamp": summary["node"]["cpu"]["time"], "window": WINDOW,
        "usage": usage(&summary["node"])?,
    }))
}

/// PodMetrics of a pod of the API, from its node's summary.
pub fn pod_metrics(pod: &Value, summary: &Value) -> Option<Value> {
    let uid = pod["metadata"]["uid"].as_str()?;
    let stats = summary["pods"].as_array()?.iter().find(|p| p["podRef"]["uid"] == uid)?;
    let containers: Vec<Value> = stats["containers"]
        .as_array()?
        .iter()
        .filter_map(|c| Some(json!({"name": c["name"], "usage": usage(c)?})))
        .collect();
    Some(json!({
        "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod["metadata"]["name"].as_str()?, pod["metadata"]["namespace"].as_str(), &pod["metadata"]["labels"]),
        "timestamp": stats["cpu"]["time"], "window": WINDOW,
        "containers": containers,
    }))
}

/// The summaries of `nodes`, asked at once; a node that does not answer is left out.
async fn summaries(server: &Shared, nodes: &[Value]) -> Vec<(String, Value)> {
    let asks = nodes.iter().map(|node| async move {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let summary =
            tokio::time::timeout(NODE_TIMEOUT, super::node_proxy::get_json(server, node, "/stats/summary")).await;
        match summary {
            Ok(Ok(summary)) => Some((name, summary)),
            Ok(Err(e)) => {
                tracing::debug!("the summary of node {name}: {}", e.message);
                None
            }
            Err(_) => None,
        }
    });
    futures_util::future::join_all(asks).await.into_iter().flatten().collect()
}

fn items_of(list: Value) -> Vec<Value> {
    match list {
        Value::Object(mut list) => match list.remove("items") {
            Some(Value::Array(items)) => items,
            _ => vec![],
        },
        _ => vec![],
    }
}

/// A GET of `target` (one object when it names one, else the list), as metrics-server
/// answers it; `labelSelector` filters by the objects' labels.
pub async fn get(server: &Shared, target: &Target, query: &Query) -> Result<Value, ApiError> {
    let info = target.info();
    let nodes_resource = server.registry.find("", "v1", "nodes").expect("nodes are served");
    let nodes = items_of(rest::list(server, &Target::collection(nodes_resource, None), &Query::default())?);
    let mut items = Vec::new();
    if info.plural == "nodes" {
        let wanted: Vec<Value> = match &target.name {
            Some(name) => nodes.into_iter().filter(|n| n["metadata"]["name"] == name.as_str()).collect(),
            None => nodes,
        };
        for (name, summary) in summaries(server, &wanted).await {
            let node = wanted.iter().find(|n| n["metadata"]["name"] == name.as_str()).expect("asked");
            items.extend(node_metrics(node, &summary));
        }
    } else {
        let pods_resource = server.registry.find("", "v1", "pods").expect("pods are served");
        let pods = items_of(rest::list(
            server,
            &Target::collection(pods_resource, target.namespace.as_deref()),
            &Query::default(),
        )?);
        let pods: Vec<Value> = match &target.name {
            Some(name) => pods.into_iter().filter(|p| p["metadata"]["name"] == name.as_str()).collect(),
            None => pods,
        };
        let hosting: Vec<Value> =
            nodes.into_iter().filter(|n| pods.iter().any(|p| p["spec"]["nodeName"] == n["metadata"]["name"])).collect();
        let summaries = summaries(server, &hosting).await;
        for pod in &pods {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            if let Some((_, summary)) = summaries.iter().find(|(name, _)| name == node) {
                items.extend(pod_metrics(pod, summary));
            }
        }
    }
    if let Some(selector) = query.get("labelSelector").filter(|s| !s.is_empty()) {
        let selector = Selector::parse(Some(selector), None, &target.strategy)?;
        items.retain(|item| selector.matches(item));
    }
    match &target.name {
        Some(name) => items.pop().ok_or_else(|| ApiError::not_found(&rest::qualified_resource(info), name)),
        None => Ok(json!({
            "kind": format!("{}List", info.kind), "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {}, "items": items,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_the_summary_in_nanocores_and_kibibytes() {
        let summary = json!({
            "node": {"cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 250000000}, "memory": {"workingSetBytes": 2097152}},
            "pods": [{"podRef": {"uid": "u1"}, "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 5},
                "containers": [{"name": "web", "cpu": {"usageNanoCores": 5}, "memory": {"workingSetBytes": 4096}},
                               {"name": "new", "cpu": {}, "memory": {"workingSetBytes": 4096}}]}],
        });
        let node = json!({"metadata": {"name": "a", "labels": {"role": "x"}}});
        let metrics = node_metrics(&node, &summary).unwrap();
        assert_eq!(metrics["usage"], json!({"cpu": "250000000n", "memory": "2048Ki"}));
        assert_eq!(metrics["metadata"]["labels"]["role"], "x");
        let pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u1"}});
        let metrics = pod_metrics(&pod, &summary).unwrap();
        assert_eq!(metrics["containers"], json!([{"name": "web", "usage": {"cpu": "5n", "memory": "4Ki"}}]));
        let other = json!({"metadata": {"name": "q", "namespace": "default", "uid": "u2"}});
        assert!(pod_metrics(&other, &summary).is_none());
        assert!(node_metrics(&node, &json!({"node": {"cpu": {}}})).is_none(), "no rate yet");
    }
}
