//! The Job controller (kube-controller-manager's job, with ttlafterfinished): pods run
//! until `completions` succeed, `parallelism` at a time (or, Indexed, one success per
//! index `0..completions`, each pod told its index); failed pods are replaced after
//! kube-controller-manager's back-off (10 s, doubling, at most 6 min) until more than
//! `backoffLimit` failed; `activeDeadlineSeconds` and `suspend` stop the running pods; the
//! status counts active, ready, succeeded and failed pods and ends with Complete or
//! Failed; a finished Job goes `ttlSecondsAfterFinished` later.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use super::objects::{Claim, claim, controller_ref, elapsed, is_active, is_ready, now, pod_from_template};
use super::pod_control::PodOwners;
use crate::events::Event;

pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

#[derive(Debug, PartialEq)]
pub enum Action {
    Claim(Claim),
    Create(Value),
    Delete {
        pod: String,
        uid: String,
    },
    /// A merge patch of the Job's status.
    Status(Value),
    /// Its time after finishing is up.
    DeleteJob,
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?.parse().ok()
}

/// When the pod's last container ended, if it has.
fn finished_at(pod: &Pod) -> Option<Time> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .max_by_key(|t| t.0)
}

/// `0-2,4`: a set of indexes as the status writes it.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &i in indexes {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => ranges.push((i, i)),
        }
    }
    ranges.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(",")
}

fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut indexes = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            indexes.extend(a..=b);
        }
    }
    indexes
}

fn delete(pod: &Pod) -> Action {
    Action::Delete {
        pod: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn condition(kind: &str, reason: &str, message: &str, now: &Time) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now})
}

fn has_condition(job: &Job, kind: &str) -> bool {
    job.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == kind && c.status == "True")
}

