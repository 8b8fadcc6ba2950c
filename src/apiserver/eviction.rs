//! `pods/eviction` (policy/v1 Eviction), as kube-apiserver's EvictionREST runs it: a pod
//! is deleted unless that would take its PodDisruptionBudget below what it must keep.
//! A terminal, pending or already terminating pod goes at once; otherwise its budget
//! (the one whose selector matches it; more than one is an error) must allow a
//! disruption, which the eviction takes (status.disruptionsAllowed less one, the pod in
//! status.disruptedPods) before the pod gets its DisruptionTarget condition and is deleted.
//! What a budget allows is the disruption controller's to count; a budget it has not yet
//! counted (observedGeneration behind) allows nothing.

use serde_json::{Value, json};

use super::errors::ApiError;
use super::http::{Query, Shared};
use super::objects::{self, Validation};
use super::rest::{self, DeleteOptions, Target};
use super::selectors::Selector;

/// An eviction of pod `name` (`target` is the pod), with the Eviction's delete options.
pub async fn evict(
    server: &Shared,
    target: &Target,
    name: &str,
    eviction: &Value,
    query: &Query,
) -> Result<Value, ApiError> {
    if eviction["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let options = DeleteOptions::read(&eviction["deleteOptions"], query)?;
    let pod = rest::get(server, target, name)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let terminating = pod["metadata"].get("deletionTimestamp").is_some();
    let ignores_budgets = matches!(phase, "Succeeded" | "Failed" | "Pending") || terminating;
    if !ignores_budgets {
        let budgets = budgets_of(server, target, &pod)?;
        match budgets.as_slice() {
            [] => {}
            [budget] if !is_ready(&pod) && budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" => {}
            [budget]
                if !is_ready(&pod)
                    && budget["status"]["desiredHealthy"].as_i64().unwrap_or(0) > 0
                    && budget["status"]["currentHealthy"].as_i64() >= budget["status"]["desiredHealthy"].as_i64() => {}
            [budget] => take_disruption(server, target, budget, name, &options, query).await?,
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        }
        if !options.dry_run {
            mark_disruption_target(server, target, name, query).await?;
        }
    }
    rest::delete(server, target, name, &options, query).await?;
    Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The budgets of the pod's namespace whose selector matches it (an empty selector
/// matches nothing).
fn budgets_of(server: &Shared, pod_target: &Target, pod: &Value) -> Result<Vec<Value>, ApiError> {
    let strategy = server.registry.find("policy", "v1", "poddisruptionbudgets").expect("policy/v1 is served");
    let budgets = Target::collection(strategy, pod_target.namespace.as_deref());
    let listed = rest::list(server, &budgets, &Query::default())?;
    let matches =
        |budget: &Value| Selector::of_label_selector(&budget["spec"]["selector"]).is_some_and(|s| s.matches(pod));
    Ok(listed["items"].as_array().into_iter().flatten().filter(|b| matches(b)).cloned().collect())
}

fn too_many_requests(retry_after: u64, cause: String) -> ApiError {
    ApiError::too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        retry_after,
        json!([{"type": "DisruptionBudget", "message": cause}]),
    )
}

/// checkAndDecrement: one disruption of `budget` taken for pod `pod`, written to the
/// budget's status (retried on a conflicting write).
async fn take_disruption(
    server: &Shared,
    pod_target: &Target,
    budget: &Value,
    pod: &str,
    options: &DeleteOptions,
    query: &Query,
) -> Result<(), ApiError> {
    let name = budget["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let strategy = server.registry.find("policy", "v1", "poddisruptionbudgets").expect("policy/v1 is served");
    let mut target = Target::collection(strategy, pod_target.namespace.as_deref());
    target.subresource = Some("status".into());
    target.writer = pod_target.writer.clone();
    let decrement = |current: &Value| -> Result<Value, ApiError> {
        let status = &current["status"];
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
        if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
            return Err(too_many_requests(
                10,
                format!("The disruption budget {name} is still being processed by the server."),
            ));
        }
        let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(ApiError::forbidden(
                "poddisruptionbudgets.policy",
                &name,
                "pdb disruptions allowed is negative",
            ));
        }
        if allowed == 0 {
            return Err(too_many_requests(
                0,
                format!(
                    "The disruption budget {name} needs {} healthy pods and has {} currently",
                    status["desiredHealthy"].as_i64().unwrap_or(0),
                    status["currentHealthy"].as_i64().unwrap_or(0)
                ),
            ));
        }
        let mut next = current.clone();
        next["status"]["disruptionsAllowed"] = (allowed - 1).into();
        if allowed == 1 {
            set_condition(
                &mut next,
                json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
                       "message": "", "observedGeneration": generation, "lastTransitionTime": objects::now()}),
            );
        }
        next["status"]["disruptedPods"][pod] = objects::now().into();
        Ok(next)
    };
    if options.dry_run {
        return decrement(budget).map(drop);
    }
    // Another eviction may take a disruption in between: read the budget again.
    let mut attempts = 0;
    loop {
        let mut validation = Validation::from_query(None);
        match rest::update(server, &target, &name, Some("status"), &decrement, query, &mut validation).await {
            Err(e) if e.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

fn set_condition(object: &mut Value, condition: Value) {
    let mut conditions: Vec<Value> = object["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != condition["type"])
        .collect();
    conditions.push(condition);
    object["status"]["conditions"] = conditions.into();
}

/// The pod's DisruptionTarget condition, as the eviction sets it before deleting.
async fn mark_disruption_target(server: &Shared, target: &Target, name: &str, query: &Query) -> Result<(), ApiError> {
    let mark = |current: &Value| {
        let mut pod = current.clone();
        set_condition(
            &mut pod,
            json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                   "message": "Eviction API: evicting", "lastTransitionTime": objects::now(), "lastProbeTime": null}),
        );
        Ok(pod)
    };
    rest::update(server, target, name, Some("status"), mark, query, &mut Validation::from_query(None)).await?;
    Ok(())
}
