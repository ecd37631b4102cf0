//! Promotion (docs/replication.md, "Promotion"): when SWIM declares a namespace's holder down,
//! a follower in its replica set runs an election at a new epoch and, with a quorum of
//! promises and the longest log among them, becomes the holder.
//!
//! [`watch_holders`] looks every [`SCAN_EVERY`] (and at every membership change) through this
//! node's replica records for namespaces whose holder, as the cluster map names it, is down.
//! For each, it first asks the other alive members of the set where their logs end (a
//! pre-vote, for liveness only): the member with the highest position runs at once, the others
//! give it [`DEFER`] after its answered position last moved before running themselves, and a
//! member that fewer than a quorum answer does not run at all. Safety does not rest on the
//! pre-vote: the election takes promises (durable fences) from a quorum, and a candidate that
//! finds a granter with more of the log than itself gives up, so only a member holding every
//! acknowledged write can win (`cfgnode_ring::Election`).
//!
//! The same loop looks after namespaces this node holds whose epoch a member of the set
//! refuses as fenced for [`DEFER`] ([`take_newer_epoch`]): a candidate took promises of a newer
//! epoch and gave up (or died) without winning, so those members refuse the live holder, and
//! with a majority of them nobody acknowledges anything. The holder then runs an election
//! itself, above the fence.
//!
//! Not here: a namespace under a strict pin to its down holder stays there (`"strict": true`;
//! any other pin fails over like a claim), and a set of one or two cannot elect anyone
//! without the holder.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_ring::{
    Election, ElectionOutcome, HolderRecord, LogPosition, NodeId, ReplicaState as RingState,
    candidate_epoch, quorum,
};
use cfgnode_storage::{ReplicaState, Store};
use cfgnode_transport::{PeerRequest, PeerResponse, Response, WireReplica, codes};
use tokio::sync::watch;

use crate::cluster::{Cluster, PeerError};
use crate::metrics::OutcomeLabels;
use crate::replication::Follower;
use crate::replication::deferral::Deferrals;
use crate::replication::holder::FencedHold;
use crate::shutdown::until_stopped;

/// How often the replica records are looked through for down holders.
pub const SCAN_EVERY: Duration = Duration::from_millis(200);
/// How long a member that is not the best candidate waits for the best one to win before it
/// runs itself (the best one may be unable to: partitioned from the others, or dying too),
/// counted from the last change of the best one's answered position (`deferral`).
pub const DEFER: Duration = Duration::from_millis(1500);
/// How long a holder taking a newer epoch of its own waits for the requests in flight at the
/// old one before it closes it ([`take_over_own`]): a write a live quorum answers takes a few ms.
const GATE_GRACE: Duration = Duration::from_millis(100);
/// How long a member may take to answer a state query or a promise request.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs elections for namespaces whose holder is down, until `stopped`. Only with failover
/// on (`--replicas` 3 or more).
pub async fn watch_holders(
    store: Store,
    cluster: Cluster,
    follower: Arc<Follower>,
    mut stopped: watch::Receiver<bool>,
) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Per namespace whose holder is down, whom this node leaves the election to, and since when.
    let deferrals: Arc<Mutex<Deferrals>> = Arc::default();
    // The elections under way: each holds the store, so they end with this loop (an election
    // cut short is a candidate that crashed, which every step allows for).
    let mut elections = tokio::task::JoinSet::new();
    let mut members = cluster.membership().subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            changed = members.changed() => if changed.is_err() { break },
            _ = until_stopped(&mut stopped) => break,
        }
        while elections.try_join_next().is_some() {}
        let orphans = match orphaned(&store, &cluster).await {
            Ok(orphans) => orphans,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the replica records");
                continue;
            }
        };
        deferrals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|ns| orphans.iter().any(|o| o.namespace == ns));
        let fenced = follower
            .replicator()
            .map(|r| r.fenced(DEFER))
            .unwrap_or_default();
        for hold in fenced {
            if !running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hold.namespace.clone())
            {
                tracing::debug!(
                    namespace = hold.namespace,
                    "fenced hold: an election for it is already running"
                );
                continue;
            }
            let (cluster, follower, running) =
                (cluster.clone(), Arc::clone(&follower), Arc::clone(&running));
            let store = store.clone();
            elections.spawn(async move {
                let namespace = hold.namespace.clone();
                take_newer_epoch(&store, &cluster, &follower, hold).await;
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&namespace);
            });
        }
        for orphan in orphans {
            if !running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(orphan.namespace.clone())
            {
                continue;
            }
            let (cluster, follower, running) =
                (cluster.clone(), Arc::clone(&follower), Arc::clone(&running));
            let (store, deferrals) = (store.clone(), Arc::clone(&deferrals));
            elections.spawn(async move {
                let namespace = orphan.namespace.clone();
                run(&store, &cluster, &follower, orphan, &deferrals).await;
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&namespace);
            });
        }
    }
    elections.shutdown().await;
}