/// What a Job needs done, from it and the pods of its namespace, and when to look again
/// (a back-off or deadline running out).
pub fn sync(job: &Job, pods: &[&Pod], expectations_met: bool, now: &Time) -> (Vec<Action>, Option<Duration>) {
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let ended = status.completion_time.clone().or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.type_ == "Failed" && c.status == "True")
            .find_map(|c| c.last_transition_time.clone())
    });
    if has_condition(job, "Complete") || has_condition(job, "Failed") {
        // Finished: only its time to live is left.
        let (Some(ttl), Some(at)) = (spec.ttl_seconds_after_finished, ended) else { return (vec![], None) };
        let ttl = Duration::from_secs(ttl.max(0) as u64);
        let waited = elapsed(&at, now);
        return if waited >= ttl { (vec![Action::DeleteJob], None) } else { (vec![], Some(ttl - waited)) };
    }

    let mut actions = Vec::new();
    let reference = controller_ref("batch/v1", "Job", &job.metadata);
    let selector = spec.selector.clone().unwrap_or_default();
    let (owned, claims) = claim(&job.metadata, &reference, &selector, pods, is_active);
    actions.extend(claims.into_iter().map(Action::Claim));
    let active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let succeeded_pods: Vec<&Pod> = owned.iter().copied().filter(|p| phase(p) == "Succeeded").collect();
    // podFailurePolicy: each failed pod's first matching rule says whether its failure
    // counts, is ignored, or fails the Job.
    let mut fail_job = None;
    let failed_pods: Vec<&Pod> = owned
        .iter()
        .copied()
        .filter(|p| phase(p) == "Failed")
        .filter(|p| match spec.pod_failure_policy.as_ref().and_then(|policy| failure_rule(policy, p)) {
            Some((_, "Ignore", _)) => false,
            Some((_, "FailJob", message)) => {
                fail_job.get_or_insert(message);
                true
            }
            _ => true,
        })
        .collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut completed: BTreeSet<i32> = parse_indexes(status.completed_indexes.as_deref().unwrap_or_default());
    completed.extend(succeeded_pods.iter().filter_map(|p| index_of(p)));
    let succeeded =
        if indexed { completed.len() as i32 } else { status.succeeded.unwrap_or(0).max(succeeded_pods.len() as i32) };
    let failed = status.failed.unwrap_or(0).max(failed_pods.len() as i32);
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let suspended = spec.suspend == Some(true);

    let mut conditions: Vec<Value> =
        status.conditions.iter().flatten().filter_map(|c| serde_json::to_value(c).ok()).collect();
    let mut new_status = json!({});
    let start_time = match status.start_time.clone() {
        Some(t) => Some(t),
        None if !suspended => {
            new_status["startTime"] = serde_json::to_value(now).unwrap_or_default();
            Some(now.clone())
        }
        None => None,
    };
    let mut requeue = None;
    let stop_all = |reason: &str, message: &str, actions: &mut Vec<Action>, conditions: &mut Vec<Value>| {
        for pod in &active {
            actions.push(delete(pod));
        }
        conditions.push(condition("FailureTarget", reason, message, now));
        conditions.push(condition("Failed", reason, message, now));
    };
    let complete = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    let deadline = spec.active_deadline_seconds.zip(start_time.as_ref()).map(|(seconds, start)| {
        let limit = Duration::from_secs(seconds.max(0) as u64);
        limit.saturating_sub(elapsed(start, now))
    });
    if complete {
        let message = "Reached expected number of succeeded pods";
        conditions.push(condition("SuccessCriteriaMet", "CompletionsReached", message, now));
        conditions.push(condition("Complete", "CompletionsReached", message, now));
        new_status["completionTime"] = serde_json::to_value(now).unwrap_or_default();
        for pod in &active {
            actions.push(delete(pod));
        }
    } else if let Some(message) = fail_job {
        stop_all("PodFailurePolicy", &message, &mut actions, &mut conditions);
    } else if failed > spec.backoff_limit.unwrap_or(6) {
        stop_all("BackoffLimitExceeded", "Job has reached the specified backoff limit", &mut actions, &mut conditions);
    } else if deadline.is_some_and(|left| left.is_zero()) && !suspended {
        stop_all("DeadlineExceeded", "Job was active longer than specified deadline", &mut actions, &mut conditions);
    } else if suspended {
        for pod in &active {
            actions.push(delete(pod));
        }
        if !has_condition(job, "Suspended") {
            conditions.retain(|c| c["type"] != "Suspended");
            conditions.push(condition("Suspended", "JobSuspended", "Job suspended", now));
        }
    } else {
        if has_condition(job, "Suspended") {
            conditions.retain(|c| c["type"] != "Suspended");
            let mut resumed = condition("Suspended", "JobResumed", "Job resumed", now);
            resumed["status"] = "False".into();
            conditions.push(resumed);
        }
        requeue = deadline;
        // Back-off after failures: the next pod waits 10 s doubling per failure.
        let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max_by_key(|t| t.0);
        let backoff = (failed > 0).then(|| BACKOFF_BASE.saturating_mul(1 << (failed - 1).min(16)).min(BACKOFF_MAX));
        let wait = match (backoff, last_failure) {
            (Some(backoff), Some(at)) => backoff.saturating_sub(elapsed(&at, now)),
            _ => Duration::ZERO,
        };
        if expectations_met {
            if indexed {
                let running: HashSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                let pending: Vec<i32> = (0..spec.completions.unwrap_or(1))
                    .filter(|i| !completed.contains(i) && !running.contains(i))
                    .collect();
                let room = (parallelism as usize).saturating_sub(active.len());
                if room > 0 && !pending.is_empty() {
                    if wait.is_zero() {
                        for index in pending.into_iter().take(room) {
                            actions.push(Action::Create(pod_of(job, Some(index))));
                        }
                    } else {
                        requeue = super::sooner(requeue, Some(wait));
                    }
                }
            } else {
                let wanted = match spec.completions {
                    Some(c) => parallelism.min(c - succeeded).max(0),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                } as usize;
                if active.len() > wanted {
                    let mut extra = active.clone();
                    extra.sort_by_key(|p| {
                        (is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)))
                    });
                    for pod in extra.into_iter().take(active.len() - wanted) {
                        actions.push(delete(pod));
                    }
                } else if active.len() < wanted {
                    if wait.is_zero() {
                        for _ in active.len()..wanted {
                            actions.push(Action::Create(pod_of(job, None)));
                        }
                    } else {
                        requeue = super::sooner(requeue, Some(wait));
                    }
                }
            }
        }
    }

    new_status["active"] = (active.len() as i64
        - actions.iter().filter(|a| matches!(a, Action::Delete { .. })).count() as i64)
        .max(0)
        .into();
    new_status["ready"] = active.iter().filter(|p| is_ready(p)).count().into();
    new_status["succeeded"] = succeeded.into();
    new_status["failed"] = failed.into();
    if indexed {
        new_status["completedIndexes"] = format_indexes(&completed).into();
    }
    new_status["conditions"] = conditions.into();
    let current = serde_json::to_value(&status).unwrap_or_default();
    let changed = new_status.as_object().expect("object").iter().any(|(k, v)| {
        let now_value = &current[k];
        match v.as_i64() {
            Some(n) => now_value.as_i64().unwrap_or(0) != n,
            None => now_value != v,
        }
    });
    if changed {
        actions.push(Action::Status(new_status));
    }
    (actions, requeue)
}

