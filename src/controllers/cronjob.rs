//! The CronJob controller (kube-controller-manager's cronjob): at each time its schedule
//! names (in its `timeZone`, UTC by default) a Job from the template, unless suspended,
//! too late (`startingDeadlineSeconds`) or forbidden by `concurrencyPolicy` (Forbid skips
//! while a Job runs, Replace deletes it first); finished Jobs are kept to the history
//! limits; the status lists the active Jobs and the last scheduled and successful times.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use super::objects::{controlled_by, controller_ref, now};
use crate::cron::Schedule;
use crate::events::{Event, Involved, Recorder};

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

#[derive(Debug, PartialEq)]
pub enum Action {
    CreateJob(Value),
    DeleteJob {
        name: String,
        uid: String,
    },
    /// A merge patch of the CronJob's status.
    Status(Value),
    /// Why a scheduled time was passed over (an event).
    Skipped(String),
}

/// Whether a Job has finished, and whether it succeeded.
fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let done = |kind: &str| conditions.iter().any(|c| c.type_ == kind && c.status == "True");
    if done("Complete") {
        Some(true)
    } else if done("Failed") {
        Some(false)
    } else {
        None
    }
}

fn reference(job: &Job) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": job.metadata.namespace,
        "name": job.metadata.name, "uid": job.metadata.uid, "resourceVersion": job.metadata.resource_version})
}

/// What a CronJob needs done, from it and the Jobs of its namespace, and when to look
/// again (its next scheduled time).
pub fn sync(cronjob: &CronJob, jobs: &[&Job], now: &Time) -> (Vec<Action>, Option<Duration>) {
    let mut actions = Vec::new();
    let spec = cronjob.spec.clone().unwrap_or_default();
    let status = cronjob.status.clone().unwrap_or_default();
    let uid = cronjob.metadata.uid.as_deref().unwrap_or_default();
    let mut owned: Vec<&Job> = jobs.iter().copied().filter(|j| controlled_by(&j.metadata, uid)).collect();
    owned.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let mut active: Vec<&Job> =
        owned.iter().copied().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).collect();

    // History: the oldest finished Jobs beyond the limits go.
    for (succeeded, limit) in
        [(true, spec.successful_jobs_history_limit.unwrap_or(3)), (false, spec.failed_jobs_history_limit.unwrap_or(1))]
    {
        let done: Vec<&Job> = owned
            .iter()
            .copied()
            .filter(|j| finished(j) == Some(succeeded) && j.metadata.deletion_timestamp.is_none())
            .collect();
        for job in done.iter().take(done.len().saturating_sub(limit.max(0) as usize)) {
            actions.push(Action::DeleteJob {
                name: job.metadata.name.clone().unwrap_or_default(),
                uid: job.metadata.uid.clone().unwrap_or_default(),
            });
        }
    }
    let last_successful = owned
        .iter()
        .filter(|j| finished(j) == Some(true))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0)
        .or(status.last_successful_time.clone());

    let mut requeue = None;
    let mut last_scheduled = status.last_schedule_time.clone();
    let schedule = Schedule::parse(&spec.schedule);
    let zone = match spec.time_zone.as_deref() {
        Some(name) => jiff::tz::TimeZone::get(name).ok(),
        None => Some(jiff::tz::TimeZone::UTC),
    };
    if let (Ok(schedule), Some(zone), false) = (schedule, zone, spec.suspend == Some(true)) {
        let created = cronjob.metadata.creation_timestamp.as_ref().map_or(now.0, |t| t.0);
        let mut earliest = last_scheduled.as_ref().map_or(created, |t| t.0);
        if let Some(deadline) = spec.starting_deadline_seconds {
            let limit = now.0 - jiff::SignedDuration::from_secs(deadline.max(0));
            if earliest < limit {
                earliest = limit;
            }
        }
        if let Some(due) = schedule.last(earliest, now.0, &zone) {
            let name = format!("{}-{}", cronjob.metadata.name.as_deref().unwrap_or_default(), due.as_second() / 60);
            let exists = owned.iter().any(|j| j.metadata.name.as_deref() == Some(&name));
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if exists {
            } else if policy == "Forbid" && !active.is_empty() {
                actions.push(Action::Skipped(format!(
                    "Job not started at {due}: another is running (concurrencyPolicy Forbid)"
                )));
            } else {
                if policy == "Replace" {
                    for job in active.drain(..) {
                        actions.push(Action::DeleteJob {
                            name: job.metadata.name.clone().unwrap_or_default(),
                            uid: job.metadata.uid.clone().unwrap_or_default(),
                        });
                    }
                }
                actions.push(Action::CreateJob(job_from_template(cronjob, &name, due)));
                last_scheduled = Some(Time(due));
            }
        }
        if let Some(next) = schedule.next(now.0, &zone) {
            requeue =
                Some(Duration::try_from(now.0.duration_until(next)).unwrap_or_default() + Duration::from_millis(100));
        }
    }

    let mut new_status = json!({"active": active.iter().map(|j| reference(j)).collect::<Vec<_>>()});
    if let Some(t) = &last_scheduled {
        new_status["lastScheduleTime"] = serde_json::to_value(t).unwrap_or_default();
    }
    if let Some(t) = &last_successful {
        new_status["lastSuccessfulTime"] = serde_json::to_value(t).unwrap_or_default();
    }
    let current = serde_json::to_value(&status).unwrap_or_default();
    let current_active = current["active"].as_array().cloned().unwrap_or_default();
    let wanted_active = new_status["active"].as_array().cloned().unwrap_or_default();
    let uids = |list: &[Value]| list.iter().map(|r| r["uid"].clone()).collect::<Vec<_>>();
    if uids(&current_active) != uids(&wanted_active)
        || current["lastScheduleTime"] != new_status["lastScheduleTime"].clone()
        || (new_status.get("lastSuccessfulTime").is_some()
            && current["lastSuccessfulTime"] != new_status["lastSuccessfulTime"])
    {
        actions.push(Action::Status(new_status));
    }
    (actions, requeue)
}