/// A namespace this node follows whose holder is down.
#[derive(Clone, Debug)]
struct Orphan {
    namespace: String,
    /// The map's record of the down holder, replaced only if the map still has it.
    record: HolderRecord,
    /// The replica set the down holder last sent: the election counts votes in it.
    set: Vec<NodeId>,
    /// That set's version (`ReplicaState::set_version`).
    set_version: LogPosition,
    /// The holder this node's replica record names: the down holder, or the member that
    /// passed the namespace to it (see [`handed_to_a_member`]).
    followed: NodeId,
}

/// Whether the map's holder `holder` (at `map_epoch`) got the namespace from the holder this
/// record follows (a handoff, or a promotion), being itself a member of the record's set, so
/// that its set is the same members: it starts its epoch from the set it was told
/// (`Replicator::stored_set`). If it dies before its first append reaches this node, this
/// node still names the previous holder, yet an election in the record's set is as safe as
/// one after a direct failover: whatever the new holder acknowledged is on a majority of the
/// same members. The previous holder itself (its record names itself) may run too: it may
/// have the longest log.
fn handed_to_a_member(state: &ReplicaState, me: &str, holder: &str, map_epoch: u64) -> bool {
    let own_epoch = state.epoch_start.map_or(state.position.epoch, |start| {
        start.epoch.max(state.position.epoch)
    });
    state.holder != holder
        && state.replicas.first() == Some(&state.holder)
        && state.replicas.iter().any(|n| n == holder)
        && state.replicas.iter().any(|n| n == me)
        && map_epoch > own_epoch
}

/// The namespaces this node follows whose holder (by the map, and the one this node last took
/// appends from) is down and not under a strict pin there, with a set that can elect without it.
async fn orphaned(store: &Store, cluster: &Cluster) -> Result<Vec<Orphan>, String> {
    let view = cluster.view();
    let me = cluster.me();
    let map = cluster.map_state();
    // Only a namespace whose holder is another node this view holds down can be orphaned. When
    // no holder record names one (the usual case), the replica records are not read: reading
    // them every `SCAN_EVERY` would make a follower commit its open batch of appends for the read.
    let down_elsewhere = |holder: &NodeId| holder != me && !view.alive.contains(holder);
    let any_holder_down = map.read(|m| m.holders().any(|(_, r)| down_elsewhere(&r.holder)));
    if !any_holder_down {
        return Ok(Vec::new());
    }
    let records = crate::blocking::read(store, |s| s.replicas())
        .await
        .map_err(|e| e.to_string())?;
    Ok(records
        .into_iter()
        .filter_map(|(namespace, state)| {
            let record = cluster.holder(&namespace)?;
            // A strict pin keeps the namespace on its down holder; any other pin names the
            // preferred holder, which gets it back once it returns.
            let pinned_there = map.read(|m| {
                m.pin(&namespace).is_some_and(|p| {
                    p.strict && p.target.as_deref() == Some(record.holder.as_str())
                })
            });
            let follows_it = state.holder == record.holder
                && state.replicas.first() == Some(&record.holder)
                && state.replicas.iter().skip(1).any(|n| n == me)
                && state.epoch_start.is_none();
            let handed_over = handed_to_a_member(&state, me, &record.holder, record.epoch);
            // A copy with no rows (released, or never fed) has nothing to run with.
            let has_rows = state.position != cfgnode_storage::LogPos::ZERO;
            let orphaned = down_elsewhere(&record.holder)
                && has_rows
                && (follows_it || handed_over)
                && !pinned_there
                && state.replicas.len() >= 3;
            orphaned.then_some(Orphan {
                namespace,
                record,
                set: state.replicas,
                set_version: LogPosition::new(state.set_version.epoch, state.set_version.revision),
                followed: state.holder,
            })
        })
        .collect())
}

