//! The Deployment controller (kube-controller-manager's deployment): one ReplicaSet per
//! pod template (named by the template's hash, `pod-template-hash`), rolled from the old
//! ones to the new one by the strategy (RollingUpdate within maxSurge and maxUnavailable,
//! or Recreate), scaled proportionally when the Deployment is scaled mid-rollout,
//! numbered by revision (`kubectl rollout history|undo` read and restore them), trimmed
//! to revisionHistoryLimit, and reported through the status and the Available and
//! Progressing conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::informers::Informers;
use super::objects::{Claim, claim, controlled_by, controller_ref, now};
use crate::events::{Event, Involved, Recorder};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const TEMPLATE_HASH: &str = "pod-template-hash";

/// The Deployment's annotations its ReplicaSets do not copy (kube-controller-manager's
/// annotationsToSkip).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// What the controller does for one Deployment.
#[derive(Debug, PartialEq)]
pub enum Action {
    Claim(Claim),
    CreateReplicaSet(Value),
    /// A merge patch of an existing ReplicaSet (replicas, annotations, minReadySeconds),
    /// guarded by the resourceVersion it was computed from; `scaled`: its replicas from
    /// and to, when they change.
    PatchReplicaSet {
        name: String,
        patch: Value,
        scaled: Option<(i32, i32)>,
    },
    DeleteReplicaSet {
        name: String,
        uid: String,
    },
    PatchDeployment(Value),
    Status(Value),
}

/// One ReplicaSet as this pass sees it and changes it.
#[derive(Clone, Debug)]
struct Set<'a> {
    rs: &'a ReplicaSet,
    replicas: i32,
    annotations: BTreeMap<String, String>,
}

impl Set<'_> {
    fn name(&self) -> &str {
        self.rs.metadata.name.as_deref().unwrap_or_default()
    }
    fn status(&self) -> (i32, i32, i32) {
        let s = self.rs.status.clone().unwrap_or_default();
        (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
    }
    fn available(&self) -> i32 {
        self.status().2
    }
    fn revision(&self) -> i64 {
        revision_of(self.rs)
    }
    fn created(&self) -> i64 {
        self.rs.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second())
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// maxSurge and maxUnavailable as pod counts (kube-controller-manager's
/// ResolveFenceposts: surge rounds up, unavailability down, and both cannot be 0).
pub fn fenceposts(spec: &DeploymentSpec) -> (i32, i32) {
    let replicas = spec.replicas.unwrap_or(1);
    let rolling = spec.strategy.as_ref().and_then(|s| s.rolling_update.clone()).unwrap_or_default();
    let quarter = IntOrString::String("25%".into());
    let resolve = |value: &IntOrString, round_up: bool| match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = percent * replicas as i64;
            (if round_up { (scaled + 99) / 100 } else { scaled / 100 }) as i32
        }
    };
    let surge = resolve(rolling.max_surge.as_ref().unwrap_or(&quarter), true);
    let unavailable = resolve(rolling.max_unavailable.as_ref().unwrap_or(&quarter), false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable.min(replicas)) }
}

fn is_recreate(spec: &DeploymentSpec) -> bool {
    spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// The template's hash as kube-controller-manager names ReplicaSets with it: FNV-1a of
/// the template (and the collision count), its decimal digits spelled in an alphabet
/// without vowels.
pub fn template_hash(template: &Value, collisions: i32) -> String {
    let mut hash: u32 = 0x811c9dc5;
    let text = serde_json::to_string(template).unwrap_or_default();
    for byte in text.bytes().chain(if collisions > 0 { collisions.to_string().into_bytes() } else { vec![] }) {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x01000193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string().bytes().map(|b| ALPHABET[b as usize % ALPHABET.len()] as char).collect()
}

/// A pod template without its `pod-template-hash` label, as templates are compared: and
/// without empty objects and lists, which Go's clients write for struct fields that are
/// not set (kubectl rollout undo sends `resources: {}`) and which mean the same as none.
pub fn without_hash(template: &Value) -> Value {
    let mut template = without_empty(template.clone());
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(TEMPLATE_HASH);
        if labels.is_empty() {
            template["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if template.pointer("/metadata").and_then(Value::as_object).is_some_and(|m| m.is_empty()) {
        template.as_object_mut().map(|t| t.remove("metadata"));
    }
    template
}

fn without_empty(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, without_empty(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_empty).collect()),
        other => other,
    }
}

fn template_of_rs(rs: &ReplicaSet) -> Value {
    serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()).unwrap_or_default()
}

