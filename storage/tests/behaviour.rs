//! Storage behaviour that the HTTP tests cannot see directly: the namespace log and its
//! compaction, group commit batching and isolation of rejected writes, contiguous revisions
//! under concurrency, and what survives a reopen.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cfgnode_storage::{
    Codec, CommitObserver, CommitStats, DeleteRequest, EventKind, LogRead, Lookup, PutRequest,
    Store, StoreError, StoreOptions, WriteMode,
};

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

fn open(dir: &std::path::Path, options: StoreOptions) -> Store {
    Store::open(&dir.join("db.redb"), None, options).expect("open")
}

#[derive(Default)]
struct Batches {
    commits: AtomicUsize,
    writes: AtomicUsize,
    largest: AtomicUsize,
    rejected: AtomicUsize,
}

impl CommitObserver for Batches {
    fn on_commit(&self, stats: &CommitStats) {
        assert!(stats.committed);
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(stats.batch_size, Ordering::SeqCst);
        self.largest.fetch_max(stats.batch_size, Ordering::SeqCst);
        self.rejected.fetch_add(stats.rejected, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_log_records_every_mutation_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), StoreOptions::default());
    store.put(put("ns", "a", "1")).await.expect("put");
    store.put(put("ns", "a", "2")).await.expect("put");
    store.put_alias("ns", "b", "a").await.expect("alias");
    store.delete_alias("ns", "b").await.expect("unalias");
    store
        .delete(DeleteRequest {
            namespace: "ns".into(),
            key: "a".into(),
            if_version: None,
        })
        .await
        .expect("delete");
    let LogRead::Events(events) = store.events_since("ns", 0, 100).expect("read") else {
        panic!("nothing is compacted yet");
    };
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, vec![1, 2, 3, 4, 5]);
    assert!(
        matches!(&events[0].kind, EventKind::Set { key, version: 1, value, .. } if key == "a" && value == b"1")
    );
    assert!(matches!(&events[1].kind, EventKind::Set { version: 2, .. }));
    assert!(
        matches!(&events[2].kind, EventKind::AliasSet { alias, target } if alias == "b" && target == "a")
    );
    assert!(matches!(&events[3].kind, EventKind::AliasDelete { alias } if alias == "b"));
    assert!(matches!(&events[4].kind, EventKind::Delete { key, version: 3 } if key == "a"));
    let LogRead::Events(tail) = store.events_since("ns", 3, 1).expect("read") else {
        panic!("not compacted");
    };
    assert_eq!(tail.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![4]);
}

#[tokio::test]
async fn a_reader_behind_the_retained_log_is_told_to_resync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(
        dir.path(),
        StoreOptions {
            log_per_namespace: 5,
            ..StoreOptions::default()
        },
    );
    for i in 0..20 {
        store
            .put(put("ns", &format!("k{}", i % 3), &i.to_string()))
            .await
            .expect("put");
    }
    match store.events_since("ns", 3, 100).expect("read") {
        LogRead::Compacted {
            oldest_retained,
            current,
        } => {
            assert_eq!((oldest_retained, current), (16, 20));
        }
        LogRead::Events(e) => panic!("expected compaction, got {} events", e.len()),
    }
    let LogRead::Events(events) = store.events_since("ns", 15, 100).expect("read") else {
        panic!("revision 16 onwards is retained");
    };
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![16, 17, 18, 19, 20]
    );
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!(state.log_start, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_take_contiguous_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = Arc::new(Batches::default());
    let store = open(
        dir.path(),
        StoreOptions {
            observer: Some(Arc::clone(&batches) as Arc<dyn CommitObserver>),
            ..StoreOptions::default()
        },
    );
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.put(put("ns", &format!("k{i}"), "v")).await
        }));
    }
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
    assert_eq!(batches.writes.load(Ordering::SeqCst), 200);
    assert!(
        batches.largest.load(Ordering::SeqCst) > 1,
        "some writes shared a commit"
    );
    assert!(batches.commits.load(Ordering::SeqCst) < 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_fails_alone_inside_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = Arc::new(Batches::default());
    let store = open(
        dir.path(),
        StoreOptions {
            observer: Some(Arc::clone(&batches) as Arc<dyn CommitObserver>),
            ..StoreOptions::default()
        },
    );
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Half race to create the same key; half write keys of their own.
            let request = if i % 2 == 0 {
                PutRequest {
                    mode: WriteMode::Create,
                    ..put("ns", "contended", &i.to_string())
                }
            } else {
                put("ns", &format!("own{i}"), "v")
            };
            (i, store.put(request).await)
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (i, result) = task.await.expect("task");
        match (i % 2, result) {
            (0, Ok(_)) => created += 1,
            (0, Err(StoreError::AlreadyExists { .. })) => {}
            (_, Ok(_)) => {}
            (_, other) => panic!("write {i}: {other:?}"),
        }
    }
    assert_eq!(created, 1, "exactly one create-only write wins");
    assert_eq!(batches.rejected.load(Ordering::SeqCst), 49);
    let state = store.namespace("ns").expect("read").expect("exists");
    assert_eq!(state.key_count, 51);
    assert_eq!(state.revision, 51, "rejected writes took no revision");
}

