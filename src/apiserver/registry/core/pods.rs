//! pods (core/v1): kube-apiserver's pod strategy (pkg/registry/core/pod/strategy.go), the
//! Pod-only defaults, and what the ServiceAccount, DefaultTolerationSeconds and Priority
//! admission plugins add to a new pod.

use k8s_openapi::api::core::v1::{Pod, PodStatus, Toleration};
use serde_json::Value;

use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_pod_spec, unset, validate_pod_spec};
use super::super::{Cause, Column, FieldLabel, Rules};

pub struct Pods;

/// How long pods tolerate a not-ready and an unreachable node unless they say
/// (kube-apiserver's --default-not-ready-toleration-seconds and
/// --default-unreachable-toleration-seconds, 300 each): set once, at the server's start.
pub static DEFAULT_TOLERATION_SECONDS: std::sync::OnceLock<(i64, i64)> = std::sync::OnceLock::new();

impl Rules for Pods {
    type Object = Pod;
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] =
        &["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward"];
    const GENERATION: bool = true;

    fn default(pod: &mut Pod) {
        let Some(spec) = pod.spec.as_mut() else { return };
        default_pod_spec(spec);
        // SetDefaults_Pod: requests default to limits; service links on; host ports.
        for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            if let Some(resources) = container.resources.as_mut()
                && let Some(limits) = resources.limits.clone()
            {
                let requests = resources.requests.get_or_insert_with(Default::default);
                for (name, value) in limits {
                    requests.entry(name).or_insert(value);
                }
            }
            if spec.host_network == Some(true) {
                for port in container.ports.iter_mut().flatten() {
                    if port.host_port.is_none_or(|p| p == 0) {
                        port.host_port = Some(port.container_port);
                    }
                }
            }
        }
        spec.enable_service_links.get_or_insert(true);
    }

    fn prepare_for_create(pod: &mut Pod) {
        let qos = pod.spec.as_ref().map_or("BestEffort", qos_class);
        pod.status =
            Some(PodStatus { phase: Some("Pending".into()), qos_class: Some(qos.into()), ..Default::default() });
        let Some(spec) = pod.spec.as_mut() else { return };
        // DefaultTolerationSeconds admission: tolerate a node that is not ready or
        // unreachable for 5 minutes, unless the pod says otherwise.
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        let (not_ready, unreachable) = *DEFAULT_TOLERATION_SECONDS.get_or_init(|| (300, 300));
        for (key, seconds) in
            [("node.kubernetes.io/not-ready", not_ready), ("node.kubernetes.io/unreachable", unreachable)]
        {
            if !tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref().is_none_or(|e| e == "NoExecute"))
            {
                tolerations.push(Toleration {
                    key: Some(key.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(seconds),
                    ..Default::default()
                });
            }
        }
    }

    fn validate(pod: &Pod) -> Vec<Cause> {
        match pod.spec.as_ref() {
            Some(spec) => validate_pod_spec(spec, "spec", &["Always", "OnFailure", "Never"]),
            None => vec![("spec".into(), "Required value".into())],
        }
    }

    fn validate_create(pod: &Pod) -> Vec<Cause> {
        match pod.spec.as_ref().and_then(|s| s.ephemeral_containers.as_ref()).filter(|e| !e.is_empty()) {
            Some(_) => vec![("spec.ephemeralContainers".into(), "Forbidden: cannot be set on create".into())],
            None => vec![],
        }
    }

    /// ValidatePodEphemeralContainersUpdate: ephemeral containers are only added.
    fn validate_subresource_update(subresource: &str, new: &Pod, old: &Pod) -> Vec<Cause> {
        if subresource != "ephemeralcontainers" {
            return vec![];
        }
        let mut causes = Self::validate(new);
        let (new_ones, old_ones) = (ephemeral(new), ephemeral(old));
        for previous in old_ones {
            let message = match new_ones.iter().find(|c| c.name == previous.name) {
                None => format!("existing ephemeral containers \"{}\" may not be removed", previous.name),
                Some(now) if *now != previous => {
                    format!("existing ephemeral containers \"{}\" may not be changed", previous.name)
                }
                Some(_) => continue,
            };
            causes.push(("spec.ephemeralContainers".into(), format!("Forbidden: {message}")));
        }
        causes
    }

    fn validate_update(new: &Pod, old: &Pod) -> Vec<Cause> {
        let (Some(new_spec), Some(old_spec)) = (new.spec.as_ref(), old.spec.as_ref()) else { return vec![] };
        let mut causes = Vec::new();
        if new_spec.containers.len() != old_spec.containers.len()
            || new_spec.init_containers.as_ref().map_or(0, Vec::len)
                != old_spec.init_containers.as_ref().map_or(0, Vec::len)
        {
            causes.push(("spec.containers".into(), "Forbidden: pod updates may not add or remove containers".into()));
            return causes;
        }
        match (new_spec.active_deadline_seconds, old_spec.active_deadline_seconds) {
            (None, Some(_)) => causes.push((
                "spec.activeDeadlineSeconds".into(),
                "Invalid value: \"null\": must not update from a positive integer to nil value".into(),
            )),
            (Some(new), Some(old)) if new > old => causes.push((
                "spec.activeDeadlineSeconds".into(),
                format!("Invalid value: {new}: must be less than or equal to previous value"),
            )),
            _ => {}
        }
        let old_tolerations = old_spec.tolerations.clone().unwrap_or_default();
        let new_tolerations = new_spec.tolerations.clone().unwrap_or_default();
        let only_added = old_tolerations.iter().all(|t| new_tolerations.contains(t));
        // What is left once the mutable fields are put back as they were must not differ.
        let mut rest = new_spec.clone();
        for (container, previous) in rest.containers.iter_mut().zip(&old_spec.containers) {
            container.image = previous.image.clone();
        }
        for (container, previous) in
            rest.init_containers.iter_mut().flatten().zip(old_spec.init_containers.iter().flatten())
        {
            container.image = previous.image.clone();
        }
        rest.active_deadline_seconds = old_spec.active_deadline_seconds;
        if only_added {
            rest.tolerations = old_spec.tolerations.clone();
        }
        if old_spec.termination_grace_period_seconds.is_some_and(|g| g < 0)
            && rest.termination_grace_period_seconds == Some(1)
        {
            rest.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
        }
        if rest != *old_spec {
            causes.push((
                "spec".into(),
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,\
                 `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to \
                 existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was \
                 previously negative)"
                    .into(),
            ));
        }
        causes
    }

    fn prepare_for_status_update(new: &mut Pod, old: &Pod) {
        // An empty qosClass keeps the old one.
        let old_qos = old.status.as_ref().and_then(|s| s.qos_class.clone());
        if let Some(status) = new.status.as_mut()
            && unset(&status.qos_class)
        {
            status.qos_class = old_qos;
        }
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Ready", 0, |o| {
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
                format!("{ready}/{total}").into()
            }),
            columns::string("Status", 0, status),
            columns::string("Restarts", 0, |o| {
                let restarts: i64 = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter_map(|c| c["restartCount"].as_i64()).sum());
                restarts.to_string().into()
            }),
            AGE,
            columns::string("IP", 1, |o| columns::text(&o["status"]["podIP"])),
            columns::string("Node", 1, |o| columns::text(&o["spec"]["nodeName"])),
            columns::string("Nominated Node", 1, |o| columns::text(&o["status"]["nominatedNodeName"])),
            columns::string("Readiness Gates", 1, |o| match o["spec"]["readinessGates"].as_array() {
                Some(gates) if !gates.is_empty() => {
                    let conditions = o["status"]["conditions"].as_array().cloned().unwrap_or_default();
                    let met = gates
                        .iter()
                        .filter(|g| conditions.iter().any(|c| c["type"] == g["conditionType"] && c["status"] == "True"))
                        .count();
                    format!("{met}/{}", gates.len()).into()
                }
                _ => "<none>".into(),
            }),
        ]
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![
            FieldLabel { name: "spec.nodeName", value: |o| string(&o["spec"]["nodeName"]) },
            FieldLabel { name: "spec.restartPolicy", value: |o| string(&o["spec"]["restartPolicy"]) },
            FieldLabel { name: "spec.schedulerName", value: |o| string(&o["spec"]["schedulerName"]) },
            FieldLabel { name: "spec.serviceAccountName", value: |o| string(&o["spec"]["serviceAccountName"]) },
            FieldLabel { name: "spec.hostNetwork", value: |o| (o["spec"]["hostNetwork"] == true).to_string() },
            FieldLabel { name: "status.phase", value: |o| string(&o["status"]["phase"]) },
            FieldLabel { name: "status.podIP", value: |o| string(&o["status"]["podIP"]) },
            FieldLabel { name: "status.nominatedNodeName", value: |o| string(&o["status"]["nominatedNodeName"]) },
        ]
    }
}

fn string(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// The QoS class of a pod (v1qos.GetPodQOS): Guaranteed when every container sets CPU and
/// memory limits with requests equal to them, BestEffort when none sets either, Burstable
/// otherwise.
pub fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    let containers: Vec<_> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    let (mut any, mut guaranteed) = (false, true);
    for container in &containers {
        let resources = container.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.clone()).unwrap_or_default();
        let limits = resources.and_then(|r| r.limits.clone()).unwrap_or_default();
        for name in ["cpu", "memory"] {
            if requests.contains_key(name) || limits.contains_key(name) {
                any = true;
            }
            let value = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                q.and_then(|q| crate::quantity::Quantity::parse(&q.0))
            };
            let limit = value(limits.get(name));
            if limit.is_none() || requests.contains_key(name) && value(requests.get(name)) != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The Status column, as kubectl's printer makes it.
fn status(o: &Value) -> Value {
    let mut reason = o["status"]["reason"].as_str().or(o["status"]["phase"].as_str()).unwrap_or("Pending").to_string();
    let conditions = o["status"]["conditions"].as_array().cloned().unwrap_or_default();
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let mut initializing = false;
    let inits = o["status"]["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    let init_total = o["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    for (i, init) in inits.iter().enumerate() {
        let terminated = &init["state"]["terminated"];
        if terminated.is_object() && terminated["exitCode"] == 0 {
            continue;
        }
        initializing = true;
        reason = if terminated.is_object() {
            match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if terminated["signal"].as_i64().unwrap_or(0) != 0 => {
                    format!("Init:Signal:{}", terminated["signal"])
                }
                None => format!("Init:ExitCode:{}", terminated["exitCode"]),
            }
        } else if let Some(waiting) =
            init["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut running = false;
        for container in o["status"]["containerStatuses"].as_array().into_iter().flatten().rev() {
            let state = &container["state"];
            if let Some(waiting) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = waiting.into();
            } else if state["terminated"].is_object() {
                let terminated = &state["terminated"];
                reason = match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => r.into(),
                    None if terminated["signal"].as_i64().unwrap_or(0) != 0 => {
                        format!("Signal:{}", terminated["signal"])
                    }
                    None => format!("ExitCode:{}", terminated["exitCode"]),
                };
            } else if container["ready"] == true && state["running"].is_object() {
                running = true;
            }
        }
        if reason == "Completed" && running {
            let ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if ready { "Running" } else { "NotReady" }.into();
        }
    }
    if o["metadata"].get("deletionTimestamp").is_some() {
        if o["status"]["reason"] == "NodeLost" {
            reason = "Unknown".into();
        } else if !matches!(o["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            reason = "Terminating".into();
        }
    }
    reason.into()
}

fn ephemeral(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::EphemeralContainer> {
    pod.spec.as_ref().and_then(|s| s.ephemeral_containers.clone()).unwrap_or_default()
}
