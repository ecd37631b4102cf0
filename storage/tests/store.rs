//! The [`Store`] API end to end, on a real redb file in a temp dir: entries and versions, write
//! modes, deletes and tombstones, history retention, the namespace log and its compaction,
//! aliases, validation, listings and their cursors, snapshots and ETags, group commit, and what
//! survives a reopen.
//!
//! Every rejected request is checked to have changed nothing: the namespace revision (and so the
//! ETag) is read before and after.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cfgnode_storage::{
    Codec, CommitObserver, CommitStats, DeleteRequest, Entry, Event, EventKind, GENERATION_STEP,
    LogRead, Lookup, Page, PutRequest, Store, StoreError, StoreOptions, WriteMode,
};
use tempfile::TempDir;

// ---- helpers -------------------------------------------------------------------------------

/// An upsert of a text value.
fn put(ns: &str, key: &str, value: &str) -> PutRequest {
    PutRequest {
        namespace: ns.to_string(),
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        codec: Codec::Text,
        mode: WriteMode::Upsert,
        if_version: None,
    }
}

/// A put in another write mode.
fn put_mode(ns: &str, key: &str, value: &str, mode: WriteMode) -> PutRequest {
    PutRequest {
        mode,
        ..put(ns, key, value)
    }
}

/// A compare-and-set put.
fn put_if(ns: &str, key: &str, value: &str, version: u64) -> PutRequest {
    PutRequest {
        if_version: Some(version),
        ..put(ns, key, value)
    }
}

fn del(ns: &str, key: &str, if_version: Option<u64>) -> DeleteRequest {
    DeleteRequest {
        namespace: ns.to_string(),
        key: key.to_string(),
        if_version,
    }
}

/// A fresh store in a temp dir; keep the `TempDir` alive as long as the store.
fn fresh(options: StoreOptions) -> (TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let store = Store::open(&path, None, options).expect("open a new store");
    (dir, path, store)
}

fn reopen(path: &Path) -> Store {
    Store::open(path, None, StoreOptions::default()).expect("reopen")
}

/// The namespace revision, 0 when the namespace has never been written.
fn revision(store: &Store, ns: &str) -> u64 {
    store
        .namespace(ns)
        .expect("read namespace")
        .map_or(0, |s| s.revision)
}

fn etag(store: &Store, ns: &str) -> String {
    store
        .namespace(ns)
        .expect("read namespace")
        .expect("namespace exists")
        .etag()
}

fn entry(store: &Store, ns: &str, key: &str) -> Entry {
    match store.lookup(ns, key).expect("lookup") {
        Lookup::Entry(entry) => entry,
        other => panic!("{key:?} should be a live key, got {other:?}"),
    }
}

fn is_missing(store: &Store, ns: &str, key: &str) -> bool {
    matches!(store.lookup(ns, key).expect("lookup"), Lookup::Missing)
}

fn events(store: &Store, ns: &str, after: u64) -> Vec<Event> {
    match store.events_since(ns, after, usize::MAX).expect("read log") {
        LogRead::Events(events) => events,
        compacted => panic!("expected events after {after}, got {compacted:?}"),
    }
}

/// Follows a listing's cursors to its end and returns every item with the number of pages.
/// Fails on an empty page, or after `max_pages` pages (a cursor that does not advance would
/// otherwise loop forever).
fn walk_pages<T>(
    max_pages: usize,
    mut fetch: impl FnMut(Option<&str>) -> Result<Page<T>, StoreError>,
) -> (Vec<T>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=max_pages {
        let page = fetch(cursor.as_deref()).expect("list a page");
        assert!(!page.items.is_empty(), "page {pages} is empty");
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return (items, pages),
        }
    }
    panic!("the listing did not end within {max_pages} pages");
}

fn now_millis() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("millis fit u64")
}

