//! deployments (apps/v1): rolling updates by default (25 % / 25 %), ten revisions kept,
//! ten minutes to progress; the selector fixed once made and matching the template.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::checks::{immutable, non_negative, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_template, validate_template};
use super::super::{Cause, Column, Rules, Scale};

pub struct Deployments;

impl Rules for Deployments {
    type Object = Deployment;
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "scale"];
    const GENERATION: bool = true;

    fn default(deployment: &mut Deployment) {
        let spec = deployment.spec.get_or_insert_with(DeploymentSpec::default);
        spec.replicas.get_or_insert(1);
        let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some("RollingUpdate".into());
        }
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
            rolling.max_unavailable.get_or_insert(IntOrString::String("25%".into()));
            rolling.max_surge.get_or_insert(IntOrString::String("25%".into()));
        }
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        default_template(&mut spec.template);
    }

    fn prepare_for_create(deployment: &mut Deployment) {
        deployment.status = Some(Default::default());
    }

    fn validate(deployment: &Deployment) -> Vec<Cause> {
        let Some(spec) = deployment.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes =
            validate_template(Some(&spec.selector), Some(&spec.template), "spec", "Deployment", &["Always"]);
        causes.extend(non_negative([
            ("spec.replicas", spec.replicas.map(i64::from)),
            ("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)),
            ("spec.revisionHistoryLimit", spec.revision_history_limit.map(i64::from)),
        ]));
        if let (Some(progress), min) = (spec.progress_deadline_seconds, spec.min_ready_seconds.unwrap_or(0))
            && progress <= min
        {
            causes.push((
                "spec.progressDeadlineSeconds".into(),
                format!("Invalid value: {progress}: must be greater than minReadySeconds"),
            ));
        }
        if let Some(strategy) = spec.strategy.as_ref() {
            match strategy.type_.as_deref() {
                Some("Recreate") if strategy.rolling_update.is_some() => causes.push((
                    "spec.strategy.rollingUpdate".into(),
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
                )),
                Some("RollingUpdate") => {
                    let zero = |v: &Option<IntOrString>| {
                        matches!(v, Some(IntOrString::Int(0))) || matches!(v, Some(IntOrString::String(s)) if s == "0%")
                    };
                    if let Some(rolling) = strategy.rolling_update.as_ref()
                        && zero(&rolling.max_unavailable)
                        && zero(&rolling.max_surge)
                    {
                        causes.push((
                            "spec.strategy.rollingUpdate.maxUnavailable".into(),
                            "Invalid value: 0: may not be 0 when `maxSurge` is 0".into(),
                        ));
                    }
                }
                other => causes.extend(one_of("spec.strategy.type", other, &["Recreate", "RollingUpdate"])),
            }
        }
        causes
    }

    fn prepare_for_update(new: &mut Deployment, old: &Deployment) {
        // generation counts annotation changes too (a rollback was asked through one).
        if new.metadata.annotations != old.metadata.annotations {
            new.metadata.generation = Some(old.metadata.generation.unwrap_or(1) + 1);
        }
    }

    fn validate_update(new: &Deployment, old: &Deployment) -> Vec<Cause> {
        let selector = |d: &Deployment| d.spec.as_ref().map(|s| s.selector.clone());
        immutable(&selector(new), &selector(old), "spec.selector").into_iter().collect()
    }

    fn columns() -> Vec<Column> {
        let counts = [
            NAME,
            columns::READY_OF_DESIRED,
            columns::integer("Up-to-date", 0, |o| columns::count(&o["status"]["updatedReplicas"])),
            columns::integer("Available", 0, |o| columns::count(&o["status"]["availableReplicas"])),
            AGE,
        ];
        [&counts[..], &columns::TEMPLATE_CONTAINERS, &[columns::SELECTOR]].concat()
    }

    fn scale(deployment: &Deployment) -> Option<Scale> {
        let spec = deployment.spec.as_ref()?;
        Some(super::scale_of(spec.replicas, deployment.status.as_ref().and_then(|s| s.replicas), Some(&spec.selector)))
    }
}
