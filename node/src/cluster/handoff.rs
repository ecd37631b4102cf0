//! Handoff: the holder of a namespace moves its data to the desired owner.
//!
//! Giver (the holder), step by step (the order is enforced by [`Handoff`]):
//! 1. **Offer**: the receiver records the giver's holder record durably (so it never mistakes
//!    a partial copy for its own namespace) and gets ready.
//! 2. **Copy**: every row of the namespace, read in one read transaction at revision R, in
//!    chunks of about 1 MiB; writes go on meanwhile. Under replication there is no copy: a
//!    receiver that follows the giver already has the log, and one outside the set first
//!    joins it (learns through the replication stream, then the set grows by it, see
//!    `join_first`); the frozen giver then waits for the stream's last append.
//! 3. **Freeze**: the namespace's gate is taken exclusively: new requests wait, in-flight
//!    ones finish first.
//! 4. **Catch up**: the rows changed after R (from the log), or the whole namespace again if the
//!    log no longer reaches back to R.
//! 5. **Commit**: the receiver is told to take the namespace over at `epoch + 1`; it checks it
//!    has exactly the giver's revision, writes `{receiver, epoch + 1}` durably, and only then
//!    answers. The giver then records the same fact durably, merges and gossips it. Waiting
//!    requests wake up, see the new record, and go to the receiver.
//! 6. The giver drops its copy: only after the receiver's durable acceptance.
//!
//! Failure before 5 leaves the giver holding the namespace (the receiver's partial copy is
//! never served and is replaced by the next attempt). A refused commit is such a failure: the
//! giver unfreezes and keeps serving. A commit whose answer is lost is ambiguous (the receiver
//! may or may not hold the namespace now): the giver stays frozen and asks again until it gets
//! an answer or learns the new record, so neither copy is ever served next to the other. A
//! namespace is never served from an incomplete copy.
//!
//! Every handoff request names no giver: the receiver takes the sender's node id from the
//! authenticated connection, and accepts chunks and the commit only from the node whose offer
//! it accepted. Those decisions are the pure receiving rule of `cfgnode_ring` (`check_offer`,
//! `Receiving`, each refusal a typed `Refusal`), simulated in `ring/tests/simulation.rs`; the
//! receiving functions here only carry them out (durable records, storage writes, the answer).
//! What starts a handoff, and retries a failed one, is the reconcile loop (`reconcile.rs`).

use std::time::Duration;

use cfgnode_ring::{
    Commit, CommitDecision, Handoff, HandoffStep, HolderRecord, Offer, Receiver, Receiving, Update,
    check_offer,
};
use cfgnode_storage::{TransferOp, validate_namespace};
use cfgnode_transport::{PeerRequest, Response};

use super::{Cluster, ClusterError, GATE_WAIT};

