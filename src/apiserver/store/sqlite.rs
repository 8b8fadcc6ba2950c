//! The embedded store: one SQLite table of revisions, as k3s's kine keeps them. Each write
//! appends a row (its id is the revision); a key's value is its newest row unless that row
//! is a deletion. Compaction drops rows that a newer one of the same key replaced.
//! WAL with `synchronous=FULL`: a write is acknowledged only once it is on disk. Writes that
//! arrive together share a commit (group commit): one fsync for all of them.
//! SQLite's own checkpoint runs in the commit that takes the WAL past 1000 pages: it holds
//! the write lock, so it copies every frame and the next write starts the WAL over. (A
//! checkpoint from a connection of its own never caught up with steady writes: the WAL
//! grew to 160 MB for 10,000 pods and every read searched it.)
//! Lists read from connections of their own, each in a read transaction (WAL gives it a
//! snapshot), so a large list neither waits for writes nor holds them back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::broadcast;

use super::{Collect, Event, EventKind, KeyValue, KeyValueRef, Page, PageSink, Result, Store, StoreError};

pub struct SqliteStore {
    path: PathBuf,
    db: Mutex<Connection>,
    /// Idle connections for lists (see [`SqliteStore::read`]).
    readers: Mutex<Vec<Connection>>,
    /// Writes waiting for the next commit (see [`SqliteStore::write`]).
    pending: Mutex<Vec<PendingWrite>>,
    events: broadcast::Sender<Event>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

type WriteFn = Box<dyn FnOnce(&Connection) -> Result<Event> + Send>;

/// A write waiting to be committed, and where its outcome goes.
struct PendingWrite {
    write: WriteFn,
    done: std::sync::mpsc::Sender<Result<Event>>,
}

/// What a write appends besides the key and value.
struct NewRow {
    created: bool,
    deleted: bool,
    create_revision: i64,
    /// The row it replaces (0: none).
    prev_revision: i64,
}

/// The newest row of a key.
struct Row {
    id: i64,
    deleted: bool,
    create_revision: i64,
    value: Vec<u8>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let db = Connection::open(path).map_err(backend)?;
        db.execute_batch(
            "PRAGMA page_size = 16384;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             -- What writes touch (the index's pages, the table's last ones) is well within
             -- 1 MiB: lists read through connections of their own.
             PRAGMA cache_size = -1024;
             -- A WAL that grew while a long list held its restart back is cut to 64 MiB at
             -- the next checkpoint, not kept at its largest.
             PRAGMA journal_size_limit = 67108864;
             CREATE TABLE IF NOT EXISTS kv (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 name TEXT NOT NULL,
                 created INTEGER NOT NULL,
                 deleted INTEGER NOT NULL,
                 create_revision INTEGER NOT NULL,
                 value BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             -- Covers a list's choice of rows (each name's newest, if not a deletion)
             -- without reading them. (It replaces (name, id); a store made before has
             -- that index dropped once this one is made.)
             CREATE INDEX IF NOT EXISTS kv_name_id_deleted ON kv (name, id, deleted);
             DROP INDEX IF EXISTS kv_name_id;",
        )
        .map_err(backend)?;
        // The row each write replaced (0: none), kine's prev_revision; a store made before
        // it gets the column, unknown (0) for its old rows.
        let has_prev: bool = db
            .query_row("SELECT COUNT(*) FROM pragma_table_info('kv') WHERE name = 'prev_revision'", [], |r| r.get(0))
            .map_err(backend)?;
        if !has_prev {
            db.execute_batch("ALTER TABLE kv ADD COLUMN prev_revision INTEGER NOT NULL DEFAULT 0").map_err(backend)?;
        }
        let (events, _) = broadcast::channel(4096);
        Ok(SqliteStore {
            path: path.to_path_buf(),
            db: Mutex::new(db),
            readers: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            events,
        })
    }