/// The Job of a scheduled time: the template's, owned by the CronJob.
fn job_from_template(cronjob: &CronJob, name: &str, due: jiff::Timestamp) -> Value {
    let template = cronjob.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), due.to_string());
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob.metadata.namespace,
            "labels": meta.labels.unwrap_or_default(),
            "annotations": annotations,
            "ownerReferences": [controller_ref("batch/v1", "CronJob", &cronjob.metadata)],
        },
        "spec": template.spec,
    })
}

/// Runs CronJobs until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.cronjobs().subscribe(&wake);
    informers.jobs().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), "cronjob-controller", None));
    super::level_triggered(wake, move || {
        let (client, informers, recorder) = (client.clone(), informers.clone(), recorder.clone());
        async move {
            if !(informers.cronjobs().ready().await && informers.jobs().ready().await) {
                return None;
            }
            let (cronjobs, jobs) = (informers.cronjobs().all(), informers.jobs().all());
            let now = now();
            let mut requeue = None;
            for cronjob in &cronjobs {
                let namespace = cronjob.metadata.namespace.as_deref();
                let in_namespace: Vec<&Job> =
                    jobs.iter().map(|j| &**j).filter(|j| j.metadata.namespace.as_deref() == namespace).collect();
                let (actions, wait) = sync(cronjob, &in_namespace, &now);
                requeue = super::sooner(requeue, wait);
                if !apply(&client, &recorder, cronjob, actions).await {
                    requeue = super::sooner(requeue, Some(Duration::from_secs(1)));
                }
            }
            requeue
        }
    });
}

