//! The HorizontalPodAutoscaler controller (kube-controller-manager's horizontalpodautoscaling,
//! autoscaling/v2 Resource metrics): every 15 s, each autoscaler's target is read through
//! its scale subresource, its pods' CPU or memory through metrics.k8s.io, and the replicas
//! that bring use to the target are computed as kube's replica calculator does (a ratio
//! within 10 % of 1 changes nothing); recommendations are stabilized (the highest of the
//! scale-down window, the lowest of the scale-up one), limited by the behavior's policies
//! and the bounds, written to the scale subresource, and told in the status.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use crate::events::{Event, Involved, Recorder};
use crate::quantity::Quantity;

/// How often every autoscaler is looked at (--horizontal-pod-autoscaler-sync-period).
const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// A usage ratio this close to 1 changes nothing (--horizontal-pod-autoscaler-tolerance).
const TOLERANCE: f64 = 0.1;

/// One Resource metric's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// The resource (`cpu`, `memory`).
    pub name: String,
    /// The replicas it asks for.
    pub replicas: i32,
    /// Use as a percentage of the request, when the target is a utilization.
    pub utilization: Option<i32>,
    /// Average use per pod, as a quantity.
    pub average: String,
}

/// The replicas a Resource metric asks for, from the pods' use (`usage`: name → summed
/// over containers, millicores or bytes) and requests, given `current` replicas.
pub fn replicas_for(
    metric: &MetricSpec,
    current: i32,
    pods: &[&Pod],
    usage: &HashMap<String, i128>,
) -> Result<Measured, String> {
    let source = metric.resource.as_ref().filter(|_| metric.type_ == "Resource");
    let source = source.ok_or_else(|| format!("metrics of type {} are not supported", metric.type_))?;
    let name = source.name.as_str();
    let measured: Vec<(&Pod, i128)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| Some((*p, *usage.get(p.metadata.name.as_deref()?)?)))
        .collect();
    if measured.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {name}: no metrics returned from resource metrics API"
        ));
    }
    let total: i128 = measured.iter().map(|(_, u)| u).sum();
    let count = measured.len() as f64;
    let scale = |q: Quantity| if name == "cpu" { q.millis() } else { q.units() };
    let average = total / measured.len() as i128;
    let shown = if name == "cpu" { format!("{average}m") } else { average.to_string() };
    let target = &source.target;
    let (ratio, utilization) = match target.type_.as_str() {
        "Utilization" => {
            let mut requested = 0;
            for (pod, _) in &measured {
                for container in &pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default() {
                    let request =
                        container.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(name));
                    let request = request.and_then(|q| Quantity::parse(&q.0)).map(scale).ok_or_else(|| {
                        format!(
                            "failed to get {name} utilization: missing request for {name} in container {} of Pod {}",
                            container.name,
                            pod.metadata.name.as_deref().unwrap_or_default()
                        )
                    })?;
                    requested += request;
                }
            }
            let utilization = (total * 100 / requested.max(1)) as i32;
            let wanted = target.average_utilization.unwrap_or(80).max(1);
            (utilization as f64 / wanted as f64, Some(utilization))
        }
        "AverageValue" => {
            let wanted =
                target.average_value.as_ref().and_then(|q| Quantity::parse(&q.0)).map(scale).unwrap_or(0).max(1);
            (total as f64 / count / wanted as f64, None)
        }
        other => return Err(format!("a {name} target of type {other} is not supported")),
    };
    let replicas = if (ratio - 1.0).abs() <= TOLERANCE { current } else { (ratio * count).ceil() as i32 };
    Ok(Measured { name: name.to_string(), replicas, utilization, average: shown })
}

