//! daemonsets (apps/v1): rolling updates one node at a time by default, ten revisions
//! kept; the template's generation kept in the `deprecated.daemonset.template.generation`
//! annotation, as kube-apiserver's apps/v1 conversion writes it.

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::checks::{immutable, non_negative, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_template, validate_template};
use super::super::{Cause, Column, Rules};

pub struct DaemonSets;

const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn template_generation(daemon_set: &DaemonSet) -> i64 {
    let annotations = daemon_set.metadata.annotations.as_ref();
    annotations.and_then(|a| a.get(TEMPLATE_GENERATION)).and_then(|g| g.parse().ok()).unwrap_or(0)
}

fn set_template_generation(daemon_set: &mut DaemonSet, generation: i64) {
    let annotations = daemon_set.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(TEMPLATE_GENERATION.into(), generation.to_string());
}

fn is_zero(value: &Option<IntOrString>) -> bool {
    match value {
        None | Some(IntOrString::Int(0)) => true,
        Some(IntOrString::String(s)) => s == "0%" || s == "0",
        Some(IntOrString::Int(_)) => false,
    }
}

impl Rules for DaemonSets {
    type Object = DaemonSet;
    const SHORT_NAMES: &'static [&'static str] = &["ds"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const GENERATION: bool = true;

    fn default(daemon_set: &mut DaemonSet) {
        let spec = daemon_set.spec.get_or_insert_with(DaemonSetSpec::default);
        let strategy = spec.update_strategy.get_or_insert_with(DaemonSetUpdateStrategy::default);
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some("RollingUpdate".into());
        }
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDaemonSet::default);
            rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            rolling.max_surge.get_or_insert(IntOrString::Int(0));
        }
        spec.revision_history_limit.get_or_insert(10);
        default_template(&mut spec.template);
    }

    fn prepare_for_create(daemon_set: &mut DaemonSet) {
        daemon_set.status = Some(Default::default());
        set_template_generation(daemon_set, 1);
    }

    fn validate(daemon_set: &DaemonSet) -> Vec<Cause> {
        let Some(spec) = daemon_set.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes =
            validate_template(Some(&spec.selector), Some(&spec.template), "spec", "DaemonSet", &["Always"]);
        causes.extend(non_negative([
            ("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)),
            ("spec.revisionHistoryLimit", spec.revision_history_limit.map(i64::from)),
        ]));
        if let Some(strategy) = spec.update_strategy.as_ref() {
            let kind = strategy.type_.as_deref();
            causes.extend(one_of("spec.updateStrategy.type", kind, &["OnDelete", "RollingUpdate"]));
            if let (Some("RollingUpdate"), Some(rolling)) = (kind, strategy.rolling_update.as_ref()) {
                let path = "spec.updateStrategy.rollingUpdate";
                match (is_zero(&rolling.max_unavailable), is_zero(&rolling.max_surge)) {
                    (true, true) => causes.push((
                        format!("{path}.maxUnavailable"),
                        "Required value: cannot be 0 when maxSurge is 0".into(),
                    )),
                    (false, false) => causes.push((
                        format!("{path}.maxSurge"),
                        "Invalid value: may not be set when maxUnavailable is non-zero".into(),
                    )),
                    _ => {}
                }
            }
        }
        causes
    }

    fn prepare_for_update(new: &mut DaemonSet, old: &DaemonSet) {
        let previous = template_generation(old);
        let changed = new.spec.as_ref().map(|s| &s.template) != old.spec.as_ref().map(|s| &s.template);
        set_template_generation(new, if changed { previous + 1 } else { previous });
    }

    fn validate_update(new: &DaemonSet, old: &DaemonSet) -> Vec<Cause> {
        let selector = |d: &DaemonSet| d.spec.as_ref().map(|s| s.selector.clone());
        immutable(&selector(new), &selector(old), "spec.selector").into_iter().collect()
    }

    fn columns() -> Vec<Column> {
        let counts = [
            NAME,
            columns::integer("Desired", 0, |o| columns::count(&o["status"]["desiredNumberScheduled"])),
            columns::integer("Current", 0, |o| columns::count(&o["status"]["currentNumberScheduled"])),
            columns::integer("Ready", 0, |o| columns::count(&o["status"]["numberReady"])),
            columns::integer("Up-to-date", 0, |o| columns::count(&o["status"]["updatedNumberScheduled"])),
            columns::integer("Available", 0, |o| columns::count(&o["status"]["numberAvailable"])),
            columns::string("Node Selector", 0, |o| columns::labels(&o["spec"]["template"]["spec"]["nodeSelector"])),
            AGE,
        ];
        [&counts[..], &columns::TEMPLATE_CONTAINERS, &[columns::SELECTOR]].concat()
    }
}