/// What one Deployment needs done, from it, the ReplicaSets and pods of its namespace;
/// and when to look again (the progress deadline).
pub fn sync(
    d: &Deployment,
    replica_sets: &[&ReplicaSet],
    pods: &[&Pod],
    now: &Time,
) -> (Vec<Action>, Option<Duration>) {
    let mut actions = Vec::new();
    let spec = d.spec.clone().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();

    let reference = controller_ref("apps/v1", "Deployment", &d.metadata);
    let (mut owned, claims) =
        claim(&d.metadata, &reference, &spec.selector, replica_sets, |rs| rs.metadata.deletion_timestamp.is_none());
    actions.extend(claims.into_iter().map(Action::Claim));
    owned.sort_by_key(|rs| {
        (rs.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()), rs.metadata.name.clone())
    });

    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let wanted = without_hash(&template);
    let new_index = owned.iter().position(|rs| without_hash(&template_of_rs(rs)) == wanted);
    let mut sets: Vec<Set> = owned
        .iter()
        .map(|rs| Set {
            rs,
            replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            annotations: rs.metadata.annotations.clone().unwrap_or_default(),
        })
        .collect();
    let mut status_extra = Status::default();

    if !deleting {
        let paused = spec.paused == Some(true);
        let max_old_revision = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_index)
            .map(|(_, s)| s.revision())
            .max()
            .unwrap_or(0);
        let new = new_index;
        // The new ReplicaSet's revision and copied annotations, and the Deployment's.
        if let Some(i) = new {
            annotate_new(d, &mut sets[i].annotations, max_old_revision + 1, true);
        }
        let scaling = sets.iter().any(|s| {
            s.replicas > 0
                && s.annotations
                    .get(DESIRED_REPLICAS)
                    .and_then(|r| r.parse::<i32>().ok())
                    .is_some_and(|r| r != spec.replicas.unwrap_or(1))
        });
        if paused || scaling {
            scale(&spec, new, &mut sets);
        } else {
            if new.is_none() && (!is_recreate(&spec) || ready_for_recreate_new(&sets, pods)) {
                let (rs, collisions) = new_replica_set(d, &template, replica_sets, &sets, max_old_revision + 1);
                status_extra.collisions = collisions;
                status_extra.created = Some(rs["metadata"]["name"].as_str().unwrap_or_default().to_string());
                actions.push(Action::CreateReplicaSet(rs));
            }
            if is_recreate(&spec) {
                rollout_recreate(&spec, new, &mut sets);
            } else if status_extra.created.is_none() {
                rollout_rolling(&spec, new.expect("a new ReplicaSet exists or is being made"), &mut sets);
            }
            // Trimmed history, once the rollout is complete.
            if let Some(limit) = spec.revision_history_limit
                && let Some(i) = new
                && status_extra.created.is_none()
                && complete(d, &sets, Some(i))
            {
                let mut old: Vec<&Set> = sets
                    .iter()
                    .enumerate()
                    .filter(|(j, s)| *j != i && s.rs.metadata.deletion_timestamp.is_none())
                    .map(|(_, s)| s)
                    .collect();
                old.sort_by_key(|s| (s.revision(), s.created()));
                let excess = old.len().saturating_sub(limit.max(0) as usize);
                for s in old.into_iter().take(excess) {
                    let observed = s.rs.status.as_ref().and_then(|st| st.observed_generation).unwrap_or(0);
                    if s.replicas == 0 && s.status().0 == 0 && s.rs.metadata.generation.unwrap_or(0) <= observed {
                        actions.push(Action::DeleteReplicaSet {
                            name: s.name().to_string(),
                            uid: s.rs.metadata.uid.clone().unwrap_or_default(),
                        });
                    }
                }
            }
        }
        // The changes this pass made to existing ReplicaSets.
        for set in &sets {
            let original_annotations = set.rs.metadata.annotations.clone().unwrap_or_default();
            let original_replicas = set.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let mut patch = json!({"metadata": {"resourceVersion": set.rs.metadata.resource_version}});
            let mut changed = false;
            if set.annotations != original_annotations {
                patch["metadata"]["annotations"] = json!(set.annotations);
                changed = true;
            }
            let scaled = (set.replicas != original_replicas).then_some((original_replicas, set.replicas));
            if scaled.is_some() {
                patch["spec"]["replicas"] = set.replicas.into();
                changed = true;
            }
            let is_new = new_index.is_some_and(|i| std::ptr::eq(sets[i].rs, set.rs));
            if is_new && set.rs.spec.as_ref().and_then(|s| s.min_ready_seconds) != spec.min_ready_seconds {
                patch["spec"]["minReadySeconds"] = spec.min_ready_seconds.unwrap_or(0).into();
                changed = true;
            }
            if changed {
                actions.push(Action::PatchReplicaSet { name: set.name().to_string(), patch, scaled });
            }
        }
        // The Deployment carries its new ReplicaSet's revision.
        let revision = match (new_index, &status_extra.created) {
            (Some(i), _) => sets[i].annotations.get(REVISION).cloned(),
            (None, Some(_)) => Some((max_old_revision + 1).to_string()),
            (None, None) => None,
        };
        let current = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
        if let Some(revision) = revision
            && current != Some(&revision)
        {
            actions.push(Action::PatchDeployment(json!({"metadata": {"annotations": {REVISION: revision}}})));
        }
    }

    let (status, requeue) = status(d, &sets, new_index, &status_extra, now);
    let current = serde_json::to_value(d.status.clone().unwrap_or_default()).unwrap_or_default();
    if status != current {
        actions.push(Action::Status(crate::client::merge_patch(&current, &status)));
    }
    (actions, requeue)
}

