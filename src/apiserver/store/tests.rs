//! What every backend must do, run against each: revisions, conditional writes, lists and
//! pages, history and compaction.

use std::ops::ControlFlow;

use super::{EventKind, KeyValueRef, PageSink, Store, StoreError};

pub fn contract(s: &dyn Store) {
    revisions_are_global_and_conflicts_are_caught(s);
    lists_page_in_key_order_under_a_prefix(s);
    events_resume_from_any_kept_revision_until_compacted(s);
}

fn revisions_are_global_and_conflicts_are_caught(s: &dyn Store) {
    let base = s.revision().unwrap();
    let a = s.create("/registry/t1/ns/a", b"1").unwrap();
    let b = s.create("/registry/t1/ns/b", b"1").unwrap();
    assert_eq!((a, b), (base + 1, base + 2));
    assert!(matches!(s.create("/registry/t1/ns/a", b"x"), Err(StoreError::AlreadyExists(_))));
    let a2 = s.update("/registry/t1/ns/a", b"2", Some(a)).unwrap();
    assert_eq!(a2, base + 3);
    match s.update("/registry/t1/ns/a", b"3", Some(a)) {
        Err(StoreError::Conflict { current, expected, .. }) => assert_eq!((current, expected), (a2, a)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.update("/registry/t1/ns/none", b"3", None), Err(StoreError::NotFound(_))));
    let kv = s.get("/registry/t1/ns/a").unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"2"[..], a, a2));
    assert!(matches!(s.delete("/registry/t1/ns/a", Some(a)), Err(StoreError::Conflict { .. })));
    let (deleted, at) = s.delete("/registry/t1/ns/a", None).unwrap();
    assert_eq!((deleted.value.as_slice(), at), (&b"2"[..], base + 4));
    assert_eq!(s.get("/registry/t1/ns/a").unwrap(), None);
    assert!(matches!(s.delete("/registry/t1/ns/a", None), Err(StoreError::NotFound(_))));
    // A deleted key can be made again, with a new create revision.
    assert_eq!(s.create("/registry/t1/ns/a", b"new").unwrap(), base + 5);
    assert_eq!(s.get("/registry/t1/ns/a").unwrap().unwrap().create_revision, base + 5);
    assert_eq!(s.revision().unwrap(), base + 5);
}

fn lists_page_in_key_order_under_a_prefix(s: &dyn Store) {
    for name in ["c", "a", "b", "d"] {
        s.create(&format!("/registry/t2/ns1/{name}"), name.as_bytes()).unwrap();
    }
    s.create("/registry/t2/ns10/x", b"x").unwrap();
    s.create("/registry/t3/ns1/a", b"s").unwrap();
    s.delete("/registry/t2/ns1/d", None).unwrap();
    // Each key's newest value, whatever its history: updated, deleted and made again.
    s.update("/registry/t2/ns1/b", b"b2", None).unwrap();
    s.update("/registry/t2/ns1/b", b"b3", None).unwrap();
    s.delete("/registry/t2/ns1/a", None).unwrap();
    s.create("/registry/t2/ns1/a", b"a2").unwrap();
    let values = s.list("/registry/t2/ns1/", None, 0).unwrap().items.into_iter().map(|kv| kv.value).collect::<Vec<_>>();
    assert_eq!(values, [b"a2".to_vec(), b"b3".to_vec(), b"c".to_vec()]);
    let names = |page: &super::Page| page.items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    let page = s.list("/registry/t2/ns1/", None, 2).unwrap();
    assert_eq!(names(&page), ["/registry/t2/ns1/a", "/registry/t2/ns1/b"]);
    assert!(page.more);
    assert_eq!(page.revision, s.revision().unwrap());
    let rest = s.list("/registry/t2/ns1/", Some("/registry/t2/ns1/b"), 2).unwrap();
    assert_eq!(names(&rest), ["/registry/t2/ns1/c"]);
    assert!(!rest.more);
    // A limit that takes the last key exactly leaves nothing more.
    let whole = s.list("/registry/t2/ns1/", None, 3).unwrap();
    assert_eq!((whole.items.len(), whole.more), (3, false));
    let unbounded = s.list("/registry/t2/ns1/", None, usize::MAX).unwrap();
    assert_eq!((unbounded.items.len(), unbounded.more), (3, false));
    assert_eq!(s.list("/registry/t2/", None, 0).unwrap().items.len(), 4);

    // Read into a sink: the same page, the continue key known before the first item, and
    // the read ends when the sink says so.
    let mut first_two = Recorded::stopping_after(usize::MAX);
    s.list_into("/registry/t2/ns1/", None, 2, &mut first_two).unwrap();
    assert_eq!(first_two.revision, Some(page.revision));
    assert_eq!(first_two.continue_after.as_deref(), Some("/registry/t2/ns1/b"));
    assert_eq!(first_two.keys, names(&page));
    let mut one = Recorded::stopping_after(1);
    s.list_into("/registry/t2/ns1/", None, 0, &mut one).unwrap();
    assert_eq!((one.keys.len(), one.continue_after), (1, None));
}