/// One try at replacing `orphan`'s holder: pre-vote, election, take-over.
async fn run(
    store: &Store,
    cluster: &Cluster,
    follower: &Follower,
    orphan: Orphan,
    deferrals: &Mutex<Deferrals>,
) {
    let namespace = orphan.namespace.as_str();
    let me = cluster.me().to_string();
    let own = match position(store, namespace).await {
        Ok(position) => position,
        Err(e) => {
            tracing::warn!(namespace, error = %e, "cannot read this replica's position");
            return;
        }
    };
    let others: Vec<NodeId> = {
        let view = cluster.view();
        orphan
            .set
            .iter()
            .filter(|n| **n != me && view.alive.contains(*n))
            .cloned()
            .collect()
    };
    if others.len() + 1 < quorum(orphan.set.len()) {
        return; // Not enough members alive to elect anyone: wait for one to come back.
    }
    let states = ask_all(cluster, &others, |_| PeerRequest::ReplicaState {
        namespace: namespace.to_string(),
    })
    .await;
    let replied = states.iter().filter(|(_, answer)| answer.is_ok()).count();
    if replied + 1 < quorum(orphan.set.len()) {
        // The members this node's view holds alive do not answer it: it is likely the one cut
        // off, and no election could win without them. Its own promise would only fence the
        // holder's epoch on this node, a fence left behind once the cut heals (a history run
        // promised itself three epochs so during a 3 s cut, session 28).
        tracing::debug!(
            namespace,
            replied,
            set = orphan.set.len(),
            "holder down, but too few members answer this node to elect anyone: not running"
        );
        return;
    }
    if let Some(successor) = successor(&states, orphan.record.epoch) {
        // It won already and this node's map has not brought its record yet. Running now would
        // fence it: this node's own promise alone refuses the new holder's appends, and finding
        // its log longer, this node would leave the next try to it, which never runs, since it
        // holds the namespace (a five-node history run stalled for good that way, session 25).
        tracing::debug!(namespace, %successor, "holder down, but a member already holds the namespace at a newer epoch; waiting for its record");
        return;
    }
    // Whether this node has left the election to `member`, answering `position`, for
    // `DEFER` (the clock restarts when either changes: see `deferral`).
    let waited = |member: &str, position: LogPosition| {
        deferrals.lock().unwrap_or_else(|p| p.into_inner()).waited(
            namespace,
            member,
            position,
            Instant::now(),
            DEFER,
        )
    };
    let granted = follower
        .granted_recently(namespace, DEFER)
        .and_then(|candidate| {
            states.iter().find_map(|(node, answer)| {
                state_of(answer)
                    .map(wire_position)
                    .filter(|position| *node == candidate && *position >= own)
                    .map(|position| (candidate.clone(), position))
            })
        });
    if let Some((candidate, position)) = granted
        && !waited(&candidate, position)
    {
        // This node promised that candidate an epoch moments ago, and its log reaches as far
        // as this node's: it wins that election unless another granter has more, and this
        // node's own promise would fence it right after (a history run lost its whole kill
        // window so, session 27: the winner's record named itself from an older epoch, the
        // filter below dropped it, and this node ran at once as the best).
        tracing::debug!(namespace, %candidate, "holder down; this node promised another candidate a new epoch moments ago: leaving it the election");
        return;
    }
    // Only members that follow the same holder (the down one, or the one this node follows
    // when that one passed it on) in a set that can elect may run: a member told another set
    // (a learner, or one the holder never reached) is no candidate.
    let can_run = |state: &WireReplica, node: &str| {
        let same_holder = state.holder == orphan.record.holder
            || (state.holder == orphan.followed && state.replicas.contains(&orphan.record.holder));
        same_holder && state.replicas.len() >= 3 && state.replicas.iter().any(|n| n == node)
    };
    let states: Vec<_> = states
        .into_iter()
        .filter(|(node, answer)| state_of(answer).is_some_and(|s| can_run(s, node)))
        .collect();
    let best = best_candidate(&orphan.set, &me, (orphan.set_version, own), &states);
    if best == me {
        deferrals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(namespace);
    } else {
        let position = states
            .iter()
            .find(|(node, _)| *node == best)
            .and_then(|(_, answer)| state_of(answer))
            .map_or(LogPosition::ZERO, wire_position);
        if !waited(&best, position) {
            // `best` has more of the log (or comes first): give it the first try, and
            // `DEFER` more once its log stops moving (while it moves, its holder is alive).
            tracing::debug!(namespace, %best, best_epoch = position.epoch, best_revision = position.revision, own_epoch = own.epoch, own_revision = own.revision, "holder down; leaving the first try to the member with the most log");
            return;
        }
    }
    let Some(outcome) = elect(store, cluster, follower, &orphan, &me, own, &others, 0).await else {
        count(cluster, "failed");
        return;
    };
    match outcome {
        (epoch, ElectionOutcome::Won { source, .. }) if source == me => {
            match cluster.take_over(namespace, &orphan.record, epoch).await {
                Ok(true) => {
                    count(cluster, "won");
                    tracing::warn!(
                        namespace,
                        down = %orphan.record.holder,
                        epoch,
                        "holder is down: this node took the namespace over"
                    );
                }
                Ok(false) => count(cluster, "failed"),
                Err(e) => {
                    count(cluster, "failed");
                    tracing::warn!(namespace, error = %e, "cannot record the take-over");
                }
            }
        }
        (epoch, ElectionOutcome::Won { source, position }) => {
            count(cluster, "deferred");
            tracing::info!(
                namespace,
                epoch,
                %source,
                source_epoch = position.epoch,
                source_revision = position.revision,
                "a member has more of the log than this node; it runs next"
            );
        }
        (epoch, outcome) => {
            count(cluster, "failed");
            tracing::debug!(namespace, epoch, ?outcome, "election not won");
        }
    }
}

