//! The etcd backend, for when one machine is not enough: the store's revisions are etcd's,
//! conditional writes are etcd transactions on a key's create or mod revision (as
//! kube-apiserver's etcd3 storage does), history is read with watches from a revision.
//! etcd-client is async; the store's callers are not always, so each call runs on the
//! store's own small runtime and is waited for.

use std::future::Future;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KvClient, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::broadcast;

use super::{Event, EventKind, KeyValue, Page, Result, Store, StoreError};

pub struct EtcdStore {
    /// For watches.
    client: Client,
    /// For reads and writes, taking answers as large as a list of many objects.
    kv: KvClient,
    /// The client's own runtime: `None` once dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    events: broadcast::Sender<Event>,
}

impl Drop for EtcdStore {
    /// Dropping a runtime waits for its tasks, which tokio forbids (a panic) inside another
    /// runtime, where the server's last task holding the store drops it: the client's
    /// tasks are let go in the background instead.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The largest answer read from etcd (gRPC's default is 4 MiB: a list of some thousand
/// objects).
const MAX_ANSWER: usize = 1 << 30;

fn backend(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// Where the keys that start with `prefix` end, as etcd ranges take it.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    }
}

fn event(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    Some(match e.event_type() {
        EventType::Put => Event {
            kind: EventKind::Put,
            kv: key_value(kv),
            revision: kv.mod_revision(),
            created: kv.create_revision() == kv.mod_revision(),
            prev: e.prev_kv().map(|prev| prev.value().to_vec()),
        },
        // The deleted value comes as the previous kv (watches ask for it).
        EventType::Delete => Event {
            kind: EventKind::Delete,
            kv: e.prev_kv().map(key_value).unwrap_or_else(|| key_value(kv)),
            revision: kv.mod_revision(),
            created: false,
            prev: None,
        },
    })
}

impl EtcdStore {
    pub fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let client = runtime.block_on(Client::connect(endpoints, None)).map_err(backend)?;
        let kv = client.kv_client().max_decoding_message_size(MAX_ANSWER);
        let (events, _) = broadcast::channel(4096);
        let handle = runtime.handle().clone();
        let store = EtcdStore { client, kv, runtime: Some(runtime), handle, events };
        store.follow()?;
        Ok(store)
    }