/// Waits until the wall clock has passed `millis`, so the next write gets a later timestamp.
async fn clock_past(millis: u64) {
    while now_millis() <= millis {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A real [`CommitObserver`]: records every batch, and can hold the writer thread inside the
/// next commit so the test can queue writes that the writer must then take as one batch.
#[derive(Default)]
struct Recorder {
    commits: AtomicUsize,
    writes: AtomicUsize,
    largest: AtomicUsize,
    /// (batch size, rejected) of every commit, in order.
    batches: Mutex<Vec<(usize, usize)>>,
    hold: Mutex<Option<Hold>>,
}

struct Hold {
    /// Told when the writer is held.
    held: tokio::sync::oneshot::Sender<()>,
    /// The writer waits on this; dropping its sender releases it too (so a failing test never
    /// hangs the writer).
    release: std::sync::mpsc::Receiver<()>,
}

impl CommitObserver for Recorder {
    fn on_commit(&self, stats: &CommitStats) {
        assert!(stats.committed, "test commits never fail: {stats:?}");
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(stats.batch_size, Ordering::SeqCst);
        self.largest.fetch_max(stats.batch_size, Ordering::SeqCst);
        self.batches
            .lock()
            .expect("recorder lock")
            .push((stats.batch_size, stats.rejected));
        let hold = self.hold.lock().expect("recorder lock").take();
        if let Some(hold) = hold {
            let _ = hold.held.send(());
            let _ = hold.release.recv();
        }
    }
}

impl Recorder {
    fn options(self: &Arc<Self>) -> StoreOptions {
        StoreOptions {
            observer: Some(Arc::clone(self) as Arc<dyn CommitObserver>),
            ..StoreOptions::default()
        }
    }

    fn batches(&self) -> Vec<(usize, usize)> {
        self.batches.lock().expect("recorder lock").clone()
    }
}

// ---- entries and versions ------------------------------------------------------------------

#[tokio::test]
async fn put_then_lookup_and_a_second_put_moves_version_and_revision() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    let request = PutRequest {
        codec: Codec::Json,
        ..put("app", "db/url", r#"{"host":"h","port":5432}"#)
    };
    let first = store.put(request).await.expect("first put");
    assert_eq!((first.version, first.revision), (1, 1));
    assert_eq!(first.created_at, first.updated_at);

    let found = entry(&store, "app", "db/url");
    assert_eq!(found, first, "lookup returns what put answered");
    assert_eq!(found.value, br#"{"host":"h","port":5432}"#);
    assert_eq!(found.codec, Codec::Json);

    clock_past(first.updated_at).await;
    let second = store
        .put(put("app", "db/url", "postgres://h"))
        .await
        .expect("second put");
    assert_eq!((second.version, second.revision), (2, 2));
    assert_eq!(second.created_at, first.created_at, "created_at is kept");
    assert!(second.updated_at > first.updated_at, "updated_at moves");
    let found = entry(&store, "app", "db/url");
    assert_eq!(found, second);
    assert_eq!(found.codec, Codec::Text);

    let state = store.namespace("app").expect("read").expect("exists");
    assert_eq!((state.revision, state.key_count), (2, 1));

    // Another key takes the next namespace revision but starts its own versions at 1.
    let other = store.put(put("app", "db/pool", "8")).await.expect("put");
    assert_eq!((other.version, other.revision), (1, 3));
    // Another namespace has revisions of its own.
    let elsewhere = store.put(put("web", "db/url", "x")).await.expect("put");
    assert_eq!((elsewhere.version, elsewhere.revision), (1, 1));
}

#[tokio::test]
async fn write_modes_and_compare_and_set() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    store.put(put("ns", "k", "v1")).await.expect("put");

    // Create on an existing key: refused, nothing changed.
    let result = store
        .put(put_mode("ns", "k", "other", WriteMode::Create))
        .await;
    assert!(
        matches!(&result, Err(StoreError::AlreadyExists { key, version: 1 }) if key == "k"),
        "{result:?}"
    );
    assert_eq!(revision(&store, "ns"), 1);
    assert_eq!(entry(&store, "ns", "k").value, b"v1");

    // Update on a missing key: refused, nothing created.
    let result = store
        .put(put_mode("ns", "missing", "x", WriteMode::Update))
        .await;
    assert!(
        matches!(&result, Err(StoreError::DoesNotExist { key }) if key == "missing"),
        "{result:?}"
    );
    assert!(is_missing(&store, "ns", "missing"));
    assert_eq!(revision(&store, "ns"), 1);

    // Create on a missing key and update on an existing key succeed.
    let created = store
        .put(put_mode("ns", "new", "n", WriteMode::Create))
        .await
        .expect("create");
    assert_eq!((created.version, created.revision), (1, 2));
    let updated = store
        .put(put_mode("ns", "k", "v2", WriteMode::Update))
        .await
        .expect("update");
    assert_eq!((updated.version, updated.revision), (2, 3));

    // Compare-and-set: the right version wins, a stale one is refused and changes nothing.
    let cas = store.put(put_if("ns", "k", "v3", 2)).await.expect("cas");
    assert_eq!(cas.version, 3);
    let result = store.put(put_if("ns", "k", "stale", 2)).await;
    assert!(
        matches!(
            &result,
            Err(StoreError::VersionMismatch { key, expected: 2, actual: Some(3) }) if key == "k"
        ),
        "{result:?}"
    );
    assert_eq!(entry(&store, "ns", "k").value, b"v3");
    assert_eq!(revision(&store, "ns"), 4);

    // if_version 0 means "must be absent".
    let result = store.put(put_if("ns", "k", "x", 0)).await;
    assert!(
        matches!(
            &result,
            Err(StoreError::VersionMismatch {
                expected: 0,
                actual: Some(3),
                ..
            })
        ),
        "{result:?}"
    );
    let absent = store
        .put(put_if("ns", "fresh", "f", 0))
        .await
        .expect("absent key with if_version 0");
    assert_eq!(absent.version, 1);
    // A non-zero expectation on a missing key is a mismatch, not a create.
    let result = store.put(put_if("ns", "nothing", "x", 1)).await;
    assert!(
        matches!(
            &result,
            Err(StoreError::VersionMismatch {
                expected: 1,
                actual: None,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(is_missing(&store, "ns", "nothing"));
    assert_eq!(revision(&store, "ns"), 5);
}

#[tokio::test]
async fn delete_records_a_tombstone_and_recreating_continues_the_versions() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    let result = store.delete(del("ns", "k", None)).await;
    assert!(
        matches!(&result, Err(StoreError::KeyNotFound { namespace, key }) if namespace == "ns" && key == "k"),
        "{result:?}"
    );
    assert!(
        store.namespace("ns").expect("read").is_none(),
        "a refused delete does not create the namespace"
    );

    let created = store.put(put("ns", "k", "v1")).await.expect("put");
    store.put(put("ns", "other", "o")).await.expect("put");
    assert_eq!(
        store
            .namespace("ns")
            .expect("read")
            .expect("exists")
            .key_count,
        2
    );

    let result = store.delete(del("ns", "k", Some(7))).await;
    assert!(
        matches!(
            &result,
            Err(StoreError::VersionMismatch {
                expected: 7,
                actual: Some(1),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(entry(&store, "ns", "k").value, b"v1");
    assert_eq!(revision(&store, "ns"), 2);

    let deleted = store
        .delete(del("ns", "k", Some(1)))
        .await
        .expect("delete at the right version");
    assert_eq!((deleted.version, deleted.revision), (2, 3));
    assert!(is_missing(&store, "ns", "k"));
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!((state.key_count, state.revision), (1, 3));

    let tombstone = store
        .version("ns", "k", 2)
        .expect("read")
        .expect("the delete is a version");
    assert_eq!(
        (tombstone.value, tombstone.codec, tombstone.revision),
        (None, None, 3)
    );
    let history: Vec<(u64, Option<Vec<u8>>)> = store
        .versions("ns", "k", None, 10)
        .expect("versions")
        .items
        .into_iter()
        .map(|v| (v.version, v.value))
        .collect();
    assert_eq!(history, vec![(2, None), (1, Some(b"v1".to_vec()))]);
    assert_eq!(store.latest_version("ns", "k").expect("read"), Some(2));

    // Deleting again is KeyNotFound: the tombstone is history, not a key.
    let result = store.delete(del("ns", "k", None)).await;
    assert!(
        matches!(result, Err(StoreError::KeyNotFound { .. })),
        "{result:?}"
    );

    clock_past(created.created_at).await;
    let again = store
        .put(put_mode("ns", "k", "v3", WriteMode::Create))
        .await
        .expect("create after delete");
    assert_eq!((again.version, again.revision), (3, 4));
    assert!(
        again.created_at > created.created_at,
        "a re-created key starts a new life"
    );
    assert_eq!(
        store
            .namespace("ns")
            .expect("read")
            .expect("exists")
            .key_count,
        2
    );
}

#[tokio::test]
async fn history_keeps_the_newest_versions_and_pages_newest_first() {
    let (_dir, _path, store) = fresh(StoreOptions {
        history_per_key: 3,
        ..StoreOptions::default()
    });
    for i in 1..=10 {
        let written = store
            .put(put("ns", "k", &format!("v{i}")))
            .await
            .expect("put");
        assert_eq!(written.version, i);
    }
    let all = store.versions("ns", "k", None, 100).expect("versions");
    assert_eq!(
        all.items
            .iter()
            .map(|v| (v.version, v.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            (10, Some(b"v10".to_vec())),
            (9, Some(b"v9".to_vec())),
            (8, Some(b"v8".to_vec())),
        ]
    );
    assert_eq!(all.next_cursor, None);

    // Paging: newest first, the cursor is the last version of the page.
    let first = store.versions("ns", "k", None, 2).expect("page 1");
    assert_eq!(
        first.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![10, 9]
    );
    let cursor: u64 = first
        .next_cursor
        .as_deref()
        .expect("more versions")
        .parse()
        .expect("numeric cursor");
    let second = store.versions("ns", "k", Some(cursor), 2).expect("page 2");
    assert_eq!(
        second.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![8]
    );
    assert_eq!(second.next_cursor, None, "no empty trailing page");

    for trimmed in 1..=7 {
        assert!(
            store.version("ns", "k", trimmed).expect("read").is_none(),
            "version {trimmed} is trimmed"
        );
    }
    let eight = store.version("ns", "k", 8).expect("read").expect("kept");
    assert_eq!(
        (eight.value, eight.codec, eight.revision),
        (Some(b"v8".to_vec()), Some(Codec::Text), 8)
    );
    // Another key's history is its own.
    store.put(put("ns", "j", "j1")).await.expect("put");
    assert_eq!(
        store
            .versions("ns", "j", None, 10)
            .expect("read")
            .items
            .len(),
        1
    );
    assert_eq!(
        store
            .versions("ns", "k", None, 10)
            .expect("read")
            .items
            .len(),
        3
    );
}

// ---- the namespace log ---------------------------------------------------------------------

#[tokio::test]
async fn the_log_holds_every_mutation_in_order() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    store.put(put("ns", "a", "1")).await.expect("put");
    store.put(put("ns", "a", "2")).await.expect("put");
    store.put_alias("ns", "al", "a").await.expect("alias");
    // Refused and idempotent requests add no event.
    let _ = store.put(put_mode("ns", "a", "x", WriteMode::Create)).await;
    assert!(
        !store
            .put_alias("ns", "al", "a")
            .await
            .expect("retry")
            .created
    );
    store.delete_alias("ns", "al").await.expect("unalias");
    store.delete(del("ns", "a", None)).await.expect("delete");
    store
        .put(put("other", "z", "z"))
        .await
        .expect("put elsewhere");

    let log = events(&store, "ns", 0);
    assert_eq!(
        log.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "contiguous revisions from 1"
    );
    assert!(log.iter().all(|e| e.namespace == "ns"));
    let kinds: Vec<EventKind> = log.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Set {
                key: "a".into(),
                version: 1,
                value: b"1".to_vec(),
                codec: Codec::Text
            },
            EventKind::Set {
                key: "a".into(),
                version: 2,
                value: b"2".to_vec(),
                codec: Codec::Text
            },
            EventKind::AliasSet {
                alias: "al".into(),
                target: "a".into()
            },
            EventKind::AliasDelete { alias: "al".into() },
            EventKind::Delete {
                key: "a".into(),
                version: 3
            },
        ]
    );

    // Reading from the middle, and with a limit.
    assert_eq!(
        events(&store, "ns", 3)
            .iter()
            .map(|e| e.revision)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    let LogRead::Events(limited) = store.events_since("ns", 1, 2).expect("read") else {
        panic!("nothing is compacted");
    };
    assert_eq!(
        limited.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(events(&store, "ns", 5).is_empty(), "caught up");
    assert!(events(&store, "never-written", 0).is_empty());
    assert_eq!(events(&store, "other", 0).len(), 1);
}

#[tokio::test]
async fn a_reader_behind_the_retained_log_is_told_to_resync() {
    let (_dir, _path, store) = fresh(StoreOptions {
        log_per_namespace: 5,
        ..StoreOptions::default()
    });
    for i in 0..20 {
        store
            .put(put("ns", &format!("k{}", i % 4), &i.to_string()))
            .await
            .expect("put");
    }
    match store.events_since("ns", 3, 100).expect("read") {
        LogRead::Compacted {
            oldest_retained,
            current,
        } => assert_eq!((oldest_retained, current), (16, 20)),
        LogRead::Events(events) => panic!("expected compaction, got {} events", events.len()),
    }
    // The first reader that is still served: it saw revision 15.
    let tail = events(&store, "ns", 15);
    assert_eq!(
        tail.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![16, 17, 18, 19, 20]
    );
    assert!(
        matches!(&tail[4].kind, EventKind::Set { key, value, .. } if key == "k3" && value == b"19")
    );
    // One revision further back is gone.
    assert!(matches!(
        store.events_since("ns", 14, 100).expect("read"),
        LogRead::Compacted {
            oldest_retained: 16,
            ..
        }
    ));
    assert_eq!(
        store
            .namespace("ns")
            .expect("read")
            .expect("exists")
            .log_start,
        16
    );
}

// ---- aliases -------------------------------------------------------------------------------

#[tokio::test]
async fn aliases_point_at_keys_and_refuse_ambiguity() {
    let (_dir, _path, store) = fresh(StoreOptions::default());

    let result = store.put_alias("ns", "al", "missing").await;
    assert!(
        matches!(&result, Err(StoreError::KeyNotFound { key, .. }) if key == "missing"),
        "{result:?}"
    );
    assert!(store.namespace("ns").expect("read").is_none());

    store.put(put("ns", "a", "A")).await.expect("put");
    store.put(put("ns", "b", "B")).await.expect("put");
    let made = store.put_alias("ns", "al", "a").await.expect("alias");
    assert!(made.created);
    assert_eq!(
        (made.alias.alias.as_str(), made.alias.target.as_str()),
        ("al", "a")
    );
    assert_eq!(made.alias.revision, 3);
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!((state.revision, state.alias_count), (3, 1));

    // The same alias again is an idempotent retry: no new revision.
    let retry = store.put_alias("ns", "al", "a").await.expect("retry");
    assert!(!retry.created);
    assert_eq!(retry.alias, made.alias);
    assert_eq!(revision(&store, "ns"), 3);

    let refused: Vec<(&str, Result<_, StoreError>)> = vec![
        (
            "re-pointing an alias",
            store.put_alias("ns", "al", "b").await.map(drop),
        ),
        (
            "an alias named like a key",
            store.put_alias("ns", "b", "a").await.map(drop),
        ),
        (
            "a put to an alias name",
            store.put(put("ns", "al", "x")).await.map(drop),
        ),
        (
            "a delete of an alias name",
            store.delete(del("ns", "al", None)).await.map(drop),
        ),
    ];
    for (what, result) in refused {
        assert!(
            matches!(result, Err(StoreError::NameTaken(_))),
            "{what}: {result:?}"
        );
    }
    let result = store.put_alias("ns", "al2", "al").await;
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "an alias of an alias: {result:?}"
    );
    let result = store.put_alias("ns", "a", "a").await;
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "an alias of itself: {result:?}"
    );
    assert_eq!(
        revision(&store, "ns"),
        3,
        "nothing refused changed anything"
    );
    assert_eq!(
        store.alias("ns", "al").expect("read").expect("kept").target,
        "a"
    );
    assert_eq!(entry(&store, "ns", "b").value, b"B");

    // A lookup through the alias finds the target entry.
    match store.lookup("ns", "al").expect("lookup") {
        Lookup::Alias {
            alias,
            entry: Some(target),
        } => {
            assert_eq!(alias, made.alias);
            assert_eq!(target, entry(&store, "ns", "a"));
        }
        other => panic!("{other:?}"),
    }

    // Deleting the target leaves a dangling alias.
    store.delete(del("ns", "a", None)).await.expect("delete");
    match store.lookup("ns", "al").expect("lookup") {
        Lookup::Alias { alias, entry: None } => assert_eq!(alias.target, "a"),
        other => panic!("expected a dangling alias, got {other:?}"),
    }

    let removed = store.delete_alias("ns", "al").await.expect("unalias");
    assert_eq!(removed, made.alias);
    assert!(is_missing(&store, "ns", "al"));
    let result = store.delete_alias("ns", "al").await;
    assert!(
        matches!(result, Err(StoreError::AliasNotFound { .. })),
        "{result:?}"
    );
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!((state.revision, state.alias_count), (5, 0));
}

#[tokio::test]
async fn alias_listing_pages_by_name() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    store.put(put("ns", "target", "t")).await.expect("put");
    store.put(put("nt", "target", "t")).await.expect("put");
    store.put_alias("nt", "a0", "target").await.expect("alias");
    let names = ["a1", "a2", "a3", "a4", "a5"];
    for name in names.iter().rev() {
        store.put_alias("ns", name, "target").await.expect("alias");
    }
    let (seen, pages) = walk_pages(10, |cursor| store.aliases("ns", cursor, 2));
    let seen: Vec<String> = seen.into_iter().map(|a| a.alias).collect();
    assert_eq!(seen, names);
    assert_eq!(pages, 3);
}

// ---- validation ----------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (_dir, _path, store) = fresh(StoreOptions {
        max_value_bytes: 16,
        ..StoreOptions::default()
    });
    store.put(put("ns", "k", "v")).await.expect("put");
    let before = etag(&store, "ns");

    for ns in ["", "Bad", "_system", "a b", "-x"] {
        let result = store.put(put(ns, "k", "v")).await;
        assert!(
            matches!(result, Err(StoreError::InvalidNamespace { .. })),
            "namespace {ns:?}: {result:?}"
        );
    }
    for key in ["", "/k", "k/", "a//b", "tab\there"] {
        let result = store.put(put("ns", key, "v")).await;
        assert!(
            matches!(result, Err(StoreError::InvalidKey { .. })),
            "key {key:?}: {result:?}"
        );
        let result = store.delete(del("ns", key, None)).await;
        assert!(
            matches!(result, Err(StoreError::InvalidKey { .. })),
            "delete {key:?}: {result:?}"
        );
    }
    let result = store.put_alias("ns", "a//b", "k").await;
    assert!(
        matches!(result, Err(StoreError::InvalidKey { .. })),
        "{result:?}"
    );

    let bad_json = PutRequest {
        codec: Codec::Json,
        ..put("ns", "k", "{nope")
    };
    let result = store.put(bad_json).await;
    assert!(
        matches!(&result, Err(StoreError::CodecMismatch { codec, .. }) if codec == "json"),
        "{result:?}"
    );
    let bad_text = PutRequest {
        value: vec![0xff, 0xfe],
        ..put("ns", "k", "")
    };
    let result = store.put(bad_text).await;
    assert!(
        matches!(result, Err(StoreError::CodecMismatch { .. })),
        "{result:?}"
    );
    assert!(matches!(
        "xml".parse::<Codec>(),
        Err(StoreError::UnknownCodec { .. })
    ));

    let result = store.put(put("ns", "k", &"x".repeat(17))).await;
    assert!(
        matches!(
            result,
            Err(StoreError::ValueTooLarge {
                size: 17,
                limit: 16
            })
        ),
        "{result:?}"
    );
    // Exactly at the limit is fine.
    let at_limit = store
        .put(put("ns", "edge", &"x".repeat(16)))
        .await
        .expect("a value at the limit");
    assert_eq!(at_limit.revision, 2);

    // The refused writes changed nothing: one accepted write since `before`, and `k` is intact.
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!((state.revision, state.key_count), (2, 2));
    assert_ne!(etag(&store, "ns"), before);
    let k = entry(&store, "ns", "k");
    assert_eq!((k.value.as_slice(), k.version), (&b"v"[..], 1));
    assert_eq!(events(&store, "ns", 0).len(), 2);
    assert!(store.namespace("Bad").is_err(), "reads validate too");
    assert!(store.lookup("ns", "/k").is_err(), "reads validate too");
}

// ---- listings ------------------------------------------------------------------------------

#[tokio::test]
async fn list_entries_pages_through_a_prefix_exactly_once() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    let mut expected: Vec<String> = (0..10).map(|i| format!("app/{i:02}")).collect();
    expected.push("app/nested/deep".into());
    // Keys around the prefix, in the same and in neighbouring namespaces.
    let noise = ["ap", "app", "app.x", "app0", "apq/1", "b/1"];
    for key in expected.iter().rev().map(String::as_str).chain(noise) {
        store.put(put("ns", key, key)).await.expect("put");
    }
    for ns in ["nr", "ns-other", "nt"] {
        store.put(put(ns, "app/00", "x")).await.expect("put");
        store.put(put(ns, "app/zz", "x")).await.expect("put");
    }
    // A deleted key under the prefix is not listed.
    store.put(put("ns", "app/gone", "x")).await.expect("put");
    store
        .delete(del("ns", "app/gone", None))
        .await
        .expect("delete");

    for limit in [1, 3, 4, 11, 100] {
        let (items, pages) = walk_pages(expected.len() + 1, |cursor| {
            let page = store.list_entries("ns", "app/", cursor, limit)?;
            assert!(page.items.len() <= limit, "limit {limit}");
            Ok(page)
        });
        assert!(items.iter().all(|e| e.namespace == "ns"));
        assert!(items.iter().all(|e| e.value == e.key.as_bytes()));
        let seen: Vec<String> = items.into_iter().map(|e| e.key).collect();
        assert_eq!(seen, expected, "limit {limit}: every key once, in order");
        assert_eq!(pages, expected.len().div_ceil(limit), "limit {limit}");
    }

    // Without a prefix: the whole namespace; a prefix matching nothing: an empty last page.
    let all = store.list_entries("ns", "", None, 100).expect("list");
    assert_eq!(all.items.len(), expected.len() + noise.len());
    let none = store.list_entries("ns", "zzz", None, 10).expect("list");
    assert!(none.items.is_empty() && none.next_cursor.is_none());
    let unknown = store.list_entries("empty", "", None, 10).expect("list");
    assert!(unknown.items.is_empty() && unknown.next_cursor.is_none());
}

#[tokio::test]
async fn list_namespaces_skips_empty_namespaces_and_pages() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    for ns in ["a1", "b1", "b2", "b3", "c1"] {
        store.put(put(ns, "k", "v")).await.expect("put");
    }
    store.put(put("b2", "k2", "v")).await.expect("put");
    // Namespaces whose keys were all deleted (around and between the live ones).
    for ns in ["b-gone", "b2-gone", "b9-gone"] {
        store.put(put(ns, "k", "v")).await.expect("put");
        store.delete(del(ns, "k", None)).await.expect("delete");
        assert_eq!(
            store.namespace(ns).expect("read").expect("kept").key_count,
            0
        );
    }

    let everything = store.list_namespaces("", None, 100).expect("list");
    let names: Vec<&str> = everything.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a1", "b1", "b2", "b3", "c1"]);
    assert_eq!(everything.items[2].key_count, 2);
    assert_eq!(everything.next_cursor, None);

    for limit in [1, 2, 3] {
        let (states, pages) = walk_pages(4, |cursor| store.list_namespaces("b", cursor, limit));
        let seen: Vec<String> = states.into_iter().map(|s| s.name).collect();
        assert_eq!(seen, ["b1", "b2", "b3"], "limit {limit}");
        assert_eq!(pages, 3_usize.div_ceil(limit), "limit {limit}");
    }
}

// ---- snapshots and ETags -------------------------------------------------------------------

#[tokio::test]
async fn snapshot_holds_every_entry_and_alias_at_its_revision() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    assert!(store.snapshot("ns").expect("read").is_none());
    for key in ["c", "a", "b/x", "gone"] {
        store.put(put("ns", key, key)).await.expect("put");
    }
    store.put(put("ns", "a", "a2")).await.expect("put");
    store.delete(del("ns", "gone", None)).await.expect("delete");
    store.put_alias("ns", "z", "a").await.expect("alias");
    store.put_alias("ns", "y", "c").await.expect("alias");
    store
        .put(put("ns-next", "a", "elsewhere"))
        .await
        .expect("put");

    let snapshot = store.snapshot("ns").expect("read").expect("exists");
    assert_eq!(
        snapshot.state,
        store.namespace("ns").expect("read").expect("exists")
    );
    assert_eq!(snapshot.state.revision, 8);
    assert_eq!(
        snapshot
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_slice(), e.version))
            .collect::<Vec<_>>(),
        vec![
            ("a", &b"a2"[..], 2),
            ("b/x", &b"b/x"[..], 1),
            ("c", &b"c"[..], 1)
        ]
    );
    for e in &snapshot.entries {
        assert_eq!(e, &entry(&store, "ns", &e.key));
        assert!(e.revision <= snapshot.state.revision);
    }
    assert_eq!(
        snapshot
            .aliases
            .iter()
            .map(|a| (a.alias.as_str(), a.target.as_str()))
            .collect::<Vec<_>>(),
        vec![("y", "c"), ("z", "a")]
    );
    // A snapshot plus the log after its revision is the whole story: nothing after it yet.
    assert!(events(&store, "ns", snapshot.state.revision).is_empty());
}