/// What the behavior's policies let the replicas reach from `current` (kube's
/// calculateScaleUpLimitWithScalingRules and its scale-down twin): each policy counts from
/// the replicas there were at the start of its period, given the changes of `events`
/// (when, by how many) within it; the most (or least, per selectPolicy) any allows.
fn limited(
    current: i32,
    desired: i32,
    up: &HPAScalingRules,
    down: &HPAScalingRules,
    events: &[(Instant, i32)],
    now: Instant,
) -> i32 {
    let scaling_up = desired > current;
    let rules = if scaling_up { up } else { down };
    if desired == current || rules.select_policy.as_deref() == Some("Disabled") {
        return current;
    }
    let bounds: Vec<i32> = rules
        .policies
        .iter()
        .flatten()
        .map(|p| {
            let period = Duration::from_secs(p.period_seconds.max(1) as u64);
            let changed: i32 = events
                .iter()
                .filter(|(at, change)| now.duration_since(*at) <= period && (*change > 0) == scaling_up)
                .map(|(_, change)| change.abs())
                .sum();
            let value = p.value as f64 / 100.0;
            if scaling_up {
                let start = current - changed;
                let bound =
                    if p.type_ == "Pods" { start + p.value } else { (start as f64 * (1.0 + value)).ceil() as i32 };
                bound.max(current)
            } else {
                let start = current + changed;
                let bound = if p.type_ == "Pods" { start - p.value } else { (start as f64 * (1.0 - value)) as i32 };
                bound.min(current)
            }
        })
        .collect();
    let least = rules.select_policy.as_deref() == Some("Min");
    let bound = match (scaling_up, least) {
        (true, false) | (false, true) => bounds.iter().max(),
        (true, true) | (false, false) => bounds.iter().min(),
    };
    match bound {
        Some(&bound) if scaling_up => desired.min(bound),
        Some(&bound) => desired.max(bound),
        None => desired,
    }
}

/// The default behavior (kube's, with the scale-down window of the controller's flag).
fn behavior(autoscaler: &HorizontalPodAutoscaler, down_window: Duration) -> (HPAScalingRules, HPAScalingRules) {
    let behavior = autoscaler.spec.as_ref().and_then(|s| s.behavior.clone()).unwrap_or_default();
    let policy = |kind: &str, value| k8s_openapi::api::autoscaling::v2::HPAScalingPolicy {
        type_: kind.into(),
        value,
        period_seconds: 15,
    };
    let mut up = behavior.scale_up.unwrap_or_default();
    up.stabilization_window_seconds.get_or_insert(0);
    up.policies.get_or_insert_with(|| vec![policy("Pods", 4), policy("Percent", 100)]);
    let mut down = behavior.scale_down.unwrap_or_default();
    down.stabilization_window_seconds.get_or_insert(down_window.as_secs() as i32);
    down.policies.get_or_insert_with(|| vec![policy("Percent", 100)]);
    (up, down)
}

/// Recommendations of the last windows, and the scalings of the last periods, per
/// autoscaler.
#[derive(Default)]
struct History {
    recommendations: Mutex<HashMap<String, VecDeque<(Instant, i32)>>>,
    scalings: Mutex<HashMap<String, Vec<(Instant, i32)>>>,
}

/// Scalings older than this count in no policy's period.
const LONGEST_PERIOD: Duration = Duration::from_secs(1800);

impl History {
    /// The stabilized recommendation: at most the lowest of the scale-up window, at least
    /// the highest of the scale-down window (kube's stabilizeRecommendationWithBehaviors).
    fn stabilize(&self, uid: &str, recommended: i32, current: i32, up: Duration, down: Duration) -> i32 {
        let now = Instant::now();
        let mut all = self.recommendations.lock().expect("history");
        let history = all.entry(uid.to_string()).or_default();
        history.push_back((now, recommended));
        let longest = up.max(down);
        while history.front().is_some_and(|(at, _)| now.duration_since(*at) > longest) {
            history.pop_front();
        }
        let within =
            |window: Duration| history.iter().filter(move |(at, _)| now.duration_since(*at) <= window).map(|(_, r)| *r);
        let up_limit = within(up).min().unwrap_or(recommended);
        let down_limit = within(down).max().unwrap_or(recommended);
        if recommended > current { up_limit.max(current) } else { down_limit.min(current) }
    }

    /// The scalings of an autoscaler within the longest period.
    fn scalings(&self, uid: &str, now: Instant) -> Vec<(Instant, i32)> {
        let mut all = self.scalings.lock().expect("history");
        let events = all.entry(uid.to_string()).or_default();
        events.retain(|(at, _)| now.duration_since(*at) <= LONGEST_PERIOD);
        events.clone()
    }

    fn scaled(&self, uid: &str, at: Instant, change: i32) {
        self.scalings.lock().expect("history").entry(uid.to_string()).or_default().push((at, change));
    }

    fn keep(&self, live: &[String]) {
        self.recommendations.lock().expect("history").retain(|uid, _| live.contains(uid));
        self.scalings.lock().expect("history").retain(|uid, _| live.contains(uid));
    }
}

