//! jobs (batch/v1): pods run to completion. The selector is generated from the job's uid
//! unless `manualSelector` says otherwise (the template gets the matching labels); the
//! template is fixed once made, but for the scheduling fields of a suspended job that
//! never started.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::checks::{immutable, non_negative, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_string, default_template, validate_selector, validate_template_spec};
use super::super::{Cause, Column, FieldLabel, Rules};

pub struct Jobs;

pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

/// The job spec defaults, also those of a cron job's template.
pub fn default_job_spec(spec: &mut JobSpec) {
    match (spec.completions, spec.parallelism) {
        (None, None) => {
            spec.completions = Some(1);
            spec.parallelism = Some(1);
        }
        (_, None) => spec.parallelism = Some(1),
        _ => {}
    }
    let backoff = if spec.backoff_limit_per_index.is_some() { i32::MAX } else { 6 };
    spec.backoff_limit.get_or_insert(backoff);
    default_string(&mut spec.completion_mode, "NonIndexed");
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() { "Failed" } else { "TerminatingOrFailed" };
    default_string(&mut spec.pod_replacement_policy, replacement);
    for rule in spec.pod_failure_policy.iter_mut().flat_map(|p| p.rules.iter_mut()) {
        for condition in rule.on_pod_conditions.iter_mut().flatten() {
            if condition.status.is_empty() {
                condition.status = "True".into();
            }
        }
    }
    default_template(&mut spec.template);
}

/// What a job spec at `path` must be: a template whose pods stop (OnFailure or Never)
/// and that its selector, if any, selects; counts of zero or more; completions for an
/// Indexed job.
pub fn validate_job_spec(spec: &JobSpec, path: &str) -> Vec<Cause> {
    let mut causes = validate_template_spec(&spec.template, path, "Job", &["OnFailure", "Never"]);
    if let Some(selector) = spec.selector.as_ref() {
        causes.extend(validate_selector(selector, &spec.template, path, "Job"));
    }
    let restart_path = format!("{path}.template.spec.restartPolicy");
    let restart = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("");
    if matches!(restart, "Always" | "") {
        causes.retain(|(field, _)| *field != restart_path);
        causes.push((restart_path, "Required value: valid values: \"OnFailure\", \"Never\"".into()));
    } else if spec.pod_failure_policy.is_some() && restart != "Never" {
        causes.push((
            restart_path,
            "Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified".into(),
        ));
    }
    causes.extend(non_negative([
        (&*format!("{path}.parallelism"), spec.parallelism.map(i64::from)),
        (&*format!("{path}.completions"), spec.completions.map(i64::from)),
        (&*format!("{path}.activeDeadlineSeconds"), spec.active_deadline_seconds),
        (&*format!("{path}.backoffLimit"), spec.backoff_limit.map(i64::from)),
        (&*format!("{path}.ttlSecondsAfterFinished"), spec.ttl_seconds_after_finished.map(i64::from)),
    ]));
    let mode = spec.completion_mode.as_deref();
    causes.extend(one_of(&format!("{path}.completionMode"), mode, &["NonIndexed", "Indexed"]));
    if mode == Some("Indexed") && spec.completions.is_none() {
        causes.push((format!("{path}.completions"), "Required value: when completion mode is Indexed".into()));
    }
    let replacement = spec.pod_replacement_policy.as_deref();
    causes.extend(one_of(&format!("{path}.podReplacementPolicy"), replacement, &["TerminatingOrFailed", "Failed"]));
    causes
}

