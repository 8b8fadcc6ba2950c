//! The namespace controller (kube-controller-manager's namespace controller): a deleted
//! namespace is `Terminating` until everything in it is gone. Its content is deleted
//! through the API like any other delete — pods bound to a node are stopped gracefully by
//! the node, objects with finalizers wait for them — and the namespace's conditions say
//! what remains; once nothing does, its `kubernetes` finalizer is removed and the API
//! server lets it go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;

use super::informers::Informers;

/// The finalizer this controller owns in a namespace's `spec.finalizers`.
const FINALIZER: &str = "kubernetes";

/// What one pass over a terminating namespace found.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub discovery_errors: Vec<String>,
    pub deletion_errors: Vec<String>,
    /// Objects left, by `resource.group` (`pods.` for the core group, as kube writes it).
    pub remaining: BTreeMap<String, usize>,
    /// Objects left that still carry each finalizer.
    pub finalizers: BTreeMap<String, usize>,
    /// The longest grace period still running among what is left.
    pub estimate: Duration,
}

impl Outcome {
    pub fn is_empty(&self) -> bool {
        self.discovery_errors.is_empty() && self.deletion_errors.is_empty() && self.remaining.is_empty()
    }

    /// The namespace's deletion conditions, kube's five: each true with its failure reason,
    /// or false with its all-clear message.
    pub fn conditions(&self) -> Vec<(&'static str, bool, &'static str, String)> {
        let counted = |counts: &BTreeMap<String, usize>, join: &str| {
            counts.iter().map(|(what, n)| format!("{what}{join}{n} resource instances")).collect::<Vec<_>>().join(", ")
        };
        let errors = |errors: &[String]| match errors {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let condition =
            |kind, failure: Option<(&'static str, String)>, (ok, all_clear): (&'static str, &str)| match failure {
                Some((reason, message)) => (kind, true, reason, message),
                None => (kind, false, ok, all_clear.to_string()),
            };
        let failed = |failing: bool, reason, message: &dyn Fn() -> String| failing.then(|| (reason, message()));
        vec![
            condition(
                "NamespaceDeletionDiscoveryFailure",
                failed(!self.discovery_errors.is_empty(), "DiscoveryFailed", &|| {
                    let (n, all) = (self.discovery_errors.len(), errors(&self.discovery_errors));
                    format!("Discovery failed for some groups, {n} failing: {all}")
                }),
                ("ResourcesDiscovered", "All resources successfully discovered"),
            ),
            condition(
                "NamespaceDeletionGroupVersionParsingFailure",
                None,
                ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
            ),
            condition(
                "NamespaceDeletionContentFailure",
                failed(!self.deletion_errors.is_empty(), "ContentDeletionFailed", &|| {
                    let (n, all) = (self.deletion_errors.len(), errors(&self.deletion_errors));
                    format!("Failed to delete all resource types, {n} remaining: {all}")
                }),
                ("ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
            ),
            condition(
                "NamespaceContentRemaining",
                failed(!self.remaining.is_empty(), "SomeResourcesRemain", &|| {
                    format!("Some resources are remaining: {}", counted(&self.remaining, " has "))
                }),
                ("ContentRemoved", "All content successfully removed"),
            ),
            condition(
                "NamespaceFinalizersRemaining",
                failed(!self.finalizers.is_empty(), "SomeFinalizersRemain", &|| {
                    let counts = counted(&self.finalizers, " in ");
                    format!("Some content in the namespace has finalizers remaining: {counts}")
                }),
                ("ContentHasNoFinalizers", "All content-preserving finalizers finished"),
            ),
        ]
    }
}

/// The namespace's conditions after `outcome`: a condition that says the same as before
/// keeps its transition time.
pub fn conditions(outcome: &Outcome, old: &[NamespaceCondition], now: &Time) -> Vec<NamespaceCondition> {
    outcome
        .conditions()
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let status = if status { "True" } else { "False" };
            let same = old.iter().find(|c| {
                c.type_ == kind
                    && c.status == status
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(&*message)
            });
            NamespaceCondition {
                type_: kind.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(same.and_then(|c| c.last_transition_time.clone()).unwrap_or(now.clone())),
            }
        })
        .collect()
}