#[tokio::test]
async fn the_etag_changes_exactly_when_the_namespace_does() {
    let (_dir, _path, store) = fresh(StoreOptions::default());
    store.put(put("ns", "k", "1")).await.expect("put");
    store.put(put("other", "k", "1")).await.expect("put");
    let mut last = etag(&store, "ns");
    assert_ne!(last, etag(&store, "other"), "namespaces do not share ETags");

    // Rejected or idempotent requests, and writes elsewhere: the ETag stays.
    let _ = store.put(put_mode("ns", "k", "2", WriteMode::Create)).await;
    let _ = store.put(put_if("ns", "k", "2", 9)).await;
    let _ = store
        .put(put_mode("ns", "nope", "2", WriteMode::Update))
        .await;
    let _ = store.delete(del("ns", "nope", None)).await;
    let _ = store.put_alias("ns", "al", "nope").await;
    let _ = store.delete_alias("ns", "nope").await;
    store
        .put(put("other", "k", "2"))
        .await
        .expect("put elsewhere");
    assert_eq!(etag(&store, "ns"), last);

    // Every accepted mutation: a new ETag.
    store.put(put("ns", "k", "2")).await.expect("put");
    let next = etag(&store, "ns");
    assert_ne!(next, last);
    last = next;
    store.put_alias("ns", "al", "k").await.expect("alias");
    let next = etag(&store, "ns");
    assert_ne!(next, last);
    last = next;
    store.put_alias("ns", "al", "k").await.expect("retry");
    assert_eq!(
        etag(&store, "ns"),
        last,
        "an idempotent retry changes nothing"
    );
    store.delete_alias("ns", "al").await.expect("unalias");
    let next = etag(&store, "ns");
    assert_ne!(next, last);
    last = next;
    store.delete(del("ns", "k", None)).await.expect("delete");
    assert_ne!(etag(&store, "ns"), last);
}