/// Target size of one chunk of rows.
const CHUNK_BYTES: usize = 1024 * 1024;
/// How long one handoff request may take on the receiver.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest decoded chunk accepted from a giver.
const MAX_CHUNK_BYTES: usize = 15 * 1024 * 1024;
/// First delay before asking an unreachable receiver again whether it took a commit.
const COMMIT_RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest delay between those questions.
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Moves `namespace` to `to`; returns the revision handed over.
pub(super) async fn hand_off(cluster: &Cluster, namespace: &str, to: &str) -> Result<u64, String> {
    let record = cluster
        .holder(namespace)
        .filter(|r| r.holder == cluster.me())
        .ok_or("this node no longer holds the namespace")?;
    let addr = cluster
        .addr_of(to)
        .ok_or_else(|| format!("no address known for {to}"))?;
    let mut steps = Handoff::new(record.clone(), to.to_string());
    let call = |request: PeerRequest| async move {
        match cluster.peers().call(addr, request, STEP_TIMEOUT).await {
            Ok(Response::Ack) => Ok(()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(format!("{}", e.into_wire())),
        }
    };
    let started = tokio::time::Instant::now();
    // Each step's time in the debug log: a handoff that holds writes too long says where.
    let step = |steps: &mut Handoff, s: HandoffStep| {
        tracing::debug!(namespace, to, step = ?s, ms = started.elapsed().as_millis() as u64, "handoff step");
        steps.advance(s).map_err(|e| e.to_string())
    };

    call(PeerRequest::HandoffOffer {
        namespace: namespace.to_string(),
        epoch: record.epoch,
    })
    .await?;
    step(&mut steps, HandoffStep::Offered)?;

    // Copy, with writes still running. A receiver that already follows this holder has the
    // log up to its position, and the replication stream brings it the rest: no copy, and
    // after the freeze the giver only waits for the stream (docs/replication.md, "Handoff").
    // The rows never come two ways at once, so an append built before the freeze cannot land
    // after a catch-up and take the copy back.
    let mut follows = following_position(cluster, namespace, to, record.epoch).await;
    // A receiver outside the set becomes a member first (it learns, then the set grows by
    // it), so the set it will replicate to is the members that know it: if it dies right
    // after taking the namespace, they elect without it. On a timeout the handoff copies.
    let _joining = Joining::new(cluster, namespace, to, follows.is_none() && !cluster.solo());
    if follows.is_none() && !cluster.solo() && join_first(cluster, namespace, to).await {
        follows = following_position(cluster, namespace, to, record.epoch).await;
    }
    let since = match follows {
        Some(revision) => {
            copied(cluster, "stream");
            Some(revision)
        }
        None => {
            copied(cluster, "full");
            send_full_copy(cluster, namespace, record.epoch, &call).await?
        }
    };
    step(&mut steps, HandoffStep::Copied)?;

    // Freeze: wait for in-flight requests, hold new ones.
    let gate = cluster.gate(namespace);
    let frozen = tokio::time::timeout(GATE_WAIT, gate.write_owned())
        .await
        .map_err(|_| "requests kept the namespace busy; could not freeze it".to_string())?;
    step(&mut steps, HandoffStep::Frozen)?;

    let store = cluster.store().clone();
    if follows.is_some() {
        let revision = {
            let ns = namespace.to_string();
            crate::blocking::read(&store, move |s| s.namespace(&ns))
                .await
                .map_err(|e| e.to_string())?
                .map_or(0, |s| s.revision)
        };
        stream_caught_up(cluster, namespace, to, record.epoch, revision).await?;
        step(&mut steps, HandoffStep::CaughtUp)?;
        let receiver = GivenTo {
            node: to,
            addr,
            follows: true,
        };
        return commit(cluster, namespace, receiver, steps, frozen, revision).await;
    }
    let changes = {
        let ns = namespace.to_string();
        let since = since.unwrap_or(0);
        let has_data = since > 0;
        tokio::task::spawn_blocking(move || {
            if has_data {
                store.export_changes(&ns, since).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
    };
    let revision = match (since, changes) {
        (Some(_), Some(Some((state, ops)))) => {
            copied(cluster, "changes");
            for chunk in split(ops) {
                let sent = call(chunk_request(namespace, record.epoch, &chunk)?);
                while_receiver_alive(cluster, to, sent).await?;
            }
            state.revision
        }
        // The log no longer reaches back (or the namespace appeared meanwhile): copy it all
        // again, frozen.
        _ => {
            copied(cluster, "full");
            let sent = send_full_copy(cluster, namespace, record.epoch, &call);
            while_receiver_alive(cluster, to, sent).await?.unwrap_or(0)
        }
    };
    step(&mut steps, HandoffStep::CaughtUp)?;
    let receiver = GivenTo {
        node: to,
        addr,
        follows: false,
    };
    commit(cluster, namespace, receiver, steps, frozen, revision).await
}

/// Runs `step`, a step of a frozen handoff that waits on the receiver, and gives up when the
/// receiver is declared down meanwhile: the namespace's writes are held while it is frozen, and
/// a dead receiver must not hold them for a whole step timeout. Before the commit, giving up
/// is safe (the giver still holds the namespace and unfreezes).
async fn while_receiver_alive<T>(
    cluster: &Cluster,
    to: &str,
    step: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::select! {
        result = step => result,
        () = declared_down(cluster, to) => Err(RECEIVER_DOWN.to_string()),
    }
}

/// Ends once this node's membership view no longer holds `to` alive.
async fn declared_down(cluster: &Cluster, to: &str) {
    while cluster.view().alive.contains(to) {
        tokio::time::sleep(RECEIVER_LOOK_EVERY).await;
    }
}

/// How often a frozen handoff looks whether its receiver was declared down.
const RECEIVER_LOOK_EVERY: Duration = Duration::from_millis(50);
/// Why a frozen handoff gave up on a receiver declared down.
const RECEIVER_DOWN: &str = "the receiver was declared down while the namespace was frozen";

/// The node a handoff gives the namespace to: its id, its address, and whether it followed
/// this node (a member of the set, or one that joined it first, `join_first`: the stream
/// brought it every row and no copy was sent).
struct GivenTo<'a> {
    node: &'a str,
    addr: std::net::SocketAddr,
    follows: bool,
}

/// How long a handoff waits for a receiver outside the set to become a member (learn the
/// namespace through the replication stream, then be switched in, then every alive member
/// told the new set). A namespace too large to learn in this time is copied instead.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Makes `to` a member of `namespace`'s set for the length of a handoff (`Cluster::joining`,
/// read by the replicator); dropping it ends that, and a handoff that did not happen leaves
/// the set to shrink back (the receiver's copy is then released, `replication::release`).
struct Joining<'a> {
    cluster: &'a Cluster,
    namespace: &'a str,
    active: bool,
}

impl<'a> Joining<'a> {
    fn new(cluster: &'a Cluster, namespace: &'a str, to: &str, active: bool) -> Self {
        if active {
            cluster.set_joining(namespace, Some(to.to_string()));
        }
        Joining {
            cluster,
            namespace,
            active,
        }
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        if self.active {
            self.cluster.set_joining(self.namespace, None);
        }
    }
}

/// Waits until `to` is a member of the set `namespace` is streamed to and every alive member
/// was told that set (`Cluster::member_and_told`). False on [`JOIN_WAIT`].
async fn join_first(cluster: &Cluster, namespace: &str, to: &str) -> bool {
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    let mut stop = cluster.stopping();
    loop {
        if cluster.member_and_told(namespace, to) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                namespace,
                receiver = to,
                "the receiver did not join the set in time; copying the namespace instead"
            );
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = crate::shutdown::until_stopped(&mut stop) => return false,
        }
    }
}

