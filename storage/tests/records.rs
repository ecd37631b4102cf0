//! Records, the third kind of namespace data, end to end on a real redb file: put and its
//! versions, compare-and-set, delete, reads and their paging, the log events they write, what
//! they do (and do not) to the snapshot, refused writes that change nothing, and the transfer
//! paths of a handoff (full copy, changes since a revision with deletes, drop).

use cfgnode_storage::{
    Codec, EventKind, LogRead, NamespaceState, PutRequest, Record, RecordDelete, RecordPut, Store,
    StoreError, StoreOptions, TransferOp, WriteMode,
};
use tempfile::TempDir;

// ---- helpers -------------------------------------------------------------------------------

fn open(dir: &TempDir, name: &str) -> Store {
    let options = StoreOptions {
        max_value_bytes: 64,
        log_per_namespace: 1_000,
        ..StoreOptions::default()
    };
    Store::open(&dir.path().join(name), Some(name), options).expect("open")
}

fn rput(ns: &str, kind: &str, name: &str, value: &str) -> RecordPut {
    RecordPut {
        namespace: ns.into(),
        kind: kind.into(),
        name: name.into(),
        value: value.as_bytes().to_vec(),
        if_version: None,
    }
}

fn rdel(ns: &str, kind: &str, name: &str, if_version: Option<u64>) -> RecordDelete {
    RecordDelete {
        namespace: ns.into(),
        kind: kind.into(),
        name: name.into(),
        if_version,
    }
}

fn state(store: &Store, ns: &str) -> Option<NamespaceState> {
    store.namespace(ns).expect("read state")
}

fn events(store: &Store, ns: &str, after: u64) -> Vec<(u64, EventKind)> {
    match store.events_since(ns, after, 10_000).expect("log") {
        LogRead::Events(events) => events.into_iter().map(|e| (e.revision, e.kind)).collect(),
        LogRead::Compacted { .. } => panic!("log compacted in a test that keeps it all"),
    }
}

fn names(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.name.as_str()).collect()
}

/// Everything observable about a namespace's records and log, for comparing two stores.
fn fingerprint(store: &Store, ns: &str) -> String {
    let mut out = format!("{:?}\n", state(store, ns));
    for kind in ["instance", "route"] {
        let page = store.records(ns, kind, "", None, 10_000).expect("records");
        out.push_str(&format!("{kind}: {:?}\n", page.items));
    }
    out.push_str(&format!("{:?}", events(store, ns, 0)));
    out
}

/// Whether a refusal is the one a test expects.
type IsExpected = fn(&StoreError) -> bool;

// ---- writes --------------------------------------------------------------------------------