/// The first rule of `policy` a failed pod matches: its index, action and the message
/// a FailJob rule fails the Job with (kube's matchPodFailurePolicy). Exit codes are those
/// of terminated containers, never 0; pod conditions match by type and status.
fn failure_rule<'p>(policy: &'p PodFailurePolicy, pod: &Pod) -> Option<(usize, &'p str, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let statuses = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    let exits: Vec<(&str, i32)> = statuses
        .filter_map(|c| Some((c.name.as_str(), c.state.as_ref()?.terminated.as_ref()?.exit_code)))
        .filter(|(_, code)| *code != 0)
        .collect();
    policy.rules.iter().enumerate().find_map(|(index, rule)| {
        let action = rule.action.as_str();
        if let Some(codes) = &rule.on_exit_codes {
            let (container, code) = exits.iter().find(|(container, code)| {
                codes.container_name.as_deref().is_none_or(|wanted| wanted == *container)
                    && (codes.operator == "In") == codes.values.contains(code)
            })?;
            let message = format!(
                "Container {container} for pod {namespace}/{name} failed with exit code {code} matching {action} rule at index {index}"
            );
            return Some((index, action, message));
        }
        let conditions = rule.on_pod_conditions.as_ref()?;
        let kind = conditions.iter().find_map(|wanted| {
            status.conditions.iter().flatten().find(|c| c.type_ == wanted.type_ && c.status == wanted.status).map(|c| &c.type_)
        })?;
        Some((index, action, format!("Pod {namespace}/{name} has condition {kind} matching {action} rule at index {index}")))
    })
}

