//! A namespace's replica state on real redb stores: a follower fed by a holder's exports and
//! changes ends up with exactly the holder's namespace; appends are fenced by promises, tied
//! to the follower's own position and to the revision their rows lead to, and a refused one
//! changes nothing, not even for the other writes of its group commit; promises survive a
//! restart; a holder's position follows its local writes.

use std::sync::{Arc, Mutex};

use cfgnode_storage::{
    Codec, CommitObserver, CommitStats, DeleteRequest, LogPos, LogRead, PutRequest, RecordPut,
    ReplicaAppend, ReplicaState, Store, StoreError, StoreOptions, TransferOp, WriteMode,
};
use tempfile::TempDir;

fn open_with(dir: &TempDir, name: &str, observer: Option<Arc<dyn CommitObserver>>) -> Store {
    let options = StoreOptions {
        history_per_key: 3,
        log_per_namespace: 1000,
        observer,
        ..StoreOptions::default()
    };
    Store::open(&dir.path().join(name), Some(name), options).expect("open")
}

fn open(dir: &TempDir, name: &str) -> Store {
    open_with(dir, name, None)
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

/// Everything observable about a namespace's data: state, entries with their history,
/// aliases, records and the log.
fn fingerprint(store: &Store, ns: &str) -> String {
    let state = store.namespace(ns).expect("read");
    let mut out = format!("{state:?}\n");
    if let Some(s) = store.snapshot(ns).expect("read") {
        for e in &s.entries {
            let versions = store.versions(ns, &e.key, None, 100).expect("versions");
            out.push_str(&format!("{e:?} {:?}\n", versions.items));
        }
        out.push_str(&format!("{:?}\n", s.aliases));
        let records = store
            .records(ns, "instance", "", None, 100)
            .expect("records");
        out.push_str(&format!("{:?}\n", records.items));
    }
    match store.events_since(ns, 0, 100_000).expect("log") {
        LogRead::Events(events) => out.push_str(&format!("{events:?}")),
        LogRead::Compacted { .. } => panic!("the tests keep the whole log"),
    }
    out
}

fn revision(store: &Store, ns: &str) -> u64 {
    store.namespace(ns).expect("read").map_or(0, |s| s.revision)
}

fn set(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// A full copy of `ns` from `holder` as one append of `epoch`.
fn full_copy(holder: &Store, ns: &str, epoch: u64) -> ReplicaAppend {
    let mut export = holder.export(ns).expect("export");
    let revision = export.state().revision;
    let mut ops = Vec::new();
    while let Some(chunk) = export.next_chunk(1 << 20).expect("chunk") {
        ops.extend(chunk);
    }
    ReplicaAppend {
        namespace: ns.into(),
        epoch,
        holder: holder.node_id().into(),
        replicas: set(&[holder.node_id(), "b"]),
        base: None,
        to: LogPos::new(epoch, revision),
        ops,
        set_version: LogPos::new(epoch, 0),
    }
}

/// The rows of `ns` changed on `holder` since `base`, as one append of `epoch`.
fn changes(holder: &Store, ns: &str, epoch: u64, base: LogPos) -> ReplicaAppend {
    let (state, ops) = holder
        .export_changes(ns, base.revision)
        .expect("changes")
        .expect("the log reaches back");
    ReplicaAppend {
        namespace: ns.into(),
        epoch,
        holder: holder.node_id().into(),
        replicas: set(&[holder.node_id(), "b"]),
        base: Some(base),
        to: LogPos::new(epoch, state.revision),
        ops,
        set_version: LogPos::new(epoch, 0),
    }
}

fn heartbeat(holder: &str, ns: &str, epoch: u64, base: LogPos) -> ReplicaAppend {
    ReplicaAppend {
        namespace: ns.into(),
        epoch,
        holder: holder.into(),
        replicas: set(&[holder, "b"]),
        base: Some(base),
        to: LogPos::new(epoch, base.revision),
        ops: Vec::new(),
        set_version: LogPos::new(epoch, 0),
    }
}

/// A holder `a` with some data of every kind in "app", and a follower `b` that took a full
/// copy of it at epoch 2. Returns the position of the copy.
async fn holder_and_follower(dir: &TempDir) -> (Store, Store, LogPos) {
    let a = open(dir, "a");
    let b = open(dir, "b");
    for i in 0..12 {
        a.put(put("app", &format!("k{}", i % 5), &format!("v{i}")))
            .await
            .expect("put");
    }
    a.put_alias("app", "latest", "k1").await.expect("alias");
    a.put_record(RecordPut {
        namespace: "app".into(),
        kind: "instance".into(),
        name: "web-1".into(),
        value: b"up".to_vec(),
        if_version: None,
    })
    .await
    .expect("record");
    a.begin_epoch("app", 2, set(&["a", "b"]), LogPos::ZERO)
        .await
        .expect("begin");
    let copy = full_copy(&a, "app", 2);
    let at = copy.to;
    let state = b.append(copy).await.expect("full copy");
    assert_eq!(state.position, at);
    (a, b, at)
}

/// The set version an append carries is kept with the set, and survives a restart (the
/// write-ahead log's replay and the stored row both carry it beside the record); a holder's
/// own set version is what it began its epoch with.
#[tokio::test]
async fn set_versions_are_stored_with_the_set_and_survive_a_restart() {
    let dir = TempDir::new().expect("tmp");
    let (a, b, at) = holder_and_follower(&dir).await;
    let mut beat = heartbeat("a", "app", 2, at);
    beat.set_version = LogPos::new(2, 7);
    let state = b.append(beat).await.expect("heartbeat");
    assert_eq!(state.set_version, LogPos::new(2, 7));
    a.begin_epoch("app", 2, set(&["a", "b"]), LogPos::new(2, 9))
        .await
        .expect("a new set");
    drop((a, b));
    let (a, b) = (open(&dir, "a"), open(&dir, "b"));
    let version = |s: &Store| s.replica("app").expect("read").expect("record").set_version;
    assert_eq!(version(&b), LogPos::new(2, 7));
    assert_eq!(version(&a), LogPos::new(2, 9));
    assert_eq!(
        b.replicas().expect("read")[0].1.set_version,
        LogPos::new(2, 7)
    );

    // A late append of an older set (a stream its holder replaced) is refused, changing nothing.
    let before = b.replica("app").expect("read");
    let stale = heartbeat("a", "app", 2, before.as_ref().expect("record").position);
    let refused = b.append(stale).await.expect_err("an older set");
    assert!(
        matches!(refused, StoreError::OlderSet { .. }),
        "{refused:?}"
    );
    assert_eq!(b.replica("app").expect("read"), before);
}

#[tokio::test]
async fn a_full_copy_then_row_appends_reproduce_the_holder() {
    let dir = TempDir::new().expect("tmp");
    let (a, b, at) = holder_and_follower(&dir).await;
    assert_eq!(fingerprint(&a, "app"), fingerprint(&b, "app"));
    assert_eq!(
        b.replica("app").expect("read"),
        Some(ReplicaState {
            promised: 2,
            position: at,
            epoch_start: None,
            holder: "a".into(),
            replicas: set(&["a", "b"]),
            set_version: LogPos::new(2, 0),
        })
    );
    assert_eq!(b.position("app").expect("read"), at);
    assert_eq!(
        b.holder_position("app").expect("read"),
        None,
        "b holds nothing"
    );

    // Writes of every kind on the holder, shipped as the rows since the follower's position.
    let mut base = at;
    for round in 0..3 {
        for i in 0..4 {
            a.put(put("app", &format!("k{i}"), &format!("r{round}-{i}")))
                .await
                .expect("put");
        }
        a.delete(DeleteRequest {
            namespace: "app".into(),
            key: format!("k{}", 4 - round),
            if_version: None,
        })
        .await
        .expect("delete");
        a.put(put("app", &format!("new{round}"), "n"))
            .await
            .expect("put");
        let append = changes(&a, "app", 2, base);
        let to = append.to;
        let state = b.append(append).await.expect("rows");
        assert_eq!(state.position, to);
        assert_eq!(
            fingerprint(&a, "app"),
            fingerprint(&b, "app"),
            "round {round}"
        );
        assert_eq!(a.holder_position("app").expect("read"), Some(to));
        base = to;
    }
    a.delete_alias("app", "latest").await.expect("unalias");
    let append = changes(&a, "app", 2, base);
    b.append(append).await.expect("rows");
    assert_eq!(fingerprint(&a, "app"), fingerprint(&b, "app"));
    assert_eq!(
        b.namespace("app").expect("read").map(|s| s.etag()),
        a.namespace("app").expect("read").map(|s| s.etag()),
        "the state row travels as it is: the follower answers the holder's ETag"
    );

    // The replica record is per node: a plain import of the same rows leaves none behind.
    let c = open(&dir, "c");
    c.import("app", full_copy(&a, "app", 2).ops)
        .await
        .expect("import");
    assert_eq!(fingerprint(&a, "app"), fingerprint(&c, "app"));
    assert_eq!(c.replica("app").expect("read"), None);
}

#[tokio::test]
async fn a_heartbeat_moves_nothing_and_is_accepted() {
    let dir = TempDir::new().expect("tmp");
    let (_a, b, at) = holder_and_follower(&dir).await;
    let before = fingerprint(&b, "app");
    let mut beat = heartbeat("a", "app", 2, at);
    beat.replicas = set(&["a", "b", "c"]);
    let state = b.append(beat).await.expect("heartbeat");
    assert_eq!(state.position, at);
    assert_eq!(state.replicas, set(&["a", "b", "c"]), "the set is kept");
    assert_eq!(fingerprint(&b, "app"), before, "no row moved");

    // A new holder's first heartbeat re-labels the same rows with its epoch.
    let state = b
        .append(heartbeat("c", "app", 3, at))
        .await
        .expect("heartbeat of epoch 3");
    assert_eq!(state.position, LogPos::new(3, at.revision));
    assert_eq!(state.promised, 3);
    assert_eq!(state.holder, "c");
    assert_eq!(fingerprint(&b, "app"), before);
}

#[tokio::test]
async fn an_append_from_a_deposed_holder_is_fenced_and_changes_nothing() {
    let dir = TempDir::new().expect("tmp");
    let (a, b, at) = holder_and_follower(&dir).await;
    // A candidate got b's promise for epoch 3; the old holder keeps writing at epoch 2.
    b.promise("app", 3).await.expect("promise");
    a.put(put("app", "late", "x")).await.expect("put");
    let data = fingerprint(&b, "app");
    let record = b.replica("app").expect("read");
    let err = b
        .append(changes(&a, "app", 2, at))
        .await
        .expect_err("fenced");
    assert!(
        matches!(
            &err,
            StoreError::Fenced {
                promised: 3,
                epoch: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("deposed holder"), "{err}");
    assert!(!err.is_internal());
    assert_eq!(fingerprint(&b, "app"), data, "no row written");
    assert_eq!(b.replica("app").expect("read"), record, "record unchanged");
    // A heartbeat of the old epoch is fenced as well; the new epoch gets through.
    assert!(matches!(
        b.append(heartbeat("a", "app", 2, at)).await,
        Err(StoreError::Fenced { .. })
    ));
    let mut rows = changes(&a, "app", 3, at);
    rows.holder = "c".into();
    b.append(rows).await.expect("epoch 3 is at the promise");
    assert_eq!(fingerprint(&a, "app"), fingerprint(&b, "app"));
}

#[tokio::test]
async fn an_append_from_another_base_or_contradicting_itself_changes_nothing() {
    let dir = TempDir::new().expect("tmp");
    let (a, b, at) = holder_and_follower(&dir).await;
    a.put(put("app", "more", "1")).await.expect("put");
    let data = fingerprint(&b, "app");
    let record = b.replica("app").expect("read");
    let unchanged = |why: &str| {
        assert_eq!(fingerprint(&b, "app"), data, "{why}: no row written");
        assert_eq!(
            b.replica("app").expect("read"),
            record,
            "{why}: record kept"
        );
    };

    // The holder believes the follower is elsewhere: behind, or at another epoch.
    for wrong in [
        LogPos::new(2, at.revision - 1),
        LogPos::new(1, at.revision),
        LogPos::ZERO,
    ] {
        let mut append = changes(&a, "app", 2, at);
        append.base = Some(wrong);
        let err = b.append(append).await.expect_err("wrong base");
        match &err {
            StoreError::NotMyPosition { mine, base, .. } => {
                assert_eq!((*mine, *base), (at, wrong));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("resend from"), "{err}");
        unchanged("wrong base");
    }

    // Appends that contradict themselves.
    let mut no_clear = full_copy(&a, "app", 2);
    no_clear.ops.remove(0);
    let mut other_epoch = changes(&a, "app", 2, at);
    other_epoch.to.epoch = 3;
    let mut backwards = heartbeat("a", "app", 2, at);
    backwards.to.revision = at.revision - 1;
    let mut bad_holder = changes(&a, "app", 2, at);
    bad_holder.holder = "Not A Node".into();
    for (why, append) in [
        ("a full copy without ClearNamespace", no_clear),
        ("to of another epoch", other_epoch),
        ("to behind base", backwards),
        ("a holder that is no node id", bad_holder),
    ] {
        let err = b.append(append).await.expect_err(why);
        assert!(
            matches!(err, StoreError::InvalidAppend(_)),
            "{why}: {err:?}"
        );
        unchanged(why);
    }
    // Garbage rows are refused as an import refuses them.
    let mut garbage = changes(&a, "app", 2, at);
    garbage.ops.push(TransferOp::Entry {
        key: "k".into(),
        record: vec![1, 0xff, 0xff],
    });
    assert!(matches!(
        b.append(garbage).await,
        Err(StoreError::Invalid(_))
    ));
    unchanged("garbage rows");
}

/// Records every commit's figures.
#[derive(Default)]
struct Commits(Mutex<Vec<CommitStats>>);

impl CommitObserver for Commits {
    fn on_commit(&self, stats: &CommitStats) {
        self.0.lock().expect("not poisoned").push(*stats);
    }
}

#[tokio::test]
async fn a_revision_mismatch_is_refused_whole_and_its_batch_still_commits() {
    let dir = TempDir::new().expect("tmp");
    let (a, _b, at) = holder_and_follower(&dir).await;
    let commits = Arc::new(Commits::default());
    let observer: Arc<dyn CommitObserver> = commits.clone();
    let b = open_with(&dir, "b2", Some(observer));
    b.append(full_copy(&a, "app", 2)).await.expect("full copy");
    a.put(put("app", "more", "1")).await.expect("put");
    a.put(put("app", "more", "2")).await.expect("put");
    let data = fingerprint(&b, "app");
    let record = b.replica("app").expect("read");

    // Rows since `at` that claim to lead one revision further than they do. Sent among many
    // valid writes, so the writer batches it with some: the others must commit all the same.
    let mut shared_a_batch = false;
    for attempt in 0..20 {
        commits.0.lock().expect("not poisoned").clear();
        let mut lying = changes(&a, "app", 2, at);
        lying.to.revision += 1;
        let puts = (0..32).map(|i| b.put(put("other", &format!("k{i}"), &format!("{attempt}"))));
        let (refused, written) =
            tokio::join!(b.append(lying), futures_join_all(puts.collect::<Vec<_>>()));
        let err = refused.expect_err("revision mismatch");
        assert!(matches!(err, StoreError::InvalidAppend(_)), "{err:?}");
        assert!(err.to_string().contains("lead to revision"), "{err}");
        for entry in written {
            assert_eq!(
                entry.expect("valid put").value,
                attempt.to_string().as_bytes()
            );
        }
        assert_eq!(fingerprint(&b, "app"), data, "no row of the append written");
        assert_eq!(b.replica("app").expect("read"), record);
        let stats = commits.0.lock().expect("not poisoned").clone();
        assert!(stats.iter().all(|s| s.committed));
        if stats.iter().any(|s| s.rejected == 1 && s.batch_size > 1) {
            shared_a_batch = true;
            break;
        }
    }
    assert!(shared_a_batch, "the refused append never shared a commit");
}

/// Awaits every future, in order (a tiny `join_all`, to keep the dependencies as they are).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[tokio::test]
async fn promises_are_durable_and_only_go_up() {
    let dir = TempDir::new().expect("tmp");
    {
        let b = open(&dir, "b");
        // No namespace: the record starts at zero.
        let fresh = b.promise("empty", 1).await.expect("promise");
        assert_eq!(fresh.position, LogPos::ZERO);
        assert_eq!(fresh.holder, "");
        // A namespace from before replication: at its own epoch and revision.
        b.put(put("app", "k", "1")).await.expect("put");
        b.put(put("app", "k", "2")).await.expect("put");
        let state = b.promise("app", 5).await.expect("promise");
        assert_eq!(state.promised, 5);
        assert_eq!(state.position, LogPos::new(1, 2));
        for epoch in [5, 4, 0] {
            let err = b.promise("app", epoch).await.expect_err("not above");
            assert!(
                matches!(err, StoreError::AlreadyPromised { promised: 5, .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("retry above 5"), "{err}");
            assert_eq!(b.replica("app").expect("read"), Some(state.clone()));
        }
    }
    // Closed and reopened: the promise holds.
    let b = open(&dir, "b");
    let stored = b.replica("app").expect("read").expect("kept");
    assert_eq!(stored.promised, 5);
    assert!(matches!(
        b.promise("app", 5).await,
        Err(StoreError::AlreadyPromised { promised: 5, .. })
    ));
    assert!(matches!(
        b.append(heartbeat("a", "app", 4, LogPos::new(1, 2))).await,
        Err(StoreError::Fenced { promised: 5, .. })
    ));
    assert_eq!(b.promise("app", 6).await.expect("higher").promised, 6);
}

#[tokio::test]
async fn a_holder_position_follows_its_local_writes() {
    let dir = TempDir::new().expect("tmp");
    let a = open(&dir, "a");
    for i in 0..3 {
        a.put(put("app", "k", &format!("{i}"))).await.expect("put");
    }
    let etag = a.namespace("app").expect("read").expect("some").etag();
    assert_eq!(a.holder_position("app").expect("read"), None);
    let state = a
        .begin_epoch("app", 4, set(&["a", "b"]), LogPos::ZERO)
        .await
        .expect("begin");
    assert_eq!(state.epoch_start, Some(LogPos::new(1, 3)));
    assert_eq!((state.promised, state.holder.as_str()), (4, "a"));
    assert_eq!(
        a.namespace("app").expect("read").expect("some").etag(),
        etag,
        "beginning an epoch leaves the namespace state (and its ETag) alone"
    );
    // No write of epoch 4 yet: the holder stands where its epoch began.
    assert_eq!(
        a.holder_position("app").expect("read"),
        Some(LogPos::new(1, 3))
    );
    for expected in 4..7 {
        a.put(put("app", "k", "x")).await.expect("put");
        assert_eq!(
            a.holder_position("app").expect("read"),
            Some(LogPos::new(4, expected))
        );
        assert_eq!(a.position("app").expect("read"), LogPos::new(4, expected));
    }
    assert!(matches!(
        a.begin_epoch("app", 3, vec![], LogPos::ZERO).await,
        Err(StoreError::AlreadyPromised { promised: 4, .. })
    ));
    // Beginning the same epoch again (a restart) keeps the start.
    let again = a
        .begin_epoch("app", 4, set(&["a"]), LogPos::ZERO)
        .await
        .expect("again");
    assert_eq!(again.epoch_start, Some(LogPos::new(1, 3)));
    assert_eq!(
        a.holder_position("app").expect("read"),
        Some(LogPos::new(4, 6))
    );

    // A deposed holder takes appends from its derived position and stops being holder.
    let c = open(&dir, "c");
    c.append(full_copy(&a, "app", 4))
        .await
        .expect("c copies a's log");
    c.begin_epoch("app", 5, set(&["c", "a"]), LogPos::ZERO)
        .await
        .expect("c holds epoch 5");
    c.put(put("app", "k", "from c")).await.expect("put");
    let mut rows = changes(&c, "app", 5, LogPos::new(4, 5));
    let err = a.append(rows.clone()).await.expect_err("a is at (4, 6)");
    assert!(matches!(err, StoreError::NotMyPosition { mine, .. } if mine == LogPos::new(4, 6)));
    rows = changes(&c, "app", 5, LogPos::new(4, 6));
    let state = a.append(rows).await.expect("from a's own position");
    assert_eq!(state.epoch_start, None);
    assert_eq!(a.holder_position("app").expect("read"), None);
    assert_eq!(a.position("app").expect("read"), LogPos::new(5, 7));
    assert_eq!(fingerprint(&a, "app"), fingerprint(&c, "app"));
}

#[tokio::test]
async fn no_second_holder_begins_an_epoch_this_copy_took_appends_of() {
    let dir = TempDir::new().expect("tmp");
    let (_a, b, at) = holder_and_follower(&dir).await;
    assert!(matches!(
        b.begin_epoch("app", 2, set(&["b", "a"]), LogPos::ZERO)
            .await,
        Err(StoreError::AlreadyPromised { promised: 2, .. })
    ));
    // As a candidate it promises itself the next epoch, then begins it.
    b.promise("app", 3).await.expect("promise");
    let state = b
        .begin_epoch("app", 3, set(&["b", "a"]), LogPos::ZERO)
        .await
        .expect("begin");
    assert_eq!(state.epoch_start, Some(at));
    assert_eq!(b.holder_position("app").expect("read"), Some(at));
}

#[tokio::test]
async fn drop_namespace_removes_the_replica_record_and_a_copy_keeps_it() {
    let dir = TempDir::new().expect("tmp");
    let (_a, b, _at) = holder_and_follower(&dir).await;
    b.promise("app", 7).await.expect("promise");
    // An import's ClearNamespace (any copy) must not make the node forget its promise.
    b.import("app", vec![TransferOp::ClearNamespace])
        .await
        .expect("clear");
    assert_eq!(b.replica("app").expect("read").map(|r| r.promised), Some(7));
    b.drop_namespace("app").await.expect("drop");
    assert_eq!(b.replica("app").expect("read"), None);
    assert!(b.namespace("app").expect("read").is_none());
    assert_eq!(b.position("app").expect("read"), LogPos::ZERO);
}

/// A copy its holder's set left behind is released: every row goes, the record stays with
/// its promise, holder and set at no position. A release built on a record or a revision that
/// moved since (an append arrived, a handoff's rows) removes nothing, nor does one on the
/// holder's own copy.
#[tokio::test]
async fn a_released_copy_keeps_its_promise_and_only_an_unchanged_one_is_released() {
    let dir = TempDir::new().expect("tmp");
    let (a, b, at) = holder_and_follower(&dir).await;
    let seen = b.replica("app").expect("read").expect("a record");
    assert_eq!(seen.promised, 2, "the append at epoch 2 promised it");
    let seen_revision = revision(&b, "app");

    // An append since the look: the record moved, nothing is removed.
    a.put(put("app", "k9", "later")).await.expect("put");
    b.append(changes(&a, "app", 2, at)).await.expect("append");
    let before = fingerprint(&b, "app");
    let refused = b
        .release_copy("app", seen.clone(), seen_revision)
        .await
        .expect_err("a moved record is not released");
    assert!(
        matches!(refused, StoreError::NotReleased { .. }),
        "{refused:?}"
    );
    assert_eq!(fingerprint(&b, "app"), before);

    // Rows imported since the look (the record unchanged): kept too.
    let seen = b.replica("app").expect("read").expect("a record");
    let seen_revision = revision(&b, "app");
    let refused = b
        .release_copy("app", seen.clone(), seen_revision - 1)
        .await
        .expect_err("a moved revision is not released");
    assert!(
        matches!(refused, StoreError::NotReleased { .. }),
        "{refused:?}"
    );
    assert_eq!(fingerprint(&b, "app"), before);

    // Unchanged: released.
    let released = b
        .release_copy("app", seen.clone(), seen_revision)
        .await
        .expect("release");
    assert_eq!(released.position, LogPos::ZERO);
    assert!(b.namespace("app").expect("read").is_none());
    assert!(b.snapshot("app").expect("read").is_none());
    let kept = b.replica("app").expect("read").expect("the record stays");
    assert_eq!(kept.promised, seen.promised);
    assert_eq!(kept.holder, seen.holder);
    assert_eq!(kept.replicas, seen.replicas);
    assert_eq!(b.position("app").expect("read"), LogPos::ZERO);

    // A holder taking it back sends a full copy, which lands.
    let copy = full_copy(&a, "app", 2);
    let to = copy.to;
    assert_eq!(b.append(copy).await.expect("full copy").position, to);
    assert_eq!(fingerprint(&b, "app"), fingerprint(&a, "app"));

    // The holder's own copy is never released.
    let mine = a.replica("app").expect("read").expect("a record");
    let refused = a
        .release_copy("app", mine, revision(&a, "app"))
        .await
        .expect_err("a holder keeps its copy");
    assert!(
        matches!(refused, StoreError::NotReleased { .. }),
        "{refused:?}"
    );
    assert!(a.namespace("app").expect("read").is_some());
}

#[tokio::test]
async fn a_garbled_replica_record_is_a_clear_error() {
    let dir = TempDir::new().expect("tmp");
    {
        let b = open(&dir, "b");
        b.put(put("app", "k", "1")).await.expect("put");
        b.promise("app", 2).await.expect("promise");
    }
    {
        // Another build (or a bad disk) left a record of an unknown format.
        let db = redb::Database::create(dir.path().join("b")).expect("raw open");
        let txn = db.begin_write().expect("write");
        {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("replicas");
            let mut table = txn.open_table(table).expect("table");
            table
                .insert("app", [9u8, 1, 2, 3].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let b = open(&dir, "b");
    let err = b.replica("app").expect_err("garbled");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("record format 9"), "{err}");
    assert!(matches!(b.position("app"), Err(StoreError::Corrupt(_))));
    let err = b.promise("app", 3).await.expect_err("garbled");
    assert!(err.is_internal(), "{err:?}");
    assert!(err.to_string().contains("unreadable"), "{err}");
    assert!(
        b.append(heartbeat("a", "app", 3, LogPos::new(1, 1)))
            .await
            .is_err()
    );
    // The rest of the store works.
    b.put(put("app", "k", "2")).await.expect("put");
    assert_eq!(revision(&b, "app"), 2);
}

#[tokio::test]
async fn a_late_full_copy_cannot_move_a_follower_back() {
    let dir = TempDir::new().expect("temp dir");
    let (a, b, at) = holder_and_follower(&dir).await;
    // A full copy read now, then more writes that reach the follower as rows...
    let late = full_copy(&a, "app", 2);
    a.put(put("app", "k9", "after the copy"))
        .await
        .expect("put");
    b.append(changes(&a, "app", 2, at)).await.expect("rows");
    let before = fingerprint(&b, "app");
    // ...then the copy arrives late (a retry, a duplicate): refused, nothing changes.
    let refused = b.append(late).await;
    assert!(
        matches!(refused, Err(StoreError::StaleCopy { .. })),
        "{refused:?}"
    );
    assert_eq!(fingerprint(&b, "app"), before);
    // A fresh full copy at or past the follower's position is still taken.
    b.append(full_copy(&a, "app", 2)).await.expect("fresh copy");
    assert_eq!(fingerprint(&b, "app"), fingerprint(&a, "app"));
}

#[tokio::test]
async fn a_handoff_copy_is_labelled_with_the_givers_epoch_and_the_next_epoch_starts_there() {
    let dir = TempDir::new().expect("tmp");
    // `a` held the namespace at epoch 1 and wrote 3 revisions; it then received a handoff copy
    // of 5 revisions from a node that held it at epoch 2.
    let a = open(&dir, "a");
    for i in 0..3 {
        a.put(put("app", "k", &format!("{i}"))).await.expect("put");
    }
    a.begin_epoch("app", 1, set(&["a", "b"]), LogPos::ZERO)
        .await
        .expect("begin");
    for i in 3..5 {
        a.put(put("app", "k", &format!("{i}"))).await.expect("put");
    }
    assert_eq!(a.position("app").expect("read"), LogPos::new(1, 5));
    let state = a.label_copy("app", 2, "b").await.expect("label");
    assert_eq!(state.position, LogPos::new(2, 5));
    assert_eq!((state.epoch_start, state.holder.as_str()), (None, "b"));
    assert_eq!(state.promised, 2, "the promise rises to the giver's epoch");
    assert_eq!(a.position("app").expect("read"), LogPos::new(2, 5));
    // Holding epoch 3 now starts from the giver's label, not from a's own old epoch.
    let begun = a
        .begin_epoch("app", 3, set(&["a", "b"]), LogPos::ZERO)
        .await
        .expect("begin 3");
    assert_eq!(begun.epoch_start, Some(LogPos::new(2, 5)));
    // A label never lowers a promise.
    a.promise("app", 9).await.expect("promise");
    let relabelled = a.label_copy("app", 4, "c").await.expect("label");
    assert_eq!(relabelled.promised, 9);
}