/// Promises a new epoch itself, asks `others` for theirs, and counts. The epoch is above the
/// map's record, this node's own promise and log, and `floor`. `None` when this node cannot
/// promise (its lease from the holder has not run out, or a newer epoch was promised).
#[allow(clippy::too_many_arguments)]
async fn elect(
    store: &Store,
    cluster: &Cluster,
    follower: &Follower,
    orphan: &Orphan,
    me: &str,
    own: LogPosition,
    others: &[NodeId],
    floor: u64,
) -> Option<(u64, ElectionOutcome)> {
    let namespace = orphan.namespace.as_str();
    let state = crate::blocking::read(store, {
        let ns = namespace.to_string();
        move |s| s.replica(&ns)
    })
    .await
    .ok()??;
    let epoch = candidate_epoch(
        orphan.record.epoch.max(floor),
        &RingState {
            promised: state.promised,
            position: own,
        },
    )
    .ok()?;
    if let Err(e) = follower
        .on_promise(me, cluster.holder(namespace), namespace, epoch)
        .await
    {
        tracing::debug!(namespace, epoch, error = %e, "cannot promise the new epoch to itself");
        return None;
    }
    let mut election = Election::new(me.to_string(), epoch, orphan.set.clone(), own);
    let answers = ask_all(cluster, others, |_| PeerRequest::ReplicaPromise {
        namespace: namespace.to_string(),
        epoch,
    })
    .await;
    for (node, answer) in answers {
        match answer {
            Ok(Some(granted)) if counts(&granted, &orphan.set, orphan.set_version) => {
                election.grant(&node, wire_position(&granted));
            }
            Ok(Some(granted)) => {
                // Its holder told it another set, newer or unordered: its promise belongs to
                // that set's elections. Counting it here could let a member left behind by a
                // change of the set (it still holds the old one) win with a member of the new
                // set that lacks writes the new set acknowledged.
                tracing::debug!(namespace, node, replicas = ?granted.replicas, set = ?orphan.set, "a grant from a member of another set is not counted");
            }
            Err(PeerError::Answered(e)) if e.code == codes::ALREADY_PROMISED => {
                election.refuse(&node, epoch)
            }
            Err(PeerError::Answered(e)) if e.code == codes::HOLDER_LEASED => {
                election.refuse(&node, 0)
            }
            _ => {}
        }
    }
    Some((epoch, election.outcome()))
}

/// The holder's side of a leftover fence: `hold` is a namespace this node holds, with a member
/// of its set refusing its epoch for [`DEFER`]. If every member that answers still follows this
/// node (none follows a newer holder or holds the namespace itself) and enough answer to make
/// a quorum, this node runs an election above the highest promise among them; its followers
/// promise it without waiting out its own lease (`Follower::on_promise`), its log is the
/// longest, and the take-over records the new epoch, which its streams then carry.
///
/// Why not at once: a candidate may still be winning (its record on the way), and a new
/// election would fence it. Why only with a quorum answering: a holder cut off from its set
/// would fence itself for nothing, and refuse the real successor's appends once the partition
/// heals. Safety rests on the election, as for any candidate.
async fn take_newer_epoch(store: &Store, cluster: &Cluster, follower: &Follower, hold: FencedHold) {
    let namespace = hold.namespace.as_str();
    let me = cluster.me().to_string();
    tracing::debug!(
        namespace,
        epoch = hold.epoch,
        "a member of the set has refused this holder's epoch for a while"
    );
    let record = match cluster.holder(namespace) {
        Some(r) if r.holder == me && r.epoch == hold.epoch => r,
        other => {
            // It moved on meanwhile.
            tracing::debug!(namespace, epoch = hold.epoch, record = ?other, "a fenced hold this node no longer has at that epoch");
            return;
        }
    };
    let own = match position(store, namespace).await {
        Ok(position) => position,
        Err(e) => {
            tracing::warn!(namespace, error = %e, "cannot read this replica's position");
            return;
        }
    };
    let others: Vec<NodeId> = hold.set.iter().filter(|n| **n != me).cloned().collect();
    let states = ask_all(cluster, &others, |_| PeerRequest::ReplicaState {
        namespace: namespace.to_string(),
    })
    .await;
    let Some(fence) = leftover_fence(&states, &me, record.epoch, hold.set.len()) else {
        tracing::debug!(
            namespace,
            epoch = record.epoch,
            "a member refuses this holder's epoch, but it is no leftover fence (a newer holder, or too few answers)"
        );
        return;
    };
    tracing::warn!(
        namespace,
        epoch = record.epoch,
        fence,
        "members promised a newer epoch that nobody took: this holder runs for one above it"
    );
    let orphan = Orphan {
        namespace: namespace.to_string(),
        record: record.clone(),
        set: hold.set,
        set_version: hold.set_version,
        followed: me.clone(),
    };
    let answered: Vec<NodeId> = states
        .iter()
        .filter(|(_, answer)| answer.is_ok())
        .map(|(node, _)| node.clone())
        .collect();
    let Some((epoch, outcome)) = elect(
        store, cluster, follower, &orphan, &me, own, &answered, fence,
    )
    .await
    else {
        count(cluster, "failed");
        return;
    };
    match outcome {
        ElectionOutcome::Won { source, .. } if source == me => {
            match take_over_own(cluster, follower, namespace, &record, epoch).await {
                Ok(true) => {
                    count(cluster, "won");
                    tracing::warn!(
                        namespace,
                        epoch,
                        "this holder took a newer epoch above a leftover fence"
                    );
                }
                Ok(false) => count(cluster, "failed"),
                Err(e) => {
                    count(cluster, "failed");
                    tracing::warn!(namespace, error = %e, "cannot record the newer epoch");
                }
            }
        }
        outcome => {
            count(cluster, "failed");
            tracing::debug!(
                namespace,
                epoch,
                ?outcome,
                "the holder's election was not won"
            );
        }
    }
}

