//! replicationcontrollers (core/v1): the older ReplicaSet, with an equality selector that
//! defaults to the template's labels (and may change).

use k8s_openapi::api::core::v1::{ReplicationController, ReplicationControllerSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::checks::non_negative;
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_template, validate_template};
use super::super::{Cause, Column, FieldLabel, Rules, Scale};

pub struct ReplicationControllers;

fn selector(spec: &ReplicationControllerSpec) -> Option<LabelSelector> {
    let labels = spec.selector.clone().filter(|s| !s.is_empty())?;
    Some(LabelSelector { match_labels: Some(labels), match_expressions: None })
}

impl Rules for ReplicationControllers {
    type Object = ReplicationController;
    const SHORT_NAMES: &'static [&'static str] = &["rc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "scale"];
    const GENERATION: bool = true;

    fn default(controller: &mut ReplicationController) {
        let spec = controller.spec.get_or_insert_with(ReplicationControllerSpec::default);
        if let Some(template) = spec.template.as_mut() {
            let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).filter(|l| !l.is_empty());
            if let Some(labels) = labels {
                if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
                    spec.selector = Some(labels.clone());
                }
                if controller.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
                    controller.metadata.labels = Some(labels);
                }
            }
            default_template(template);
        }
        spec.replicas.get_or_insert(1);
        spec.min_ready_seconds.get_or_insert(0);
    }

    fn prepare_for_create(controller: &mut ReplicationController) {
        controller.status = Some(Default::default());
    }

    fn validate(controller: &ReplicationController) -> Vec<Cause> {
        let Some(spec) = controller.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes = non_negative([
            ("spec.replicas", spec.replicas.map(i64::from)),
            ("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)),
        ]);
        match selector(spec) {
            None => causes.push(("spec.selector".into(), "Required value".into())),
            Some(selector) => causes.extend(validate_template(
                Some(&selector),
                spec.template.as_ref(),
                "spec",
                "ReplicationController",
                &["Always"],
            )),
        }
        causes
    }

    fn columns() -> Vec<Column> {
        let selector = columns::string("Selector", 1, |o| columns::labels(&o["spec"]["selector"]));
        [&[NAME][..], &columns::REPLICA_COUNTS, &[AGE], &columns::TEMPLATE_CONTAINERS, &[selector]].concat()
    }

    fn field_labels() -> Vec<FieldLabel> {
        vec![FieldLabel {
            name: "status.replicas",
            value: |o| o["status"]["replicas"].as_i64().unwrap_or(0).to_string(),
        }]
    }

    fn scale(controller: &ReplicationController) -> Option<Scale> {
        let spec = controller.spec.as_ref()?;
        let current = controller.status.as_ref().map(|s| s.replicas);
        Some(super::super::apps::scale_of(spec.replicas, current, selector(spec).as_ref()))
    }
}