#[tokio::test]
async fn put_creates_the_namespace_and_versions_count_up() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    assert!(state(&store, "reg").is_none());

    let first = store
        .put_record(rput("reg", "instance", "web/a", "{\"up\":true}"))
        .await
        .expect("put");
    assert_eq!(first.version, 1);
    assert_eq!(first.revision, 1);
    assert_eq!(first.namespace, "reg");
    assert_eq!(first.kind, "instance");
    assert_eq!(first.name, "web/a");
    assert_eq!(first.created_at, first.updated_at);
    let created = state(&store, "reg").expect("the put created the namespace");
    assert_eq!(created.revision, 1);
    assert_eq!(created.key_count, 0, "a record is not a key");

    // The same bytes again are still a write: a new version and revision.
    let second = store
        .put_record(rput("reg", "instance", "web/a", "{\"up\":true}"))
        .await
        .expect("put");
    assert_eq!((second.version, second.revision), (2, 2));
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(
        store.record("reg", "instance", "web/a").expect("read"),
        Some(second.clone())
    );
    // The same name under another kind is another record.
    let route = store
        .put_record(rput("reg", "route", "web/a", "r"))
        .await
        .expect("put");
    assert_eq!((route.version, route.revision), (1, 3));
    assert_eq!(state(&store, "reg").expect("state").revision, 3);
    assert_eq!(
        store
            .record("reg", "instance", "web/a")
            .expect("read")
            .map(|r| r.value),
        Some(b"{\"up\":true}".to_vec())
    );
    assert!(
        store
            .record("reg", "instance", "web/b")
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .record("other", "instance", "web/a")
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn records_and_keys_share_the_revision_but_not_the_snapshot() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    let entry = store
        .put(PutRequest {
            namespace: "app".into(),
            key: "instance/a".into(),
            value: b"key".to_vec(),
            codec: Codec::Text,
            mode: WriteMode::Upsert,
            if_version: None,
        })
        .await
        .expect("put key");
    let before = store.snapshot("app").expect("read").expect("some");
    let record = store
        .put_record(rput("app", "instance", "a", "rec"))
        .await
        .expect("put record");
    assert_eq!(record.revision, entry.revision + 1);
    let after = store.snapshot("app").expect("read").expect("some");
    // The revision and the ETag move; the config view does not.
    assert_eq!(after.state.revision, record.revision);
    assert_ne!(after.state.etag(), before.state.etag());
    assert_eq!(after.entries, before.entries);
    assert_eq!(after.aliases, before.aliases);
    // Next key write continues the revision sequence.
    let next = store
        .put(PutRequest {
            namespace: "app".into(),
            key: "k".into(),
            value: b"v".to_vec(),
            codec: Codec::Text,
            mode: WriteMode::Upsert,
            if_version: None,
        })
        .await
        .expect("put key");
    assert_eq!(next.revision, record.revision + 1);
}

#[tokio::test]
async fn compare_and_set_and_compare_and_delete() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    // 0 = must be absent.
    let created = store
        .put_record(RecordPut {
            if_version: Some(0),
            ..rput("reg", "instance", "a", "1")
        })
        .await
        .expect("create");
    assert_eq!(created.version, 1);
    let again = store
        .put_record(RecordPut {
            if_version: Some(0),
            ..rput("reg", "instance", "a", "2")
        })
        .await
        .expect_err("exists");
    assert!(
        matches!(
            &again,
            StoreError::RecordVersionMismatch {
                expected: 0,
                actual: Some(1),
                ..
            }
        ),
        "{again:?}"
    );
    assert!(
        again.to_string().contains("read it again and retry"),
        "{again}"
    );
    let stale = store
        .put_record(RecordPut {
            if_version: Some(7),
            ..rput("reg", "instance", "a", "2")
        })
        .await;
    assert!(matches!(
        stale,
        Err(StoreError::RecordVersionMismatch { .. })
    ));
    let missing = store
        .put_record(RecordPut {
            if_version: Some(1),
            ..rput("reg", "instance", "nope", "2")
        })
        .await;
    assert!(
        matches!(
            missing,
            Err(StoreError::RecordVersionMismatch { actual: None, .. })
        ),
        "{missing:?}"
    );
    let updated = store
        .put_record(RecordPut {
            if_version: Some(1),
            ..rput("reg", "instance", "a", "2")
        })
        .await
        .expect("cas");
    assert_eq!(updated.version, 2);

    let wrong = store
        .delete_record(rdel("reg", "instance", "a", Some(1)))
        .await;
    assert!(matches!(
        wrong,
        Err(StoreError::RecordVersionMismatch { .. })
    ));
    assert!(
        store
            .record("reg", "instance", "a")
            .expect("read")
            .is_some()
    );
    let deleted = store
        .delete_record(rdel("reg", "instance", "a", Some(2)))
        .await
        .expect("delete");
    assert_eq!(deleted.version, 2, "the version the record had");
    assert_eq!(deleted.revision, 3);
    assert!(
        store
            .record("reg", "instance", "a")
            .expect("read")
            .is_none()
    );
    let gone = store
        .delete_record(rdel("reg", "instance", "a", None))
        .await
        .expect_err("gone");
    assert!(
        matches!(&gone, StoreError::RecordNotFound { .. }),
        "{gone:?}"
    );
    assert!(gone.to_string().contains("instance/\"a\""), "{gone}");
    // Re-created after a delete: a new life, starting at version 1.
    let reborn = store
        .put_record(RecordPut {
            if_version: Some(0),
            ..rput("reg", "instance", "a", "3")
        })
        .await
        .expect("re-create");
    assert_eq!((reborn.version, reborn.revision), (1, 4));
}