#[tokio::test]
async fn everything_survives_a_reopen_and_the_node_id_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node_id, etag) = {
        let store = open(dir.path(), StoreOptions::default());
        store.put(put("ns", "a", "1")).await.expect("put");
        store.put(put("ns", "a", "2")).await.expect("put");
        store.put_alias("ns", "b", "a").await.expect("alias");
        let etag = store.namespace("ns").expect("read").expect("exists").etag();
        (store.node_id().to_string(), etag)
        // Dropping the store joins the writer thread.
    };
    let store = open(dir.path(), StoreOptions::default());
    assert_eq!(store.node_id(), node_id);
    assert_eq!(
        store.namespace("ns").expect("read").expect("exists").etag(),
        etag
    );
    match store.lookup("ns", "b").expect("lookup") {
        Lookup::Alias {
            entry: Some(entry), ..
        } => {
            assert_eq!(
                (entry.value.as_slice(), entry.version, entry.revision),
                (&b"2"[..], 2, 2)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .versions("ns", "a", None, 10)
            .expect("versions")
            .items
            .len(),
        2
    );
    let LogRead::Events(events) = store.events_since("ns", 0, 10).expect("log") else {
        panic!("not compacted");
    };
    assert_eq!(events.len(), 3);
    assert_eq!(
        store.put(put("ns", "c", "x")).await.expect("put").revision,
        4
    );
}

#[tokio::test]
async fn a_data_dir_is_used_by_one_process_and_one_node_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.redb");
    let first = Store::open(&path, Some("node-a"), StoreOptions::default()).expect("open");
    let second = Store::open(&path, Some("node-a"), StoreOptions::default());
    assert!(
        matches!(second, Err(StoreError::InUse { .. })),
        "{:?}",
        second.err()
    );
    drop(first);
    let other = Store::open(&path, Some("node-b"), StoreOptions::default());
    match other {
        Err(StoreError::NodeIdMismatch { stored, requested }) => {
            assert_eq!((stored.as_str(), requested.as_str()), ("node-a", "node-b"));
        }
        other => panic!("{:?}", other.err()),
    }
    let again = Store::open(&path, None, StoreOptions::default()).expect("reopen");
    assert_eq!(again.node_id(), "node-a");
}

#[tokio::test]
async fn history_keeps_the_last_versions_and_versions_continue_after_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(
        dir.path(),
        StoreOptions {
            history_per_key: 3,
            ..StoreOptions::default()
        },
    );
    for i in 1..=10 {
        store
            .put(put("ns", "k", &i.to_string()))
            .await
            .expect("put");
    }
    let page = store.versions("ns", "k", None, 100).expect("versions");
    assert_eq!(
        page.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![10, 9, 8]
    );
    assert!(store.version("ns", "k", 7).expect("read").is_none());
    let deleted = store
        .delete(DeleteRequest {
            namespace: "ns".into(),
            key: "k".into(),
            if_version: Some(10),
        })
        .await
        .expect("delete");
    assert_eq!(deleted.version, 11);
    let tombstone = store.version("ns", "k", 11).expect("read").expect("kept");
    assert_eq!(tombstone.value, None);
    assert_eq!(
        store
            .put(put("ns", "k", "again"))
            .await
            .expect("put")
            .version,
        12
    );
}