/// A [`PageSink`] that notes what it is handed, and stops the read after `stop_after` items.
struct Recorded {
    revision: Option<i64>,
    continue_after: Option<String>,
    keys: Vec<String>,
    stop_after: usize,
}

impl Recorded {
    fn stopping_after(stop_after: usize) -> Recorded {
        Recorded { revision: None, continue_after: None, keys: Vec::new(), stop_after }
    }
}

impl PageSink for Recorded {
    fn begin(&mut self, revision: i64, continue_after: Option<&str>) -> ControlFlow<()> {
        self.revision = Some(revision);
        self.continue_after = continue_after.map(String::from);
        ControlFlow::Continue(())
    }

    fn item(&mut self, kv: KeyValueRef<'_>) -> ControlFlow<()> {
        self.keys.push(kv.key.into());
        if self.keys.len() >= self.stop_after { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

fn events_resume_from_any_kept_revision_until_compacted(s: &dyn Store) {
    let base = s.revision().unwrap();
    let mut live = s.subscribe();
    s.create("/registry/t4/ns/a", b"1").unwrap();
    s.update("/registry/t4/ns/a", b"2", None).unwrap();
    s.create("/registry/t5/ns/a", b"s").unwrap();
    s.delete("/registry/t4/ns/a", None).unwrap();
    let events = s.events_since("/registry/t4/", base).unwrap();
    let summary: Vec<(EventKind, i64, bool, &[u8])> =
        events.iter().map(|e| (e.kind.clone(), e.revision - base, e.created, e.kv.value.as_slice())).collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, 1, true, &b"1"[..]),
            (EventKind::Put, 2, false, &b"2"[..]),
            (EventKind::Delete, 4, false, &b"2"[..])
        ]
    );
    // An update carries the value it replaced.
    let prevs: Vec<Option<&[u8]>> = events.iter().map(|e| e.prev.as_deref()).collect();
    assert_eq!(prevs, [None, Some(&b"1"[..]), None]);
    assert_eq!(s.events_since("/registry/t4/", base + 2).unwrap().len(), 1);
    assert!(s.events_since("/registry/t4/", base + 4).unwrap().is_empty());
    // (etcd's follower may still hand over a write of an earlier test.)
    let first = std::iter::from_fn(|| live.blocking_recv().ok()).find(|e| e.revision > base).unwrap();
    assert_eq!((first.revision, first.created), (base + 1, true));
    let second = live.blocking_recv().unwrap();
    assert_eq!(second.prev.as_deref(), Some(&b"1"[..]));

    s.compact(base + 3).unwrap();
    assert!(matches!(s.events_since("/registry/t4/", base + 1), Err(StoreError::Compacted { .. })));
    assert_eq!(s.events_since("/registry/", base + 3).unwrap().len(), 1);
    // Current values survive compaction.
    assert_eq!(s.get("/registry/t5/ns/a").unwrap().unwrap().value, b"s");
}

#[test]
fn the_store_contract_on_etcd() {
    let etcd = testkit::etcd::Etcd::start();
    let store = super::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).unwrap();
    contract(&store);
}