/// Whether this controller still has to empty the namespace.
fn awaits_us(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        && namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Deletes what is in `namespace` (every namespaced resource that can be listed and
/// deleted), then counts what is left.
async fn delete_content(client: &Client, namespace: &str) -> Outcome {
    let mut outcome = Outcome::default();
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(discovery) => discovery,
        Err(e) => {
            outcome.discovery_errors.push(e.to_string());
            return outcome;
        }
    };
    let resources: Vec<(ApiResource, bool)> = discovery
        .groups()
        .flat_map(|group| group.recommended_resources())
        .filter(|(_, caps)| {
            caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE)
        })
        .map(|(resource, caps)| (resource, caps.supports_operation(verbs::DELETE_COLLECTION)))
        .collect();
    let background = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    let now = jiff::Timestamp::now();
    for (resource, collection) in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let what = format!("{}.{}", resource.plural, resource.group);
        let deleted = if collection {
            api.delete_collection(&background, &ListParams::default()).await.map(drop)
        } else {
            delete_each(&api, &background).await
        };
        if let Err(e) = deleted {
            outcome.deletion_errors.push(format!("{what}: {e}"));
            continue;
        }
        let left = match api.list_metadata(&ListParams::default()).await {
            Ok(left) => left,
            Err(e) => {
                outcome.deletion_errors.push(format!("{what}: {e}"));
                continue;
            }
        };
        if left.items.is_empty() {
            continue;
        }
        outcome.remaining.insert(what, left.items.len());
        for item in &left.items {
            for finalizer in item.metadata.finalizers.iter().flatten() {
                *outcome.finalizers.entry(finalizer.clone()).or_default() += 1;
            }
            let (Some(since), Some(grace)) =
                (&item.metadata.deletion_timestamp, item.metadata.deletion_grace_period_seconds)
            else {
                continue;
            };
            let end = since.0 + jiff::SignedDuration::from_secs(grace);
            if let Ok(left) = Duration::try_from(end.duration_since(now)) {
                outcome.estimate = outcome.estimate.max(left);
            }
        }
    }
    outcome
}

/// For a resource without deletecollection: its objects one by one.
async fn delete_each(api: &Api<DynamicObject>, params: &DeleteParams) -> kube::Result<()> {
    for item in api.list_metadata(&ListParams::default()).await?.items {
        match api.delete(item.metadata.name.as_deref().unwrap_or_default(), params).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// What a pass over a terminating namespace asks for next.
struct Pass {
    /// When to look again, if the namespace is still there to empty.
    retry: Option<Duration>,
    /// Whether what remains changed (the conditions did): the backoff starts over.
    progressed: bool,
}

/// One pass over a terminating namespace: its content deleted, its conditions written,
/// and its finalizer removed once it is empty.
async fn sync_one(client: &Client, namespace: &Namespace) -> Pass {
    let name = namespace.metadata.name.as_deref().unwrap_or_default();
    let outcome = delete_content(client, name).await;
    let api: Api<Namespace> = Api::all(client.clone());
    let old = namespace.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let new = conditions(&outcome, &old, &Time(jiff::Timestamp::now()));
    let progressed = new != old;
    let mut latest = namespace.clone();
    if progressed {
        let patch = json!({"status": {"conditions": new}});
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            // The finalize below must name the version this write made.
            Ok(written) => latest = written,
            written => {
                super::report(written, "namespace", name);
                return Pass { retry: Some(Duration::ZERO), progressed };
            }
        }
    }
    if !outcome.is_empty() {
        return Pass { retry: Some(outcome.estimate), progressed };
    }
    let mut finalized = latest;
    if let Some(finalizers) = finalized.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
        finalizers.retain(|f| f != FINALIZER);
    }
    let done = api.replace_subresource("finalize", name, &PostParams::default(), &finalized).await;
    Pass { retry: (!super::report(done, "namespace", name)).then_some(Duration::ZERO), progressed }
}

/// How long a namespace that keeps content waits at most before it is looked at again
/// (a finalizer's controller may take its time); it starts at `FIRST_RETRY` and doubles.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// By namespace uid: when it is due again, its current backoff, and how many of its pods
/// the cache showed then (a pod's going makes it due at once: pods are what usually
/// takes time).
type Schedule = HashMap<String, (Instant, Duration, usize)>;