    /// Runs `future` on the store's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(&self, future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver.recv().map_err(|_| StoreError::Backend("etcd: the client runtime stopped".into()))?
    }

    /// Publishes every write under /registry/ from now on, watching again from the last
    /// revision seen if the watch breaks.
    fn follow(&self) -> Result<()> {
        let mut last = self.revision()?;
        let (mut client, events) = (self.client.clone(), self.events.clone());
        self.handle.spawn(async move {
            loop {
                let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(last + 1);
                if let Ok(mut stream) = client.watch("/registry/", Some(options)).await {
                    while let Ok(Some(response)) = stream.message().await {
                        if response.canceled() {
                            break;
                        }
                        for e in response.events().iter().filter_map(event) {
                            last = e.revision;
                            let _ = events.send(e);
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        Ok(())
    }

    /// Runs a transaction that writes `key` if `condition` holds; returns the revision of
    /// the write and the key's current value when it did not.
    fn conditional(&self, condition: Compare, write: TxnOp, key: &str) -> Result<(bool, i64, Option<KeyValue>)> {
        let mut client = self.kv.clone();
        let key = key.to_string();
        self.run(async move {
            let txn = Txn::new().when([condition]).and_then([write]).or_else([TxnOp::get(key, None)]);
            let response = client.txn(txn).await.map_err(backend)?;
            let revision = response.header().map_or(0, |h| h.revision());
            let current = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(key_value),
                _ => None,
            });
            Ok((response.succeeded(), revision, current))
        })
    }
}

impl Store for EtcdStore {
    fn revision(&self) -> Result<i64> {
        let mut client = self.kv.clone();
        self.run(async move {
            let response = client.get("/", Some(GetOptions::new().with_count_only())).await.map_err(backend)?;
            Ok(response.header().map_or(0, |h| h.revision()))
        })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (mut client, key) = (self.kv.clone(), key.to_string());
        self.run(async move {
            let response = client.get(key, None).await.map_err(backend)?;
            Ok(response.kvs().first().map(key_value))
        })
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page> {
        let mut client = self.kv.clone();
        let from = start_after.map(|s| format!("{s}\0")).unwrap_or_else(|| prefix.to_string());
        let end = range_end(prefix);
        self.run(async move {
            let options = GetOptions::new()
                .with_range(end)
                .with_limit(limit as i64)
                .with_sort(SortTarget::Key, SortOrder::Ascend);
            let response = client.get(from, Some(options)).await.map_err(backend)?;
            Ok(Page {
                items: response.kvs().iter().map(key_value).collect(),
                revision: response.header().map_or(0, |h| h.revision()),
                more: response.more(),
            })
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64> {
        let condition = Compare::create_revision(key, CompareOp::Equal, 0);
        match self.conditional(condition, TxnOp::put(key, value, None), key)? {
            (true, revision, _) => Ok(revision),
            (false, _, _) => Err(StoreError::AlreadyExists(key.into())),
        }
    }

    fn update(&self, key: &str, value: &[u8], expected: Option<i64>) -> Result<i64> {
        let condition = match expected {
            Some(revision) => Compare::mod_revision(key, CompareOp::Equal, revision),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        match self.conditional(condition, TxnOp::put(key, value, None), key)? {
            (true, revision, _) => Ok(revision),
            (false, _, None) => Err(StoreError::NotFound(key.into())),
            (false, _, Some(current)) => Err(StoreError::Conflict {
                key: key.into(),
                current: current.mod_revision,
                expected: expected.unwrap_or(0),
            }),
        }
    }

    fn delete(&self, key: &str, expected: Option<i64>) -> Result<(KeyValue, i64)> {
        let Some(current) = self.get(key)? else { return Err(StoreError::NotFound(key.into())) };
        let expected_revision = expected.unwrap_or(current.mod_revision);
        let condition = Compare::mod_revision(key, CompareOp::Equal, expected_revision);
        let delete = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        match self.conditional(condition, delete, key)? {
            (true, revision, _) => Ok((current, revision)),
            (false, _, None) => Err(StoreError::NotFound(key.into())),
            (false, _, Some(now)) => {
                Err(StoreError::Conflict { key: key.into(), current: now.mod_revision, expected: expected_revision })
            }
        }
    }

    fn events_since(&self, prefix: &str, after: i64) -> Result<Vec<Event>> {
        let current = self.revision()?;
        if after >= current {
            return Ok(Vec::new());
        }
        let (mut client, prefix) = (self.client.clone(), prefix.to_string());
        self.run(async move {
            // Every revision is at least one event somewhere in the keyspace, so a watch on
            // all keys says when it has reached `current`; a watch on the prefix alone could
            // not (etcd 3.4's progress notifications do not wait for a catching-up watch).
            let options = WatchOptions::new().with_all_keys().with_prev_key().with_start_revision(after + 1);
            let mut stream = client.watch("", Some(options)).await.map_err(backend)?;
            let mut events = Vec::new();
            while let Some(response) = stream.message().await.map_err(backend)? {
                if response.compact_revision() > 0 {
                    return Err(StoreError::Compacted { requested: after, compacted: response.compact_revision() });
                }
                let batch: Vec<Event> =
                    response.events().iter().filter_map(event).filter(|e| e.revision <= current).collect();
                let reached = batch.last().is_some_and(|e| e.revision >= current);
                events.extend(batch.into_iter().filter(|e| e.kv.key.starts_with(&prefix)));
                if reached {
                    break;
                }
            }
            Ok(events)
        })
    }

    fn compact(&self, revision: i64) -> Result<()> {
        let mut client = self.kv.clone();
        self.run(async move {
            match client.compact(revision, None).await {
                Ok(_) => Ok(()),
                // Already compacted at or past it: nothing to do.
                Err(e) if e.to_string().contains("compacted") => Ok(()),
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
