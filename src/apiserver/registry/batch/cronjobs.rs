//! cronjobs (batch/v1): jobs made on a schedule. The schedule is cron's five fields (or a
//! descriptor) with the time zone in its own field; the job template's selector is
//! always generated.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec};

use super::super::checks::{non_negative, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::default_string;
use super::super::{Cause, Column, Rules};
use super::jobs::{default_job_spec, validate_job_spec};
use crate::cron::Schedule;

pub struct CronJobs;

/// A cron job's name, with the 11 characters its jobs' names add, is a DNS label.
const MAX_NAME: usize = 52;

impl Rules for CronJobs {
    type Object = CronJob;
    const SHORT_NAMES: &'static [&'static str] = &["cj"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const GENERATION: bool = true;

    fn default(cron_job: &mut CronJob) {
        let spec = cron_job.spec.get_or_insert_with(CronJobSpec::default);
        default_string(&mut spec.concurrency_policy, "Allow");
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        if let Some(job) = spec.job_template.spec.as_mut() {
            default_job_spec(job);
            // The selector is generated for each job: no default for it here.
            job.manual_selector = job.manual_selector.filter(|m| *m);
        }
    }

    fn prepare_for_create(cron_job: &mut CronJob) {
        cron_job.status = Some(Default::default());
    }

    fn validate(cron_job: &CronJob) -> Vec<Cause> {
        let mut causes = Vec::new();
        let name = cron_job.metadata.name.clone().unwrap_or_default();
        if name.len() > MAX_NAME {
            causes.push((
                "metadata.name".into(),
                format!("Invalid value: \"{name}\": must be no more than {MAX_NAME} characters"),
            ));
        }
        let Some(spec) = cron_job.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        if spec.schedule.is_empty() {
            causes.push(("spec.schedule".into(), "Required value".into()));
        } else if spec.schedule.contains("TZ") {
            causes.push((
                "spec.schedule".into(),
                format!(
                    "Invalid value: \"{}\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                    spec.schedule
                ),
            ));
        } else if let Err(e) = Schedule::parse(&spec.schedule) {
            causes.push(("spec.schedule".into(), format!("Invalid value: \"{}\": {e}", spec.schedule)));
        }
        if let Some(zone) = spec.time_zone.as_deref()
            && !valid_time_zone(zone)
        {
            causes.push(("spec.timeZone".into(), format!("Invalid value: \"{zone}\": unknown time zone {zone}")));
        }
        let policy = spec.concurrency_policy.as_deref();
        causes.extend(one_of("spec.concurrencyPolicy", policy, &["Allow", "Forbid", "Replace"]));
        causes.extend(non_negative([
            ("spec.startingDeadlineSeconds", spec.starting_deadline_seconds),
            ("spec.successfulJobsHistoryLimit", spec.successful_jobs_history_limit.map(i64::from)),
            ("spec.failedJobsHistoryLimit", spec.failed_jobs_history_limit.map(i64::from)),
        ]));
        if let Some(job) = spec.job_template.spec.as_ref() {
            if job.manual_selector == Some(true) {
                causes.push(("spec.jobTemplate.spec.manualSelector".into(), "Unsupported value: true".into()));
            }
            if job.selector.is_some() {
                causes.push((
                    "spec.jobTemplate.spec.selector".into(),
                    "Invalid value: `selector` will be auto-generated".into(),
                ));
            }
            causes.extend(validate_job_spec(job, "spec.jobTemplate.spec"));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Schedule", 0, |o| o["spec"]["schedule"].clone()),
            columns::string("Timezone", 0, |o| o["spec"]["timeZone"].as_str().unwrap_or("<none>").into()),
            Column {
                name: "Suspend",
                kind: "boolean",
                priority: 0,
                cell: |o| match o["spec"]["suspend"].as_bool() {
                    Some(true) => "True".into(),
                    Some(false) => "False".into(),
                    None => "<unset>".into(),
                },
            },
            columns::integer("Active", 0, |o| o["status"]["active"].as_array().map_or(0, Vec::len).into()),
            columns::string("Last Schedule", 0, |o| match o["status"]["lastScheduleTime"].as_str() {
                Some(at) => columns::human_age(at).into(),
                None => "<none>".into(),
            }),
            AGE,
            columns::string("Containers", 1, |o| {
                columns::template_containers(&o["spec"]["jobTemplate"]["spec"]["template"], "name")
            }),
            columns::string("Images", 1, |o| {
                columns::template_containers(&o["spec"]["jobTemplate"]["spec"]["template"], "image")
            }),
            columns::string("Selector", 1, |o| columns::selector(&o["spec"]["jobTemplate"]["spec"]["selector"])),
        ]
    }
}

/// An IANA time zone name the machine knows (Go embeds the database; Debian ships it as
/// tzdata), or the two Go knows without one.
fn valid_time_zone(zone: &str) -> bool {
    let well_formed =
        !zone.is_empty() && !zone.starts_with('/') && !zone.split('/').any(|part| part == ".." || part.is_empty());
    let known = std::path::Path::new("/usr/share/zoneinfo").join(zone).is_file();
    matches!(zone, "UTC" | "Local") || well_formed && known
}