/// Empties deleted namespaces until the process ends.
pub fn start(client: Client, informers: &Arc<Informers>) {
    let wake = Arc::new(Notify::new());
    informers.namespaces().subscribe(&wake);
    informers.pods().subscribe(&wake);
    let informers = informers.clone();
    let schedule = Arc::new(tokio::sync::Mutex::new(Schedule::new()));
    super::level_triggered(wake, move || {
        let (client, informers, schedule) = (client.clone(), informers.clone(), schedule.clone());
        async move {
            let i = &informers;
            if !(i.namespaces().ready().await && i.pods().ready().await) {
                return None;
            }
            let terminating: Vec<Arc<Namespace>> = i.namespaces().all().into_iter().filter(|n| awaits_us(n)).collect();
            let pods = i.pods().all();
            let mut schedule = schedule.lock().await;
            schedule.retain(|uid, _| terminating.iter().any(|n| n.metadata.uid.as_deref() == Some(uid)));
            let mut soonest: Option<Duration> = None;
            for namespace in terminating {
                let uid = namespace.metadata.uid.clone().unwrap_or_default();
                let name = namespace.metadata.name.as_deref();
                let pods_in = pods.iter().filter(|p| p.metadata.namespace.as_deref() == name).count();
                let now = Instant::now();
                let due = match schedule.get(&uid) {
                    Some(&(at, _, pods_then)) => at <= now || pods_in < pods_then,
                    None => true,
                };
                if due {
                    let pass = sync_one(&client, &namespace).await;
                    let backoff = match schedule.get(&uid) {
                        Some(&(_, backoff, _)) if !pass.progressed => (backoff * 2).min(super::RESYNC),
                        _ => FIRST_RETRY,
                    };
                    match pass.retry {
                        Some(after) => {
                            let after = after.max(backoff);
                            schedule.insert(uid.clone(), (Instant::now() + after, backoff, pods_in));
                        }
                        None => {
                            schedule.remove(&uid);
                        }
                    }
                }
                if let Some(&(at, _, _)) = schedule.get(&uid) {
                    let after = at.saturating_duration_since(Instant::now());
                    soonest = super::sooner(soonest, Some(after));
                }
            }
            soonest
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains_as_kube_does() {
        let outcome = Outcome {
            remaining: BTreeMap::from([("configmaps.".into(), 1), ("deployments.apps".into(), 2)]),
            finalizers: BTreeMap::from([("example.com/keep".into(), 1)]),
            ..Default::default()
        };
        let now = Time(jiff::Timestamp::from_second(1_000_000).unwrap());
        let first = conditions(&outcome, &[], &now);
        let by_type = |conditions: &[NamespaceCondition], kind: &str| {
            let c = conditions.iter().find(|c| c.type_ == kind).unwrap().clone();
            (c.status, c.message.unwrap(), c.last_transition_time.unwrap())
        };
        assert_eq!(
            by_type(&first, "NamespaceContentRemaining"),
            (
                "True".into(),
                "Some resources are remaining: configmaps. has 1 resource instances, deployments.apps has 2 resource instances"
                    .into(),
                now.clone()
            )
        );
        assert_eq!(
            by_type(&first, "NamespaceFinalizersRemaining").1,
            "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances"
        );
        assert_eq!(by_type(&first, "NamespaceDeletionContentFailure").0, "False");
        assert_eq!(first.len(), 5);
        // Unchanged conditions keep their time; changed ones take the new one.
        let later = Time(jiff::Timestamp::from_second(2_000_000).unwrap());
        let emptied = Outcome { remaining: BTreeMap::from([("configmaps.".into(), 1)]), ..Default::default() };
        let second = conditions(&emptied, &first, &later);
        assert_eq!(by_type(&second, "NamespaceDeletionDiscoveryFailure").2, now);
        assert_eq!(by_type(&second, "NamespaceContentRemaining").2, later);
        assert_eq!(
            by_type(&second, "NamespaceFinalizersRemaining"),
            ("False".into(), "All content-preserving finalizers finished".into(), later)
        );
        assert!(!emptied.is_empty());
        assert!(Outcome::default().is_empty());
    }

    #[test]
    fn only_deleted_namespaces_that_keep_our_finalizer_are_emptied() {
        let namespace = |deleted: bool, finalizers: &[&str]| -> Namespace {
            let mut value = json!({"metadata": {"name": "n"}, "spec": {"finalizers": finalizers}});
            if deleted {
                value["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
            }
            serde_json::from_value(value).unwrap()
        };
        assert!(awaits_us(&namespace(true, &["kubernetes"])));
        assert!(!awaits_us(&namespace(false, &["kubernetes"])));
        assert!(!awaits_us(&namespace(true, &["other"])));
    }
}
