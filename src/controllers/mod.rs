//! The control plane's controllers and the scheduler (kube-controller-manager's and
//! kube-scheduler's work), run in `podctl apiserver`'s process as clients of its API over
//! loopback: never by reaching into the store behind the API's back.
//!
//! Each is level-triggered: woken by any change of what it watches (the shared reflectors
//! of `informers`) or by its own timer, it computes what to do as a pure function of the
//! objects it observed (desired state → actions; the unit tests live there), does it, and
//! sleeps again.

mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod expectations;
mod garbagecollector;
mod history;
mod hpa;
mod informers;
mod job;
mod localpath;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod objects;
mod pod_control;
mod replicaset;
mod scheduler;
mod statefulset;
mod storageprotection;
mod volume_binding;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::Notify;

pub use self::informers::Informers;
pub use self::localpath::{LOCAL_STORAGE, PROVISIONER as LOCAL_PATH_PROVISIONER};

/// The controllers `--controllers` can name (kube-controller-manager's names, and the
/// scheduler's).
pub const ALL: &[&str] = &[
    "scheduler",
    "replicaset",
    "deployment",
    "endpoint",
    "endpointslice",
    "endpointslicemirroring",
    "garbagecollector",
    "namespace",
    "job",
    "cronjob",
    "daemonset",
    "statefulset",
    "local-path-provisioner",
    "persistentvolumeclaim-protection",
    "persistentvolume-protection",
    "horizontalpodautoscaling",
    "nodeipam",
    "nodelifecycle",
];

/// How the control plane is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub enabled: BTreeSet<&'static str>,
    /// Where nodes' pod CIDRs (a /24 each) come from.
    pub cluster_cidr: net::Ipv4Net,
    /// How long a node may go without renewing its Lease before it is `Ready=Unknown`.
    pub node_monitor_grace_period: Duration,
    /// How long an autoscaler keeps the highest recommendation before scaling down.
    pub downscale_stabilization: Duration,
}

/// The controllers a `--controllers` list turns on, as kube-controller-manager reads it:
/// `*` is all of them, `name` one more, `-name` one fewer.
pub fn parse_enabled(list: &[String]) -> Result<BTreeSet<&'static str>> {
    let mut enabled = BTreeSet::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (off, name) = match item.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, item),
        };
        if name == "*" && !off {
            enabled.extend(ALL.iter().copied());
            continue;
        }
        let Some(known) = ALL.iter().copied().find(|c| *c == name) else {
            bail!("--controllers: no controller {name:?} (there are: *, {})", ALL.join(", "));
        };
        if off {
            enabled.remove(known);
        } else {
            enabled.insert(known);
        }
    }
    Ok(enabled)
}

/// Starts the enabled controllers with clients of `api`; they run until the process ends.
pub fn start(api: &kube::Config, config: &Config) -> Result<()> {
    let client = crate::client::client_as(api, "kube-controller-manager")?;
    let scheduler = crate::client::client_as(api, "kube-scheduler")?;
    let informers = Arc::new(Informers::new(client.clone()));
    for name in &config.enabled {
        match *name {
            "scheduler" => scheduler::start(scheduler.clone(), &informers),
            "replicaset" => replicaset::start(client.clone(), &informers),
            "deployment" => deployment::start(client.clone(), &informers),
            "endpoint" => endpoints::start_endpoints(client.clone(), &informers),
            "endpointslice" => endpoints::start_slices(client.clone(), &informers),
            "endpointslicemirroring" => endpoints::start_mirroring(client.clone(), &informers),
            "garbagecollector" => garbagecollector::start(client.clone(), &informers),
            "namespace" => namespace::start(client.clone(), &informers),
            "job" => job::start(client.clone(), &informers),
            "cronjob" => cronjob::start(client.clone(), &informers),
            "daemonset" => daemonset::start(client.clone(), &informers),
            "statefulset" => statefulset::start(client.clone(), &informers),
            "local-path-provisioner" => localpath::start(client.clone(), &informers),
            "persistentvolumeclaim-protection" => storageprotection::start(client.clone(), &informers, true),
            "persistentvolume-protection" => storageprotection::start(client.clone(), &informers, false),
            "horizontalpodautoscaling" => hpa::start(client.clone(), &informers, config.downscale_stabilization),
            "nodeipam" => nodeipam::start(client.clone(), &informers, config.cluster_cidr),
            "nodelifecycle" => nodelifecycle::start(client.clone(), &informers, config.node_monitor_grace_period),
            _ => unreachable!("every controller of ALL is started"),
        }
    }
    Ok(())
}

/// How often a controller looks again when nothing woke it: it retries what failed.
const RESYNC: Duration = Duration::from_secs(15);

/// Runs `sync` at once, then whenever `wake` is notified, and at the latest after the
/// delay the last sync asked for (or `RESYNC`), until the process ends.
fn level_triggered<F, Fut>(wake: Arc<Notify>, mut sync: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Duration>> + Send,
{
    tokio::spawn(async move {
        loop {
            let next = sync().await.unwrap_or(RESYNC).min(RESYNC);
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    });
}

/// The objects of a cache's snapshot, borrowed.
fn refs<K>(objects: &[Arc<K>]) -> Vec<&K> {
    objects.iter().map(|o| &**o).collect()
}

/// The earlier of two requeue delays.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How many writes a controller has in flight at once.
const CONCURRENT_WRITES: usize = 16;

/// Runs the writes, `CONCURRENT_WRITES` at a time; true when all of them succeeded.
async fn run_all<I, Fut>(writes: I) -> bool
where
    I: IntoIterator<Item = Fut>,
    Fut: Future<Output = bool>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(writes)
        .buffer_unordered(CONCURRENT_WRITES)
        .fold(true, |all, ok| async move { all && ok })
        .await
}

/// A delete's outcome: `Some(true)` deleted by this call, `Some(false)` gone already,
/// `None` failed (logged as `report` logs).
fn deleted<T>(result: kube::Result<T>, kind: &str, name: &str) -> Option<bool> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Some(false),
        result => report(result, kind, name).then_some(true),
    }
}

/// Whether a delete succeeded; an object already gone counts as deleted.
fn report_delete<T>(result: kube::Result<T>, kind: &str, name: &str) -> bool {
    deleted(result, kind, name).is_some()
}

/// Whether a write succeeded; a failure is logged. A 404 or 409 is the cache being behind:
/// the next pass sees the newer state.
pub fn report<T>(result: kube::Result<T>, kind: &str, name: &str) -> bool {
    match result {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => false,
        Err(e) => {
            tracing::warn!("{kind} {name}: {}", crate::client::message(&e));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_reads_as_kube_controller_manager_does() {
        let all: BTreeSet<_> = ALL.iter().copied().collect();
        assert_eq!(parse_enabled(&["*".into()]).unwrap(), all);
        let without = parse_enabled(&["*".into(), "-scheduler".into()]).unwrap();
        assert!(!without.contains("scheduler") && without.contains("deployment"));
        assert_eq!(parse_enabled(&["replicaset".into()]).unwrap(), BTreeSet::from(["replicaset"]));
        let error = parse_enabled(&["*".into(), "-bogus".into()]).unwrap_err().to_string();
        assert!(error.contains("\"bogus\""), "{error}");
    }
}
