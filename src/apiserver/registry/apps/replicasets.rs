//! replicasets (apps/v1): one replica by default; the selector fixed once made and
//! matching the template.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};

use super::super::checks::{immutable, non_negative};
use super::super::columns::{self, AGE, NAME};
use super::super::pod_template::{default_template, validate_template};
use super::super::{Cause, Column, Rules, Scale};

pub struct ReplicaSets;

impl Rules for ReplicaSets {
    type Object = ReplicaSet;
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "scale"];
    const GENERATION: bool = true;

    fn default(replica_set: &mut ReplicaSet) {
        let spec = replica_set.spec.get_or_insert_with(ReplicaSetSpec::default);
        spec.replicas.get_or_insert(1);
        if let Some(template) = spec.template.as_mut() {
            default_template(template);
        }
    }

    fn prepare_for_create(replica_set: &mut ReplicaSet) {
        replica_set.status = Some(Default::default());
    }

    fn validate(replica_set: &ReplicaSet) -> Vec<Cause> {
        let Some(spec) = replica_set.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes =
            validate_template(Some(&spec.selector), spec.template.as_ref(), "spec", "ReplicaSet", &["Always"]);
        causes.extend(non_negative([
            ("spec.replicas", spec.replicas.map(i64::from)),
            ("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)),
        ]));
        causes
    }

    fn validate_update(new: &ReplicaSet, old: &ReplicaSet) -> Vec<Cause> {
        let selector = |r: &ReplicaSet| r.spec.as_ref().map(|s| s.selector.clone());
        immutable(&selector(new), &selector(old), "spec.selector").into_iter().collect()
    }

    fn columns() -> Vec<Column> {
        [&[NAME][..], &columns::REPLICA_COUNTS, &[AGE], &columns::TEMPLATE_CONTAINERS, &[columns::SELECTOR]].concat()
    }

    fn scale(replica_set: &ReplicaSet) -> Option<Scale> {
        let spec = replica_set.spec.as_ref()?;
        Some(super::scale_of(spec.replicas, replica_set.status.as_ref().map(|s| s.replicas), Some(&spec.selector)))
    }
}