/// Scales until the process ends; `down_window` is the default scale-down stabilization
/// (--horizontal-pod-autoscaler-downscale-stabilization).
pub fn start(client: Client, informers: &Arc<Informers>, down_window: Duration) {
    let wake = Arc::new(Notify::new());
    informers.autoscalers().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), "horizontal-pod-autoscaler", None));
    let history = Arc::new(History::default());
    super::level_triggered(wake, move || {
        let (client, informers, recorder, history) =
            (client.clone(), informers.clone(), recorder.clone(), history.clone());
        async move {
            if !(informers.autoscalers().ready().await && informers.pods().ready().await) {
                return None;
            }
            let autoscalers = informers.autoscalers().all();
            let pods = informers.pods().all();
            for autoscaler in &autoscalers {
                reconcile(&client, &recorder, &history, autoscaler, &pods, down_window).await;
            }
            history.keep(&autoscalers.iter().filter_map(|a| a.metadata.uid.clone()).collect::<Vec<_>>());
            Some(SYNC_PERIOD)
        }
    });
}

/// The scalable kinds, as scaleTargetRef names them.
fn resource_of(api_version: &str, kind: &str) -> Option<ApiResource> {
    let plural = match kind {
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "StatefulSet" => "statefulsets",
        "ReplicationController" => "replicationcontrollers",
        _ => return None,
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Some(ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural))
}

