//! The autoscaling group: horizontalpodautoscalers (autoscaling/v2), scaling a workload
//! through its scale subresource between a minimum and a maximum to meet its metrics (80 %
//! of requested CPU by default).

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricTarget, ResourceMetricSource,
};
use serde_json::Value;

use super::checks::one_of;
use super::columns::{self, AGE, NAME};
use super::{Cause, Column, Rules};

pub struct HorizontalPodAutoscalers;

fn policy(kind: &str, value: i32) -> HPAScalingPolicy {
    HPAScalingPolicy { type_: kind.into(), value, period_seconds: 15 }
}

impl Rules for HorizontalPodAutoscalers {
    type Object = HorizontalPodAutoscaler;
    const SHORT_NAMES: &'static [&'static str] = &["hpa"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn default(autoscaler: &mut HorizontalPodAutoscaler) {
        let Some(spec) = autoscaler.spec.as_mut() else { return };
        spec.min_replicas.get_or_insert(1);
        if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
            spec.metrics = Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(80),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]);
        }
        if let Some(behavior) = spec.behavior.as_mut() {
            let up = behavior.scale_up.get_or_insert_with(HPAScalingRules::default);
            up.stabilization_window_seconds.get_or_insert(0);
            up.select_policy.get_or_insert_with(|| "Max".into());
            up.policies.get_or_insert_with(|| vec![policy("Pods", 4), policy("Percent", 100)]);
            let down = behavior.scale_down.get_or_insert_with(HPAScalingRules::default);
            down.select_policy.get_or_insert_with(|| "Max".into());
            down.policies.get_or_insert_with(|| vec![policy("Percent", 100)]);
        }
    }

    fn prepare_for_create(autoscaler: &mut HorizontalPodAutoscaler) {
        autoscaler.status = None;
    }

    fn validate(autoscaler: &HorizontalPodAutoscaler) -> Vec<Cause> {
        let Some(spec) = autoscaler.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes = Vec::new();
        if spec.scale_target_ref.kind.is_empty() {
            causes.push(("spec.scaleTargetRef.kind".into(), "Required value".into()));
        }
        if spec.scale_target_ref.name.is_empty() {
            causes.push(("spec.scaleTargetRef.name".into(), "Required value".into()));
        }
        let min = spec.min_replicas.unwrap_or(1);
        if min < 1 {
            causes
                .push(("spec.minReplicas".into(), format!("Invalid value: {min}: must be greater than or equal to 1")));
        }
        if spec.max_replicas < 1 {
            causes.push((
                "spec.maxReplicas".into(),
                format!("Invalid value: {}: must be greater than 0", spec.max_replicas),
            ));
        } else if spec.max_replicas < min {
            causes.push((
                "spec.maxReplicas".into(),
                format!("Invalid value: {}: must be greater than or equal to `minReplicas`", spec.max_replicas),
            ));
        }
        for (i, metric) in spec.metrics.iter().flatten().enumerate() {
            let path = format!("spec.metrics[{i}]");
            let kinds = ["ContainerResource", "External", "Object", "Pods", "Resource"];
            causes.extend(one_of(&format!("{path}.type"), Some(&metric.type_), &kinds));
            let given = [
                ("Resource", metric.resource.is_some()),
                ("ContainerResource", metric.container_resource.is_some()),
                ("Pods", metric.pods.is_some()),
                ("Object", metric.object.is_some()),
                ("External", metric.external.is_some()),
            ];
            if !given.iter().any(|(kind, set)| *kind == metric.type_ && *set) && kinds.contains(&metric.type_.as_str())
            {
                let field = source_field(&metric.type_);
                causes.push((
                    format!("{path}.{field}"),
                    "Required value: must populate information for the given metric source".into(),
                ));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Reference", 0, |o| {
                let target = &o["spec"]["scaleTargetRef"];
                format!("{}/{}", target["kind"].as_str().unwrap_or(""), target["name"].as_str().unwrap_or("")).into()
            }),
            columns::string("Targets", 0, targets),
            columns::string("MinPods", 0, |o| {
                o["spec"]["minReplicas"].as_i64().map_or("<unset>".into(), |m| m.to_string().into())
            }),
            columns::integer("MaxPods", 0, |o| columns::count(&o["spec"]["maxReplicas"])),
            columns::integer("Replicas", 0, |o| columns::count(&o["status"]["currentReplicas"])),
            AGE,
        ]
    }
}

/// The field of a MetricSpec (and MetricStatus) that holds a metric of `kind`.
fn source_field(kind: &str) -> &'static str {
    match kind {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        _ => "external",
    }
}

/// The Targets column: each metric's current value against its target (two at most).
fn targets(autoscaler: &Value) -> Value {
    let metrics = autoscaler["spec"]["metrics"].as_array().cloned().unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = autoscaler["status"]["currentMetrics"].as_array().cloned().unwrap_or_default();
    let shown: Vec<String> = metrics
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, metric)| {
            let field = source_field(metric["type"].as_str().unwrap_or(""));
            let source = &metric[field];
            let target = &source["target"];
            let now = current.get(i).map(|c| &c[field]["current"]);
            match target["averageUtilization"].as_i64() {
                Some(goal) => {
                    let now = now
                        .and_then(|c| c["averageUtilization"].as_i64())
                        .map_or("<unknown>".into(), |c| format!("{c}%"));
                    format!("{}: {now}/{goal}%", source["name"].as_str().unwrap_or(""))
                }
                None => {
                    let goal = target["averageValue"].as_str().or(target["value"].as_str()).unwrap_or("<auto>");
                    let now =
                        now.and_then(|c| c["averageValue"].as_str().or(c["value"].as_str())).unwrap_or("<unknown>");
                    format!("{now}/{goal}")
                }
            }
        })
        .collect();
    let more = metrics.len().saturating_sub(2);
    if more > 0 { format!("{} + {more} more...", shown.join(", ")).into() } else { shown.join(", ").into() }
}