/// What a pass learnt that the status reports.
#[derive(Default)]
struct Status {
    /// The name of the new ReplicaSet this pass makes.
    created: Option<String>,
    collisions: Option<i32>,
}

/// The new ReplicaSet's revision (one past the old ones', unless it has that already),
/// the history of the revisions it had, and the Deployment's annotations.
fn annotate_new(d: &Deployment, annotations: &mut BTreeMap<String, String>, revision: i64, exists: bool) {
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&key.as_str()) {
            annotations.insert(key.clone(), value.clone());
        }
    }
    let old = annotations.get(REVISION).and_then(|r| r.parse::<i64>().ok());
    if old.is_none_or(|old| old < revision) {
        if exists && let Some(old) = old {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old.to_string(),
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
        annotations.insert(REVISION.into(), revision.to_string());
    }
}

/// The new ReplicaSet for the Deployment's template, and the collision count when its
/// first name was taken by another template.
fn new_replica_set(
    d: &Deployment,
    template: &Value,
    in_namespace: &[&ReplicaSet],
    sets: &[Set],
    revision: i64,
) -> (Value, Option<i32>) {
    let spec = d.spec.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let mut collisions = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
    let start = collisions;
    let hash = loop {
        let hash = template_hash(&without_hash(template), collisions);
        let taken = in_namespace.iter().any(|rs| rs.metadata.name.as_deref() == Some(&format!("{name}-{hash}")));
        if !taken || collisions > start + 10 {
            break hash;
        }
        collisions += 1;
    };
    let replicas = if is_recreate(&spec) {
        spec.replicas.unwrap_or(1)
    } else {
        let (surge, _) = fenceposts(&spec);
        let wanted = spec.replicas.unwrap_or(1);
        let current: i32 = sets.iter().map(|s| s.replicas).sum();
        (wanted + surge - current).clamp(0, wanted)
    };
    let mut template = template.clone();
    template["metadata"]["labels"][TEMPLATE_HASH] = hash.clone().into();
    let mut selector = serde_json::to_value(&spec.selector).unwrap_or_default();
    selector["matchLabels"][TEMPLATE_HASH] = hash.clone().into();
    let mut annotations = BTreeMap::new();
    annotate_new(d, &mut annotations, revision, false);
    let (surge, _) = fenceposts(&spec);
    annotations.insert(DESIRED_REPLICAS.into(), spec.replicas.unwrap_or(1).to_string());
    annotations.insert(MAX_REPLICAS.into(), (spec.replicas.unwrap_or(1) + surge).to_string());
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "namespace": d.metadata.namespace,
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [controller_ref("apps/v1", "Deployment", &d.metadata)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    (rs, (collisions != start).then_some(collisions))
}

/// Sets a ReplicaSet's size, and the Deployment size it was sized for.
fn resize(spec: &DeploymentSpec, set: &mut Set, replicas: i32) {
    let (surge, _) = fenceposts(spec);
    let wanted = spec.replicas.unwrap_or(1);
    set.replicas = replicas.max(0);
    set.annotations.insert(DESIRED_REPLICAS.into(), wanted.to_string());
    set.annotations.insert(MAX_REPLICAS.into(), (wanted + surge).to_string());
}

/// RollingUpdate: the new ReplicaSet grows while the total stays within replicas +
/// maxSurge; old ones shrink while the available pods stay at least replicas -
/// maxUnavailable (unavailable old pods go first).
fn rollout_rolling(spec: &DeploymentSpec, new: usize, sets: &mut [Set]) {
    let wanted = spec.replicas.unwrap_or(1);
    let (surge, unavailable) = fenceposts(spec);
    let total: i32 = sets.iter().map(|s| s.replicas).sum();
    if sets[new].replicas > wanted {
        resize(spec, &mut sets[new], wanted);
        return;
    }
    if sets[new].replicas < wanted {
        let grow = (wanted + surge - total).min(wanted - sets[new].replicas);
        if grow > 0 {
            let size = sets[new].replicas + grow;
            resize(spec, &mut sets[new], size);
            return;
        }
    }
    let old: Vec<usize> = (0..sets.len()).filter(|i| *i != new).collect();
    if old.iter().all(|i| sets[*i].replicas == 0) {
        return;
    }
    let min_available = wanted - unavailable;
    let new_unavailable = sets[new].replicas - sets[new].available();
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    // Unhealthy old replicas first: they take nothing from availability.
    for &i in &old {
        if budget <= 0 {
            break;
        }
        let unhealthy = sets[i].replicas - sets[i].available();
        if sets[i].replicas == 0 || unhealthy <= 0 {
            continue;
        }
        let down = budget.min(unhealthy);
        let size = sets[i].replicas - down;
        resize(spec, &mut sets[i], size);
        budget -= down;
    }
    // Then available ones, oldest first, while enough stay available.
    let available: i32 = sets.iter().map(|s| s.available().min(s.replicas)).sum();
    let mut down_total = available - min_available;
    for &i in &old {
        if down_total <= 0 {
            break;
        }
        if sets[i].replicas == 0 {
            continue;
        }
        let down = sets[i].replicas.min(down_total);
        let size = sets[i].replicas - down;
        resize(spec, &mut sets[i], size);
        down_total -= down;
    }
}

/// Whether a Recreate rollout may make its new ReplicaSet: every old pod is gone.
fn ready_for_recreate_new(sets: &[Set], pods: &[&Pod]) -> bool {
    let old_running = pods.iter().any(|p| {
        let terminal = super::objects::is_terminal(p);
        !terminal && sets.iter().any(|s| controlled_by(&p.metadata, s.rs.metadata.uid.as_deref().unwrap_or_default()))
    });
    sets.iter().all(|s| s.replicas == 0) && !old_running
}

/// Recreate: every old ReplicaSet to 0 first; the new one grows once their pods are gone.
fn rollout_recreate(spec: &DeploymentSpec, new: Option<usize>, sets: &mut [Set]) {
    let mut scaled_down = false;
    for (i, set) in sets.iter_mut().enumerate() {
        if Some(i) != new && set.replicas > 0 {
            resize(spec, set, 0);
            scaled_down = true;
        }
    }
    if scaled_down {
        return;
    }
    if let Some(new) = new {
        let old_pods: i32 = (0..sets.len()).filter(|i| *i != new).map(|i| sets[i].status().0).sum();
        if old_pods == 0 && sets[new].replicas != spec.replicas.unwrap_or(1) {
            resize(spec, &mut sets[new], spec.replicas.unwrap_or(1));
        }
    }
}

/// A scaling of the Deployment (or a paused one): the one active ReplicaSet takes the
/// new size; several share the change in proportion to their sizes (kube-controller-
/// manager's proportional scaling), the rest to the largest.
fn scale(spec: &DeploymentSpec, new: Option<usize>, sets: &mut [Set]) {
    let wanted = spec.replicas.unwrap_or(1);
    let active: Vec<usize> = (0..sets.len()).filter(|i| sets[*i].replicas > 0).collect();
    let target = match active.as_slice() {
        [only] => Some(*only),
        [] => new.or(sets.len().checked_sub(1)),
        _ => None,
    };
    if let Some(i) = target {
        if sets[i].replicas != wanted {
            resize(spec, &mut sets[i], wanted);
        }
        return;
    }
    if let Some(n) = new {
        let saturated = sets[n].replicas == wanted && sets[n].available() == wanted;
        if saturated {
            for i in active.iter().copied().filter(|i| *i != n) {
                resize(spec, &mut sets[i], 0);
            }
            return;
        }
    }
    if is_recreate(spec) {
        return;
    }
    let (surge, _) = fenceposts(spec);
    let allowed = if wanted > 0 { wanted + surge } else { 0 };
    let current: i32 = active.iter().map(|i| sets[*i].replicas).sum();
    let to_add = allowed - current;
    if to_add == 0 {
        return;
    }
    let mut order = active.clone();
    // Growing favours the largest, newest; shrinking the largest, oldest.
    order.sort_by(|a, b| {
        let size = sets[*b].replicas.cmp(&sets[*a].replicas);
        let age = if to_add > 0 {
            sets[*b].created().cmp(&sets[*a].created())
        } else {
            sets[*a].created().cmp(&sets[*b].created())
        };
        size.then(age)
    });
    let mut added = 0;
    let mut sizes: BTreeMap<usize, i32> = BTreeMap::new();
    for &i in &order {
        let old_size = sets[i]
            .annotations
            .get(MAX_REPLICAS)
            .and_then(|r| r.parse::<i32>().ok())
            .filter(|r| *r > 0)
            .unwrap_or(sets[i].replicas.max(1));
        let fraction = ((sets[i].replicas as f64 * allowed as f64 / old_size as f64).round() as i32) - sets[i].replicas;
        let remaining = to_add - added;
        let share = if to_add > 0 { fraction.min(remaining).max(0) } else { fraction.max(remaining).min(0) };
        added += share;
        sizes.insert(i, sets[i].replicas + share);
    }
    if let Some(first) = order.first() {
        *sizes.get_mut(first).expect("sized") += to_add - added;
    }
    for (i, size) in sizes {
        resize(spec, &mut sets[i], size);
    }
}

/// Whether the rollout is done: every replica updated and available, none old left.
fn complete(d: &Deployment, sets: &[Set], new: Option<usize>) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = new.map_or(0, |i| sets[i].status().0);
    let total: i32 = sets.iter().map(|s| s.status().0).sum();
    let available: i32 = sets.iter().map(|s| s.available()).sum();
    let observed = d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
    updated == wanted && total == wanted && available == wanted && observed >= d.metadata.generation.unwrap_or(0)
}