async fn reconcile(
    client: &Client,
    recorder: &Recorder,
    history: &History,
    autoscaler: &HorizontalPodAutoscaler,
    pods: &[Arc<Pod>],
    down_window: Duration,
) {
    let namespace = autoscaler.metadata.namespace.clone().unwrap_or_default();
    let name = autoscaler.metadata.name.clone().unwrap_or_default();
    let spec = autoscaler.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let involved = Involved::of(autoscaler);
    let mut conditions: BTreeMap<&str, (&str, String, String)> = BTreeMap::new();
    let status = |conditions: &BTreeMap<&str, (&str, String, String)>,
                  current: i32,
                  desired: i32,
                  metrics: Vec<Value>,
                  scaled: bool| {
        let now = crate::client::now();
        let previous = autoscaler.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|(kind, (state, reason, message))| {
                let since = previous
                    .iter()
                    .find(|c| c.type_ == *kind && c.status == *state)
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map_or_else(|| now.clone(), |t| t.0.to_string());
                json!({"type": kind, "status": state, "reason": reason, "message": message, "lastTransitionTime": since})
            })
            .collect();
        let mut status = json!({"currentReplicas": current, "desiredReplicas": desired, "currentMetrics": metrics,
            "conditions": conditions, "observedGeneration": autoscaler.metadata.generation});
        let last = autoscaler.status.as_ref().and_then(|s| s.last_scale_time.as_ref()).map(|t| t.0.to_string());
        status["lastScaleTime"] = if scaled { now.into() } else { last.into() };
        status
    };
    let Some(resource) = resource_of(&target.api_version.clone().unwrap_or_default(), &target.kind) else {
        let message = format!(
            "the HPA controller was unable to get the target's current scale: no scale subresource for {}",
            target.kind
        );
        conditions.insert("AbleToScale", ("False", "FailedGetScale".into(), message.clone()));
        recorder.record(&involved, &Event::warning("FailedGetScale", message)).await;
        write_status(client, &namespace, &name, status(&conditions, 0, 0, vec![], false)).await;
        return;
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let scale = match api.get_scale(&target.name).await {
        Ok(scale) => scale,
        Err(e) => {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: {}",
                crate::client::message(&e)
            );
            conditions.insert("AbleToScale", ("False", "FailedGetScale".into(), message.clone()));
            recorder.record(&involved, &Event::warning("FailedGetScale", message)).await;
            write_status(client, &namespace, &name, status(&conditions, 0, 0, vec![], false)).await;
            return;
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    conditions.insert(
        "AbleToScale",
        ("True", "SucceededGetScale".into(), "the HPA controller was able to get the target's current scale".into()),
    );
    if current == 0 {
        conditions.insert(
            "ScalingActive",
            (
                "False",
                "ScalingDisabled".into(),
                "scaling is disabled since the replica count of the target is zero".into(),
            ),
        );
        write_status(client, &namespace, &name, status(&conditions, 0, 0, vec![], false)).await;
        return;
    }
    let (usage, mut failure) = match pod_usage(client, &namespace, &selector).await {
        Ok(usage) => (usage, None),
        Err(message) => (HashMap::new(), Some(format!("unable to get metrics from resource metrics API: {message}"))),
    };
    let owned: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| p.metadata.namespace.as_deref() == Some(&namespace))
        .filter(|p| usage.values().any(|by_pod| by_pod.contains_key(p.metadata.name.as_deref().unwrap_or_default())))
        .collect();
    let mut desired: Option<i32> = None;
    let mut metrics = Vec::new();
    for metric in spec.metrics.iter().flatten() {
        let name_of = metric.resource.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let empty = HashMap::new();
        match replicas_for(metric, current, &owned, usage.get(&name_of).unwrap_or(&empty)) {
            Ok(measured) => {
                desired = Some(desired.map_or(measured.replicas, |d| d.max(measured.replicas)));
                let mut current_value = json!({"averageValue": measured.average});
                if let Some(utilization) = measured.utilization {
                    current_value["averageUtilization"] = utilization.into();
                }
                metrics
                    .push(json!({"type": "Resource", "resource": {"name": measured.name, "current": current_value}}));
            }
            Err(message) => failure = Some(message),
        }
    }
    let Some(recommended) = desired else {
        let message = failure.unwrap_or_else(|| "no metrics to scale on".into());
        conditions.insert("ScalingActive", ("False", "FailedGetResourceMetric".into(), message.clone()));
        recorder.record(&involved, &Event::warning("FailedGetResourceMetric", message)).await;
        write_status(client, &namespace, &name, status(&conditions, current, current, metrics, false)).await;
        return;
    };
    conditions.insert(
        "ScalingActive",
        (
            "True",
            "ValidMetricFound".into(),
            "the HPA was able to successfully calculate a replica count from resource metrics".into(),
        ),
    );
    let (up, down) = behavior(autoscaler, down_window);
    let window =
        |rules: &HPAScalingRules| Duration::from_secs(rules.stabilization_window_seconds.unwrap_or(0).max(0) as u64);
    let uid = autoscaler.metadata.uid.clone().unwrap_or_default();
    let stabilized = history.stabilize(&uid, recommended, current, window(&up), window(&down));
    let now = Instant::now();
    let stepped = limited(current, stabilized, &up, &down, &history.scalings(&uid, now), now);
    let (min, max) = (spec.min_replicas.unwrap_or(1).max(1), spec.max_replicas.max(1));
    let bounded = stepped.clamp(min, max);
    if bounded != stepped || recommended > max || recommended < min {
        let (reason, message) = if recommended > max {
            ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
        } else if recommended < min {
            ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
        } else {
            ("DesiredWithinRange", "the desired count is within the acceptable range")
        };
        conditions.insert(
            "ScalingLimited",
            (if reason == "DesiredWithinRange" { "False" } else { "True" }, reason.into(), message.into()),
        );
    } else {
        conditions.insert(
            "ScalingLimited",
            ("False", "DesiredWithinRange".into(), "the desired count is within the acceptable range".into()),
        );
    }
    let mut scaled = false;
    if bounded != current {
        let patch = json!({"spec": {"replicas": bounded}});
        match api.patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                scaled = true;
                history.scaled(&uid, now, bounded - current);
                let reason = match metrics.first() {
                    Some(m) if bounded > current => format!(
                        "{} resource utilization (percentage of request) above target",
                        m["resource"]["name"].as_str().unwrap_or("")
                    ),
                    Some(m) => format!(
                        "All metrics below target; {} resource utilization (percentage of request)",
                        m["resource"]["name"].as_str().unwrap_or("")
                    ),
                    None => String::new(),
                };
                recorder
                    .record(
                        &involved,
                        &Event::normal("SuccessfulRescale", format!("New size: {bounded}; reason: {reason}")),
                    )
                    .await;
                conditions.insert(
                    "AbleToScale",
                    (
                        "True",
                        "SucceededRescale".into(),
                        format!("the HPA controller was able to update the target scale to {bounded}"),
                    ),
                );
            }
            Err(e) => {
                let message =
                    format!("the HPA controller was unable to update the target scale: {}", crate::client::message(&e));
                conditions.insert("AbleToScale", ("False", "FailedUpdateScale".into(), message.clone()));
                recorder.record(&involved, &Event::warning("FailedRescale", message)).await;
            }
        }
    }
    write_status(client, &namespace, &name, status(&conditions, current, bounded, metrics, scaled)).await;
}