    /// Runs `read` in a read transaction of an idle reader connection (or a new one).
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        /// Connections kept for the next lists; more at once are opened and closed.
        const IDLE_READERS: usize = 2;
        let idle = self.readers.lock().expect("readers lock").pop();
        let reader = match idle {
            Some(reader) => reader,
            None => {
                // Never made here: a store whose file went is an error, not a new store.
                let flags = OpenFlags::default().difference(OpenFlags::SQLITE_OPEN_CREATE);
                let reader = Connection::open_with_flags(&self.path, flags).map_err(backend)?;
                reader.execute_batch("PRAGMA query_only = 1").map_err(backend)?;
                reader
            }
        };
        let outcome = reader.unchecked_transaction().map_err(backend).and_then(|tx| read(&tx));
        // A large list leaves megabytes in the connection's page cache, which an idle
        // reader would hold for good. (What was read is read, whatever this says.)
        let _ = reader.execute_batch("PRAGMA shrink_memory");
        let mut idle = self.readers.lock().expect("readers lock");
        if idle.len() < IDLE_READERS && reader.is_autocommit() {
            idle.push(reader);
        }
        outcome
    }

    fn current_revision(db: &Connection) -> Result<i64> {
        Self::number(db, "SELECT seq FROM sqlite_sequence WHERE name = 'kv'")
    }

    /// The one number `query` reads, 0 if none; its statement kept prepared (both are read
    /// on every list and every watch: parsing them again cost more than running them).
    fn number(db: &Connection, query: &str) -> Result<i64> {
        db.prepare_cached(query)
            .and_then(|mut statement| statement.query_row([], |r| r.get(0)).optional())
            .map_err(backend)
            .map(|number| number.unwrap_or(0))
    }

    fn newest(tx: &Connection, key: &str) -> Result<Option<Row>> {
        tx.prepare_cached("SELECT id, deleted, create_revision, value FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1")
            .and_then(|mut statement| {
                statement
                    .query_row(params![key], |r| {
                        Ok(Row { id: r.get(0)?, deleted: r.get(1)?, create_revision: r.get(2)?, value: r.get(3)? })
                    })
                    .optional()
            })
            .map_err(backend)
    }

    fn append(tx: &Connection, key: &str, row: NewRow, value: &[u8]) -> Result<i64> {
        let NewRow { created, deleted, create_revision, prev_revision } = row;
        tx.prepare_cached(
            "INSERT INTO kv (name, created, deleted, create_revision, prev_revision, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| s.execute(params![key, created, deleted, create_revision, prev_revision, value]))
        .map_err(backend)?;
        let id = tx.last_insert_rowid();
        if created {
            tx.prepare_cached("UPDATE kv SET create_revision = ?1 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id]))
                .map_err(backend)?;
        }
        Ok(id)
    }

    /// Runs `write` and returns once it is committed, with its event published. Writes that
    /// arrive while a commit is on its way to disk wait for it, then whichever takes the
    /// lock first commits them all: one transaction with a savepoint each (a failed write
    /// undoes only itself), one fsync, every write acknowledged only after it.
    fn write(&self, write: impl FnOnce(&Connection) -> Result<Event> + Send + 'static) -> Result<Event> {
        let (done, outcome) = std::sync::mpsc::channel();
        self.pending.lock().expect("queue lock").push(PendingWrite { write: Box::new(write), done });
        let mut db = self.db.lock().expect("store lock");
        // The commit that held the lock may have carried this write already.
        if let Ok(outcome) = outcome.try_recv() {
            return outcome;
        }
        let batch = std::mem::take(&mut *self.pending.lock().expect("queue lock"));
        let (writes, dones): (Vec<WriteFn>, Vec<_>) = batch.into_iter().map(|p| (p.write, p.done)).unzip();
        match Self::commit(&mut db, writes) {
            Ok(outcomes) => {
                for (done, outcome) in dones.into_iter().zip(outcomes) {
                    // Sent under the lock, in commit order: receivers see revision order.
                    if let Ok(event) = &outcome {
                        let _ = self.events.send(event.clone());
                    }
                    let _ = done.send(outcome);
                }
            }
            Err(e) => {
                for done in dones {
                    let _ = done.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
        outcome.recv().expect("every pending write is answered")
    }

    /// The writes in one transaction, each in a savepoint of its own; their outcomes in order.
    fn commit(db: &mut Connection, writes: Vec<WriteFn>) -> Result<Vec<Result<Event>>> {
        let mut tx = db.transaction().map_err(backend)?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let savepoint = tx.savepoint().map_err(backend)?;
            let outcome = write(&savepoint);
            if outcome.is_ok() {
                savepoint.commit().map_err(backend)?;
            }
            // Otherwise dropping the savepoint rolls back what the write did.
            outcomes.push(outcome);
        }
        tx.commit().map_err(backend)?;
        Ok(outcomes)
    }

    fn compacted(db: &Connection) -> Result<i64> {
        Self::number(db, "SELECT value FROM meta WHERE key = 'compacted'")
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).expect("ASCII keys");
        }
    }
    "\u{7f}".into()
}

impl Store for SqliteStore {
    fn revision(&self) -> Result<i64> {
        Self::current_revision(&self.db.lock().expect("store lock"))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let db = self.db.lock().expect("store lock");
        Ok(Self::newest(&db, key)?.filter(|r| !r.deleted).map(|r| KeyValue {
            key: key.into(),
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.id,
        }))
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page> {
        let mut page = Collect::default();
        self.list_into(prefix, start_after, limit, &mut page)?;
        Ok(page.page())
    }

    fn list_into(&self, prefix: &str, start_after: Option<&str>, limit: usize, sink: &mut dyn PageSink) -> Result<()> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let from = start_after.map(|s| format!("{s}\u{0}")).unwrap_or_else(|| prefix.to_string());
        let end = prefix_end(prefix);
        self.read(|db| {
            let revision = Self::current_revision(db)?;
            // Each name's newest row, unless it is a deletion (`deleted` is the bare column
            // beside MAX(id), so that row's), chosen from the index alone.
            const NEWEST: &str = "SELECT name, MAX(id) AS id FROM kv WHERE name >= ?1 AND name < ?2
                                  GROUP BY name HAVING deleted = 0 ORDER BY name";
            // The page's last key and, if there is one, the key after it: known before the
            // first item, as the list's metadata comes first.
            let continue_after: Option<String> = if limit == 0 {
                None
            } else {
                let mut statement = db.prepare_cached(&format!("{NEWEST} LIMIT 2 OFFSET ?3")).map_err(backend)?;
                let mut names: Vec<String> = statement
                    .query_map(params![from, end, limit - 1], |r| r.get(0))
                    .map_err(backend)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(backend)?;
                (names.len() == 2).then(|| names.swap_remove(0))
            };
            if sink.begin(revision, continue_after.as_deref()).is_break() {
                return Ok(());
            }
            // The chosen rows are read in name order as SQLite walks the index (the outer
            // ORDER BY costs no sort: the planner keeps the subquery's order).
            let mut statement = db
                .prepare_cached(&format!(
                    "SELECT page.name, kv.value, kv.create_revision, kv.id
                     FROM ({NEWEST} LIMIT ?3) AS page CROSS JOIN kv ON kv.id = page.id ORDER BY page.name"
                ))
                .map_err(backend)?;
            let fetch = if limit == 0 { -1 } else { limit };
            let mut rows = statement.query(params![from, end, fetch]).map_err(backend)?;
            while let Some(row) = rows.next().map_err(backend)? {
                let kv = KeyValueRef {
                    key: row.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(backend)?,
                    value: row.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(backend)?,
                    create_revision: row.get(2).map_err(backend)?,
                    mod_revision: row.get(3).map_err(backend)?,
                };
                if sink.item(kv).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64> {
        let (key, value) = (key.to_string(), value.to_vec());
        let event = self.write(move |tx| {
            let (key, value) = (key.as_str(), value.as_slice());
            if Self::newest(tx, key)?.is_some_and(|r| !r.deleted) {
                return Err(StoreError::AlreadyExists(key.into()));
            }
            let row = NewRow { created: true, deleted: false, create_revision: 0, prev_revision: 0 };
            let id = Self::append(tx, key, row, value)?;
            let kv = KeyValue { key: key.into(), value: value.to_vec(), create_revision: id, mod_revision: id };
            Ok(Event { kind: EventKind::Put, kv, revision: id, created: true, prev: None })
        })?;
        Ok(event.revision)
    }

    fn update(&self, key: &str, value: &[u8], expected: Option<i64>) -> Result<i64> {
        let (key, value) = (key.to_string(), value.to_vec());
        let event = self.write(move |tx| {
            let (key, value) = (key.as_str(), value.as_slice());
            let current =
                Self::newest(tx, key)?.filter(|r| !r.deleted).ok_or_else(|| StoreError::NotFound(key.into()))?;
            if let Some(expected) = expected.filter(|e| *e != current.id) {
                return Err(StoreError::Conflict { key: key.into(), current: current.id, expected });
            }
            let row = NewRow {
                created: false,
                deleted: false,
                create_revision: current.create_revision,
                prev_revision: current.id,
            };
            let id = Self::append(tx, key, row, value)?;
            let kv = KeyValue {
                key: key.into(),
                value: value.to_vec(),
                create_revision: current.create_revision,
                mod_revision: id,
            };
            Ok(Event { kind: EventKind::Put, kv, revision: id, created: false, prev: Some(current.value) })
        })?;
        Ok(event.revision)
    }

    fn delete(&self, key: &str, expected: Option<i64>) -> Result<(KeyValue, i64)> {
        let key = key.to_string();
        let event = self.write(move |tx| {
            let key = key.as_str();
            let current =
                Self::newest(tx, key)?.filter(|r| !r.deleted).ok_or_else(|| StoreError::NotFound(key.into()))?;
            if let Some(expected) = expected.filter(|e| *e != current.id) {
                return Err(StoreError::Conflict { key: key.into(), current: current.id, expected });
            }
            let row = NewRow {
                created: false,
                deleted: true,
                create_revision: current.create_revision,
                prev_revision: current.id,
            };
            let id = Self::append(tx, key, row, &current.value)?;
            let kv = KeyValue {
                key: key.into(),
                value: current.value,
                create_revision: current.create_revision,
                mod_revision: current.id,
            };
            Ok(Event { kind: EventKind::Delete, kv, revision: id, created: false, prev: None })
        })?;
        Ok((event.kv, event.revision))
    }

    fn events_since(&self, prefix: &str, after: i64) -> Result<Vec<Event>> {
        let db = self.db.lock().expect("store lock");
        let compacted = Self::compacted(&db)?;
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        let mut statement = db
            .prepare_cached(
                "SELECT kv.id, kv.name, kv.created, kv.deleted, kv.create_revision, kv.value, prev.value FROM kv
                 LEFT JOIN kv prev ON prev.id = kv.prev_revision AND kv.deleted = 0
                 WHERE kv.id > ?1 AND kv.name >= ?2 AND kv.name < ?3 ORDER BY kv.id",
            )
            .map_err(backend)?;
        let rows = statement
            .query_map(params![after, prefix, prefix_end(prefix)], |r| {
                let (id, deleted, created): (i64, bool, bool) = (r.get(0)?, r.get(3)?, r.get(2)?);
                let kv = KeyValue { key: r.get(1)?, value: r.get(5)?, create_revision: r.get(4)?, mod_revision: id };
                let kind = if deleted { EventKind::Delete } else { EventKind::Put };
                Ok(Event { kind, kv, revision: id, created, prev: r.get(6)? })
            })
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)?;
        Ok(rows)
    }

    fn compact(&self, revision: i64) -> Result<()> {
        let mut db = self.db.lock().expect("store lock");
        let tx = db.transaction().map_err(backend)?;
        // Rows replaced by a newer row of their key, and keys whose newest row is a
        // deletion: both at or below `revision`.
        tx.execute(
            "DELETE FROM kv WHERE id <= ?1 AND (
                 id < (SELECT MAX(id) FROM kv AS newer WHERE newer.name = kv.name)
                 OR deleted = 1)",
            params![revision],
        )
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('compacted', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            params![revision],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn the_store_contract() {
        let (_dir, s) = store();
        super::super::tests::contract(&s);
    }

    /// A list reads from a snapshot of its own: writes made while it is being read neither
    /// wait for it nor show up in it.
    #[test]
    fn a_list_neither_holds_back_writes_nor_sees_them() {
        let (_dir, s) = store();
        for name in ["a", "b", "c"] {
            s.create(&format!("/registry/x/{name}"), b"1").unwrap();
        }
        struct WritingSink<'a> {
            store: &'a SqliteStore,
            seen: Vec<(String, Vec<u8>)>,
        }
        impl PageSink for WritingSink<'_> {
            fn begin(&mut self, _: i64, _: Option<&str>) -> ControlFlow<()> {
                ControlFlow::Continue(())
            }
            fn item(&mut self, kv: KeyValueRef<'_>) -> ControlFlow<()> {
                if self.seen.is_empty() {
                    self.store.update("/registry/x/c", b"2", None).unwrap();
                    self.store.delete("/registry/x/b", None).unwrap();
                    self.store.create("/registry/x/d", b"1").unwrap();
                }
                self.seen.push((kv.key.into(), kv.value.to_vec()));
                ControlFlow::Continue(())
            }
        }
        let mut sink = WritingSink { store: &s, seen: Vec::new() };
        s.list_into("/registry/x/", None, 0, &mut sink).unwrap();
        let seen: Vec<(&str, &[u8])> = sink.seen.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        assert_eq!(seen, [("/registry/x/a", &b"1"[..]), ("/registry/x/b", b"1"), ("/registry/x/c", b"1")]);
        let after: Vec<String> = s.list("/registry/x/", None, 0).unwrap().items.into_iter().map(|kv| kv.key).collect();
        assert_eq!(after, ["/registry/x/a", "/registry/x/c", "/registry/x/d"]);
    }

    #[test]
    fn writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create("/a", b"1").unwrap();
            s.update("/a", b"2", None).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.get("/a").unwrap().unwrap().value, b"2");
        assert_eq!(s.create("/b", b"x").unwrap(), 3);
    }

    /// Writes from many threads at once share commits: each gets its own outcome (one
    /// create of a shared key wins, the rest are refused without undoing anyone else's),
    /// revisions are dense and their events come in order, and all of it is on disk.
    #[test]
    fn a_store_made_with_the_old_index_gets_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create("/registry/x/a", b"1").unwrap();
            let db = s.db.lock().unwrap();
            db.execute_batch("DROP INDEX kv_name_id_deleted; CREATE INDEX kv_name_id ON kv (name, id);").unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let indexes: Vec<String> = {
            let db = s.db.lock().unwrap();
            let mut statement =
                db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'kv'").unwrap();
            statement.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        assert_eq!(indexes, ["kv_name_id_deleted"]);
        assert_eq!(s.list("/registry/x/", None, 0).unwrap().items[0].value, b"1");
    }

    #[test]
    fn concurrent_writes_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let mut events = store.subscribe();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut won = 0;
                    for i in 0..50 {
                        store.create(&format!("/t{t}/{i}"), b"v").unwrap();
                        won += usize::from(store.create(&format!("/shared/{i}"), b"v").is_ok());
                    }
                    won
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(won, 50, "each shared key is created once");
        let revisions: Vec<i64> = (0..450).map(|_| events.try_recv().unwrap().revision).collect();
        assert_eq!(revisions, (1..=450).collect::<Vec<_>>());
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.revision().unwrap(), 450);
        assert!(reopened.get("/t7/49").unwrap().is_some() && reopened.get("/shared/49").unwrap().is_some());
    }
}
