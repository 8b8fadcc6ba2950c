//! ingressclasses (networking.k8s.io/v1, cluster-scoped): which controller serves an
//! ingress; one may be the default (`ingressclass.kubernetes.io/is-default-class`).

use k8s_openapi::api::networking::v1::IngressClass;

use super::super::checks::{immutable, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::{Cause, Column, Rules};

pub struct IngressClasses;

pub const DEFAULT_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

impl Rules for IngressClasses {
    type Object = IngressClass;
    const GENERATION: bool = true;

    fn default(class: &mut IngressClass) {
        if let Some(parameters) = class.spec.as_mut().and_then(|s| s.parameters.as_mut()) {
            parameters.scope.get_or_insert_with(|| "Cluster".into());
        }
    }

    fn validate(class: &IngressClass) -> Vec<Cause> {
        let mut causes = Vec::new();
        let Some(spec) = class.spec.as_ref() else { return causes };
        if let Some(controller) = spec.controller.as_deref() {
            if controller.len() > 250 {
                causes.push(("spec.controller".into(), "Too long: must have at most 250 bytes".into()));
            }
            let (domain, path) = controller.split_once('/').unwrap_or((controller, ""));
            if path.is_empty() || !crate::validation::dns_subdomain(domain).is_empty() {
                causes.push((
                    "spec.controller".into(),
                    format!(
                        "Invalid value: \"{controller}\": must be a domain-prefixed path (such as \"acme.io/foo\")"
                    ),
                ));
            }
        }
        if let Some(parameters) = spec.parameters.as_ref() {
            let path = "spec.parameters";
            if parameters.kind.is_empty() {
                causes.push((format!("{path}.kind"), "Required value: kind is required".into()));
            }
            if parameters.name.is_empty() {
                causes.push((format!("{path}.name"), "Required value: name is required".into()));
            }
            let scope = parameters.scope.as_deref();
            causes.extend(one_of(&format!("{path}.scope"), scope, &["Cluster", "Namespace"]));
            match (scope, parameters.namespace.as_deref()) {
                (Some("Namespace"), None) => causes.push((
                    format!("{path}.namespace"),
                    "Required value: `parameters.scope` is set to 'Namespace'".into(),
                )),
                (Some("Cluster"), Some(_)) => causes
                    .push((format!("{path}.namespace"), "Forbidden: `parameters.scope` is set to 'Cluster'".into())),
                _ => {}
            }
        }
        causes
    }

    fn validate_update(new: &IngressClass, old: &IngressClass) -> Vec<Cause> {
        let controller = |c: &IngressClass| c.spec.as_ref().and_then(|s| s.controller.clone());
        immutable(&controller(new), &controller(old), "spec.controller").into_iter().collect()
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Controller", 0, |o| o["spec"]["controller"].as_str().unwrap_or("").into()),
            columns::string("Parameters", 0, |o| {
                let p = &o["spec"]["parameters"];
                match (p["kind"].as_str(), p["apiGroup"].as_str()) {
                    (Some(kind), Some(group)) => format!("{kind}.{group}/{}", p["name"].as_str().unwrap_or("")).into(),
                    (Some(kind), None) => format!("{kind}/{}", p["name"].as_str().unwrap_or("")).into(),
                    _ => "<none>".into(),
                }
            }),
            AGE,
        ]
    }
}
