//! A pod's status as kubelet writes it (generateAPIPodStatus), from what the runtime shows
//! and what the pod worker knows beyond it: a pure function, so the phase rules and the
//! conditions are checked without a node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use runtime::ExitStatus;
use serde_json::{Value, json};

/// A container as the runtime shows it.
#[derive(Clone, Debug)]
pub struct ContainerObserved {
    pub restart_count: u32,
    pub container_id: String,
    pub image_id: String,
    pub state: RunState,
}

#[derive(Clone, Debug)]
pub enum RunState {
    Running { started_at: String },
    Exited(ExitStatus),
}

/// What the pod worker knows of the pod beyond the runtime.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The sandbox is up with its network.
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub containers: BTreeMap<String, ContainerObserved>,
    /// Why a container does not run (ErrImagePull, CrashLoopBackOff…), and what it says.
    pub waiting: BTreeMap<String, (String, String)>,
    /// The termination before the current run, kept across restarts.
    pub last_state: BTreeMap<String, Value>,
    /// Readiness probe results (no entry: not probed yet).
    pub ready: BTreeMap<String, bool>,
    /// Containers whose startup probe has succeeded (or that have none and run).
    pub started: BTreeMap<String, bool>,
    /// The pod was refused (`OutOfpods`…): (reason, message).
    pub rejected: Option<(String, String)>,
    /// The pod went past its activeDeadlineSeconds.
    pub deadline_exceeded: bool,
}

/// `…Z` (metav1.Time) of an RFC 3339 time with nanoseconds.
pub fn seconds(time: &str) -> String {
    if time.len() >= 19 { format!("{}Z", &time[..19]) } else { time.to_string() }
}

pub use crate::client::now;

/// A container's `terminated` state.
pub fn terminated(exit: &ExitStatus, container_id: &str) -> Value {
    let mut t = json!({
        "exitCode": exit.exit_code,
        "reason": exit.reason,
        "finishedAt": seconds(&exit.finished_at),
        "containerID": container_id,
    });
    if let Some(signal) = exit.signal {
        t["signal"] = json!(signal);
    }
    if let Some(message) = exit.message.as_ref().filter(|m| !m.is_empty()) {
        t["message"] = json!(message);
    }
    if let Some(started) = &exit.started_at {
        t["startedAt"] = json!(seconds(started));
    }
    t
}

/// A container's status entry.
fn container_status(c: &Container, observed: &Observed, initializing: bool) -> Value {
    let name = &c.name;
    let seen = observed.containers.get(name);
    let image = c.image.clone().unwrap_or_default();
    let (state, running) = match (seen.map(|s| &s.state), observed.waiting.get(name)) {
        (Some(RunState::Running { started_at }), _) => (json!({"running": {"startedAt": seconds(started_at)}}), true),
        (_, Some((reason, message))) => (json!({"waiting": {"reason": reason, "message": message}}), false),
        (Some(RunState::Exited(exit)), None) => {
            (json!({"terminated": terminated(exit, &seen.map(|s| s.container_id.clone()).unwrap_or_default())}), false)
        }
        (None, None) => {
            let reason = if initializing { "PodInitializing" } else { "ContainerCreating" };
            (json!({"waiting": {"reason": reason}}), false)
        }
    };
    let started = running && observed.started.get(name).copied().unwrap_or(c.startup_probe.is_none());
    let ready = started && observed.ready.get(name).copied().unwrap_or(c.readiness_probe.is_none());
    let mut status = json!({
        "name": name,
        "image": image,
        "imageID": seen.map(|s| s.image_id.clone()).unwrap_or_default(),
        "ready": ready,
        "started": started,
        "restartCount": seen.map_or(0, |s| s.restart_count),
        "state": state,
        "lastState": observed.last_state.get(name).map(|t| json!({"terminated": t})).unwrap_or(json!({})),
    });
    if let Some(seen) = seen {
        status["containerID"] = json!(seen.container_id);
    }
    status
}

fn exit_of(observed: &Observed, name: &str) -> Option<i32> {
    match observed.containers.get(name).map(|c| &c.state) {
        Some(RunState::Exited(exit)) => Some(exit.exit_code),
        _ => None,
    }
}