#[tokio::test]
async fn put_if_changed_skips_identical_values_only() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    let first = store
        .put_record_if_changed(rput("reg", "instance", "a", "healthy"))
        .await
        .expect("put");
    assert!(first.written);
    assert_eq!(first.record.version, 1);
    let same = store
        .put_record_if_changed(rput("reg", "instance", "a", "healthy"))
        .await
        .expect("put");
    assert!(!same.written);
    assert_eq!(same.record, first.record, "the stored record, untouched");
    assert_eq!(
        state(&store, "reg").expect("state").revision,
        1,
        "no revision"
    );
    assert_eq!(events(&store, "reg", 0).len(), 1, "no event");
    // The CAS check still applies to an unchanged value.
    let stale = store
        .put_record_if_changed(RecordPut {
            if_version: Some(9),
            ..rput("reg", "instance", "a", "healthy")
        })
        .await;
    assert!(matches!(
        stale,
        Err(StoreError::RecordVersionMismatch { .. })
    ));
    let changed = store
        .put_record_if_changed(rput("reg", "instance", "a", "unhealthy"))
        .await
        .expect("put");
    assert!(changed.written);
    assert_eq!((changed.record.version, changed.record.revision), (2, 2));
}

#[tokio::test]
async fn writes_log_record_events_in_order() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    store
        .put_record(rput("reg", "instance", "a", "v1"))
        .await
        .expect("put");
    store
        .put_record(rput("reg", "instance", "a", "v2"))
        .await
        .expect("put");
    store
        .delete_record(rdel("reg", "instance", "a", None))
        .await
        .expect("delete");
    let log = events(&store, "reg", 0);
    assert_eq!(
        log,
        vec![
            (
                1,
                EventKind::RecordSet {
                    kind: "instance".into(),
                    name: "a".into(),
                    version: 1,
                    value: b"v1".to_vec(),
                }
            ),
            (
                2,
                EventKind::RecordSet {
                    kind: "instance".into(),
                    name: "a".into(),
                    version: 2,
                    value: b"v2".to_vec(),
                }
            ),
            (
                3,
                EventKind::RecordDelete {
                    kind: "instance".into(),
                    name: "a".into(),
                    version: 2,
                }
            ),
        ]
    );
    // And they survive a reopen like every write.
    let path = store.path().to_path_buf();
    drop(store);
    let reopened = Store::open(&path, Some("n1"), StoreOptions::default()).expect("reopen");
    assert_eq!(events(&reopened, "reg", 0), log);
}

