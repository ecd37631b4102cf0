//! The write-ahead log end to end: a crash after acknowledged writes that only the log made
//! durable loses none of them, and the replay gives back the very same namespace (revisions,
//! versions, uid and so ETag).
//!
//! A crash is taken as a copy of the data files while the store is still open: what a process
//! killed at that moment leaves behind (the page cache survives a process's death). The
//! process-level version, with SIGKILL under concurrent HTTP writes, is `cli/tests/crash.rs`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cfgnode_storage::{
    Codec, CommitObserver, CommitStats, DeleteRequest, PutRequest, RecordPut, Store, StoreOptions,
    WriteMode,
};

/// Remembers whether the last commit was a checkpoint (a durable redb commit).
#[derive(Default)]
struct LastCommit(Mutex<Option<bool>>);

impl CommitObserver for LastCommit {
    fn on_commit(&self, stats: &CommitStats) {
        *self.0.lock().expect("lock") = Some(stats.checkpoint);
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        namespace: "app".to_string(),
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        codec: Codec::Text,
        mode: WriteMode::Upsert,
        if_version: None,
    }
}

/// Copies the database and (when `with_log`) its log into `to`, as a crash would leave them.
fn crash_copy(from: &Path, to: &Path, with_log: bool) {
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::copy(from.join("db"), to.join("db")).expect("copy the database");
    if with_log {
        std::fs::copy(from.join("db.wal"), to.join("db.wal")).expect("copy the log");
    }
}

fn open(dir: &Path, observer: Option<Arc<LastCommit>>) -> Store {
    let options = StoreOptions {
        observer: observer.map(|o| o as Arc<dyn CommitObserver>),
        ..StoreOptions::default()
    };
    Store::open(&dir.join("db"), Some("n1"), options).expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_only_the_log_holds_survive_a_crash_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("mkdir");
    let last = Arc::new(LastCommit::default());
    let store = open(&live, Some(Arc::clone(&last)));

    // Concurrent writers, so batches carry several writes; then a delete and a record.
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .put(put(
                        &format!("k{}", (w * 25 + i) % 60),
                        &format!("v{w}-{i}"),
                    ))
                    .await
                    .expect("put");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    store
        .delete(DeleteRequest {
            namespace: "app".to_string(),
            key: "k0".to_string(),
            if_version: None,
        })
        .await
        .expect("delete");
    store
        .put_record(RecordPut {
            namespace: "app".to_string(),
            kind: "instance".to_string(),
            name: "web-1".to_string(),
            value: b"{\"port\":80}".to_vec(),
            if_version: None,
        })
        .await
        .expect("record");
    // The last acknowledged write must be one only the log made durable (a checkpoint comes
    // at most every 100 ms, so the next write after one is logged).
    let mut n = 0;
    while *last.0.lock().expect("lock") != Some(false) {
        store.put(put("tail", &format!("t{n}"))).await.expect("put");
        n += 1;
        assert!(n < 1000, "every commit was a checkpoint");
    }

    let before = store.namespace("app").expect("read").expect("namespace");
    let snapshot = store.snapshot("app").expect("read").expect("snapshot");
    crash_copy(&live, &dir.path().join("crashed"), true);
    crash_copy(&live, &dir.path().join("no-log"), false);

    let recovered = open(&dir.path().join("crashed"), None);
    let after = recovered
        .namespace("app")
        .expect("read")
        .expect("namespace");
    assert_eq!(after, before, "the namespace state came back the same");
    let again = recovered.snapshot("app").expect("read").expect("snapshot");
    assert_eq!(
        again.state.etag(),
        snapshot.state.etag(),
        "same revision and uid, so same ETag"
    );
    assert_eq!(
        again.entries, snapshot.entries,
        "every entry came back the same"
    );
    let record = recovered
        .record("app", "instance", "web-1")
        .expect("read")
        .expect("record");
    assert_eq!(record.value, b"{\"port\":80}");

    // Without its log, the same crash loses the writes only the log held: the replay above is
    // what brought them back.
    let without = open(&dir.path().join("no-log"), None);
    let lost = without.namespace("app").expect("read");
    assert!(
        lost.as_ref()
            .is_none_or(|state| state.revision < before.revision),
        "the copy without a log should lack the last writes: {lost:?} vs {before:?}"
    );

    // The recovered store takes writes after the replayed ones, and a clean stop leaves
    // nothing to replay.
    let next = recovered.put(put("after", "x")).await.expect("put");
    assert_eq!(next.revision, before.revision + 1);
    drop(recovered);
    let reopened = open(&dir.path().join("crashed"), None);
    assert_eq!(
        reopened
            .namespace("app")
            .expect("read")
            .expect("ns")
            .revision,
        before.revision + 1
    );
}