/// The Deployment's status, with its Available and Progressing conditions.
fn status(d: &Deployment, sets: &[Set], new: Option<usize>, learnt: &Status, now: &Time) -> (Value, Option<Duration>) {
    let spec = d.spec.clone().unwrap_or_default();
    let wanted = spec.replicas.unwrap_or(1);
    let (_, unavailable) = fenceposts(&spec);
    let previous = d.status.clone().unwrap_or_default();
    let total: i32 = sets.iter().map(|s| s.status().0).sum();
    let ready: i32 = sets.iter().map(|s| s.status().1).sum();
    let available: i32 = sets.iter().map(|s| s.available()).sum();
    let updated = new.map_or(0, |i| sets[i].status().0);
    let mut status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (wanted - available).max(0),
    });
    for zero_omitted in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"] {
        if status[zero_omitted] == 0 {
            status.as_object_mut().expect("object").remove(zero_omitted);
        }
    }
    if let Some(collisions) = learnt.collisions.or(previous.collision_count) {
        status["collisionCount"] = collisions.into();
    }
    let mut conditions: Vec<Value> =
        previous.conditions.iter().flatten().filter_map(|c| serde_json::to_value(c).ok()).collect();
    let stamp = serde_json::to_value(now).unwrap_or_default();
    let set = |conditions: &mut Vec<Value>, kind: &str, state: &str, reason: &str, message: String, refresh: bool| {
        set_condition(conditions, &stamp, Condition { kind, state, reason, message, refresh });
    };
    if available >= wanted - unavailable {
        set(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            false,
        );
    } else {
        set(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            false,
        );
    }
    let progressing_reason = |conditions: &[Value]| {
        conditions.iter().find(|c| c["type"] == "Progressing").and_then(|c| c["reason"].as_str().map(String::from))
    };
    let mut requeue = None;
    let deadline = spec.progress_deadline_seconds;
    if spec.paused == Some(true) {
        if progressing_reason(&conditions).as_deref() != Some("DeploymentPaused") {
            set(&mut conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), false);
        }
    } else if progressing_reason(&conditions).as_deref() == Some("DeploymentPaused") {
        set(&mut conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed".into(), false);
    } else if let Some(deadline) = deadline {
        let new_name = new.map(|i| sets[i].name().to_string()).or(learnt.created.clone()).unwrap_or_default();
        let observed = d.metadata.generation.unwrap_or(0);
        let done = updated == wanted
            && total == wanted
            && available == wanted
            && observed >= d.metadata.generation.unwrap_or(0);
        let old_replicas = |replicas: i32, updated: i32| replicas - updated;
        let progressed = updated > previous.updated_replicas.unwrap_or(0)
            || old_replicas(total, updated)
                < old_replicas(previous.replicas.unwrap_or(0), previous.updated_replicas.unwrap_or(0))
            || ready > previous.ready_replicas.unwrap_or(0)
            || available > previous.available_replicas.unwrap_or(0);
        if learnt.created.is_some() {
            set(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{new_name}\""),
                true,
            );
        } else if done {
            set(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                false,
            );
        } else if progressed {
            set(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                true,
            );
        } else if progressing_reason(&conditions).is_none() && new.is_some() {
            set(
                &mut conditions,
                "Progressing",
                "True",
                "FoundNewReplicaSet",
                format!("Found new replica set \"{new_name}\""),
                true,
            );
        } else if let Some(c) = conditions.iter().find(|c| c["type"] == "Progressing").cloned()
            && c["reason"] != "NewReplicaSetAvailable"
            && c["reason"] != "ProgressDeadlineExceeded"
        {
            let last: Option<Time> = serde_json::from_value(c["lastUpdateTime"].clone()).ok();
            let elapsed = last.map_or(Duration::ZERO, |l| super::objects::elapsed(&l, now));
            let limit = Duration::from_secs(deadline.max(0) as u64);
            if elapsed >= limit {
                set(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    false,
                );
            } else {
                requeue = Some(limit - elapsed + Duration::from_secs(1));
            }
        }
        if !done && requeue.is_none() && progressing_reason(&conditions).as_deref() != Some("ProgressDeadlineExceeded")
        {
            requeue = Some(Duration::from_secs(deadline.max(0) as u64 + 1));
        }
    }
    if !conditions.is_empty() {
        status["conditions"] = conditions.into();
    }
    (status, requeue)
}