#[tokio::test]
async fn refused_writes_change_nothing() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    store
        .put_record(rput("reg", "instance", "a", "v"))
        .await
        .expect("put");
    let before = fingerprint(&store, "reg");
    let too_big = "x".repeat(65);
    let refused: Vec<(RecordPut, IsExpected)> = vec![
        (rput("reg", "Instance", "a", "v"), |e| {
            matches!(e, StoreError::InvalidRecordKind { .. })
        }),
        (rput("reg", "", "a", "v"), |e| {
            matches!(e, StoreError::InvalidRecordKind { .. })
        }),
        (rput("reg", "in-stance", "a", "v"), |e| {
            matches!(e, StoreError::InvalidRecordKind { .. })
        }),
        (rput("reg", "instance", "/a", "v"), |e| {
            matches!(e, StoreError::InvalidKey { .. })
        }),
        (rput("reg", "instance", "", "v"), |e| {
            matches!(e, StoreError::InvalidKey { .. })
        }),
        (rput("Reg", "instance", "a", "v"), |e| {
            matches!(e, StoreError::InvalidNamespace { .. })
        }),
        (rput("_sys", "instance", "a", "v"), |e| {
            matches!(e, StoreError::InvalidNamespace { .. })
        }),
        (rput("reg", "instance", "a", &too_big), |e| {
            matches!(
                e,
                StoreError::ValueTooLarge {
                    size: 65,
                    limit: 64
                }
            )
        }),
        (
            RecordPut {
                if_version: Some(5),
                ..rput("reg", "instance", "a", "w")
            },
            |e| matches!(e, StoreError::RecordVersionMismatch { .. }),
        ),
    ];
    for (put, expected) in refused {
        let what = format!("{put:?}");
        let err = store.put_record(put.clone()).await.expect_err(&what);
        assert!(expected(&err), "{what}: {err:?}");
        assert!(!err.is_internal(), "{what}: the caller's fault");
        let err = store.put_record_if_changed(put).await.expect_err(&what);
        assert!(expected(&err), "{what}: {err:?}");
        assert_eq!(fingerprint(&store, "reg"), before, "{what} changed nothing");
    }
    let bad_kind = store
        .put_record(rput("reg", "Instance", "a", "v"))
        .await
        .expect_err("bad kind");
    assert!(
        bad_kind.to_string().contains("lowercase letters"),
        "the message says what a kind may be: {bad_kind}"
    );
    for delete in [
        rdel("reg", "bad kind", "a", None),
        rdel("reg", "instance", "a//b", None),
        rdel("reg", "instance", "missing", None),
        rdel("reg", "instance", "a", Some(3)),
        rdel("nowhere", "instance", "a", None),
    ] {
        let what = format!("{delete:?}");
        let err = store.delete_record(delete).await.expect_err(&what);
        assert!(!err.is_internal(), "{what}: {err:?}");
        assert_eq!(fingerprint(&store, "reg"), before, "{what} changed nothing");
    }
    assert!(
        state(&store, "nowhere").is_none(),
        "a refused delete creates nothing"
    );
    // Reads refuse bad names too.
    assert!(matches!(
        store.record("reg", "no way", "a"),
        Err(StoreError::InvalidRecordKind { .. })
    ));
    assert!(matches!(
        store.records("reg", "", "", None, 10),
        Err(StoreError::InvalidRecordKind { .. })
    ));
    assert!(matches!(
        store.record("reg", "instance", "a/"),
        Err(StoreError::InvalidKey { .. })
    ));
}

// ---- reads ---------------------------------------------------------------------------------

