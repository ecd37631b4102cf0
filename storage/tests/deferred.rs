//! A follower's appends, acknowledged once the write-ahead log has them and committed to the
//! tables in batches (`visibility` in the crate): every read sees every acknowledged append at
//! once, the open transaction commits on its own after a while and along with any other write,
//! and a crash while appends are only in the log loses none of them.
//!
//! A crash is taken as a copy of the data files while the store is open, as in `wal.rs`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_storage::{
    Codec, CommitObserver, CommitStats, Flush, LogPos, PutRequest, ReplicaAppend, Store,
    StoreOptions, WriteMode,
};
use tempfile::TempDir;

/// What the follower's writer did: each batch's `deferred` flag and each open commit's reason.
#[derive(Default)]
struct Seen {
    batches: Mutex<Vec<bool>>,
    open_commits: Mutex<Vec<Flush>>,
}

impl CommitObserver for Seen {
    fn on_commit(&self, stats: &CommitStats) {
        self.batches.lock().expect("lock").push(stats.deferred);
    }

    fn on_open_commit(&self, why: Flush, _held: Duration) {
        self.open_commits.lock().expect("lock").push(why);
    }
}

impl Seen {
    fn open_commits(&self) -> Vec<Flush> {
        self.open_commits.lock().expect("lock").clone()
    }

    fn last_batch_deferred(&self) -> bool {
        self.batches.lock().expect("lock").last() == Some(&true)
    }
}

fn open(path: &Path, name: &str, observer: Option<Arc<Seen>>) -> Store {
    let options = StoreOptions {
        observer: observer.map(|o| o as Arc<dyn CommitObserver>),
        ..StoreOptions::default()
    };
    Store::open(&path.join(name), Some(name), options).expect("open")
}

fn put(ns: &str, key: &str, value: &str) -> PutRequest {
    PutRequest {
        namespace: ns.into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
        codec: Codec::Text,
        mode: WriteMode::Upsert,
        if_version: None,
    }
}

/// The rows of `ns` on `holder` since `base` (everything for `None`), as an append of epoch 2.
fn append_since(holder: &Store, ns: &str, base: Option<LogPos>) -> ReplicaAppend {
    let (revision, ops) = match base {
        None => {
            let mut export = holder.export(ns).expect("export");
            let revision = export.state().revision;
            let mut ops = Vec::new();
            while let Some(chunk) = export.next_chunk(1 << 20).expect("chunk") {
                ops.extend(chunk);
            }
            (revision, ops)
        }
        Some(base) => {
            let (state, ops) = holder
                .export_changes(ns, base.revision)
                .expect("changes")
                .expect("the log reaches back");
            (state.revision, ops)
        }
    };
    ReplicaAppend {
        namespace: ns.into(),
        epoch: 2,
        holder: holder.node_id().into(),
        replicas: vec![holder.node_id().into(), "b".into()],
        base,
        to: LogPos::new(2, revision),
        ops,
        set_version: LogPos::new(2, 0),
    }
}

/// A holder `a` (in `a_dir`) of "app" at epoch 2 and a follower `b` (in `b_dir`, watched by
/// `seen`) that took its full copy; returns them and the copy's position.
async fn holder_and_follower(
    a_dir: &Path,
    b_dir: &Path,
    seen: &Arc<Seen>,
) -> (Store, Store, LogPos) {
    let a = open(a_dir, "a", None);
    let b = open(b_dir, "b", Some(Arc::clone(seen)));
    a.put(put("app", "k0", "first")).await.expect("put");
    a.begin_epoch("app", 2, vec!["a".into(), "b".into()], LogPos::ZERO)
        .await
        .expect("begin");
    let at = b
        .append(append_since(&a, "app", None))
        .await
        .expect("full copy")
        .position;
    (a, b, at)
}

/// One more write on the holder, shipped to the follower; returns the follower's position.
async fn write_and_ship(a: &Store, b: &Store, base: Option<LogPos>, i: usize) -> LogPos {
    a.put(put("app", &format!("k{}", i % 7), &format!("v{i}")))
        .await
        .expect("put");
    b.append(append_since(a, "app", base))
        .await
        .expect("append")
        .position
}

/// The value of `key`, if it is a live key.
fn value(store: &Store, ns: &str, key: &str) -> Option<Vec<u8>> {
    match store.lookup(ns, key).expect("read") {
        cfgnode_storage::Lookup::Entry(entry) => Some(entry.value),
        _ => None,
    }
}

/// Polls `done` until it holds or `within` passes.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_are_read_at_once_and_committed_in_batches() {
    let dir = TempDir::new().expect("tmp");
    let seen = Arc::new(Seen::default());
    let (a, b, mut at) = holder_and_follower(dir.path(), dir.path(), &seen).await;
    for i in 0..5 {
        at = write_and_ship(&a, &b, Some(at), i).await;
    }
    assert!(
        seen.last_batch_deferred(),
        "an append alone in its batch waits in the open transaction"
    );

    // A read right after the acknowledgement sees the append: it has the writer commit.
    let before = seen.open_commits().len();
    assert_eq!(b.position("app").expect("read"), at);
    assert_eq!(value(&b, "app", "k4"), Some(b"v4".to_vec()));
    let commits = seen.open_commits();
    assert_eq!(commits.get(before), Some(&Flush::Read), "{commits:?}");

    // Without a read, the open transaction commits on its own.
    at = write_and_ship(&a, &b, Some(at), 5).await;
    let before = seen.open_commits().len();
    assert!(
        eventually(Duration::from_secs(5), || seen.open_commits().len()
            > before),
        "the open transaction was never committed"
    );
    assert_eq!(seen.open_commits()[before], Flush::Age);

    // Any other write commits it along: its caller reads it right after.
    write_and_ship(&a, &b, Some(at), 6).await;
    assert!(seen.last_batch_deferred());
    b.put(put("own", "key", "value")).await.expect("own write");
    assert!(!seen.last_batch_deferred());
    assert_eq!(value(&b, "own", "key"), Some(b"value".to_vec()));
    assert_eq!(
        b.position("app").expect("read"),
        a.holder_position("app").expect("read").expect("holds")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_appends_are_only_in_the_log_loses_none() {
    let dir = TempDir::new().expect("tmp");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("mkdir");
    let seen = Arc::new(Seen::default());
    let (a, b, mut at) = holder_and_follower(dir.path(), &live, &seen).await;
    // Copy the files while the last appends wait in the open transaction: retried if the
    // transaction happened to commit (it does every 100 ms) between the append and the copy.
    let crashed = dir.path().join("crashed");
    let mut i = 0;
    loop {
        for _ in 0..3 {
            at = write_and_ship(&a, &b, Some(at), i).await;
            i += 1;
        }
        let commits = seen.open_commits().len();
        std::fs::create_dir_all(&crashed).expect("mkdir");
        std::fs::copy(live.join("b"), crashed.join("b")).expect("copy the database");
        std::fs::copy(live.join("b.wal"), crashed.join("b.wal")).expect("copy the log");
        if seen.open_commits().len() == commits && seen.last_batch_deferred() {
            break;
        }
        assert!(
            i < 300,
            "the open transaction always committed before the copy"
        );
    }

    let recovered = open(&crashed, "b", None);
    assert_eq!(recovered.position("app").expect("read"), at);
    let held = a.snapshot("app").expect("read").expect("snapshot");
    let copy = recovered.snapshot("app").expect("read").expect("snapshot");
    assert_eq!(
        copy.entries, held.entries,
        "every acknowledged append came back"
    );
    assert_eq!(copy.state.etag(), held.state.etag());
}