// ---- group commit --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_take_contiguous_revisions() {
    let recorder = Arc::new(Recorder::default());
    let (_dir, _path, store) = fresh(recorder.options());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(put("ns", &format!("k{i:03}"), "v")).await })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.expect("task").expect("put").revision);
    }
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (1..=200).collect::<Vec<u64>>(),
        "no gap, no duplicate"
    );
    let batches = recorder.batches();
    assert_eq!(batches.iter().map(|b| b.0).sum::<usize>(), 200);
    assert_eq!(recorder.writes.load(Ordering::SeqCst), 200);
    assert!(
        recorder.largest.load(Ordering::SeqCst) > 1,
        "some writes shared a commit: {batches:?}"
    );
    assert_eq!(recorder.commits.load(Ordering::SeqCst), batches.len());
    assert!(batches.len() < 200);
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!((state.revision, state.key_count), (200, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_one_commits_every_write_alone() {
    let recorder = Arc::new(Recorder::default());
    let (_dir, _path, store) = fresh(StoreOptions {
        max_batch: 1,
        ..recorder.options()
    });
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(put("ns", &format!("k{i}"), "v")).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("put");
    }
    assert_eq!(recorder.batches(), vec![(1, 0); 50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_fails_alone_inside_its_batch() {
    let recorder = Arc::new(Recorder::default());
    let (_dir, _path, store) = fresh(recorder.options());

    // Hold the writer inside the first commit, so everything queued meanwhile is one batch.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *recorder.hold.lock().expect("recorder lock") = Some(Hold {
        held: held_tx,
        release: release_rx,
    });
    let plug = tokio::spawn({
        let store = store.clone();
        async move { store.put(put("ns", "plug", "p")).await }
    });
    held_rx.await.expect("the writer is held");

    // Ten create-only writes race for one key, ten others write keys of their own, all
    // interleaved. Polling each put once queues it (the queue has room); its answer then
    // waits for the held writer.
    let mut pending = Vec::new();
    for i in 0..20 {
        let request = if i % 2 == 0 {
            put_mode("ns", "contended", &i.to_string(), WriteMode::Create)
        } else {
            put("ns", &format!("own{i}"), "v")
        };
        // A fresh task budget, so the first poll cannot be turned away by tokio's coop limit.
        tokio::task::yield_now().await;
        let mut write = Box::pin(store.put(request));
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        assert!(
            first.is_pending(),
            "write {i} was answered while the writer is held"
        );
        pending.push((i, write));
    }
    release_tx.send(()).expect("the writer waits for release");
    assert_eq!(plug.await.expect("task").expect("plug").revision, 1);

    let mut committed = Vec::new();
    for (i, write) in pending {
        match (i % 2, write.await) {
            (_, Ok(entry)) => committed.push((i, entry.revision)),
            (0, Err(StoreError::AlreadyExists { key, version: 1 })) => {
                assert_eq!(key, "contended");
            }
            (_, other) => panic!("write {i}: {other:?}"),
        }
    }
    assert_eq!(
        recorder.batches(),
        vec![(1, 0), (20, 9)],
        "the plug alone, then all twenty in one batch with nine rejected"
    );
    // The first create in queue order won; the rest of the batch committed around the losers,
    // in queue order and with contiguous revisions.
    let winners: Vec<usize> = committed.iter().map(|c| c.0).collect();
    assert_eq!(winners, vec![0, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
    assert_eq!(
        committed.iter().map(|c| c.1).collect::<Vec<_>>(),
        (2..=12).collect::<Vec<u64>>()
    );
    assert_eq!(entry(&store, "ns", "contended").value, b"0");
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!((state.revision, state.key_count), (12, 12));
    assert_eq!(events(&store, "ns", 0).len(), 12);
}

// ---- durability and the data dir -----------------------------------------------------------

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let (node_id, state, snapshot, history, log) = {
        let store = Store::open(&path, None, StoreOptions::default()).expect("open");
        assert!(store.node_id().starts_with("node-"), "{}", store.node_id());
        for i in 1..=3 {
            store
                .put(put("app", "a", &format!("a{i}")))
                .await
                .expect("put");
        }
        store.put(put("app", "b", "b")).await.expect("put");
        store.delete(del("app", "b", None)).await.expect("delete");
        store.put_alias("app", "al", "a").await.expect("alias");
        store.put(put("web", "x", "x")).await.expect("put");
        let state = store.namespace("app").expect("read").expect("exists");
        let snapshot = store.snapshot("app").expect("read").expect("exists");
        let history = store.versions("app", "a", None, 10).expect("read").items;
        let log = events(&store, "app", 0);
        (store.node_id().to_string(), state, snapshot, history, log)
        // Dropping the store joins the writer thread and closes the database.
    };
    assert_eq!(state.revision, 6);

    let store = reopen(&path);
    assert_eq!(store.node_id(), node_id, "the node id persists");
    assert_eq!(store.namespace("app").expect("read"), Some(state.clone()));
    let again = store.snapshot("app").expect("read").expect("exists");
    assert_eq!(again.state, snapshot.state);
    assert_eq!(again.entries, snapshot.entries);
    assert_eq!(again.aliases, snapshot.aliases);
    assert_eq!(
        store.versions("app", "a", None, 10).expect("read").items,
        history
    );
    assert_eq!(
        store.version("app", "b", 2).expect("read").map(|v| v.value),
        Some(None),
        "the tombstone persists"
    );
    assert_eq!(events(&store, "app", 0), log);
    assert_eq!(log.len(), 6);
    match store.lookup("app", "al").expect("lookup") {
        Lookup::Alias {
            entry: Some(target),
            ..
        } => assert_eq!(target.value, b"a3"),
        other => panic!("{other:?}"),
    }
    assert_eq!(entry(&store, "web", "x").value, b"x");
    assert_eq!(etag(&store, "app"), state.etag());

    // Numbering carries on where it stopped.
    let next = store.put(put("app", "a", "a4")).await.expect("put");
    assert_eq!((next.version, next.revision), (4, 7));
    let recreated = store.put(put("app", "b", "b")).await.expect("put");
    assert_eq!((recreated.version, recreated.revision), (3, 8));
}

#[tokio::test]
async fn a_data_dir_belongs_to_one_store_and_one_node_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let first = Store::open(&path, Some("node-a"), StoreOptions::default()).expect("open");
    assert_eq!(first.node_id(), "node-a");
    first.put(put("ns", "k", "v")).await.expect("put");

    let second = Store::open(&path, Some("node-a"), StoreOptions::default());
    assert!(
        matches!(&second, Err(StoreError::InUse { path: p }) if p.ends_with("node.redb")),
        "{:?}",
        second.err()
    );
    let second = Store::open(&path, None, StoreOptions::default());
    assert!(
        matches!(second, Err(StoreError::InUse { .. })),
        "{:?}",
        second.err()
    );
    // The refused opens did not disturb the open store.
    first.put(put("ns", "k", "v2")).await.expect("put");
    drop(first);

    match Store::open(&path, Some("node-b"), StoreOptions::default()) {
        Err(StoreError::NodeIdMismatch { stored, requested }) => {
            assert_eq!((stored.as_str(), requested.as_str()), ("node-a", "node-b"));
        }
        other => panic!("expected NodeIdMismatch, got {:?}", other.err()),
    }
    let same = Store::open(&path, Some("node-a"), StoreOptions::default()).expect("same id");
    assert_eq!(entry(&same, "ns", "k").version, 2);
    drop(same);
    let any = Store::open(&path, None, StoreOptions::default()).expect("no id asked");
    assert_eq!(any.node_id(), "node-a");
}

/// The wall clock in milliseconds (what generations were before the counter).
fn wall_clock_millis() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the test machine's clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

#[test]
fn every_open_takes_a_higher_generation_that_survives_reopen() {
    let before = wall_clock_millis();
    let (_dir, path, store) = fresh(StoreOptions::default());
    let first = store.generation();
    // A new data dir starts at the wall clock, so it supersedes any earlier life of its id.
    assert!(first >= before, "{first} < {before}");
    drop(store);

    let mut seen = std::collections::BTreeSet::from([first]);
    let mut last = first;
    for _ in 0..5 {
        let store = reopen(&path);
        let generation = store.generation();
        assert_eq!(
            generation,
            last + GENERATION_STEP,
            "one step per open, from disk"
        );
        assert!(
            seen.insert(generation),
            "generation {generation} taken twice"
        );
        last = generation;
        drop(store);
    }
    // A refused open (another id asked for) takes nothing the next open could repeat.
    assert!(Store::open(&path, Some("someone-else"), StoreOptions::default()).is_err());
    let store = reopen(&path);
    assert!(store.generation() > last);
}

#[test]
fn a_data_dir_without_a_counter_starts_above_its_wall_clock_generations() {
    let (_dir, path, store) = fresh(StoreOptions::default());
    drop(store);
    // A data dir from before the counter: its node used the wall clock in ms as generation.
    {
        let db = redb::Database::create(&path).expect("open the raw database");
        let txn = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut meta = txn.open_table(meta).expect("meta table");
            assert!(meta.remove("generation").expect("remove").is_some());
        }
        txn.commit().expect("commit");
    }
    let previous_life = wall_clock_millis();
    let store = reopen(&path);
    let migrated = store.generation();
    assert!(
        migrated >= previous_life,
        "a counter restarted below the old wall-clock generation {previous_life}: {migrated}"
    );
    drop(store);
    assert_eq!(reopen(&path).generation(), migrated + GENERATION_STEP);
}