#[tokio::test]
async fn listing_filters_by_kind_and_prefix_and_pages_in_name_order() {
    let dir = TempDir::new().expect("tmp");
    let store = open(&dir, "n1");
    for name in ["web/c", "web/a", "db/x", "web/b", "webx", "web/d"] {
        store
            .put_record(rput("reg", "instance", name, name))
            .await
            .expect("put");
    }
    // Rows that sort next to the listed ones must not leak in.
    store
        .put_record(rput("reg", "instances", "web/z", "other kind"))
        .await
        .expect("put");
    store
        .put_record(rput("reg", "instanc", "web/z", "other kind"))
        .await
        .expect("put");
    store
        .put_record(rput("reg.other", "instance", "web/y", "other ns"))
        .await
        .expect("put");

    let all = store
        .records("reg", "instance", "", None, 100)
        .expect("list");
    assert_eq!(
        names(&all.items),
        ["db/x", "web/a", "web/b", "web/c", "web/d", "webx"]
    );
    assert!(all.next_cursor.is_none());
    assert!(
        all.items
            .iter()
            .all(|r| r.kind == "instance" && r.namespace == "reg")
    );

    // Prefix and pages of two, following the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .records("reg", "instance", "web/", cursor.as_deref(), 2)
            .expect("page");
        pages += 1;
        seen.extend(page.items.iter().map(|r| r.name.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["web/a", "web/b", "web/c", "web/d"]);
    assert_eq!(pages, 2, "an exactly full last page has no cursor after it");

    // A cursor before the prefix starts at the prefix; one after it ends the listing.
    let from_before = store
        .records("reg", "instance", "web/", Some("a"), 100)
        .expect("list");
    assert_eq!(
        names(&from_before.items),
        ["web/a", "web/b", "web/c", "web/d"]
    );
    let past = store
        .records("reg", "instance", "web/", Some("web/d"), 100)
        .expect("list");
    assert!(past.items.is_empty() && past.next_cursor.is_none());
    // limit 0 says there is more without returning any.
    let empty = store.records("reg", "instance", "", None, 0).expect("list");
    assert!(empty.items.is_empty());
    // Unknown kinds and namespaces are empty, not errors.
    assert!(
        store
            .records("reg", "route", "", None, 10)
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .records("nowhere", "instance", "", None, 10)
            .expect("list")
            .items
            .is_empty()
    );
}

// ---- transfer ------------------------------------------------------------------------------

async fn copy_all(from: &Store, to: &Store, ns: &str, chunk: usize) -> u64 {
    let mut export = from.export(ns).expect("export");
    let revision = export.state().revision;
    while let Some(ops) = export.next_chunk(chunk).expect("chunk") {
        to.import(ns, ops).await.expect("import");
    }
    revision
}

#[tokio::test]
async fn records_move_with_a_transfer_and_its_changes() {
    let dir = TempDir::new().expect("tmp");
    let giver = open(&dir, "giver");
    let taker = open(&dir, "taker");
    for i in 0..12 {
        giver
            .put_record(rput(
                "reg",
                "instance",
                &format!("web/{i:02}"),
                &format!("v{i}"),
            ))
            .await
            .expect("put");
    }
    giver
        .put_record(rput("reg", "route", "api", "to web"))
        .await
        .expect("put");
    // A namespace whose name extends this one stays out of the copy.
    giver
        .put_record(rput("reg.b", "instance", "x", "1"))
        .await
        .expect("put");
    // The taker has stale rows from an aborted attempt: the copy replaces them.
    taker
        .put_record(rput("reg", "instance", "stale", "old"))
        .await
        .expect("put");

    // Small chunks, so the records table is split across chunks.
    let mut export = giver.export("reg").expect("export");
    let mut saw_records = false;
    while let Some(ops) = export.next_chunk(60).expect("chunk") {
        saw_records |= ops.iter().any(|op| matches!(op, TransferOp::Record { .. }));
        taker.import("reg", ops).await.expect("import");
    }
    assert!(saw_records, "the export carries record rows");
    let since = export.state().revision;
    drop(export);
    assert_eq!(fingerprint(&giver, "reg"), fingerprint(&taker, "reg"));
    assert!(
        taker
            .record("reg", "instance", "stale")
            .expect("read")
            .is_none()
    );
    assert!(taker.namespace("reg.b").expect("read").is_none());

    // Writes after the copy: updates, deletes (one of a record created after the copy), new.
    giver
        .put_record(rput("reg", "instance", "web/01", "changed"))
        .await
        .expect("put");
    giver
        .delete_record(rdel("reg", "instance", "web/02", None))
        .await
        .expect("delete");
    giver
        .put_record(rput("reg", "instance", "web/99", "new"))
        .await
        .expect("put");
    giver
        .put_record(rput("reg", "instance", "tmp", "short-lived"))
        .await
        .expect("put");
    giver
        .delete_record(rdel("reg", "instance", "tmp", None))
        .await
        .expect("delete");
    giver
        .delete_record(rdel("reg", "route", "api", None))
        .await
        .expect("delete");
    let (state, ops) = giver
        .export_changes("reg", since)
        .expect("changes")
        .expect("log reaches back");
    assert!(ops.iter().any(|op| matches!(
        op,
        TransferOp::ClearRecord { kind, name } if kind == "instance" && name == "web/02"
    )));
    taker.import("reg", ops).await.expect("import");
    assert_eq!(fingerprint(&giver, "reg"), fingerprint(&taker, "reg"));
    assert_eq!(taker.namespace("reg").expect("read"), Some(state.clone()));
    assert!(
        taker
            .record("reg", "instance", "web/02")
            .expect("read")
            .is_none()
    );
    assert!(taker.record("reg", "route", "api").expect("read").is_none());
    assert_eq!(
        taker
            .record("reg", "instance", "web/01")
            .expect("read")
            .map(|r| (r.value, r.version)),
        Some((b"changed".to_vec(), 2))
    );

    // The taker continues the sequence: revision and the record's version.
    let next = taker
        .put_record(rput("reg", "instance", "web/01", "after"))
        .await
        .expect("put");
    assert_eq!((next.revision, next.version), (state.revision + 1, 3));

    // Dropping the namespace removes its records, and only its own.
    taker.drop_namespace("reg").await.expect("drop");
    assert!(taker.namespace("reg").expect("read").is_none());
    assert!(
        taker
            .records("reg", "instance", "", None, 100)
            .expect("list")
            .items
            .is_empty()
    );
    copy_all(&giver, &taker, "reg.b", 1 << 20).await;
    giver.drop_namespace("reg").await.expect("drop");
    assert!(
        giver
            .records("reg", "route", "", None, 100)
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        giver
            .record("reg.b", "instance", "x")
            .expect("read")
            .is_some()
    );
}

#[tokio::test]
async fn malformed_record_ops_from_a_peer_are_refused_whole() {
    let dir = TempDir::new().expect("tmp");
    let taker = open(&dir, "taker");
    taker
        .put_record(rput("reg", "instance", "keep", "1"))
        .await
        .expect("put");
    let before = fingerprint(&taker, "reg");
    let good = {
        let giver = open(&dir, "giver");
        giver
            .put_record(rput("reg", "instance", "a", "1"))
            .await
            .expect("put");
        let mut export = giver.export("reg").expect("export");
        let ops = export.next_chunk(1 << 20).expect("chunk").expect("some");
        ops.into_iter()
            .find_map(|op| match op {
                TransferOp::Record { record, .. } => Some(record),
                _ => None,
            })
            .expect("a record row")
    };
    let bad_batches = vec![
        vec![
            TransferOp::ClearNamespace,
            TransferOp::Record {
                kind: "instance".into(),
                name: "a".into(),
                record: vec![1, 0xff, 0xff],
            },
        ],
        vec![
            TransferOp::ClearNamespace,
            TransferOp::Record {
                kind: "Bad".into(),
                name: "a".into(),
                record: good.clone(),
            },
        ],
        vec![
            TransferOp::ClearNamespace,
            TransferOp::Record {
                kind: "instance".into(),
                name: "a//b".into(),
                record: good,
            },
        ],
        vec![
            TransferOp::ClearNamespace,
            TransferOp::ClearRecord {
                kind: "".into(),
                name: "a".into(),
            },
        ],
    ];
    for ops in bad_batches {
        let what = format!("{ops:?}");
        let err = taker.import("reg", ops).await.expect_err(&what);
        assert!(
            matches!(
                err,
                StoreError::Invalid(_)
                    | StoreError::InvalidKey { .. }
                    | StoreError::InvalidRecordKind { .. }
            ),
            "{what}: {err:?}"
        );
        assert_eq!(fingerprint(&taker, "reg"), before, "{what} changed nothing");
    }
}

#[tokio::test]
async fn a_namespace_with_records_and_no_keys_is_listed() {
    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir, "a");
    store
        .put_record(rput("registry-only", "instance", "web/a", "{}"))
        .await
        .expect("put record");
    store
        .put_record(rput("gone", "instance", "web/a", "{}"))
        .await
        .expect("put record");
    store
        .delete_record(rdel("gone", "instance", "web/a", None))
        .await
        .expect("delete record");
    let listed = store.list_namespaces("", None, 10).expect("list");
    let names: Vec<&str> = listed.items.iter().map(|s| s.name.as_str()).collect();
    // A namespace whose last record was removed is not listed, like one whose keys all went.
    assert_eq!(names, ["registry-only"]);
}