/// [`Cluster::take_over`] of a namespace this node holds, at the newer `epoch` it won. The
/// take-over waits for the requests holding the namespace's gate; when they still hold it after
/// [`GATE_GRACE`] (they wait for a quorum of the fenced epoch, which may never come), the old
/// epoch is closed so that they answer `no_quorum` and let go (`Replicator::close_epoch`).
/// The take-over keeps its place at the gate meanwhile: requests that come later queue behind it.
async fn take_over_own(
    cluster: &Cluster,
    follower: &Follower,
    namespace: &str,
    record: &HolderRecord,
    epoch: u64,
) -> Result<bool, cfgnode_storage::StoreError> {
    let take = cluster.take_over(namespace, record, epoch);
    tokio::pin!(take);
    tokio::select! {
        taken = &mut take => return taken,
        _ = tokio::time::sleep(GATE_GRACE) => {}
    }
    let _closing = match follower.replicator() {
        Some(replicator) => Some(replicator.close_epoch(namespace, record.epoch).await),
        None => None,
    };
    tracing::debug!(
        namespace,
        epoch = record.epoch,
        "requests waiting on the fenced epoch held the take-over: closed it"
    );
    take.await
}

/// Whether the members' answers (`states`, from the set of `set_len` members other than this
/// holder `me`) show a leftover fence over `epoch`, this node's epoch: enough answered to make
/// a quorum with this node, no record among them follows another holder at this epoch or a
/// newer one, and one promised a newer epoch. Answers the highest promise (the new election
/// runs above it). Pure.
fn leftover_fence(
    states: &[(NodeId, Result<Option<WireReplica>, PeerError>)],
    me: &str,
    epoch: u64,
    set_len: usize,
) -> Option<u64> {
    let answered: Vec<&WireReplica> = states.iter().filter_map(|(_, a)| state_of(a)).collect();
    let replied = states.iter().filter(|(_, a)| a.is_ok()).count();
    // A member following another holder at this epoch or later shows a successor; one whose
    // record names an older holder (a former holder that lost its elections, still naming
    // itself) shows nothing newer than this node.
    let newer_holder = |s: &&WireReplica| s.holder != me && s.position.epoch >= epoch;
    if replied + 1 < quorum(set_len) || answered.iter().any(newer_holder) {
        return None;
    }
    answered
        .iter()
        .map(|s| s.promised)
        .max()
        .filter(|promised| *promised > epoch)
}

/// The member that answers it holds the namespace itself at an epoch above the map's record
/// of the down holder (`map_epoch`), if any: the election already has a winner. Pure.
///
/// Its log's epoch tells, not its promise: a winner begins its epoch (`begin_epoch`) before it
/// names itself holder in its record, while a former holder that ran and lost still names
/// itself from its old epoch with a newer promise. Taking the promise for a win made every
/// other member wait for that loser, which itself waited for them (a history run stalled for
/// good that way, session 27).
fn successor(
    states: &[(NodeId, Result<Option<WireReplica>, PeerError>)],
    map_epoch: u64,
) -> Option<NodeId> {
    states.iter().find_map(|(node, answer)| match answer {
        Ok(Some(state)) if state.holder == *node && state.position.epoch > map_epoch => {
            Some(node.clone())
        }
        _ => None,
    })
}

/// A member's state from its answer: `None` when it did not answer or has no copy. Pure.
fn state_of(answer: &Result<Option<WireReplica>, PeerError>) -> Option<&WireReplica> {
    answer.as_ref().ok().and_then(Option::as_ref)
}

