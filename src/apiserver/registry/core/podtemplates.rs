//! podtemplates (core/v1): a pod template kept on its own; any restart policy, no
//! ephemeral containers.

use k8s_openapi::api::core::v1::PodTemplate;

use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_template, validate_pod_spec};
use super::super::{Cause, Column, Rules};
use crate::validation;

pub struct PodTemplates;

impl Rules for PodTemplates {
    type Object = PodTemplate;
    const GENERATION: bool = true;

    fn default(template: &mut PodTemplate) {
        if let Some(template) = template.template.as_mut() {
            default_template(template);
        }
    }

    fn validate(template: &PodTemplate) -> Vec<Cause> {
        let Some(template) = template.template.as_ref() else { return vec![] };
        let mut causes = Vec::new();
        if let Some(labels) = template.metadata.as_ref().and_then(|m| m.labels.as_ref()) {
            causes.extend(validation::labels(labels, "template.metadata.labels"));
        }
        if let Some(spec) = template.spec.as_ref() {
            causes.extend(validate_pod_spec(spec, "template.spec", &["Always", "OnFailure", "Never"]));
            if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
                causes.push((
                    "template.spec.ephemeralContainers".into(),
                    "Forbidden: ephemeral containers not allowed in pod template".into(),
                ));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Containers", 0, |o| columns::template_containers(&o["template"], "name")),
            columns::string("Images", 0, |o| columns::template_containers(&o["template"], "image")),
            columns::string("Pod Labels", 0, |o| columns::labels(&o["template"]["metadata"]["labels"])),
            AGE,
        ]
    }
}
