//! Moving a namespace between two stores as a handoff does: a full copy read at one revision
//! while writes go on, then the changes since, must leave the receiver with exactly the giver's
//! namespace (state, entries, history, aliases, log). Garbage from a peer changes nothing.

use cfgnode_storage::{
    Codec, DeleteRequest, LogRead, Lookup, PutRequest, Store, StoreError, StoreOptions, TransferOp,
    WriteMode,
};
use tempfile::TempDir;

fn open(dir: &TempDir, name: &str, log: u64) -> Store {
    let options = StoreOptions {
        history_per_key: 3,
        log_per_namespace: log,
        ..StoreOptions::default()
    };
    Store::open(&dir.path().join(name), Some(name), options).expect("open")
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

/// Every retained version of each named key, live or deleted (a deleted key's history, its
/// tombstone included, is not in the snapshot but decides the version it is recreated at).
fn histories(store: &Store, ns: &str, keys: &[String]) -> String {
    keys.iter()
        .map(|key| {
            let versions = store.versions(ns, key, None, 100);
            format!("{key}: {:?}\n", versions.map(|v| v.items).ok())
        })
        .collect()
}

/// Everything observable about a namespace, for comparing two stores.
fn fingerprint(store: &Store, ns: &str) -> String {
    let state = store.namespace(ns).expect("read");
    let snapshot = store.snapshot(ns).expect("read");
    let mut out = format!("{state:?}\n");
    if let Some(s) = snapshot {
        for e in &s.entries {
            let versions = store.versions(ns, &e.key, None, 100).expect("versions");
            out.push_str(&format!("{e:?} {:?}\n", versions.items));
        }
        out.push_str(&format!("{:?}\n", s.aliases));
    }
    match store.events_since(ns, 0, 100_000).expect("log") {
        LogRead::Events(events) => out.push_str(&format!("{events:?}")),
        LogRead::Compacted {
            oldest_retained, ..
        } => {
            let from = oldest_retained - 1;
            out.push_str(&format!("compacted@{oldest_retained} "));
            if let LogRead::Events(events) = store.events_since(ns, from, 100_000).expect("log") {
                out.push_str(&format!("{events:?}"));
            }
        }
    }
    out
}

async fn copy_all(from: &Store, to: &Store, ns: &str, chunk: usize) -> u64 {
    let mut export = from.export(ns).expect("export");
    let revision = export.state().revision;
    while let Some(ops) = export.next_chunk(chunk).expect("chunk") {
        assert!(!ops.is_empty());
        to.import(ns, ops).await.expect("import");
    }
    revision
}

#[tokio::test]
async fn full_copy_then_changes_reproduce_the_namespace() {
    let dir = TempDir::new().expect("tmp");
    let giver = open(&dir, "giver", 50);
    let taker = open(&dir, "taker", 50);
    for i in 0..40 {
        giver
            .put(put("app", &format!("k{}", i % 13), &format!("v{i}")))
            .await
            .expect("put");
    }
    giver.put_alias("app", "latest", "k1").await.expect("alias");
    giver
        .delete(DeleteRequest {
            namespace: "app".into(),
            key: "k2".into(),
            if_version: None,
        })
        .await
        .expect("del");
    // Another namespace whose name extends this one must not leak into the copy.
    giver.put(put("app.other", "x", "1")).await.expect("put");
    // The taker holds stale rows from an aborted earlier attempt: the copy replaces them.
    taker.put(put("app", "stale", "old")).await.expect("put");

    // Small chunks, so every table is split across chunks.
    let since = copy_all(&giver, &taker, "app", 200).await;
    assert_eq!(fingerprint(&giver, "app"), fingerprint(&taker, "app"));
    assert!(taker.namespace("app.other").expect("read").is_none());

    // Writes during the copy: keys changed, deleted, an alias moved, new keys.
    for i in 0..10 {
        giver
            .put(put("app", &format!("k{}", i % 4), &format!("w{i}")))
            .await
            .expect("put");
    }
    giver.put(put("app", "new", "n")).await.expect("put");
    giver.delete_alias("app", "latest").await.expect("unalias");
    giver
        .put_alias("app", "newest", "new")
        .await
        .expect("alias");
    giver
        .delete(DeleteRequest {
            namespace: "app".into(),
            key: "k5".into(),
            if_version: None,
        })
        .await
        .expect("del");
    let (state, ops) = giver
        .export_changes("app", since)
        .expect("changes")
        .expect("log reaches back");
    // Only what changed travels: one new version per write, not each key's whole history.
    let history_rows = ops
        .iter()
        .filter(|op| matches!(op, TransferOp::History { .. }))
        .count();
    assert_eq!(
        history_rows, 12,
        "ten puts, one new key and a tombstone: {ops:?}"
    );
    taker.import("app", ops).await.expect("import");
    assert_eq!(fingerprint(&giver, "app"), fingerprint(&taker, "app"));
    assert_eq!(taker.namespace("app").expect("read").expect("some"), state);
    let mut keys: Vec<String> = (0..13).map(|i| format!("k{i}")).collect();
    keys.extend(["new", "stale", "after"].map(String::from));
    assert_eq!(
        histories(&giver, "app", &keys),
        histories(&taker, "app", &keys)
    );

    // A deleted key recreated, and a key written past the retention (3 versions), since the
    // last catch-up: the copy's histories must still be the giver's exactly.
    let since = state.revision;
    giver.put(put("app", "k2", "back")).await.expect("recreate");
    for i in 0..5 {
        giver
            .put(put("app", "k7", &format!("x{i}")))
            .await
            .expect("put");
    }
    let (state, ops) = giver
        .export_changes("app", since)
        .expect("changes")
        .expect("log reaches back");
    taker.import("app", ops).await.expect("import");
    assert_eq!(fingerprint(&giver, "app"), fingerprint(&taker, "app"));
    assert_eq!(
        histories(&giver, "app", &keys),
        histories(&taker, "app", &keys)
    );
    assert_eq!(taker.namespace("app").expect("read").expect("some"), state);

    // The taker continues the revision sequence with no gap.
    let next = taker.put(put("app", "after", "1")).await.expect("put");
    assert_eq!(next.revision, state.revision + 1);
}

#[tokio::test]
async fn changes_are_refused_when_the_log_no_longer_reaches_back() {
    let dir = TempDir::new().expect("tmp");
    let giver = open(&dir, "giver", 5);
    for i in 0..3 {
        giver
            .put(put("app", "k", &format!("{i}")))
            .await
            .expect("put");
    }
    let since = giver.namespace("app").expect("r").expect("s").revision;
    for i in 0..10 {
        giver
            .put(put("app", "k", &format!("x{i}")))
            .await
            .expect("put");
    }
    assert!(giver.export_changes("app", since).expect("read").is_none());
    assert!(matches!(
        giver.export("missing"),
        Err(StoreError::NamespaceNotFound { .. })
    ));
}

#[tokio::test]
async fn garbage_from_a_peer_is_refused_whole() {
    let dir = TempDir::new().expect("tmp");
    let taker = open(&dir, "taker", 50);
    taker.put(put("app", "keep", "1")).await.expect("put");
    let before = fingerprint(&taker, "app");
    let bad_batches = vec![
        vec![
            TransferOp::ClearNamespace,
            TransferOp::Entry {
                key: "k".into(),
                record: vec![1, 0xff, 0xff, 0xff],
            },
        ],
        vec![
            TransferOp::ClearNamespace,
            TransferOp::ClearKey { key: "//".into() },
        ],
        vec![
            TransferOp::ClearNamespace,
            TransferOp::State {
                record: vec![9, 9, 9],
            },
        ],
    ];
    for ops in bad_batches {
        let err = taker.import("app", ops).await.expect_err("refused");
        assert!(
            matches!(err, StoreError::Invalid(_) | StoreError::InvalidKey { .. }),
            "{err:?}"
        );
        assert_eq!(fingerprint(&taker, "app"), before, "nothing changed");
    }
    // Another namespace's state smuggled into this one is refused.
    let other = open(&dir, "other", 50);
    other.put(put("zzz", "a", "1")).await.expect("put");
    let mut export = other.export("zzz").expect("export");
    let ops = export.next_chunk(1 << 20).expect("chunk").expect("some");
    assert!(taker.import("app", ops).await.is_err());
    assert_eq!(fingerprint(&taker, "app"), before);

    taker.drop_namespace("app").await.expect("drop");
    assert!(taker.namespace("app").expect("read").is_none());
    assert!(taker.snapshot("app").expect("read").is_none());
}

#[tokio::test]
async fn attachments_move_with_the_namespace_and_changes_carry_them_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let giver = open(&dir, "giver", 100);
    let taker = open(&dir, "taker", 100);
    // On a namespace with no data yet, an attachment creates its state (revision 0), so it
    // can move with the namespace before the first write.
    giver
        .put_attachment("hooks", "webhook/early", Some(b"x".to_vec()))
        .await
        .expect("an attachment on a new namespace");
    let state = giver.namespace("hooks").expect("read").expect("created");
    assert_eq!(state.revision, 0);
    giver
        .put_attachment("hooks", "webhook/early", None)
        .await
        .expect("removed");
    giver.put(put("hooks", "k", "v")).await.expect("put");
    giver
        .put_attachment("hooks", "webhook/a", Some(b"cursor=1".to_vec()))
        .await
        .expect("attach");
    giver
        .put_attachment("hooks", "webhook/b", Some(b"cursor=0".to_vec()))
        .await
        .expect("attach");
    let revision = copy_all(&giver, &taker, "hooks", 64).await;
    assert_eq!(
        taker.attachments("hooks", "webhook/").expect("read"),
        giver.attachments("hooks", "webhook/").expect("read")
    );
    // A cursor moves and one webhook goes, with no log entry: the changes still carry them.
    giver
        .put_attachment("hooks", "webhook/a", Some(b"cursor=2".to_vec()))
        .await
        .expect("attach");
    giver
        .put_attachment("hooks", "webhook/b", None)
        .await
        .expect("detach");
    let (_, ops) = giver
        .export_changes("hooks", revision)
        .expect("changes")
        .expect("log reaches back");
    taker.import("hooks", ops).await.expect("import");
    assert_eq!(
        taker.attachments("hooks", "").expect("read"),
        vec![("webhook/a".to_string(), b"cursor=2".to_vec())]
    );
    // Oversized or badly named attachments are refused.
    let big = vec![0u8; cfgnode_storage::MAX_ATTACHMENT_BYTES + 1];
    assert!(
        giver
            .put_attachment("hooks", "webhook/a", Some(big))
            .await
            .is_err()
    );
    assert!(
        giver
            .put_attachment("hooks", "/bad", Some(vec![]))
            .await
            .is_err()
    );
    // Dropping the namespace drops its attachments.
    giver.drop_namespace("hooks").await.expect("drop");
    assert!(giver.attachments("hooks", "").expect("read").is_empty());
}

