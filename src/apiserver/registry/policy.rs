//! The policy group: poddisruptionbudgets, how many of a set of pods may be down at once
//! by choice (evictions honour them).

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::checks::one_of;
use super::columns::{self, AGE, NAME};
use super::{Cause, Column, Rules};

pub struct PodDisruptionBudgets;

/// An int-or-percent at `path`: zero or more, a percentage at most 100 %.
fn validate_amount(value: &IntOrString, path: &str) -> Vec<Cause> {
    match value {
        IntOrString::Int(n) if *n < 0 => {
            vec![(path.into(), format!("Invalid value: {n}: must be greater than or equal to 0"))]
        }
        IntOrString::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            None => vec![(
                path.into(),
                format!(
                    "Invalid value: \"{s}\": a valid percent string must be a numeric string followed by an ending '%'"
                ),
            )],
            Some(p) if p < 0 => {
                vec![(path.into(), format!("Invalid value: \"{s}\": must be greater than or equal to 0"))]
            }
            Some(p) if p > 100 => vec![(path.into(), format!("Invalid value: \"{s}\": must not be greater than 100%"))],
            Some(_) => vec![],
        },
        IntOrString::Int(_) => vec![],
    }
}

impl Rules for PodDisruptionBudgets {
    type Object = PodDisruptionBudget;
    const SHORT_NAMES: &'static [&'static str] = &["pdb"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const GENERATION: bool = true;

    fn prepare_for_create(budget: &mut PodDisruptionBudget) {
        budget.status = Some(Default::default());
    }

    fn validate(budget: &PodDisruptionBudget) -> Vec<Cause> {
        let Some(spec) = budget.spec.as_ref() else { return vec![] };
        let mut causes = Vec::new();
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            causes.push(("spec".into(), "Invalid value: minAvailable and maxUnavailable cannot be both set".into()));
        }
        if let Some(min) = spec.min_available.as_ref() {
            causes.extend(validate_amount(min, "spec.minAvailable"));
        }
        if let Some(max) = spec.max_unavailable.as_ref() {
            causes.extend(validate_amount(max, "spec.maxUnavailable"));
        }
        let policy = spec.unhealthy_pod_eviction_policy.as_deref();
        causes.extend(one_of("spec.unhealthyPodEvictionPolicy", policy, &["IfHealthyBudget", "AlwaysAllow"]));
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            NAME,
            columns::string("Min Available", 0, |o| columns::int_or_string(&o["spec"]["minAvailable"], "N/A")),
            columns::string("Max Unavailable", 0, |o| columns::int_or_string(&o["spec"]["maxUnavailable"], "N/A")),
            columns::integer("Allowed Disruptions", 0, |o| columns::count(&o["status"]["disruptionsAllowed"])),
            AGE,
        ]
    }
}