/// Whether a grant counts towards a quorum of the candidate's `set`, of version `version`: the
/// granter (a member of `set`, the only ones asked) was told the same members, or a set older
/// than the candidate's. Pure.
///
/// Why an older set's grant is safe to count (docs/replication.md, "Set versions"). a
/// candidate told a set has, in its own log, every write acknowledged before its holder
/// switched to that set (the first append of a set is built after the switch, and brings the
/// follower up to the holder's log then). Every write acknowledged after the switch is on a
/// majority of that set's members. So any majority of the members, whatever set each was last
/// told, holds every acknowledged write between the candidate and them, and the election takes
/// the longest log among them. The other way round is not safe: a candidate told an older set
/// lacks the guarantee, and a newer set's writes need not be on a majority of its members.
fn counts(granted: &WireReplica, set: &[NodeId], version: LogPosition) -> bool {
    same_members(&granted.replicas, set) || set_version(granted) < version
}

/// Whether a granter's set (`theirs`, as its holder last told it) is the candidate's set, as
/// members (the order differs when the namespace passed from one member to another). A
/// granter that was never told a set (no record before the promise) belongs to no other
/// election and counts. Pure.
fn same_members(theirs: &[NodeId], ours: &[NodeId]) -> bool {
    if theirs.is_empty() {
        return true;
    }
    let mut a: Vec<&NodeId> = theirs.iter().collect();
    let mut b: Vec<&NodeId> = ours.iter().collect();
    a.sort_unstable();
    b.sort_unstable();
    a.dedup();
    b.dedup();
    a == b
}

