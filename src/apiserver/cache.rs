//! The objects every write consults, kept in memory: namespaces, service accounts,
//! priority classes, limit ranges, quotas, storage and ingress classes (and, for every
//! request, the RBAC roles and bindings). kube-apiserver's admission plugins and
//! authorizer read them from informers' caches in the same way, instead of the store.
//!
//! The cache is loaded from the store at start and kept current two ways: the REST layer
//! records each write it makes as it makes it (so a client that writes a LimitRange and
//! then a pod sees the one applied to the other), and a task follows the store's events
//! for writes made elsewhere (another API server on the same etcd). Each key keeps the
//! revision it was seen at, so the two never roll each other back; a follower that falls
//! behind loads everything again.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::store::{EventKind, Store, StoreError};

/// Told every object under a prefix whenever one of them changes.
pub type Listener = Box<dyn Fn(&[Arc<Value>]) + Send + Sync>;

pub struct Cache {
    prefixes: Vec<String>,
    /// By key: the revision it was last seen at, and its object (None once deleted).
    objects: RwLock<BTreeMap<String, (i64, Option<Arc<Value>>)>>,
    listeners: RwLock<Vec<(String, Listener)>>,
}

impl Cache {
    /// A cache of the keys under `prefixes`, empty until loaded.
    pub fn new(prefixes: Vec<String>) -> Cache {
        Cache { prefixes, objects: RwLock::new(BTreeMap::new()), listeners: RwLock::new(Vec::new()) }
    }

    /// Calls `listener` with the objects under `prefix` (one of the cache's) now and after
    /// every change among them.
    pub fn listen(&self, prefix: &str, listener: Listener) {
        listener(&self.list(prefix));
        self.listeners.write().expect("cache lock").push((prefix.to_string(), listener));
    }

    fn notify(&self, key: Option<&str>) {
        for (prefix, listener) in self.listeners.read().expect("cache lock").iter() {
            if key.is_none_or(|k| k.starts_with(prefix.as_str())) {
                listener(&self.list(prefix));
            }
        }
    }

    pub fn tracks(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Everything under the prefixes, as the store has it now.
    pub fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        for prefix in &self.prefixes {
            let page = store.list(prefix, None, 0)?;
            let live: Vec<(String, i64, Option<Arc<Value>>)> = page
                .items
                .into_iter()
                .map(|kv| (kv.key, kv.mod_revision, serde_json::from_slice(&kv.value).ok().map(Arc::new)))
                .collect();
            let mut objects = self.objects.write().expect("cache lock");
            // Whatever is no longer there went while no one was looking (unless it was
            // written after the list's snapshot).
            let gone: Vec<String> = objects
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                .filter(|(k, (seen, o))| {
                    o.is_some() && *seen < page.revision && !live.iter().any(|(key, _, _)| key == *k)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                objects.insert(key, (page.revision, None));
            }
            for (key, revision, object) in live {
                let newer = objects.get(&key).is_none_or(|(seen, _)| *seen < revision);
                if newer {
                    objects.insert(key, (revision, object));
                }
            }
        }
        self.notify(None);
        Ok(())
    }

    /// A write at `revision`: `object` is the key's value now, or None if it was deleted.
    pub fn observe(&self, key: &str, revision: i64, object: Option<&Value>) {
        if !self.tracks(key) {
            return;
        }
        let mut objects = self.objects.write().expect("cache lock");
        if objects.get(key).is_none_or(|(seen, _)| *seen < revision) {
            objects.insert(key.to_string(), (revision, object.cloned().map(Arc::new)));
            drop(objects);
            self.notify(Some(key));
        }
    }

    /// Follows the store's events for as long as the server runs.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut events = store.subscribe();
        loop {
            match events.recv().await {
                Ok(event) if self.tracks(&event.kv.key) => {
                    let object = match event.kind {
                        EventKind::Put => serde_json::from_slice(&event.kv.value).ok(),
                        EventKind::Delete => None,
                    };
                    self.observe(&event.kv.key, event.revision, object.as_ref());
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    if let Err(e) = self.load(&*store) {
                        tracing::warn!("reloading the admission cache: {e}");
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.objects.read().expect("cache lock").get(key).and_then(|(_, o)| o.clone())
    }

    /// The objects under `prefix`, by key.
    pub fn list(&self, prefix: &str) -> Vec<Arc<Value>> {
        let objects = self.objects.read().expect("cache lock");
        objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, (_, o))| o.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn newer_writes_win_whichever_way_they_come() {
        let cache = Cache::new(vec!["/registry/core/limitranges/".into()]);
        let key = "/registry/core/limitranges/ns/l";
        cache.observe(key, 5, Some(&json!({"v": 5})));
        cache.observe(key, 4, Some(&json!({"v": 4})));
        assert_eq!(cache.get(key).as_deref(), Some(&json!({"v": 5})));
        cache.observe(key, 6, None);
        cache.observe(key, 5, Some(&json!({"v": 5})));
        assert_eq!(cache.get(key), None);
        cache.observe("/registry/core/pods/ns/p", 7, Some(&json!({})));
        assert!(cache.list("/registry/core/").is_empty());
        cache.observe("/registry/core/limitranges/ns/m", 8, Some(&json!({"v": 8})));
        assert_eq!(cache.list("/registry/core/limitranges/ns/"), [Arc::new(json!({"v": 8}))]);
    }

    /// A load whose list was read before a write the cache already saw keeps that write.
    #[test]
    fn a_load_older_than_a_seen_write_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::SqliteStore::open(&dir.path().join("state.db")).unwrap();
        store.create("/registry/core/limitranges/ns/old", b"{}").unwrap();
        let cache = Cache::new(vec!["/registry/core/limitranges/".into()]);
        let later = store.revision().unwrap() + 1;
        cache.observe("/registry/core/limitranges/ns/new", later, Some(&json!({"v": 1})));
        cache.load(&store).unwrap();
        assert_eq!(cache.get("/registry/core/limitranges/ns/new").as_deref(), Some(&json!({"v": 1})));
        assert_eq!(cache.list("/registry/core/limitranges/").len(), 2);
    }

    #[test]
    fn listeners_hear_of_every_change_under_their_prefix() {
        let cache = Cache::new(vec!["/registry/a/".into(), "/registry/b/".into()]);
        let heard = Arc::new(RwLock::new(Vec::new()));
        let record = heard.clone();
        cache.listen("/registry/a/", Box::new(move |objects| record.write().unwrap().push(objects.len())));
        cache.observe("/registry/a/x", 1, Some(&json!({})));
        cache.observe("/registry/b/y", 2, Some(&json!({})));
        cache.observe("/registry/a/z", 3, Some(&json!({})));
        cache.observe("/registry/a/x", 4, None);
        cache.observe("/registry/a/x", 3, Some(&json!({})));
        assert_eq!(*heard.read().unwrap(), [0, 1, 2, 1], "at once, then each change, never a stale one");
    }
}
