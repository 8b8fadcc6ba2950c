//! statefulsets (apps/v1): pods made in order, rolling updates from the highest ordinal,
//! claims kept; a DNS-label name; only replicas, ordinals, the template, the update
//! strategy, the history limit, the claim retention policy and minReadySeconds change.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::checks::{non_negative, one_of};
use super::super::columns::{self, AGE, NAME};
use super::super::core::persistentvolumeclaims::default_claim;
use super::super::pod_template::{default_string, default_template, validate_template};
use super::super::{Cause, Column, Rules, Scale};

pub struct StatefulSets;

impl Rules for StatefulSets {
    type Object = StatefulSet;
    const SHORT_NAMES: &'static [&'static str] = &["sts"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "scale"];
    const GENERATION: bool = true;

    fn name_rule() -> fn(&str) -> Vec<String> {
        crate::validation::dns_label
    }

    fn default(stateful_set: &mut StatefulSet) {
        let spec = stateful_set.spec.get_or_insert_with(StatefulSetSpec::default);
        default_string(&mut spec.pod_management_policy, "OrderedReady");
        let strategy = spec.update_strategy.get_or_insert_with(StatefulSetUpdateStrategy::default);
        if strategy.type_.as_deref().is_none_or(str::is_empty) {
            strategy.type_ = Some("RollingUpdate".into());
            strategy.rolling_update.get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
        }
        if let Some(rolling) = strategy.rolling_update.as_mut() {
            rolling.partition.get_or_insert(0);
        }
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
        default_string(&mut retention.when_deleted, "Retain");
        default_string(&mut retention.when_scaled, "Retain");
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        default_template(&mut spec.template);
        for claim in spec.volume_claim_templates.iter_mut().flatten() {
            default_claim(claim);
        }
    }

    fn prepare_for_create(stateful_set: &mut StatefulSet) {
        stateful_set.status = Some(Default::default());
    }

    fn validate(stateful_set: &StatefulSet) -> Vec<Cause> {
        let Some(spec) = stateful_set.spec.as_ref() else { return vec![("spec".into(), "Required value".into())] };
        let mut causes =
            validate_template(Some(&spec.selector), Some(&spec.template), "spec", "StatefulSet", &["Always"]);
        causes.extend(non_negative([
            ("spec.replicas", spec.replicas.map(i64::from)),
            ("spec.minReadySeconds", spec.min_ready_seconds.map(i64::from)),
            ("spec.revisionHistoryLimit", spec.revision_history_limit.map(i64::from)),
        ]));
        let policy = spec.pod_management_policy.as_deref();
        causes.extend(one_of("spec.podManagementPolicy", policy, &["OrderedReady", "Parallel"]));
        if let Some(strategy) = spec.update_strategy.as_ref() {
            let kind = strategy.type_.as_deref();
            causes.extend(one_of("spec.updateStrategy.type", kind, &["OnDelete", "RollingUpdate"]));
            if let Some(rolling) = strategy.rolling_update.as_ref() {
                causes.extend(non_negative([(
                    "spec.updateStrategy.rollingUpdate.partition",
                    rolling.partition.map(i64::from),
                )]));
                if matches!(rolling.max_unavailable, Some(IntOrString::Int(0))) {
                    causes.push((
                        "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                        "Invalid value: 0: must be greater than 0".into(),
                    ));
                }
            }
        }
        if let Some(retention) = spec.persistent_volume_claim_retention_policy.as_ref() {
            let path = "spec.persistentVolumeClaimRetentionPolicy";
            causes.extend(one_of(
                &format!("{path}.whenDeleted"),
                retention.when_deleted.as_deref(),
                &["Retain", "Delete"],
            ));
            causes.extend(one_of(
                &format!("{path}.whenScaled"),
                retention.when_scaled.as_deref(),
                &["Retain", "Delete"],
            ));
        }
        causes
    }

    fn validate_update(new: &StatefulSet, old: &StatefulSet) -> Vec<Cause> {
        let (Some(new), Some(old)) = (new.spec.as_ref(), old.spec.as_ref()) else { return vec![] };
        // Everything but the fields that may change must be as it was.
        let mut frozen = new.clone();
        frozen.replicas = old.replicas;
        frozen.ordinals = old.ordinals.clone();
        frozen.template = old.template.clone();
        frozen.update_strategy = old.update_strategy.clone();
        frozen.revision_history_limit = old.revision_history_limit;
        frozen.persistent_volume_claim_retention_policy = old.persistent_volume_claim_retention_policy.clone();
        frozen.min_ready_seconds = old.min_ready_seconds;
        if frozen == *old {
            return vec![];
        }
        vec![(
            "spec".into(),
            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
             'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and \
             'minReadySeconds' are forbidden"
                .into(),
        )]
    }

    fn columns() -> Vec<Column> {
        [&[NAME, columns::READY_OF_DESIRED, AGE][..], &columns::TEMPLATE_CONTAINERS].concat()
    }

    fn scale(stateful_set: &StatefulSet) -> Option<Scale> {
        let spec = stateful_set.spec.as_ref()?;
        let current = stateful_set.status.as_ref().map(|s| s.replicas);
        Some(super::scale_of(spec.replicas, current, Some(&spec.selector)))
    }
}