/// Sends `request(node)` to every node at once; each answer is the replica state it carried.
async fn ask_all(
    cluster: &Cluster,
    nodes: &[NodeId],
    request: impl Fn(&str) -> PeerRequest,
) -> Vec<(NodeId, Result<Option<WireReplica>, PeerError>)> {
    let mut asks = tokio::task::JoinSet::new();
    for node in nodes {
        let Some(addr) = cluster.addr_of(node) else {
            continue;
        };
        let (cluster, node, request) = (cluster.clone(), node.clone(), request(node));
        asks.spawn(async move {
            let answer = cluster.peers().call(addr, request, ASK_TIMEOUT).await;
            let state = match answer {
                Ok(Response::Peer(PeerResponse::Replica(state))) => Ok(state),
                Ok(other) => Err(PeerError::Unreachable(format!(
                    "unexpected answer: {other:?}"
                ))),
                Err(e) => Err(e),
            };
            (node, state)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers
}

/// The member of `set` that should run first: the one told the newest set (only it can count
/// the others' grants, see [`counts`]), then the highest position, among this node (`own`: its
/// set version and position) and the members that answered; the earliest in the set's order on
/// a tie. Pure.
fn best_candidate(
    set: &[NodeId],
    me: &str,
    own: (LogPosition, LogPosition),
    states: &[(NodeId, Result<Option<WireReplica>, PeerError>)],
) -> NodeId {
    let position_of = |node: &str| -> Option<(LogPosition, LogPosition)> {
        if node == me {
            return Some(own);
        }
        states
            .iter()
            .find(|(n, _)| n == node)
            .and_then(|(_, answer)| state_of(answer))
            .map(|state| (set_version(state), wire_position(state)))
    };
    let mut best: Option<(&NodeId, (LogPosition, LogPosition))> = None;
    // The holder (first in the set) is down: it does not answer, so it is never chosen.
    for node in set {
        if let Some(position) = position_of(node)
            && best.is_none_or(|(_, top)| position > top)
        {
            best = Some((node, position));
        }
    }
    best.map_or_else(|| me.to_string(), |(node, _)| node.clone())
}

async fn position(store: &Store, namespace: &str) -> Result<LogPosition, String> {
    let ns = namespace.to_string();
    let position = crate::blocking::read(store, move |s| s.position(&ns))
        .await
        .map_err(|e| e.to_string())?;
    Ok(LogPosition::new(position.epoch, position.revision))
}

/// The version of the set a member's answer names.
fn set_version(state: &WireReplica) -> LogPosition {
    LogPosition::new(state.set_version.epoch, state.set_version.revision)
}

fn wire_position(state: &WireReplica) -> LogPosition {
    LogPosition::new(state.position.epoch, state.position.revision)
}

fn count(cluster: &Cluster, outcome: &'static str) {
    cluster
        .metrics()
        .elections
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfgnode_transport::WireLogPosition;

    fn state(epoch: u64, revision: u64) -> Result<Option<WireReplica>, PeerError> {
        Ok(Some(WireReplica {
            promised: epoch,
            position: WireLogPosition { epoch, revision },
            holder: "h".to_string(),
            replicas: vec![],
            set_version: WireLogPosition {
                epoch: 0,
                revision: 0,
            },
        }))
    }

    /// A member's answer: told `replicas` at set version `(1, version)`, its log at `(1, 10)`.
    fn told(replicas: &[&str], version: u64) -> WireReplica {
        WireReplica {
            promised: 1,
            position: WireLogPosition {
                epoch: 1,
                revision: 10,
            },
            holder: "h".to_string(),
            replicas: replicas.iter().map(|n| n.to_string()).collect(),
            set_version: WireLogPosition {
                epoch: 1,
                revision: version,
            },
        }
    }

    fn set() -> Vec<NodeId> {
        ["h", "a", "b", "c"].map(String::from).to_vec()
    }

    #[test]
    fn a_member_holding_at_a_newer_epoch_is_the_successor() {
        let holding = |node: &str, epoch: u64| {
            let mut answer = state(epoch, 20).expect("ok").expect("some");
            answer.holder = node.to_string();
            (node.to_string(), Ok(Some(answer)))
        };
        let following = |node: &str, epoch: u64| (node.to_string(), state(epoch, 20));
        // The map still names the down holder at epoch 1; `b` won epoch 2 already.
        let states = vec![following("a", 1), holding("b", 2)];
        assert_eq!(successor(&states, 1), Some("b".to_string()));
        // A member naming itself holder at the map's epoch (or older) is no successor, nor is
        // a follower at a newer epoch, nor a member that did not answer.
        let states = vec![
            holding("a", 1),
            following("b", 2),
            ("c".to_string(), Err(PeerError::Unreachable("down".into()))),
        ];
        assert_eq!(successor(&states, 1), None);
        // A former holder that ran and lost: it names itself from its old epoch 1, with a
        // promise of 9 from its own elections. It holds nothing newer than the map's epoch 2.
        let mut loser = state(1, 20).expect("ok").expect("some");
        loser.holder = "a".to_string();
        loser.promised = 9;
        let states = vec![("a".to_string(), Ok(Some(loser))), following("b", 2)];
        assert_eq!(successor(&states, 2), None);
    }

    #[test]
    fn a_leftover_fence_is_one_every_answering_member_of_this_holder_shows() {
        // Members that follow holder "h" at epoch 2, with their promise.
        let follows = |node: &str, holder: &str, promised: u64| {
            let mut answer = state(2, 20).expect("ok").expect("some");
            answer.holder = holder.to_string();
            answer.promised = promised;
            (node.to_string(), Ok(Some(answer)))
        };
        let silent = |node: &str| (node.to_string(), Err(PeerError::Unreachable("cut".into())));
        // Both followers promised epoch 3 (or one 3, one 4) and still follow h: run above 4.
        let states = vec![follows("a", "h", 3), follows("b", "h", 4)];
        assert_eq!(leftover_fence(&states, "h", 2, 3), Some(4));
        // One fenced follower is enough to tell, with a quorum answering.
        let states = vec![follows("a", "h", 3), silent("b")];
        assert_eq!(leftover_fence(&states, "h", 2, 3), Some(3));
        // Not when a member follows another holder (a successor took the namespace) ...
        let states = vec![follows("a", "h", 3), follows("b", "b", 3)];
        assert_eq!(leftover_fence(&states, "h", 2, 3), None);
        // ... nor when too few answer to make a quorum (this holder may be the cut-off one) ...
        let states = vec![follows("a", "h", 3), silent("b"), silent("c"), silent("d")];
        assert_eq!(leftover_fence(&states, "h", 2, 5), None);
        // ... nor when nobody promised above this holder's epoch.
        let states = vec![follows("a", "h", 2), follows("b", "h", 2)];
        assert_eq!(leftover_fence(&states, "h", 2, 3), None);
        // A former holder that lost its elections still names itself from epoch 1 with its
        // own promise of 9: it shows no newer holder, and its promise is the fence.
        let mut loser = state(1, 20).expect("ok").expect("some");
        loser.holder = "a".to_string();
        loser.promised = 9;
        let states = vec![("a".to_string(), Ok(Some(loser))), follows("b", "h", 9)];
        assert_eq!(leftover_fence(&states, "h", 2, 3), Some(9));
    }

    /// A record following `holder` (or held, with `start`) at epoch 4 in the set `g, r, x`.
    fn record(holder: &str, start: Option<u64>) -> ReplicaState {
        ReplicaState {
            promised: 4,
            position: cfgnode_storage::LogPos::new(4, 10),
            epoch_start: start.map(|e| cfgnode_storage::LogPos::new(e, 8)),
            holder: holder.to_string(),
            replicas: ["g", "r", "x"].map(String::from).to_vec(),
            set_version: cfgnode_storage::LogPos::ZERO,
        }
    }

    #[test]
    fn only_grants_from_the_same_members_count() {
        let ids = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(same_members(&ids(&["h", "a", "b"]), &ids(&["h", "a", "b"])));
        assert!(
            same_members(&ids(&["a", "h", "b"]), &ids(&["h", "a", "b"])),
            "order"
        );
        assert!(same_members(&[], &ids(&["h", "a", "b"])), "told no set");
        // A member of the set that replaced this one, or a learner told the larger set.
        assert!(!same_members(
            &ids(&["h", "a", "c"]),
            &ids(&["h", "a", "x"])
        ));
        assert!(!same_members(
            &ids(&["h", "a", "b", "l"]),
            &ids(&["h", "a", "b"])
        ));
    }

    /// The removal step of docs/replication.md, "Set versions": {h, a, b, c} (version 5)
    /// became {h, a, c} (version 9); c was told, a was not yet, and h died. c's election
    /// counts a's grant (a member of c's set, told an older set); a's election does not count
    /// c's (told a newer one), nor does anyone count a grant of an unordered set.
    #[test]
    fn grants_from_members_told_an_older_set_count_and_newer_ones_do_not() {
        let ids = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let new_set = ids(&["h", "a", "c"]);
        let old_set = ids(&["h", "a", "b", "c"]);
        let v = |revision| LogPosition::new(1, revision);
        assert!(counts(&told(&["h", "a", "b", "c"], 5), &new_set, v(9)));
        assert!(!counts(&told(&["h", "a", "c"], 9), &old_set, v(5)));
        // The same members count whatever the versions (as before set versions).
        assert!(counts(&told(&["h", "a", "c"], 5), &new_set, v(9)));
        assert!(counts(&told(&["a", "h", "c"], 12), &new_set, v(9)));
        // Another set at the same version (a learner told the larger set) is not ordered.
        assert!(!counts(&told(&["h", "a", "c", "l"], 9), &new_set, v(9)));
        // A record from before set versions (zero) counts only with the same members, and a
        // candidate of zero counts no other set.
        assert!(!counts(
            &told(&["h", "a", "c"], 0),
            &old_set,
            LogPosition::ZERO
        ));
        // An older epoch's set is older, whatever its revision.
        let mut earlier = told(&["h", "a", "b", "c"], 500);
        earlier.set_version.epoch = 0;
        assert!(counts(&earlier, &new_set, v(9)));
    }

    /// The member told the newest set runs first (only it can count the others), before one
    /// with as much log told an older set.
    #[test]
    fn the_member_told_the_newest_set_runs_first() {
        let set = ["h", "a", "c"].map(String::from).to_vec();
        let a = ("a".to_string(), Ok(Some(told(&["h", "a", "b", "c"], 5))));
        let own = (LogPosition::new(1, 9), LogPosition::new(1, 10));
        assert_eq!(
            best_candidate(&set, "c", own, std::slice::from_ref(&a)),
            "c"
        );
        let c = ("c".to_string(), Ok(Some(told(&["h", "a", "c"], 9))));
        let own = (LogPosition::new(1, 5), LogPosition::new(1, 10));
        assert_eq!(best_candidate(&set, "a", own, &[c]), "c");
    }

    #[test]
    fn a_namespace_passed_to_a_member_of_the_set_can_be_elected_without_it() {
        // x follows g; the map names r at epoch 5: r got it from g (a handoff or an election).
        assert!(handed_to_a_member(&record("g", None), "x", "r", 5));
        // g itself, the previous holder, may run too.
        assert!(handed_to_a_member(&record("g", Some(4)), "g", "r", 5));
        // Not when the map's holder is outside the set (its set may be other members) ...
        assert!(!handed_to_a_member(&record("g", None), "x", "z", 5));
        // ... nor when the map is not newer than what this record follows ...
        assert!(!handed_to_a_member(&record("g", None), "x", "r", 4));
        // ... nor when this node already follows the map's holder (the plain failover) ...
        assert!(!handed_to_a_member(&record("r", None), "x", "r", 5));
        // ... nor when this node is not in the set.
        assert!(!handed_to_a_member(&record("g", None), "q", "r", 5));
    }

    #[test]
    fn the_member_with_the_most_log_runs_first_and_ties_go_in_set_order() {
        let others = vec![
            ("b".to_string(), state(2, 10)),
            ("c".to_string(), state(2, 9)),
        ];
        // b has more than a.
        assert_eq!(
            best_candidate(
                &set(),
                "a",
                (LogPosition::ZERO, LogPosition::new(2, 8)),
                &others
            ),
            "b"
        );
        // A tie between a and b: a comes first in the set.
        assert_eq!(
            best_candidate(
                &set(),
                "a",
                (LogPosition::ZERO, LogPosition::new(2, 10)),
                &others
            ),
            "a"
        );
        assert_eq!(
            best_candidate(
                &set(),
                "b",
                (LogPosition::ZERO, LogPosition::new(2, 10)),
                &[("a".to_string(), state(2, 10))]
            ),
            "a"
        );
        // A newer epoch beats a higher revision.
        assert_eq!(
            best_candidate(
                &set(),
                "c",
                (LogPosition::ZERO, LogPosition::new(3, 1)),
                &others
            ),
            "c"
        );
        // Members that did not answer are not chosen.
        let silent = vec![("b".to_string(), Err(PeerError::Unreachable("x".into())))];
        assert_eq!(
            best_candidate(
                &set(),
                "a",
                (LogPosition::ZERO, LogPosition::new(1, 1)),
                &silent
            ),
            "a"
        );
    }
}