/// Steps 5 and 6: the receiver takes the namespace at the next epoch; this node records it,
/// unfreezes, and drops its copy unless it stays a replica.
async fn commit(
    cluster: &Cluster,
    namespace: &str,
    receiver: GivenTo<'_>,
    mut steps: Handoff,
    frozen: tokio::sync::OwnedRwLockWriteGuard<()>,
    revision: u64,
) -> Result<u64, String> {
    let GivenTo {
        node: to,
        addr,
        follows,
    } = receiver;
    let next = steps.commit_record().map_err(|e| e.to_string())?;
    // The receiver records the new holder durably before it answers; only then is it recorded
    // here, and only then is this copy dropped.
    let commit = PeerRequest::HandoffCommit {
        namespace: namespace.to_string(),
        epoch: next.epoch,
        revision,
    };
    // A receiver that follows this node in a set that can elect without it may be presumed to
    // hold the namespace once it is declared down with the commit unanswered (see
    // `CommitOutcome::Presumed`).
    let presumable = follows && !cluster.solo() && cluster.inner.replicas >= 3;
    let asked = tokio::time::Instant::now();
    let outcome = confirm_commit(cluster, namespace, to, addr, &next, commit, presumable).await;
    tracing::debug!(
        namespace,
        to,
        ms = asked.elapsed().as_millis() as u64,
        "handoff commit answered"
    );
    match outcome {
        CommitOutcome::Accepted => {}
        CommitOutcome::Presumed => {
            tracing::warn!(
                namespace,
                to,
                epoch = next.epoch,
                "handoff commit unanswered and the receiver declared down: recorded as the holder, so that its replica set elects a successor"
            );
        }
        CommitOutcome::Refused(why) => {
            // The receiver did not take it: this node still holds the namespace and serves it
            // again as soon as the freeze ends.
            return Err(format!("the receiver refused the commit: {why}"));
        }
        CommitOutcome::Stopping => {
            return Err("the node is stopping; the commit's outcome is unknown".to_string());
        }
    }
    cluster
        .author(Update::Holder {
            namespace: namespace.to_string(),
            record: next.clone(),
        })
        .await
        .map_err(|e| format!("could not record the new holder: {e}"))?;
    steps
        .advance(HandoffStep::Committed)
        .map_err(|e| e.to_string())?;
    // Long-polls waiting here wake up, find the namespace elsewhere and follow it.
    cluster.feeds().changed(namespace);
    drop(frozen);
    // A member of the receiver's replica set keeps its copy: it is a follower from now on and
    // gets only the receiver's new rows, instead of a full copy back. So does the giver of a
    // receiver that followed it (a member, or one that joined its set first): the receiver's
    // epoch starts from that set, this node in it.
    let stays_a_replica = !cluster.solo()
        && (follows
            || cluster
                .view()
                .replica_set(namespace, &to.to_string(), cluster.inner.replicas)
                .iter()
                .any(|n| n == cluster.me()));
    if !stays_a_replica && let Err(e) = cluster.store().drop_namespace(namespace).await {
        tracing::warn!(namespace, error = %e, "could not drop the handed-off copy");
    }
    Ok(revision)
}