/// The pod's phase (kubelet's getPhase).
pub fn phase(pod: &Pod, observed: &Observed) -> &'static str {
    let spec = pod.spec.as_ref().expect("pods have a spec");
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if observed.rejected.is_some() || observed.deadline_exceeded {
        return "Failed";
    }
    let mut pending_init = false;
    let mut failed_init = false;
    for c in spec.init_containers.iter().flatten() {
        match exit_of(observed, &c.name) {
            Some(0) => {}
            Some(_) => failed_init = true,
            None => match observed.last_state.get(&c.name) {
                Some(last) if last["exitCode"] != 0 => failed_init = true,
                _ => pending_init = true,
            },
        }
    }
    if failed_init && policy == "Never" {
        return "Failed";
    }
    if pending_init || failed_init {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &spec.containers {
        match observed.containers.get(&c.name).map(|s| &s.state) {
            Some(RunState::Running { .. }) => running += 1,
            Some(RunState::Exited(exit)) if !observed.waiting.contains_key(&c.name) => {
                stopped += 1;
                if exit.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting to run again after a termination: a stopped container that restarts.
            _ if observed.last_state.contains_key(&c.name) => stopped += 1,
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

/// A condition, keeping its last transition time when its status did not change.
fn condition(previous: &[Value], kind: &str, status: bool, reason: Option<&str>, message: Option<String>) -> Value {
    let status = if status { "True" } else { "False" };
    let before = previous.iter().find(|c| c["type"] == kind);
    let since = match before {
        Some(c) if c["status"] == status => c["lastTransitionTime"].as_str().map(String::from).unwrap_or_else(now),
        _ => now(),
    };
    let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    if let Some(message) = message {
        c["message"] = json!(message);
    }
    c
}

/// The pod's whole status.
pub fn pod_status(pod: &Pod, observed: &Observed) -> Value {
    let spec = pod.spec.as_ref().expect("pods have a spec");
    let current = pod.status.as_ref();
    let previous: Vec<Value> = current
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
        .unwrap_or_default();
    let phase = phase(pod, observed);
    let init_names: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    let incomplete: Vec<&str> = init_names.iter().copied().filter(|n| exit_of(observed, n) != Some(0)).collect();
    let initializing = !incomplete.is_empty();
    let init_statuses: Vec<Value> =
        spec.init_containers.iter().flatten().map(|c| container_status(c, observed, false)).collect();
    let statuses: Vec<Value> = spec.containers.iter().map(|c| container_status(c, observed, initializing)).collect();
    let unready: Vec<&str> = spec
        .containers
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| s["ready"] != true)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let done = phase == "Succeeded" || phase == "Failed";
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = match (done, unready.is_empty()) {
        (true, _) => (Some("PodCompleted"), None),
        (false, true) => (None, None),
        (false, false) => {
            (Some("ContainersNotReady"), Some(format!("containers with unready status: {}", list(&unready))))
        }
    };
    let ready = !done && unready.is_empty();
    let initialized = incomplete.is_empty() || (done && phase == "Succeeded");
    let mut conditions = vec![
        condition(&previous, "PodReadyToStartContainers", observed.sandbox_ready, None, None),
        condition(
            &previous,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            (!initialized).then(|| format!("containers with incomplete status: {}", list(&incomplete))),
        ),
        condition(&previous, "Ready", ready, ready_reason, ready_message.clone()),
        condition(&previous, "ContainersReady", ready, ready_reason, ready_message),
        condition(&previous, "PodScheduled", true, None, None),
    ];
    if observed.rejected.is_some() {
        conditions.clear();
    }
    let start_time = current
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!(now()));
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": observed.host_ip,
        "hostIPs": [{"ip": observed.host_ip}],
        "startTime": start_time,
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    let ephemeral: Vec<Value> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| {
            // Probes never look at ephemeral containers: never ready, started unknown.
            let mut status = container_status(&super::pod_worker::as_container(e), observed, false);
            status["ready"] = json!(false);
            status.as_object_mut().map(|s| s.remove("started"));
            status
        })
        .collect();
    if !ephemeral.is_empty() {
        status["ephemeralContainerStatuses"] = json!(ephemeral);
    }
    if let Some(ip) = &observed.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(qos) = current.and_then(|s| s.qos_class.as_ref()) {
        status["qosClass"] = json!(qos);
    }
    if let Some((reason, message)) = &observed.rejected {
        status = json!({"phase": "Failed", "reason": reason, "message": message, "startTime": start_time});
    } else if observed.deadline_exceeded {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "restartPolicy": policy,
                "initContainers": [{"name": "setup", "image": "x"}],
                "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}}}],
            },
        }))
        .unwrap()
    }

    fn exited(code: i32) -> ContainerObserved {
        ContainerObserved {
            restart_count: 0,
            container_id: "podctl://x".into(),
            image_id: String::new(),
            state: RunState::Exited(ExitStatus {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed".into() } else { "Error".into() },
                message: None,
                started_at: Some("2026-11-29T10:00:00.000000001Z".into()),
                finished_at: "2026-11-29T10:00:01.000000001Z".into(),
            }),
        }
    }

    fn running() -> ContainerObserved {
        ContainerObserved { state: RunState::Running { started_at: "2026-11-29T10:00:02.5Z".into() }, ..exited(0) }
    }

    fn condition_of<'a>(status: &'a Value, kind: &str) -> &'a Value {
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap()
    }

    #[test]
    fn phases_follow_kubelet() {
        let mut observed = Observed { sandbox_ready: true, pod_ip: Some("10.88.0.2".into()), ..Default::default() };
        let status = pod_status(&pod("Always"), &observed);
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
        assert_eq!(condition_of(&status, "Initialized")["message"], "containers with incomplete status: [setup]");

        observed.containers.insert("setup".into(), exited(0));
        observed.containers.insert("a".into(), running());
        observed.containers.insert("b".into(), running());
        let status = pod_status(&pod("Always"), &observed);
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.88.0.2");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert_eq!(status["containerStatuses"][1]["ready"], false, "not probed yet");
        assert_eq!(condition_of(&status, "Ready")["message"], "containers with unready status: [b]");
        observed.ready.insert("b".into(), true);
        let status = pod_status(&pod("Always"), &observed);
        assert_eq!(condition_of(&status, "Ready")["status"], "True");

        observed.containers.insert("a".into(), exited(0));
        observed.containers.insert("b".into(), exited(1));
        assert_eq!(pod_status(&pod("Always"), &observed)["phase"], "Running", "they will restart");
        assert_eq!(pod_status(&pod("OnFailure"), &observed)["phase"], "Running", "b will restart");
        assert_eq!(pod_status(&pod("Never"), &observed)["phase"], "Failed");
        observed.containers.insert("b".into(), exited(0));
        let done = pod_status(&pod("OnFailure"), &observed);
        assert_eq!(done["phase"], "Succeeded");
        assert_eq!(condition_of(&done, "Ready")["reason"], "PodCompleted");
        assert_eq!(done["containerStatuses"][1]["state"]["terminated"]["startedAt"], "2026-11-29T10:00:00Z");

        let mut failed_init = Observed::default();
        failed_init.containers.insert("setup".into(), exited(2));
        assert_eq!(pod_status(&pod("Never"), &failed_init)["phase"], "Failed");
        assert_eq!(pod_status(&pod("Always"), &failed_init)["phase"], "Pending");
    }

    #[test]
    fn a_crash_loop_waits_with_its_last_termination() {
        let mut observed = Observed::default();
        observed.containers.insert("setup".into(), exited(0));
        observed.containers.insert("a".into(), ContainerObserved { restart_count: 3, ..exited(1) });
        observed.containers.insert("b".into(), running());
        observed.waiting.insert("a".into(), ("CrashLoopBackOff".into(), "back-off 40s".into()));
        observed.last_state.insert("a".into(), json!({"exitCode": 1, "reason": "Error"}));
        let status = pod_status(&pod("Always"), &observed);
        let a = &status["containerStatuses"][0];
        assert_eq!(a["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(a["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(a["restartCount"], 3);
        assert_eq!(status["phase"], "Running");
    }
}