/// A condition to set.
struct Condition<'a> {
    kind: &'a str,
    state: &'a str,
    reason: &'a str,
    message: String,
    /// Written even when its status and reason are unchanged (its lastUpdateTime moves).
    refresh: bool,
}

/// Sets a condition as kube-controller-manager's SetDeploymentCondition does: unchanged
/// status and reason leave it be; a status that stays keeps its lastTransitionTime.
fn set_condition(conditions: &mut Vec<Value>, stamp: &Value, condition: Condition) {
    let Condition { kind, state, reason, message, refresh } = condition;
    let current = conditions.iter().position(|c| c["type"] == kind);
    if let Some(i) = current
        && conditions[i]["status"] == state
        && conditions[i]["reason"] == reason
        && !refresh
    {
        return;
    }
    let since = match current {
        Some(i) if conditions[i]["status"] == state => conditions[i]["lastTransitionTime"].clone(),
        _ => stamp.clone(),
    };
    let condition = json!({"type": kind, "status": state, "reason": reason, "message": message,
        "lastUpdateTime": stamp, "lastTransitionTime": since});
    match current {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Keeps every Deployment rolled out until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.deployments().subscribe(&wake);
    informers.replica_sets().subscribe(&wake);
    informers.pods().subscribe(&wake);
    let informers = informers.clone();
    let recorder = Arc::new(Recorder::new(client.clone(), "deployment-controller", None));
    super::level_triggered(wake, move || {
        let (client, informers, recorder) = (client.clone(), informers.clone(), recorder.clone());
        async move {
            if !informers.deployments().ready().await
                || !informers.replica_sets().ready().await
                || !informers.pods().ready().await
            {
                return None;
            }
            let replica_sets = informers.replica_sets().all();
            let pods = informers.pods().all();
            let now = now();
            let mut requeue = None;
            for d in informers.deployments().all() {
                let namespace = d.metadata.namespace.as_deref();
                let sets: Vec<&ReplicaSet> = replica_sets
                    .iter()
                    .map(|r| &**r)
                    .filter(|r| r.metadata.namespace.as_deref() == namespace)
                    .collect();
                let in_namespace: Vec<&Pod> =
                    pods.iter().map(|p| &**p).filter(|p| p.metadata.namespace.as_deref() == namespace).collect();
                let (actions, wait) = sync(&d, &sets, &in_namespace, &now);
                requeue = super::sooner(requeue, wait);
                if !apply(&client, &recorder, &d, actions).await {
                    requeue = super::sooner(requeue, Some(Duration::from_secs(1)));
                }
            }
            requeue
        }
    });
}

/// kube-controller-manager's event for a ReplicaSet scaled.
fn scaling(name: &str, from: i32, to: i32) -> Event {
    let direction = if to > from { "up" } else { "down" };
    Event::normal("ScalingReplicaSet", format!("Scaled {direction} replica set {name} from {from} to {to}"))
}

/// Does what `sync` decided; false when something failed.
async fn apply(client: &Client, recorder: &Recorder, d: &Deployment, actions: Vec<Action>) -> bool {
    let involved = Involved::of(d);
    let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let merge = PatchParams::default();
    let mut ok = true;
    for action in actions {
        ok &= match action {
            Action::Claim(Claim::Adopt { name, patch } | Claim::Release { name, patch }) => {
                super::report(sets.patch(&name, &merge, &Patch::Merge(&patch)).await, "replicaset", &name)
            }
            Action::PatchReplicaSet { name, patch, scaled } => {
                let done = super::report(sets.patch(&name, &merge, &Patch::Merge(&patch)).await, "replicaset", &name);
                if let (true, Some((from, to))) = (done, scaled) {
                    recorder.record(&involved, &scaling(&name, from, to)).await;
                }
                done
            }
            Action::CreateReplicaSet(rs) => match serde_json::from_value::<ReplicaSet>(rs) {
                Ok(rs) => {
                    let (set, to) = (
                        rs.metadata.name.clone().unwrap_or_default(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                    );
                    let done = super::report(sets.create(&PostParams::default(), &rs).await, "replicaset", name);
                    if done {
                        recorder.record(&involved, &scaling(&set, 0, to)).await;
                    }
                    done
                }
                Err(_) => false,
            },
            Action::DeleteReplicaSet { name, uid } => {
                let params = crate::client::delete_params(uid, None);
                super::report(sets.delete(&name, &params).await, "replicaset", &name)
            }
            Action::PatchDeployment(patch) => {
                super::report(deployments.patch(name, &merge, &Patch::Merge(&patch)).await, "deployment", name)
            }
            Action::Status(status) => {
                let patch = json!({"status": status});
                super::report(deployments.patch_status(name, &merge, &Patch::Merge(&patch)).await, "deployment", name)
            }
        };
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            },
        }))
        .unwrap()
    }

    fn created(actions: &[Action]) -> ReplicaSet {
        let rs = actions.iter().find_map(|a| match a {
            Action::CreateReplicaSet(rs) => Some(rs.clone()),
            _ => None,
        });
        serde_json::from_value(rs.expect("a ReplicaSet is made")).expect("a valid ReplicaSet")
    }

    #[test]
    fn templates_that_differ_only_by_empty_fields_are_one_template() {
        let stored = json!({"metadata": {"labels": {"app": "web", TEMPLATE_HASH: "abc"}},
            "spec": {"containers": [{"name": "web", "image": "x"}]}});
        let undone = json!({"metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "web", "image": "x", "resources": {}}]}});
        assert_eq!(without_hash(&stored), without_hash(&undone));
        assert_ne!(
            without_hash(&stored),
            without_hash(&json!({"spec": {"containers": [{"name": "web", "image": "y"}]}}))
        );
    }

    #[test]
    fn a_new_deployment_gets_a_replica_set_of_its_template_at_revision_1() {
        let d = deployment(3, "busybox:1.36");
        let (actions, _) = sync(&d, &[], &[], &now());
        let rs = created(&actions);
        let name = rs.metadata.name.clone().unwrap();
        let hash = rs.metadata.labels.as_ref().unwrap()[TEMPLATE_HASH].clone();
        assert_eq!(name, format!("web-{hash}"));
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(rs.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()[TEMPLATE_HASH], hash);
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION], "1");
        assert!(controlled_by(&rs.metadata, "d-uid"));
        assert!(actions.contains(&Action::PatchDeployment(json!({"metadata": {"annotations": {REVISION: "1"}}}))));
    }

    fn set(name: &str, replicas: i32, available: i32, created: i64) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": name, "creationTimestamp": time(created), "resourceVersion": "1"},
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": replicas, "availableReplicas": available, "readyReplicas": available},
        }))
        .unwrap()
    }

    fn time(seconds: i64) -> String {
        format!("2026-01-01T00:00:{seconds:02}Z")
    }

    fn sizes(sets: &[ReplicaSet], f: impl Fn(&mut Vec<Set>)) -> Vec<i32> {
        let mut model: Vec<Set> = sets
            .iter()
            .map(|rs| Set { rs, replicas: rs.spec.as_ref().unwrap().replicas.unwrap(), annotations: BTreeMap::new() })
            .collect();
        f(&mut model);
        model.iter().map(|s| s.replicas).collect()
    }

    #[test]
    fn surge_rounds_up_unavailability_down_and_both_cannot_be_zero() {
        let spec = |surge: IntOrString, unavailable: IntOrString| DeploymentSpec {
            replicas: Some(10),
            strategy: Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
                type_: None,
            }),
            ..Default::default()
        };
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&spec(pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&spec(IntOrString::Int(0), IntOrString::Int(0))), (0, 1));
        assert_eq!(fenceposts(&spec(pct("0%"), pct("5%"))), (0, 1));
    }

    #[test]
    fn a_rolling_update_steps_within_surge_and_unavailability() {
        let mut spec = deployment(4, "x").spec.unwrap();
        spec.strategy = serde_json::from_value(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}),
        )
        .unwrap();
        // Old at 4 (all available), new at 1 (not ready yet): one old pod may go.
        let sets = [set("old", 4, 4, 1), set("new", 1, 0, 2)];
        assert_eq!(sizes(&sets, |m| rollout_rolling(&spec, 1, m)), [3, 1]);
        // Once the new pod is available the new set grows to the surge.
        let sets = [set("old", 3, 3, 1), set("new", 1, 1, 2)];
        assert_eq!(sizes(&sets, |m| rollout_rolling(&spec, 1, m)), [3, 2]);
        // Unavailable old pods go first: they take nothing from availability.
        let sets = [set("old", 4, 2, 1), set("new", 1, 1, 2)];
        assert_eq!(sizes(&sets, |m| rollout_rolling(&spec, 1, m)), [2, 1]);
        // Never below replicas - maxUnavailable available.
        let sets = [set("old", 3, 3, 1), set("new", 2, 0, 2)];
        assert_eq!(sizes(&sets, |m| rollout_rolling(&spec, 1, m)), [3, 2]);
    }

    #[test]
    fn scaling_mid_rollout_shares_the_change_in_proportion() {
        let mut spec = deployment(20, "x").spec.unwrap();
        spec.strategy = serde_json::from_value(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}),
        )
        .unwrap();
        let mut old = set("old", 8, 8, 1);
        let mut new = set("new", 5, 5, 2);
        for rs in [&mut old, &mut new] {
            rs.metadata.annotations = Some(BTreeMap::from([(MAX_REPLICAS.to_string(), "13".to_string())]));
        }
        let sets = [old, new];
        let result = sizes(&sets, |m| {
            for s in m.iter_mut() {
                s.annotations = s.rs.metadata.annotations.clone().unwrap();
            }
            scale(&spec, Some(1), m)
        });
        assert_eq!(result.iter().sum::<i32>(), 23, "{result:?}");
        assert!(result[0] > 8 && result[1] > 5, "both grow: {result:?}");
    }

    #[test]
    fn recreate_stops_every_old_pod_before_the_new_set_grows() {
        let mut spec = deployment(3, "x").spec.unwrap();
        spec.strategy = serde_json::from_value(json!({"type": "Recreate"})).unwrap();
        let sets = [set("old", 3, 3, 1), set("new", 0, 0, 2)];
        assert_eq!(sizes(&sets, |m| rollout_recreate(&spec, Some(1), m)), [0, 0]);
        // Scaled to 0 but its pods not gone yet: the new set waits.
        let mut going = set("old", 0, 0, 1);
        going.status.as_mut().unwrap().replicas = 2;
        let sets = [going, set("new", 0, 0, 2)];
        assert_eq!(sizes(&sets, |m| rollout_recreate(&spec, Some(1), m)), [0, 0]);
        let sets = [set("old", 0, 0, 1), set("new", 0, 0, 2)];
        assert_eq!(sizes(&sets, |m| rollout_recreate(&spec, Some(1), m)), [0, 3]);
    }

    #[test]
    fn a_rollout_that_stops_progressing_exceeds_its_deadline() {
        let mut d = deployment(3, "x");
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
        d.status = serde_json::from_value(json!({
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }))
        .unwrap();
        let template = serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap();
        let mut rs = set("web-abc", 3, 1, 0);
        rs.spec.as_mut().unwrap().template = serde_json::from_value(template).unwrap();
        rs.metadata.owner_references = serde_json::from_value(json!([{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "web", "uid": "d-uid", "controller": true}]))
        .unwrap();
        rs.spec.as_mut().unwrap().selector = serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap();
        rs.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        let soon: Time = serde_json::from_value(json!("2026-01-01T00:00:05Z")).unwrap();
        let (_, requeue) = sync(&d, &[&rs], &[], &soon);
        assert_eq!(requeue, Some(Duration::from_secs(6)));
        let late: Time = serde_json::from_value(json!("2026-01-01T00:00:11Z")).unwrap();
        let (actions, _) = sync(&d, &[&rs], &[], &late);
        let status = actions.iter().find_map(|a| match a {
            Action::Status(s) => Some(s.clone()),
            _ => None,
        });
        let conditions = status.expect("a status")["conditions"].clone();
        let progressing = conditions.as_array().unwrap().iter().find(|c| c["type"] == "Progressing").unwrap().clone();
        assert_eq!(progressing["status"], "False");
        assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
        assert_eq!(progressing["message"], "ReplicaSet \"web-abc\" has timed out progressing.");
    }
}