/// Counts one way the rows of a handoff went (`cfgnode_cluster_handoff_copies_total`).
fn copied(cluster: &Cluster, how: &'static str) {
    cluster
        .metrics()
        .handoff_copies
        .get_or_create(&crate::metrics::HandoffCopyLabels { how })
        .inc();
}

/// How long a frozen handoff waits for the replication stream to bring a following receiver
/// to the giver's revision. Writes are held meanwhile, so the receiver is one append away:
/// milliseconds when it is well. Every moment of this wait is an outage of the namespace's
/// writes, so it is kept short; a handoff that runs out of it is retried (`reconcile.rs`).
const STREAM_CATCH_UP: Duration = Duration::from_secs(2);

/// Waits until `to`'s copy is at `(epoch, revision)` of this holder's log. Gives up at once
/// when `to` stops answering or is declared down: a receiver that dies right after the offer
/// (say, killed right after a claim onto it) must not hold the namespace's writes for the whole
/// wait. The giver then unfreezes and keeps serving with the rest of its set.
async fn stream_caught_up(
    cluster: &Cluster,
    namespace: &str,
    to: &str,
    epoch: u64,
    revision: u64,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STREAM_CATCH_UP;
    loop {
        let position = match cluster.replica_state(to, namespace).await {
            Ok(state) => state.map(|s| s.position),
            Err(e) => {
                return Err(format!(
                    "the receiver stopped answering while the namespace was frozen ({e}); writes go on here"
                ));
            }
        };
        if position.is_some_and(|p| p.epoch == epoch && p.revision == revision) {
            return Ok(());
        }
        if !cluster.view().alive.contains(to) {
            return Err(RECEIVER_DOWN.to_string());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the receiver did not reach revision {revision} through replication within {STREAM_CATCH_UP:?} (it is at {position:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The revision `to` has of this holder's log at `epoch`, when it follows this node (a
/// replica of the namespace at this epoch, with data): the handoff then sends only the rows
/// after it. `None`: send a full copy. The receiver keeps taking appends meanwhile; the rows
/// since this revision applied on a later position of the same log leave it the same.
async fn following_position(
    cluster: &Cluster,
    namespace: &str,
    to: &str,
    epoch: u64,
) -> Option<u64> {
    if cluster.solo() {
        return None;
    }
    let state = cluster.replica_state(to, namespace).await.ok()??;
    let follows = state.holder == cluster.me()
        && state.position.epoch == epoch
        && state.position.revision > 0;
    follows.then_some(state.position.revision)
}

/// How asking the receiver to commit ended.
enum CommitOutcome {
    /// It holds the namespace now, durably.
    Accepted,
    /// It answered no: it does not hold it.
    Refused(String),
    /// It did not answer and is declared down, and it followed this node in a set that can
    /// elect without it: it is recorded as the holder at the next epoch, whether or not it
    /// took the commit. Either way is safe, because the set's election of a successor (at an
    /// epoch above it) fences it: took the commit, it holds that epoch and is superseded; did
    /// not, it holds nothing and its copy is the giver's log up to the frozen revision, so were
    /// it to serve that epoch on its return, it would serve exactly what the giver had. Waiting
    /// instead, as for a receiver outside the set, would keep the namespace frozen until the
    /// receiver came back (found by `cli/tests/failover.rs`
    /// `a_receiver_killed_right_after_a_claim_holds_writes_no_longer_than_a_failover`).
    Presumed,
    /// This node stops before it knows.
    Stopping,
}

/// Sends the commit until the outcome is known: an answer (yes or no), or the new record
/// learned from the cluster map (the receiver gossiped it). While the receiver is unreachable
/// the outcome is unknown, so the caller stays frozen: serving here could hide writes the
/// receiver acknowledged, and dropping the copy could lose the only one.
async fn confirm_commit(
    cluster: &Cluster,
    namespace: &str,
    to: &str,
    addr: std::net::SocketAddr,
    next: &HolderRecord,
    commit: PeerRequest,
    presumable: bool,
) -> CommitOutcome {
    let mut delay = COMMIT_RETRY_FIRST;
    let mut stop = cluster.stopping();
    // Declared down while the commit is unanswered (or between two tries): presumed at once.
    let presumed = || async {
        if presumable {
            declared_down(cluster, to).await
        } else {
            std::future::pending().await
        }
    };
    loop {
        let answer = tokio::select! {
            answer = cluster.peers().call(addr, commit.clone(), STEP_TIMEOUT) => answer,
            () = presumed() => Err(super::PeerError::Unreachable(RECEIVER_DOWN.to_string())),
        };
        match answer {
            Ok(Response::Ack) => return CommitOutcome::Accepted,
            Ok(other) => return CommitOutcome::Refused(format!("unexpected answer {other:?}")),
            Err(super::PeerError::Answered(e)) => return CommitOutcome::Refused(e.to_string()),
            Err(super::PeerError::Unreachable(why)) => {
                if cluster.holder(namespace).as_ref() == Some(next) {
                    return CommitOutcome::Accepted;
                }
                if presumable && !cluster.view().alive.contains(to) {
                    return CommitOutcome::Presumed;
                }
                tracing::warn!(
                    namespace,
                    to,
                    error = %why,
                    "handoff commit unanswered; the namespace stays frozen until the receiver answers"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = presumed() => {}
            _ = stop.wait_for(|s| *s) => return CommitOutcome::Stopping,
        }
        delay = (delay * 2).min(COMMIT_RETRY_MAX);
    }
}

/// Sends every row of the namespace, read at one revision; returns that revision (`None` when
/// the namespace has no data here: a record created by a write that was then refused).
async fn send_full_copy<F, Fut>(
    cluster: &Cluster,
    namespace: &str,
    epoch: u64,
    call: &F,
) -> Result<Option<u64>, String>
where
    F: Fn(PeerRequest) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let store = cluster.store().clone();
    let ns = namespace.to_string();
    let export = tokio::task::spawn_blocking(move || store.export(&ns))
        .await
        .map_err(|e| e.to_string())?;
    let mut export = match export {
        Ok(export) => export,
        Err(cfgnode_storage::StoreError::NamespaceNotFound { .. }) => {
            // Nothing to copy; the receiver starts from an empty namespace.
            call(chunk_request(
                namespace,
                epoch,
                &[TransferOp::ClearNamespace],
            )?)
            .await?;
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let revision = export.state().revision;
    loop {
        let (back, chunk) = tokio::task::spawn_blocking(move || {
            let chunk = export.next_chunk(CHUNK_BYTES);
            (export, chunk)
        })
        .await
        .map_err(|e| e.to_string())?;
        export = back;
        match chunk.map_err(|e| e.to_string())? {
            Some(ops) => call(chunk_request(namespace, epoch, &ops)?).await?,
            None => break,
        }
    }
    Ok(Some(revision))
}

/// Splits ops into chunks of about [`CHUNK_BYTES`], keeping their order.
fn split(ops: Vec<TransferOp>) -> Vec<Vec<TransferOp>> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for op in ops {
        if size >= CHUNK_BYTES {
            chunks.push(Vec::new());
            size = 0;
        }
        size += op.size();
        if let Some(last) = chunks.last_mut() {
            last.push(op);
        }
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

fn chunk_request(namespace: &str, epoch: u64, ops: &[TransferOp]) -> Result<PeerRequest, String> {
    let ops = bincode::serde::encode_to_vec(ops, bincode::config::standard())
        .map_err(|e| format!("cannot encode a chunk: {e}"))?;
    Ok(PeerRequest::HandoffChunk {
        namespace: namespace.to_string(),
        epoch,
        ops,
    })
}

// ---- receiving side -------------------------------------------------------------------------
//
// The decisions are `cfgnode_ring`'s receiving rule (`check_offer`, `Receiving`); here only the
// IO around them: durable records, storage writes, the answer.

/// The rule's table of accepted offers (never held across an `.await`).
fn receiving(cluster: &Cluster) -> std::sync::MutexGuard<'_, Receiving> {
    cluster
        .inner
        .receiving
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// `HandoffOffer` from `giver` (authenticated by its connection): get ready to receive
/// `namespace` from its holder at `epoch`.
pub async fn on_offer(
    cluster: &Cluster,
    giver: &str,
    namespace: &str,
    epoch: u64,
) -> Result<Response, ClusterError> {
    validate_namespace(namespace)?;
    let still_giving = cluster.inner.giving.contains(namespace);
    let offer = Offer {
        giver: giver.to_string(),
        epoch,
    };
    let view = cluster.view();
    let record = cluster.map_state().read(|map| {
        let at = Receiver {
            me: cluster.me(),
            map,
            alive: &view.alive,
        };
        check_offer(&at, still_giving, namespace, &offer)
    })?;
    // Remember, durably, who holds the namespace: this node's partial copy is never taken for
    // its own, even after a restart.
    cluster
        .map_state()
        .apply_durably(Update::Holder {
            namespace: namespace.to_string(),
            record,
        })
        .await
        .map_err(ClusterError::NotRecorded)?;
    receiving(cluster).accept(namespace, offer);
    Ok(Response::Ack)
}

/// `HandoffChunk` from `sender`: store rows of a namespace being received from it.
pub async fn on_chunk(
    cluster: &Cluster,
    sender: &str,
    namespace: &str,
    epoch: u64,
    payload: &[u8],
) -> Result<Response, ClusterError> {
    receiving(cluster).check_chunk(namespace, sender, epoch)?;
    let config = bincode::config::standard().with_limit::<MAX_CHUNK_BYTES>();
    let (ops, used): (Vec<TransferOp>, usize) = bincode::serde::decode_from_slice(payload, config)
        .map_err(|e| ClusterError::Malformed(format!("malformed handoff chunk: {e}")))?;
    if used != payload.len() {
        return Err(ClusterError::Malformed(
            "trailing bytes in a handoff chunk".to_string(),
        ));
    }
    cluster.store().import(namespace, ops).await?;
    Ok(Response::Ack)
}

/// `HandoffCommit` from `sender`: take the namespace over at `epoch`, if this node has exactly
/// `revision`; answered only once the new record is durable here.
pub async fn on_commit(
    cluster: &Cluster,
    sender: &str,
    namespace: &str,
    epoch: u64,
    revision: u64,
) -> Result<Response, ClusterError> {
    validate_namespace(namespace)?;
    let commit = Commit {
        sender: sender.to_string(),
        epoch,
        revision,
    };
    let view = cluster.view();
    let decision = cluster.map_state().read(|map| {
        let at = Receiver {
            me: cluster.me(),
            map,
            alive: &view.alive,
        };
        receiving(cluster).check_commit(&at, cluster.refuses_commits(), namespace, &commit)
    })?;
    let pending = match decision {
        // Already learned through gossip or a redirect, or a repeated commit: nothing to do.
        CommitDecision::AlreadyHolder => return Ok(Response::Ack),
        CommitDecision::CheckRevision(pending) => pending,
    };
    let ns = namespace.to_string();
    let state = crate::blocking::read(cluster.store(), move |s| s.namespace(&ns)).await?;
    let record = pending.check_revision(state.map_or(0, |s| s.revision))?;
    // The rows are the giver's log at its epoch (the one before the record's): label them so,
    // before serving, so replication from here starts from the giver's position.
    cluster
        .store()
        .label_copy(namespace, record.epoch.saturating_sub(1), sender)
        .await?;
    cluster
        .author(Update::Holder {
            namespace: namespace.to_string(),
            record,
        })
        .await?;
    receiving(cluster).committed(namespace);
    tracing::info!(
        namespace,
        epoch,
        revision,
        "namespace received; serving it here"
    );
    Ok(Response::Ack)
}
