//! Object storage with one global revision, as etcd keeps it: every write gets the next
//! revision, a key's history is kept until compaction, and a watch can resume from any
//! revision still retained. The embedded backend is SQLite (`sqlite`), the other etcd
//! (`etcd`); the trait is what the REST layer sees.

mod etcd;
mod sqlite;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

use tokio::sync::broadcast;

pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{key} was modified (revision {current}, expected {expected})")]
    Conflict { key: String, current: i64, expected: i64 },
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("storage: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A key's current value and the revisions that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl KeyValue {
    pub fn as_ref(&self) -> KeyValueRef<'_> {
        KeyValueRef {
            key: &self.key,
            value: &self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// A key's current value as a list reads it, borrowed from the read.
#[derive(Clone, Copy, Debug)]
pub struct KeyValueRef<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl KeyValueRef<'_> {
    pub fn to_owned(self) -> KeyValue {
        KeyValue {
            key: self.key.into(),
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One write, as a watch delivers it. For a delete, `kv` is the value that was deleted and
/// `revision` the delete's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub revision: i64,
    /// Whether a put created the key.
    pub created: bool,
    /// For a put that replaced a value, that value, when history still has it: what a watch
    /// with a selector needs to tell an object that stops (or starts) matching.
    pub prev: Option<Vec<u8>>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<KeyValue>,
    /// The store's revision the page was read at.
    pub revision: i64,
    /// More keys follow the last one.
    pub more: bool,
}

impl Page {
    /// The key a next page starts after: the last one, when more follow.
    pub fn continue_after(&self) -> Option<&str> {
        self.items.last().filter(|_| self.more).map(|kv| kv.key.as_str())
    }
}

/// Where [`Store::list_into`] hands a page as it reads it.
pub trait PageSink {
    /// Before the first item: the revision the page is read at, and its last key when more
    /// keys follow the page.
    fn begin(&mut self, revision: i64, continue_after: Option<&str>) -> ControlFlow<()>;
    /// Each key of the page, in order. `Break` ends the read.
    fn item(&mut self, kv: KeyValueRef<'_>) -> ControlFlow<()>;
}

/// A page collected whole: the sink behind [`Store::list`] for a store that reads pages
/// into a sink.
#[derive(Default)]
pub struct Collect(Option<Page>);

impl Collect {
    pub fn page(self) -> Page {
        self.0.unwrap_or(Page { items: Vec::new(), revision: 0, more: false })
    }
}

impl PageSink for Collect {
    fn begin(&mut self, revision: i64, continue_after: Option<&str>) -> ControlFlow<()> {
        self.0 = Some(Page { items: Vec::new(), revision, more: continue_after.is_some() });
        ControlFlow::Continue(())
    }

    fn item(&mut self, kv: KeyValueRef<'_>) -> ControlFlow<()> {
        if let Some(page) = &mut self.0 {
            page.items.push(kv.to_owned());
        }
        ControlFlow::Continue(())
    }
}

pub trait Store: Send + Sync {
    fn revision(&self) -> Result<i64>;
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys under `prefix` in order, after `start_after`, at most `limit` (0: no limit).
    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page>;
    /// The same page, handed to `sink` as it is read: a large list need not be held whole.
    fn list_into(&self, prefix: &str, start_after: Option<&str>, limit: usize, sink: &mut dyn PageSink) -> Result<()> {
        let page = self.list(prefix, start_after, limit)?;
        if sink.begin(page.revision, page.continue_after()).is_break() {
            return Ok(());
        }
        for kv in &page.items {
            if sink.item(kv.as_ref()).is_break() {
                break;
            }
        }
        Ok(())
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<i64>;
    /// Replaces the value if the key's mod revision is `expected` (any, when `None`).
    fn update(&self, key: &str, value: &[u8], expected: Option<i64>) -> Result<i64>;
    /// Deletes the key if its mod revision is `expected` (any, when `None`); returns the
    /// value deleted and the delete's revision.
    fn delete(&self, key: &str, expected: Option<i64>) -> Result<(KeyValue, i64)>;
    /// Writes under `prefix` after revision `after`, in order; `Compacted` when some are gone.
    fn events_since(&self, prefix: &str, after: i64) -> Result<Vec<Event>>;
    /// Forgets history at or below `revision` (current values stay).
    fn compact(&self, revision: i64) -> Result<()>;
    /// Every write from now on, as it commits. A receiver that lags re-reads with
    /// `events_since`, so a slow watcher never holds back a write or another watcher.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}