/// The use of the pods of `selector`, per resource then pod: CPU in millicores, memory in
/// bytes, summed over containers, from metrics.k8s.io.
async fn pod_usage(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<HashMap<String, HashMap<String, i128>>, String> {
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("labelSelector", selector).finish();
    let request = axum::http::Request::get(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?{query}"))
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let list: Value = client.request(request).await.map_err(|e| crate::client::message(&e))?;
    let mut usage: HashMap<String, HashMap<String, i128>> = HashMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let pod = item["metadata"]["name"].as_str().unwrap_or_default().to_string();
        for container in item["containers"].as_array().into_iter().flatten() {
            for (resource, quantity) in container["usage"].as_object().into_iter().flatten() {
                let Some(quantity) = quantity.as_str().and_then(Quantity::parse) else { continue };
                let amount = if resource == "cpu" { quantity.millis() } else { quantity.units() };
                *usage.entry(resource.clone()).or_default().entry(pod.clone()).or_default() += amount;
            }
        }
    }
    Ok(usage)
}

async fn write_status(client: &Client, namespace: &str, name: &str, status: Value) {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"status": status});
    super::report(
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await,
        "horizontalpodautoscaler",
        name,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(kind: &str, utilization: i32) -> MetricSpec {
        serde_json::from_value(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": kind, "averageUtilization": utilization, "averageValue": "100m"}}}))
        .unwrap()
    }

    fn pod(name: &str, request: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": request}}}]},
            "status": {"phase": "Running"}}))
        .unwrap()
    }

    #[test]
    fn replicas_follow_use_against_the_target_with_a_tolerance() {
        let pods = [pod("a", "100m"), pod("b", "100m")];
        let refs: Vec<&Pod> = pods.iter().collect();
        let busy = HashMap::from([("a".to_string(), 150), ("b".to_string(), 150)]);
        let measured = replicas_for(&metric("Utilization", 50), 2, &refs, &busy).unwrap();
        assert_eq!((measured.replicas, measured.utilization), (6, Some(150)));
        let near = HashMap::from([("a".to_string(), 52), ("b".to_string(), 52)]);
        assert_eq!(replicas_for(&metric("Utilization", 50), 2, &refs, &near).unwrap().replicas, 2, "within 10 %");
        let idle = HashMap::from([("a".to_string(), 1), ("b".to_string(), 1)]);
        assert_eq!(replicas_for(&metric("Utilization", 50), 2, &refs, &idle).unwrap().replicas, 1);
        assert_eq!(replicas_for(&metric("AverageValue", 0), 2, &refs, &busy).unwrap().replicas, 3);
        let unrequested = [
            pod("a", "100m"),
            serde_json::from_value(json!({"metadata": {"name": "b"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}))
            .unwrap(),
        ];
        let error =
            replicas_for(&metric("Utilization", 50), 2, &unrequested.iter().collect::<Vec<_>>(), &busy).unwrap_err();
        assert!(error.contains("missing request for cpu in container c of Pod b"), "{error}");
    }

    #[test]
    fn steps_are_limited_by_policies_and_scale_down_is_stabilized() {
        let empty = HorizontalPodAutoscaler::default();
        let (up, down) = behavior(&empty, Duration::from_secs(300));
        let now = Instant::now();
        assert_eq!(limited(2, 20, &up, &down, &[], now), 6, "4 pods or 100 %: the most");
        assert_eq!(limited(10, 1, &up, &down, &[], now), 1, "100 % down");
        // One pod per 10 minutes: a scaling 5 minutes ago leaves no room; 11 minutes ago, one.
        let slow: HPAScalingRules = serde_json::from_value(json!({"selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]}))
        .unwrap();
        let ago = |seconds| now - Duration::from_secs(seconds);
        assert_eq!(limited(3, 8, &slow, &down, &[(ago(300), 1)], now), 3);
        assert_eq!(limited(3, 8, &slow, &down, &[(ago(660), 1)], now), 4);
        let history = History::default();
        let (up_window, down_window) = (Duration::ZERO, Duration::from_secs(300));
        assert_eq!(history.stabilize("h", 5, 5, up_window, down_window), 5);
        assert_eq!(history.stabilize("h", 2, 5, up_window, down_window), 5, "5 was recommended within the window");
        assert_eq!(history.stabilize("h", 8, 5, up_window, down_window), 8, "scaling up is not held back");
    }
}
