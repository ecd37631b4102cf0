//! The follower's side of replication on a real node over QUIC: a peer that proved the cluster
//! key sends appends, promises and state queries (docs/replication.md). A full copy and then
//! rows are taken durably at the positions they claim; a promise waits out the lease from the
//! holder and then fences the old epoch; appends from a sender that is not the set's holder, to
//! a node outside the set, with garbage rows or from another base are refused and change
//! nothing.

use std::time::{Duration, Instant};

use cfgnode_storage::{Codec, LogPos, PutRequest, Store, StoreOptions, TransferOp, WriteMode};
use cfgnode_tests::{PeerProbe, TestCluster};
use cfgnode_transport::{PeerRequest, PeerResponse, Response, WireLogPosition, WireReplica};

/// A holder's store outside the cluster, as node `h1`, with a few writes in `rep`.
async fn holder_store(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(&dir.path().join("h1"), Some("h1"), StoreOptions::default())
        .expect("open the holder's store");
    for i in 0..5 {
        store
            .put(PutRequest {
                namespace: "rep".into(),
                key: format!("k{i}"),
                value: format!("v{i}").into_bytes(),
                codec: Codec::Text,
                mode: WriteMode::Upsert,
                if_version: None,
            })
            .await
            .expect("put");
    }
    store
}

fn encode(ops: &[TransferOp]) -> Vec<u8> {
    bincode::serde::encode_to_vec(ops, bincode::config::standard()).expect("encode ops")
}

fn wire(position: LogPos) -> WireLogPosition {
    WireLogPosition {
        epoch: position.epoch,
        revision: position.revision,
    }
}

fn replica(answer: Response) -> Option<WireReplica> {
    match answer {
        Response::Peer(PeerResponse::Replica(state)) => state,
        other => panic!("not a replica answer: {other:?}"),
    }
}

/// The node's replica state of `rep`, asked through `probe`.
async fn state(probe: &PeerProbe) -> Option<WireReplica> {
    let request = PeerRequest::ReplicaState {
        namespace: "rep".into(),
    };
    replica(probe.call(request).await.expect("state"))
}

/// The rows of a full copy of `rep` from `holder`, and the revision they reach.
fn full_copy(holder: &Store) -> (u64, Vec<TransferOp>) {
    let mut export = holder.export("rep").expect("export");
    let copied = export.state().revision;
    let mut ops = Vec::new();
    while let Some(chunk) = export.next_chunk(1 << 20).expect("chunk") {
        ops.extend(chunk);
    }
    (copied, ops)
}

fn set(nodes: &[&str]) -> Vec<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_a_holder_and_fences_it_after_a_promise() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    let me = node.node_id().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let holder = holder_store(&dir).await;
    let replicas = set(&["h1", &me]);
    let probe = PeerProbe::connect(node.quic_addr(), PeerProbe::cluster_key(), "h1", 1)
        .await
        .expect("a peer with the key is accepted");
    assert_eq!(
        state(&probe).await,
        None,
        "no replica state before the first append"
    );

    // A full copy at epoch 2.
    let (copied, ops) = full_copy(&holder);
    let at = LogPos::new(2, copied);
    let answer = probe
        .call(PeerRequest::ReplicaAppend {
            namespace: "rep".into(),
            epoch: 2,
            replicas: replicas.clone(),
            base: None,
            to: wire(at),
            ops: encode(&ops),
            set_version: wire(LogPos::new(2, 0)),
        })
        .await
        .expect("the full copy is taken");
    let taken = replica(answer).expect("a state");
    assert_eq!(taken.position, wire(at));
    assert_eq!((taken.holder.as_str(), taken.promised), ("h1", 2));

    // Refused, each changing nothing: the sender is not the set's holder; this node is not in
    // the set; garbage rows; rows from another base.
    let refusals = [
        (set(&[&me, "h1"]), Some(wire(at)), vec![], "not_a_replica"),
        (set(&["h1", "h2"]), Some(wire(at)), vec![], "not_a_replica"),
        (
            replicas.clone(),
            Some(wire(at)),
            vec![0xff, 0xff],
            "malformed",
        ),
        (
            replicas.clone(),
            Some(wire(LogPos::new(2, copied - 1))),
            vec![],
            "not_my_position",
        ),
    ];
    for (set, base, ops, code) in refusals {
        let ops = if ops.is_empty() { encode(&[]) } else { ops };
        let refused = probe
            .call(PeerRequest::ReplicaAppend {
                namespace: "rep".into(),
                epoch: 2,
                replicas: set.clone(),
                base,
                to: wire(at),
                ops,
                set_version: wire(LogPos::new(2, 0)),
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code, code, "{set:?}: {refused:?}");
        assert_eq!(
            state(&probe).await,
            Some(taken.clone()),
            "{code} changed nothing"
        );
    }

    // Rows since the copy.
    holder
        .put(PutRequest {
            namespace: "rep".into(),
            key: "k9".into(),
            value: b"later".to_vec(),
            codec: Codec::Text,
            mode: WriteMode::Upsert,
            if_version: None,
        })
        .await
        .expect("put");
    let (after, rows) = holder
        .export_changes("rep", copied)
        .expect("changes")
        .expect("the log reaches back");
    let next = LogPos::new(2, after.revision);
    assert_eq!(next.revision, copied + 1);
    let answer = probe
        .call(PeerRequest::ReplicaAppend {
            namespace: "rep".into(),
            epoch: 2,
            replicas: replicas.clone(),
            base: Some(wire(at)),
            to: wire(next),
            ops: encode(&rows),
            set_version: wire(LogPos::new(2, 0)),
        })
        .await
        .expect("rows are taken");
    assert_eq!(replica(answer).expect("a state").position, wire(next));

    // A candidate asks for epoch 3: refused while the lease from h1 runs (it was just heard
    // from), granted once it ran out.
    let candidate = PeerProbe::connect(node.quic_addr(), PeerProbe::cluster_key(), "h2", 1)
        .await
        .expect("a second peer");
    let promise = PeerRequest::ReplicaPromise {
        namespace: "rep".into(),
        epoch: 3,
    };
    let refused = candidate.call(promise.clone()).await.expect_err("leased");
    assert_eq!(refused.code, "holder_leased", "{refused:?}");
    let end = Instant::now() + Duration::from_secs(10);
    let granted = loop {
        match candidate.call(promise.clone()).await {
            Ok(answer) => break replica(answer).expect("a state"),
            Err(e) if e.code == "holder_leased" && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the promise was not granted: {e:?}"),
        }
    };
    assert_eq!((granted.promised, granted.position), (3, wire(next)));
    let again = candidate.call(promise).await.expect_err("once per epoch");
    assert_eq!(again.code, "already_promised", "{again:?}");

    // The deposed holder's next append (a heartbeat at epoch 2) is fenced.
    let fenced = probe
        .call(PeerRequest::ReplicaAppend {
            namespace: "rep".into(),
            epoch: 2,
            replicas,
            base: Some(wire(next)),
            to: wire(next),
            ops: encode(&[]),
            set_version: wire(LogPos::new(2, 0)),
        })
        .await
        .expect_err("fenced");
    assert_eq!(fenced.code, "fenced", "{fenced:?}");
    assert_eq!(state(&probe).await, Some(granted));
}