fn controller_labels(job: &Job) -> [(&'static str, String); 4] {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    [(LEGACY_CONTROLLER_UID, uid.clone()), (CONTROLLER_UID, uid), (LEGACY_JOB_NAME, name.clone()), (JOB_NAME, name)]
}

impl Rules for Jobs {
    type Object = Job;
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const GENERATION: bool = true;

    fn default(job: &mut Job) {
        let spec = job.spec.get_or_insert_with(JobSpec::default);
        let template_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone());
        if job.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            job.metadata.labels = template_labels.filter(|l| !l.is_empty());
        }
        default_job_spec(spec);
    }

    fn prepare_for_create(job: &mut Job) {
        job.status = Some(Default::default());
        let labels = controller_labels(job);
        let uid = labels[1].1.clone();
        let Some(spec) = job.spec.as_mut() else { return };
        if spec.manual_selector == Some(true) {
            return;
        }
        let template =
            spec.template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
        for (key, value) in labels {
            template.entry(key.into()).or_insert(value);
        }
        let selector = spec.selector.get_or_insert_with(LabelSelector::default);
        selector.match_labels.get_or_insert_with(BTreeMap::new).entry(CONTROLLER_UID.into()).or_insert(uid);
    }

    fn validate(job: &Job) -> Vec<Cause> {
        let Some(spec) = job.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes = validate_job_spec(spec, "spec");
        if spec.selector.is_none() {
            causes.push(("spec.selector".into(), "Required value".into()));
        }
        if spec.manual_selector != Some(true) {
            let uid = job.metadata.uid.clone().unwrap_or_default();
            let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            if labels.get(CONTROLLER_UID) != Some(&uid) {
                causes.push((
                    format!("spec.template.metadata.labels[{CONTROLLER_UID}]"),
                    format!("Required value: must be '{uid}'"),
                ));
            }
            let generated = BTreeMap::from([(CONTROLLER_UID.to_string(), uid)]);
            let selector = spec.selector.as_ref();
            if selector.is_some_and(|s| s.match_labels.as_ref() != Some(&generated) || s.match_expressions.is_some()) {
                causes.push(("spec.selector".into(), "Invalid value: `selector` not auto-generated".into()));
            }
        }
        causes
    }

    fn validate_update(new: &Job, old: &Job) -> Vec<Cause> {
        let (Some(new_spec), Some(old_spec)) = (new.spec.as_ref(), old.spec.as_ref()) else { return vec![] };
        let mut causes = Vec::new();
        causes.extend(immutable(&new_spec.selector, &old_spec.selector, "spec.selector"));
        causes.extend(immutable(&new_spec.completion_mode, &old_spec.completion_mode, "spec.completionMode"));
        causes.extend(immutable(&new_spec.pod_failure_policy, &old_spec.pod_failure_policy, "spec.podFailurePolicy"));
        let per_index = (&new_spec.backoff_limit_per_index, &old_spec.backoff_limit_per_index);
        causes.extend(immutable(per_index.0, per_index.1, "spec.backoffLimitPerIndex"));
        causes.extend(immutable(&new_spec.managed_by, &old_spec.managed_by, "spec.managedBy"));
        causes.extend(immutable(&new_spec.success_policy, &old_spec.success_policy, "spec.successPolicy"));
        let indexed = new_spec.completion_mode.as_deref() == Some("Indexed");
        if new_spec.completions != old_spec.completions {
            if !indexed {
                causes.extend(immutable(&new_spec.completions, &old_spec.completions, "spec.completions"));
            } else if new_spec.completions != new_spec.parallelism {
                causes.push((
                    "spec.completions".into(),
                    "Invalid value: can only be modified in tandem with spec.parallelism".into(),
                ));
            }
        }
        // A suspended job that never started may be moved elsewhere before it does.
        let mut template = new_spec.template.clone();
        let never_started = old.status.as_ref().is_none_or(|s| s.start_time.is_none());
        if old_spec.suspend == Some(true) && never_started {
            let (spec, previous) = (template.spec.as_mut(), old_spec.template.spec.as_ref());
            if let (Some(spec), Some(previous)) = (spec, previous) {
                spec.node_selector = previous.node_selector.clone();
                spec.affinity = previous.affinity.clone();
                spec.tolerations = previous.tolerations.clone();
                spec.scheduling_gates = previous.scheduling_gates.clone();
            }
            template.metadata = old_spec.template.metadata.clone();
        }
        causes.extend(immutable(&template, &old_spec.template, "spec.template"));
        causes
    }

    fn columns() -> Vec<Column> {
        let progress = [
            NAME,
            columns::string("Status", 0, status),
            columns::string("Completions", 0, |o| {
                let succeeded = o["status"]["succeeded"].as_i64().unwrap_or(0);
                match (o["spec"]["completions"].as_i64(), o["spec"]["parallelism"].as_i64().unwrap_or(1)) {
                    (Some(completions), _) => format!("{succeeded}/{completions}").into(),
                    (None, parallelism) if parallelism > 1 => format!("{succeeded}/1 of {parallelism}").into(),
                    (None, _) => format!("{succeeded}/1").into(),
                }
            }),
            columns::string("Duration", 0, |o| {
                let Some(start) = o["status"]["startTime"].as_str() else { return "".into() };
                match o["status"]["completionTime"].as_str() {
                    Some(end) => columns::human_duration_between(start, end).into(),
                    None => columns::human_age(start).into(),
                }
            }),
            AGE,
        ];
        [&progress[..], &columns::TEMPLATE_CONTAINERS, &[columns::SELECTOR]].concat()
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![FieldLabel {
            name: "status.successful",
            value: |o| o["status"]["succeeded"].as_i64().unwrap_or(0).to_string(),
        }]
    }
}

/// The Status column: the first condition that holds, as kubectl's printer picks it.
fn status(job: &serde_json::Value) -> serde_json::Value {
    if job["metadata"].get("deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let conditions = job["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let holds = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
    for kind in ["Complete", "Failed", "Suspended", "FailureTarget", "SuccessCriteriaMet"] {
        if holds(kind) {
            return kind.into();
        }
    }
    "Running".into()
}