/// A pod of the Job's template, owned by it; an Indexed Job's pod is told its index
/// (annotation, label, `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`).
fn pod_of(job: &Job, index: Option<i32>) -> Value {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let owner = controller_ref("batch/v1", "Job", &job.metadata);
    let generate_name = match index {
        Some(index) => format!("{name}-{index}-"),
        None => format!("{name}-"),
    };
    let mut pod = pod_from_template(&template, &owner, job.metadata.namespace.as_deref(), generate_name);
    if let Some(index) = index {
        pod["metadata"]["annotations"][COMPLETION_INDEX] = index.to_string().into();
        pod["metadata"]["labels"][COMPLETION_INDEX] = index.to_string().into();
        if pod["spec"]["hostname"].is_null() {
            pod["spec"]["hostname"] = format!("{name}-{index}").into();
        }
        let env = json!({"name": "JOB_COMPLETION_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
        for kind in ["containers", "initContainers"] {
            for container in pod["spec"][kind].as_array_mut().into_iter().flatten() {
                match container["env"].as_array_mut() {
                    Some(list) => list.push(env.clone()),
                    None => container["env"] = json!([env]),
                }
            }
        }
    }
    pod
}

/// Runs Jobs until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.jobs().subscribe(&wake);
    informers.pods().subscribe(&wake);
    let informers = informers.clone();
    let context = Arc::new(PodOwners::new(client, "job-controller"));
    super::level_triggered(wake, move || {
        let (context, informers) = (context.clone(), informers.clone());
        async move {
            if !(informers.jobs().ready().await && informers.pods().ready().await) {
                return None;
            }
            let (jobs, pods, now) = (informers.jobs().all(), informers.pods().all(), now());
            let (plans, mut requeue) = context.plan_each(&jobs, &pods, |job, pods, met| sync(job, pods, met, &now));
            for (job, actions) in plans {
                if !apply(&context, job, actions).await {
                    requeue = super::sooner(requeue, Some(Duration::from_secs(1)));
                }
            }
            requeue
        }
    });
}

async fn apply(context: &PodOwners, job: &Job, actions: Vec<Action>) -> bool {
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let control = context.control(job);
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), namespace);
    let mut ok = true;
    for action in actions {
        ok &= match action {
            Action::Claim(claim) => control.claim(claim).await,
            Action::Create(pod) => control.create(pod).await,
            Action::Delete { pod, uid } => control.delete(&pod, uid).await,
            Action::Status(status) => {
                if status["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Complete")) {
                    control.record(Event::normal("Completed", "Job completed")).await;
                }
                let patch = json!({"status": status});
                super::report(
                    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "job",
                    name,
                )
            }
            Action::DeleteJob => {
                let uid = job.metadata.uid.clone().unwrap_or_default();
                let params = crate::client::delete_params(uid, Some(PropagationPolicy::Background));
                super::report_delete(jobs.delete(name, &params).await, "job", name)
            }
        };
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: Value) -> Job {
        let mut job = json!({
            "metadata": {"name": "work", "namespace": "default", "uid": "job-uid"},
            "spec": {"completions": 5, "parallelism": 2, "backoffLimit": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "job-uid"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}},
            "status": {"startTime": "2026-01-01T00:00:00Z"},
        });
        if let (Some(spec), Some(extra)) = (job["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(job).unwrap()
    }

    fn pod(name: &str, phase: &str, index: Option<i32>, finished: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name,
                "labels": {"batch.kubernetes.io/controller-uid": "job-uid"},
                "annotations": index.map(|i| json!({COMPLETION_INDEX: i.to_string()})),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "work", "uid": "job-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": finished.map(|f| json!({"terminated": {"exitCode": 1, "finishedAt": f}}))}]},
        }))
        .unwrap()
    }

    fn at(seconds: u32) -> Time {
        serde_json::from_value(json!(format!("2026-01-01T00:00:{seconds:02}Z"))).unwrap()
    }

    fn creates(actions: &[Action]) -> Vec<&Value> {
        actions.iter().filter_map(|a| if let Action::Create(p) = a { Some(p) } else { None }).collect()
    }

    #[test]
    fn pods_run_parallelism_at_a_time_until_completions_succeed() {
        let job = job(json!({}));
        assert_eq!(creates(&sync(&job, &[], true, &at(1)).0).len(), 2);
        let (a, b, c) =
            (pod("a", "Succeeded", None, None), pod("b", "Succeeded", None, None), pod("c", "Running", None, None));
        assert_eq!(creates(&sync(&job, &[&a, &b, &c], true, &at(1)).0).len(), 1, "2 of 5 done, 1 running: one more");
        assert_eq!(creates(&sync(&job, &[&a, &b, &c], false, &at(1)).0).len(), 0, "earlier creates unseen");
        let done: Vec<Pod> = (0..5).map(|i| pod(&format!("p{i}"), "Succeeded", None, None)).collect();
        let refs: Vec<&Pod> = done.iter().collect();
        let (actions, _) = sync(&job, &refs, true, &at(1));
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(status["succeeded"], 5);
        assert!(status["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Complete"), "{status}");
    }

    #[test]
    fn failures_back_off_then_exceed_the_limit() {
        let job = job(json!({}));
        let failed = pod("f1", "Failed", None, Some("2026-01-01T00:00:03Z"));
        let (actions, requeue) = sync(&job, &[&failed], true, &at(6));
        assert!(creates(&actions).is_empty(), "backing off: {actions:?}");
        assert_eq!(requeue, Some(Duration::from_secs(7)));
        assert_eq!(creates(&sync(&job, &[&failed], true, &at(13)).0).len(), 2);

        let again = pod("f2", "Failed", None, Some("2026-01-01T00:00:20Z"));
        let running = pod("r", "Running", None, None);
        let (actions, _) = sync(&job, &[&failed, &again, &running], true, &at(21));
        assert!(actions.contains(&Action::Delete { pod: "r".into(), uid: "r".into() }), "{actions:?}");
        let Some(Action::Status(status)) = actions.last() else { panic!() };
        let failed = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap().clone();
        assert_eq!(failed["reason"], "BackoffLimitExceeded");
    }

    #[test]
    fn an_indexed_job_runs_each_index_once_and_tells_the_pod() {
        let job = job(json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3}));
        let zero = pod("z", "Succeeded", Some(0), None);
        let (actions, _) = sync(&job, &[&zero], true, &at(1));
        let made = creates(&actions);
        let indexes: Vec<&Value> = made.iter().map(|p| &p["metadata"]["annotations"][COMPLETION_INDEX]).collect();
        assert_eq!(indexes, [&json!("1"), &json!("2")]);
        assert_eq!(made[0]["spec"]["hostname"], "work-1");
        assert_eq!(made[0]["spec"]["containers"][0]["env"][0]["name"], "JOB_COMPLETION_INDEX");
        let Some(Action::Status(status)) = actions.last() else { panic!() };
        assert_eq!(status["completedIndexes"], "0");
        assert_eq!(format_indexes(&BTreeSet::from([0, 1, 2, 4, 6, 7])), "0-2,4,6-7");
    }

    #[test]
    fn a_finished_job_goes_after_its_time_to_live() {
        let mut job = job(json!({"ttlSecondsAfterFinished": 5}));
        job.status = serde_json::from_value(json!({"completionTime": "2026-01-01T00:00:10Z",
            "conditions": [{"type": "Complete", "status": "True"}]}))
        .unwrap();
        assert_eq!(sync(&job, &[], true, &at(12)), (vec![], Some(Duration::from_secs(3))));
        assert_eq!(sync(&job, &[], true, &at(15)).0, vec![Action::DeleteJob]);
    }

    fn failed_with(name: &str, code: i32) -> Pod {
        let mut pod = pod(name, "Failed", None, Some("2026-01-01T00:00:01Z"));
        let status = pod.status.as_mut().unwrap().container_statuses.as_mut().unwrap();
        status[0].state.as_mut().unwrap().terminated.as_mut().unwrap().exit_code = code;
        pod
    }

    #[test]
    fn the_pod_failure_policy_ignores_or_fails_the_job_by_exit_code() {
        let policy = json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
        ]}});
        let ignored = failed_with("ignored", 3);
        let (actions, _) = sync(&job(policy.clone()), &[&ignored], true, &at(30));
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        assert_eq!(status["failed"], 0, "an ignored failure does not count");
        assert_eq!(actions.iter().filter(|a| matches!(a, Action::Create(_))).count(), 2, "replaced at once");
        let fatal = failed_with("fatal", 42);
        let (actions, _) = sync(&job(policy), &[&ignored, &fatal], true, &at(30));
        let Some(Action::Status(status)) = actions.last() else { panic!("{actions:?}") };
        let failed = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
        assert_eq!(failed["reason"], "PodFailurePolicy");
        assert_eq!(
            failed["message"],
            "Container c for pod default/fatal failed with exit code 42 matching FailJob rule at index 1"
        );
    }
}