/// The changes feed (`Store::follow_changes`, `Store::feed_rows`): the rows the writer kept of
/// each batch, applied in order, leave a copy exactly as the store's own rows, batches of many
/// concurrent writes, deletes, alias moves and attachments included; and the giver's reads see
/// every acknowledged write although its batches may wait uncommitted.
#[tokio::test]
async fn the_changes_feed_brings_a_copy_up_to_date_like_a_read() {
    let dir = TempDir::new().expect("tmp");
    let giver = open(&dir, "giver", 500);
    let taker = open(&dir, "taker", 500);
    giver.put(put("app", "k0", "v")).await.expect("put");
    giver.put(put("other", "k0", "v")).await.expect("put");
    giver.follow_changes("app");
    let since = copy_all(&giver, &taker, "app", 1 << 20).await;
    for round in 0..20 {
        // Concurrent writes share batches; a key written twice in one round too.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..16 {
            let giver = giver.clone();
            writes.spawn(async move {
                let request = put("app", &format!("k{}", i % 11), &format!("r{round}"));
                giver.put(request).await
            });
        }
        while let Some(result) = writes.join_next().await {
            result.expect("task").expect("put");
        }
        let entry = giver
            .put(put("app", "seen", &format!("{round}")))
            .await
            .expect("put");
        // Read right after the acknowledgement: the write is visible.
        match giver.lookup("app", "seen").expect("read") {
            Lookup::Entry(found) => assert_eq!(found.revision, entry.revision),
            other => panic!("the write just acknowledged is not visible: {other:?}"),
        }
        if round % 5 == 4 {
            giver
                .delete(DeleteRequest {
                    namespace: "app".into(),
                    key: format!("k{}", round % 11),
                    if_version: None,
                })
                .await
                .expect("del");
            // An attachment takes no revision: it travels with the next batch that does (or a
            // heartbeat, which reads the store).
            giver
                .put_attachment("app", "hook", Some(format!("cursor {round}").into_bytes()))
                .await
                .expect("attachment");
            let target = format!("k{}", (round + 1) % 11);
            giver
                .put_alias("app", &format!("a{round}"), &target)
                .await
                .expect("alias");
        }
    }
    // A namespace not followed keeps nothing.
    giver.put(put("other", "k1", "v")).await.expect("put");
    assert!(giver.feed_rows("other", 1, usize::MAX).is_none());

    let rows = giver
        .feed_rows("app", since, usize::MAX)
        .expect("the feed reaches back to the copy");
    let state = giver.namespace("app").expect("read").expect("some");
    assert_eq!(rows.to, state.revision);
    let (ops, _): (Vec<TransferOp>, usize) =
        bincode::serde::decode_from_slice(&rows.ops, bincode::config::standard())
            .expect("the rows decode");
    taker.import("app", ops).await.expect("import");
    assert_eq!(fingerprint(&giver, "app"), fingerprint(&taker, "app"));
    let keys: Vec<String> = (0..11)
        .map(|i| format!("k{i}"))
        .chain(["seen".into()])
        .collect();
    assert_eq!(
        histories(&giver, "app", &keys),
        histories(&taker, "app", &keys)
    );
    assert_eq!(
        giver.attachments("app", "").expect("read"),
        taker.attachments("app", "").expect("read")
    );
    // Nothing newer than the newest batch.
    assert!(giver.feed_rows("app", rows.to, usize::MAX).is_none());

    // An import (a change the log does not describe) drops the chain.
    giver.unfollow_changes("app");
    assert!(giver.feed_rows("app", since, usize::MAX).is_none());
}