/// A promise asked by the holder this node follows is granted at once: the read lease it would
/// wait out is that holder's own (a holder left with a namespace it gave away, when the
/// receiver died before answering the commit, runs for the next epoch itself). Any other
/// candidate still waits the lease out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_followed_holder_is_promised_a_new_epoch_without_waiting_out_its_lease() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    let me = node.node_id().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let holder = holder_store(&dir).await;
    let probe = PeerProbe::connect(node.quic_addr(), PeerProbe::cluster_key(), "h1", 1)
        .await
        .expect("a peer with the key is accepted");
    let (copied, ops) = full_copy(&holder);
    let at = LogPos::new(2, copied);
    let request = PeerRequest::ReplicaAppend {
        namespace: "rep".into(),
        epoch: 2,
        replicas: set(&["h1", &me]),
        base: None,
        to: wire(at),
        ops: encode(&ops),
        set_version: wire(LogPos::new(2, 0)),
    };
    probe.call(request).await.expect("the full copy is taken");

    let other = PeerProbe::connect(node.quic_addr(), PeerProbe::cluster_key(), "h2", 1)
        .await
        .expect("a second peer");
    let promise = |epoch| PeerRequest::ReplicaPromise {
        namespace: "rep".into(),
        epoch,
    };
    let refused = other.call(promise(3)).await.expect_err("leased");
    assert_eq!(refused.code, "holder_leased", "{refused:?}");
    let granted = replica(
        probe
            .call(promise(3))
            .await
            .expect("the holder is promised"),
    )
    .expect("a state");
    assert_eq!((granted.promised, granted.position), (3, wire(at)));
    let still = other.call(promise(4)).await.expect_err("still leased");
    assert_eq!(still.code, "holder_leased", "{still:?}");
}

/// A node that holds a namespace promises no other candidate a new epoch of it: the grant
/// would fence its own epoch while it goes on holding (a holder that had just won its election
/// was fenced so by a rival's, and its writes stalled). Refused, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_promises_no_rival_candidate_a_new_epoch() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    cluster.put(node, "own", "k", "v").await;
    let before = replica(
        PeerProbe::connect(node.quic_addr(), PeerProbe::cluster_key(), "h2", 1)
            .await
            .expect("a peer")
            .call(PeerRequest::ReplicaState {
                namespace: "own".into(),
            })
            .await
            .expect("state"),
    );
    let rival = PeerProbe::connect(node.quic_addr(), PeerProbe::cluster_key(), "h2", 1)
        .await
        .expect("a peer with the key is accepted");
    // Past the lease a node counts from its start (it cannot know when it last heard from a
    // holder), which would refuse any candidate for a moment anyway.
    let end = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = rival
            .call(PeerRequest::ReplicaPromise {
                namespace: "own".into(),
                epoch: 5,
            })
            .await;
        match answer {
            Err(e) if e.code == "holder_leased" && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other.expect_err("the holder refuses"),
        }
    };
    assert_eq!(refused.code, "not_a_replica", "{refused:?}");
    let after = replica(
        rival
            .call(PeerRequest::ReplicaState {
                namespace: "own".into(),
            })
            .await
            .expect("state"),
    );
    assert_eq!(after, before, "the refusal changed nothing");
    cluster.put(node, "own", "k", "v2").await;
}