async fn apply(client: &Client, recorder: &Recorder, cronjob: &CronJob, actions: Vec<Action>) -> bool {
    let namespace = cronjob.metadata.namespace.as_deref().unwrap_or_default();
    let name = cronjob.metadata.name.as_deref().unwrap_or_default();
    let involved = Involved::of(cronjob);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut ok = true;
    for action in actions {
        ok &= match action {
            Action::CreateJob(job) => match serde_json::from_value::<Job>(job) {
                Ok(job) => {
                    let job_name = job.metadata.name.clone().unwrap_or_default();
                    match jobs.create(&PostParams::default(), &job).await {
                        Ok(_) => {
                            recorder
                                .record(
                                    &involved,
                                    &Event::normal("SuccessfulCreate", format!("Created job {job_name}")),
                                )
                                .await;
                            true
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => true,
                        Err(e) => {
                            let message = crate::client::message(&e);
                            recorder
                                .record(
                                    &involved,
                                    &Event::warning("FailedCreate", format!("Error creating job: {message}")),
                                )
                                .await;
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cronjob {namespace}/{name}: its template is no Job: {e}");
                    false
                }
            },
            Action::DeleteJob { name: job, uid } => {
                let params = crate::client::delete_params(uid, Some(PropagationPolicy::Background));
                let outcome = super::deleted(jobs.delete(&job, &params).await, "job", &job);
                if outcome == Some(true) {
                    recorder.record(&involved, &Event::normal("SuccessfulDelete", format!("Deleted job {job}"))).await;
                }
                outcome.is_some()
            }
            Action::Skipped(why) => {
                recorder.record(&involved, &Event::normal("JobAlreadyActive", why)).await;
                true
            }
            Action::Status(status) => {
                let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
                let patch = json!({"status": status});
                super::report(
                    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await,
                    "cronjob",
                    name,
                )
            }
        };
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob(schedule: &str, policy: &str) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "tick", "namespace": "default", "uid": "cj", "creationTimestamp": "2026-01-01T00:00:30Z"},
            "spec": {"schedule": schedule, "concurrencyPolicy": policy, "successfulJobsHistoryLimit": 2,
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}},
        }))
        .unwrap()
    }

    fn job(name: &str, state: Option<&str>, created: u32) -> Job {
        let conditions = state.map(|s| json!([{"type": s, "status": "True"}]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "creationTimestamp": format!("2026-01-01T00:{created:02}:00Z"),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick", "uid": "cj", "controller": true}]},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn at(minute: u32, second: u32) -> Time {
        serde_json::from_value(json!(format!("2026-01-01T00:{minute:02}:{second:02}Z"))).unwrap()
    }

    #[test]
    fn a_job_at_each_scheduled_minute_and_the_next_one_awaited() {
        let cj = cronjob("*/2 * * * *", "Allow");
        let (actions, requeue) = sync(&cj, &[], &at(1, 10));
        assert!(actions.iter().all(|a| !matches!(a, Action::CreateJob(_))), "nothing due before 00:02: {actions:?}");
        assert_eq!(requeue, Some(Duration::from_millis(50_100)));
        let (actions, _) = sync(&cj, &[], &at(2, 5));
        let Action::CreateJob(created) = &actions[0] else { panic!("{actions:?}") };
        // Named by the scheduled minute since the epoch.
        assert_eq!(created["metadata"]["name"], format!("tick-{}", at(2, 0).0.as_second() / 60));
        assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "cj");
        let Some(Action::Status(status)) = actions.last() else { panic!() };
        assert_eq!(status["lastScheduleTime"], "2026-01-01T00:02:00Z");
    }

    #[test]
    fn forbid_skips_while_a_job_runs_and_replace_deletes_it() {
        let running = job("tick-old", None, 0);
        let (actions, _) = sync(&cronjob("*/2 * * * *", "Forbid"), &[&running], &at(2, 5));
        assert!(matches!(actions[0], Action::Skipped(_)), "{actions:?}");
        let (actions, _) = sync(&cronjob("*/2 * * * *", "Replace"), &[&running], &at(2, 5));
        assert_eq!(actions[0], Action::DeleteJob { name: "tick-old".into(), uid: "tick-old".into() });
        assert!(matches!(actions[1], Action::CreateJob(_)));
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_go_oldest_first() {
        let jobs = [
            job("a", Some("Complete"), 1),
            job("b", Some("Complete"), 2),
            job("c", Some("Complete"), 3),
            job("d", Some("Failed"), 4),
            job("e", Some("Failed"), 5),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        let mut cj = cronjob("0 0 1 1 *", "Allow");
        cj.spec.as_mut().unwrap().suspend = Some(true);
        let (actions, _) = sync(&cj, &refs, &at(10, 0));
        let deleted: Vec<&str> = actions
            .iter()
            .filter_map(|a| if let Action::DeleteJob { name, .. } = a { Some(name.as_str()) } else { None })
            .collect();
        assert_eq!(deleted, ["a", "d"]);
    }
}
