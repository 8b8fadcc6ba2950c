//! Expectations (kube-controller-manager's ControllerExpectations): the pods an owner made
//! or deleted that the cache has not shown yet. Until it has, the owner makes and deletes
//! nothing more, so a burst is not doubled by a stale cache.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// How long expectations wait for the cache before they are given up on.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default, Debug)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

impl Pending {
    /// Whether the cache shows everything expected (or it waited too long for it).
    fn seen_in(&self, pods: &[&Pod]) -> bool {
        if self.since.is_some_and(|since| since.elapsed() > TIMEOUT) {
            return true;
        }
        let names: HashSet<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        let live: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.created.iter().all(|n| names.contains(n.as_str()))
            && self.deleted.iter().all(|u| !live.contains(u.as_str()))
    }
}

/// Every owner's expectations, by the owner's uid.
#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// Whether the owner's expectations are met by `pods` (its namespace's, as cached);
    /// met ones are forgotten.
    pub fn met(&self, owner: &str, pods: &[&Pod]) -> bool {
        let mut all = self.by_owner.lock().expect("expectations");
        let met = all.get(owner).is_none_or(|pending| pending.seen_in(pods));
        if met {
            all.remove(owner);
        }
        met
    }

    /// A pod the owner made, by name.
    pub fn created(&self, owner: &str, pod: String) {
        self.note(owner, |pending| pending.created.insert(pod));
    }

    /// A pod the owner deleted, by uid.
    pub fn deleted(&self, owner: &str, uid: String) {
        self.note(owner, |pending| pending.deleted.insert(uid));
    }

    /// Forgets the owners not among `live`.
    pub fn keep(&self, live: &HashSet<String>) {
        self.by_owner.lock().expect("expectations").retain(|uid, _| live.contains(uid));
    }

    fn note(&self, owner: &str, note: impl FnOnce(&mut Pending) -> bool) {
        let mut all = self.by_owner.lock().expect("expectations");
        let pending = all.entry(owner.to_string()).or_default();
        pending.since.get_or_insert_with(Instant::now);
        note(pending);
    }
}
