//! Simulations of the cluster protocol's pure parts, with event orders chosen by proptest.
//!
//! The simulated nodes only exchange [`Update`]s: a node authors a change on its own
//! [`ClusterMap`], and the update is then "in flight" to every other node, to be delivered in
//! any order, duplicated, lost, or carried over later by anti-entropy (one node applying all of
//! another's `updates()`).
//!
//! A second gossip simulation adds an adversary that forges updates (epochs above
//! [`MAX_EPOCH`], far ahead of anything known, or small and plausible): there every delivery
//! goes through `apply_plausible`, as the node merges what peers send, and the refusal rule is
//! written out again in [`Cluster::apply`].
//!
//! The merge order the protocol promises (higher epoch, then higher holder id for holder
//! records; higher epoch, then author, then target for pins and claims) is written out again
//! here in [`rank`], independently of the crate's `supersedes`, so that a change of the crate's
//! order makes these tests fail rather than merely agree with itself.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use cfgnode_ring::{
    ClusterMap, CommitError, DEFAULT_VNODES, Directive, Handoff, HandoffStep, HolderRecord, Intent,
    MAX_EPOCH, MAX_EPOCH_JUMP, NodeId, Placement, Reason, Ring, Route, Update, UpdateKind,
    desired_owner, handoff_target, route,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// The namespaces the simulations play with.
const NAMESPACES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The handoff steps in their only valid order.
const ORDER: [HandoffStep; 5] = [
    HandoffStep::Offered,
    HandoffStep::Copied,
    HandoffStep::Frozen,
    HandoffStep::CaughtUp,
    HandoffStep::Committed,
];

fn node_ids(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// The version order of one fact, as the protocol specifies it (see the module docs).
fn rank(update: &Update) -> (u64, NodeId, Option<NodeId>) {
    match update {
        Update::Holder { record, .. } => (record.epoch, record.holder.clone(), None),
        Update::Pin { directive, .. } | Update::Claim { directive, .. } => (
            directive.epoch,
            directive.author.clone(),
            directive.target.clone(),
        ),
    }
}

/// What `map` currently knows about the fact (`namespace`, `kind`), as an update.
fn current(map: &ClusterMap, namespace: &str, kind: UpdateKind) -> Option<Update> {
    let namespace = namespace.to_string();
    match kind {
        UpdateKind::Holder => map.holder(&namespace).map(|record| Update::Holder {
            record: record.clone(),
            namespace,
        }),
        UpdateKind::Pin => map.pin(&namespace).map(|directive| Update::Pin {
            directive: directive.clone(),
            namespace,
        }),
        UpdateKind::Claim => map.claim(&namespace).map(|directive| Update::Claim {
            directive: directive.clone(),
            namespace,
        }),
    }
}

/// A simulated cluster: one map per node, the messages in flight, and what each node has been
/// given so far.
struct Cluster {
    ids: Vec<NodeId>,
    maps: Vec<ClusterMap>,
    /// (receiver, update), in no meaningful order: events pick one by index.
    in_flight: Vec<(usize, Update)>,
    /// Every update each node has applied (delivered, authored or pulled by anti-entropy).
    applied: Vec<HashSet<Update>>,
    /// Every update any node authored, in order (and, with an adversary, every forged update
    /// some node accepted: from then on it is a fact like any other).
    authored: Vec<Update>,
    /// Whether deliveries go through `apply_plausible` (the adversary simulation).
    checked: bool,
    /// Every update the adversary forged.
    forged: HashSet<Update>,
}

impl Cluster {
    fn new(ids: Vec<NodeId>) -> Cluster {
        let n = ids.len();
        Cluster {
            ids,
            maps: vec![ClusterMap::new(); n],
            in_flight: Vec::new(),
            applied: vec![HashSet::new(); n],
            authored: Vec::new(),
            checked: false,
            forged: HashSet::new(),
        }
    }

    /// A cluster whose nodes merge what they receive with `apply_plausible`.
    fn checked(ids: Vec<NodeId>) -> Cluster {
        Cluster {
            checked: true,
            ..Cluster::new(ids)
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Applies `update` at node `to` and checks `apply` against the protocol's order: it
    /// changes the map exactly when the update is newer than what the node knew, the map then
    /// holds the newer of the two, and anything the node was already given changes nothing.
    ///
    /// In a checked cluster, also checks the refusal rule: an update is refused exactly when
    /// its epoch is above `MAX_EPOCH` or more than `MAX_EPOCH_JUMP` ahead of the fact's known
    /// epoch (0 when unknown); a refused update changes nothing, and no honest update is ever
    /// refused.
    fn apply(&mut self, to: usize, update: Update) -> Result<bool, TestCaseError> {
        let map = &mut self.maps[to];
        let before = current(map, update.namespace(), update.kind());
        if self.checked {
            let known = before.as_ref().map_or(0, |b| rank(b).0);
            let epoch = rank(&update).0;
            let implausible = epoch > MAX_EPOCH || epoch > known.saturating_add(MAX_EPOCH_JUMP);
            let snapshot = map.clone();
            match map.apply_plausible(update.clone()) {
                Err(refusal) => {
                    prop_assert!(implausible, "{update:?} refused over {before:?}: {refusal}");
                    let reason = if epoch > MAX_EPOCH {
                        "above_maximum"
                    } else {
                        "too_far_ahead"
                    };
                    prop_assert_eq!(refusal.reason(), reason, "{}", refusal);
                    prop_assert!(
                        self.forged.contains(&update),
                        "an honest update was refused: {update:?}"
                    );
                    prop_assert_eq!(&*map, &snapshot, "a refused update changed the map");
                    return Ok(false);
                }
                Ok(changed) => {
                    prop_assert!(!implausible, "{update:?} accepted over {before:?}");
                    // Undo, to check the merge below like any other delivery.
                    *map = snapshot;
                    let _ = changed;
                }
            }
        }
        let newer = before.as_ref().is_none_or(|b| rank(&update) > rank(b));
        let changed = map.apply(update.clone());
        if changed && self.forged.contains(&update) && !self.authored.contains(&update) {
            self.authored.push(update.clone());
        }
        prop_assert_eq!(
            changed,
            newer,
            "apply({:?}) at {} over {:?}",
            &update,
            &self.ids[to],
            &before
        );
        if self.applied[to].contains(&update) {
            prop_assert!(!changed, "re-delivery of {update:?} changed the map");
        }
        let after = current(map, update.namespace(), update.kind());
        let expected = if newer { Some(update.clone()) } else { before };
        prop_assert_eq!(after, expected);
        self.applied[to].insert(update);
        Ok(changed)
    }

    /// Node `node` writes `update` on its own map (it must be new there) and sends it to
    /// every other node.
    fn author(&mut self, node: usize, update: Update) -> Result<(), TestCaseError> {
        prop_assert!(
            self.apply(node, update.clone())?,
            "an authored update is new to its author: {update:?}"
        );
        for other in (0..self.len()).filter(|o| *o != node) {
            self.in_flight.push((other, update.clone()));
        }
        self.authored.push(update);
        Ok(())
    }

    /// Delivers the in-flight message at `pick`; with `duplicate`, a copy stays in flight to
    /// arrive again later.
    fn deliver(&mut self, pick: Index, duplicate: bool) -> Result<(), TestCaseError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let i = pick.index(self.in_flight.len());
        let (to, update) = if duplicate {
            self.in_flight[i].clone()
        } else {
            self.in_flight.swap_remove(i)
        };
        self.apply(to, update)?;
        Ok(())
    }

    /// Loses the in-flight message at `pick`.
    fn drop_message(&mut self, pick: Index) {
        if !self.in_flight.is_empty() {
            let i = pick.index(self.in_flight.len());
            self.in_flight.swap_remove(i);
        }
    }

    /// Anti-entropy: `to` applies everything `from` knows.
    fn sync(&mut self, from: usize, to: usize) -> Result<(), TestCaseError> {
        for update in self.maps[from].updates() {
            self.apply(to, update)?;
        }
        Ok(())
    }

    /// Checks that two nodes' digests are equal exactly when their maps are.
    fn check_digests(&self) -> Result<(), TestCaseError> {
        for a in 0..self.len() {
            for b in 0..self.len() {
                prop_assert_eq!(
                    self.maps[a] == self.maps[b],
                    self.maps[a].digest() == self.maps[b].digest(),
                    "digests of {} and {}",
                    &self.ids[a],
                    &self.ids[b]
                );
            }
        }
        Ok(())
    }

    /// A full anti-entropy round: every node pulls from every other node in turn. Afterwards
    /// every node has seen everything (the last puller passes its full map on to everyone).
    fn repair(&mut self) -> Result<(), TestCaseError> {
        for from in 0..self.len() {
            for to in (0..self.len()).filter(|t| *t != from) {
                self.sync(from, to)?;
            }
        }
        Ok(())
    }

    /// The nodes whose own map names them holder of `namespace`.
    fn self_holders(&self, namespace: &str) -> Vec<usize> {
        (0..self.len())
            .filter(|n| {
                self.maps[*n]
                    .holder(namespace)
                    .is_some_and(|r| r.holder == self.ids[*n])
            })
            .collect()
    }

    /// Checks that every node has the same map and digest, equal to the newest version of
    /// every fact ever authored (by the protocol's order), and that neither stale in-flight
    /// messages nor re-deliveries of anything already applied change any map.
    fn check_converged(&mut self) -> Result<(), TestCaseError> {
        let mut newest: BTreeMap<(String, UpdateKind), Update> = BTreeMap::new();
        for update in &self.authored {
            let key = (update.namespace().to_string(), update.kind());
            match newest.get(&key) {
                Some(known) if rank(known) >= rank(update) => {}
                _ => {
                    newest.insert(key, update.clone());
                }
            }
        }
        let first = self.maps[0].clone();
        for (n, map) in self.maps.iter().enumerate() {
            prop_assert_eq!(
                map,
                &first,
                "{} differs from {}",
                &self.ids[n],
                &self.ids[0]
            );
            prop_assert_eq!(map.digest(), first.digest());
        }
        prop_assert_eq!(first.len(), newest.len());
        for ((namespace, kind), update) in &newest {
            prop_assert_eq!(current(&first, namespace, *kind), Some(update.clone()));
        }
        // Late copies of anything still in flight are stale now.
        for (to, update) in std::mem::take(&mut self.in_flight) {
            prop_assert!(!self.apply(to, update)?, "a late message changed a map");
        }
        // Re-delivering anything a node was ever given changes nothing.
        for node in 0..self.len() {
            let given: Vec<Update> = self.applied[node].iter().cloned().collect();
            for update in given {
                prop_assert!(!self.apply(node, update)?, "a re-delivery changed a map");
            }
        }
        Ok(())
    }
}

/// One event of the gossip simulation. Indexes are resolved against the current number of
/// nodes, namespaces or in-flight messages.
#[derive(Clone, Debug)]
enum Event {
    /// `author` writes the next version of a pin or claim on its own map.
    Direct {
        author: Index,
        ns: Index,
        pin: bool,
        target: Option<Index>,
    },
    /// `node` creates the namespace (`{holder: node, epoch: 1}`) if its own map has no record
    /// of it. Two nodes may do so concurrently.
    Create { node: Index, ns: Index },
    /// One of the nodes whose own map names it holder passes the namespace to `to`.
    PassOn { giver: Index, ns: Index, to: Index },
    /// Deliver one in-flight message.
    Deliver(Index),
    /// Deliver one in-flight message and keep a copy in flight.
    Duplicate(Index),
    /// Lose one in-flight message.
    Drop(Index),
    /// Anti-entropy: `to` applies all of `from`'s updates.
    Sync { from: Index, to: Index },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (any::<Index>(), any::<Index>(), any::<bool>(), proptest::option::of(any::<Index>()))
            .prop_map(|(author, ns, pin, target)| Event::Direct { author, ns, pin, target }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(node, ns)| Event::Create { node, ns }),
        2 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(giver, ns, to)| Event::PassOn { giver, ns, to }),
        5 => any::<Index>().prop_map(Event::Deliver),
        1 => any::<Index>().prop_map(Event::Duplicate),
        1 => any::<Index>().prop_map(Event::Drop),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Event::Sync { from, to }),
    ]
}

fn run_gossip_event(cluster: &mut Cluster, event: &Event) -> Result<(), TestCaseError> {
    let n = cluster.len();
    match event {
        Event::Direct {
            author,
            ns,
            pin,
            target,
        } => {
            let author = author.index(n);
            let namespace = NAMESPACES[ns.index(NAMESPACES.len())].to_string();
            let map = &cluster.maps[author];
            let known = if *pin {
                map.pin(&namespace)
            } else {
                map.claim(&namespace)
            };
            let directive = Directive::next(
                known,
                target.map(|t| cluster.ids[t.index(n)].clone()),
                cluster.ids[author].clone(),
            )
            .map_err(|e| TestCaseError::fail(format!("honest epochs never run out: {e}")))?;
            let update = if *pin {
                Update::Pin {
                    namespace,
                    directive,
                }
            } else {
                Update::Claim {
                    namespace,
                    directive,
                }
            };
            cluster.author(author, update)?;
        }
        Event::Create { node, ns } => {
            let node = node.index(n);
            let namespace = NAMESPACES[ns.index(NAMESPACES.len())];
            if cluster.maps[node].holder(namespace).is_none() {
                let update = Update::Holder {
                    namespace: namespace.into(),
                    record: HolderRecord {
                        holder: cluster.ids[node].clone(),
                        epoch: 1,
                    },
                };
                cluster.author(node, update)?;
            }
        }
        Event::PassOn { giver, ns, to } => {
            let namespace = NAMESPACES[ns.index(NAMESPACES.len())];
            let holders = cluster.self_holders(namespace);
            if holders.is_empty() {
                return Ok(());
            }
            let giver = holders[giver.index(holders.len())];
            let to = to.index(n);
            if to == giver {
                return Ok(());
            }
            let record = cluster.maps[giver]
                .holder(namespace)
                .expect("a self-holder has a record")
                .passed_to(cluster.ids[to].clone())
                .map_err(|e| TestCaseError::fail(format!("honest epochs never run out: {e}")))?;
            cluster.author(
                giver,
                Update::Holder {
                    namespace: namespace.into(),
                    record,
                },
            )?;
        }
        Event::Deliver(pick) => cluster.deliver(*pick, false)?,
        Event::Duplicate(pick) => cluster.deliver(*pick, true)?,
        Event::Drop(pick) => cluster.drop_message(*pick),
        Event::Sync { from, to } => cluster.sync(from.index(n), to.index(n))?,
    }
    Ok(())
}

/// The highest epoch any honest fact reaches in the adversary simulation (at most one per
/// event, and forged plausible epochs are below 8): forged "leaps" start far above it.
const HONEST_CEILING: u64 = 1_000;

/// An epoch the adversary forges: above the maximum, the maximum itself, a leap far ahead of
/// anything honest nodes know, or a small plausible one (which honest nodes must merge like any
/// other fact, and still converge).
fn forged_epoch() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => (MAX_EPOCH + 1)..=u64::MAX,
        1 => Just(u64::MAX),
        1 => Just(MAX_EPOCH),
        2 => (MAX_EPOCH_JUMP + HONEST_CEILING)..(MAX_EPOCH_JUMP + HONEST_CEILING + 10),
        2 => 0u64..8,
    ]
}

/// One event of the adversary simulation.
#[derive(Clone, Debug)]
enum AdversaryEvent {
    /// Anything honest nodes do (see [`Event`]).
    Honest(Event),
    /// The adversary sends one forged update to `to`: a holder record, pin or claim (by `kind`)
    /// naming an honest node or `mallory`.
    Forge {
        to: Index,
        ns: Index,
        kind: u8,
        epoch: u64,
        who: Option<Index>,
    },
}

fn adversary_event() -> impl Strategy<Value = AdversaryEvent> {
    prop_oneof![
        3 => event().prop_map(AdversaryEvent::Honest),
        1 => (any::<Index>(), any::<Index>(), 0..3u8, forged_epoch(), proptest::option::of(any::<Index>()))
            .prop_map(|(to, ns, kind, epoch, who)| AdversaryEvent::Forge { to, ns, kind, epoch, who }),
    ]
}

/// Puts a forged update in flight to one honest node.
fn forge(cluster: &mut Cluster, to: &Index, ns: &Index, kind: u8, epoch: u64, who: &Option<Index>) {
    let n = cluster.len();
    let namespace = NAMESPACES[ns.index(NAMESPACES.len())].to_string();
    let who = who.map_or_else(
        || "mallory".to_string(),
        |w| cluster.ids[w.index(n)].clone(),
    );
    let directive = Directive {
        target: Some(who.clone()),
        epoch,
        author: "mallory".into(),
    };
    let update = match kind {
        0 => Update::Holder {
            namespace,
            record: HolderRecord { holder: who, epoch },
        },
        1 => Update::Pin {
            namespace,
            directive,
        },
        _ => Update::Claim {
            namespace,
            directive,
        },
    };
    cluster.forged.insert(update.clone());
    cluster.in_flight.push((to.index(n), update));
}

/// Checks that no node holds an epoch only the adversary could have written (above the
/// honest ceiling: every such forgery must have been refused).
fn check_no_implausible_epoch(cluster: &Cluster) -> Result<(), TestCaseError> {
    for (n, map) in cluster.maps.iter().enumerate() {
        for update in map.updates() {
            prop_assert!(
                update.epoch() < HONEST_CEILING,
                "{} holds {:?}",
                &cluster.ids[n],
                update
            );
        }
    }
    Ok(())
}

/// One event of the handoff simulation (a single namespace).
#[derive(Clone, Debug)]
enum HandoffEvent {
    /// The node that believes it holds the namespace hands it to `to`.
    Pass { to: Index },
    /// Deliver one in-flight message.
    Deliver(Index),
    /// Deliver one in-flight message and keep a copy in flight.
    Duplicate(Index),
    /// Lose one in-flight message.
    Drop(Index),
    /// Anti-entropy: `to` applies all of `from`'s updates.
    Sync { from: Index, to: Index },
}

fn handoff_event() -> impl Strategy<Value = HandoffEvent> {
    prop_oneof![
        2 => any::<Index>().prop_map(|to| HandoffEvent::Pass { to }),
        5 => any::<Index>().prop_map(HandoffEvent::Deliver),
        1 => any::<Index>().prop_map(HandoffEvent::Duplicate),
        1 => any::<Index>().prop_map(HandoffEvent::Drop),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| HandoffEvent::Sync { from, to }),
    ]
}

/// The holder epoch each node knows for `namespace` (0 for none).
fn known_epochs(cluster: &Cluster, namespace: &str) -> Vec<u64> {
    cluster
        .maps
        .iter()
        .map(|m| m.holder(namespace).map_or(0, |r| r.epoch))
        .collect()
}

/// A strategy for a handoff: an attempt is either "the right next step" (`None`) or any step.
fn handoff_attempt() -> impl Strategy<Value = Option<HandoffStep>> {
    prop_oneof![
        2 => Just(None),
        1 => proptest::sample::select(ORDER.to_vec()).prop_map(Some),
    ]
}

/// An update of a random fact for the decision test: holder record, pin or claim of one of
/// `NAMESPACES`, by and about nodes `0..n`.
fn fact(n: usize) -> impl Strategy<Value = Update> {
    (
        0..NAMESPACES.len(),
        0..3u8,
        1u64..4,
        0..n,
        proptest::option::of(0..n),
    )
        .prop_map(|(ns, kind, epoch, who, target)| {
            let namespace = NAMESPACES[ns].to_string();
            let ids = node_ids(6);
            let directive = Directive {
                target: target.map(|t| ids[t].clone()),
                epoch,
                author: ids[who].clone(),
            };
            match kind {
                0 => Update::Holder {
                    namespace,
                    record: HolderRecord {
                        holder: ids[who].clone(),
                        epoch,
                    },
                },
                1 => Update::Pin {
                    namespace,
                    directive,
                },
                _ => Update::Claim {
                    namespace,
                    directive,
                },
            }
        })
}

/// Inputs of the decision test: node count, facts, alive mask, each node's order of learning
/// the members, and each node's order of receiving the facts (every fact twice).
type DecisionCase = (usize, Vec<Update>, u64, Vec<Vec<usize>>, Vec<Vec<usize>>);

/// One node's decisions on one namespace: the desired owner, the route of (Read, Write) for
/// each node in id order, and each node's handoff target.
type Decisions = (Option<Placement>, Vec<Route>, Vec<Option<NodeId>>);

fn decision_case() -> impl Strategy<Value = DecisionCase> {
    (3usize..=6)
        .prop_flat_map(|n| (Just(n), vec(fact(n), 0..16), 0u64..(1 << n)))
        .prop_flat_map(|(n, facts, alive_mask)| {
            let m = facts.len();
            let member_order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let fact_order =
                Just((0..2 * m).map(|i| i % m.max(1)).collect::<Vec<_>>()).prop_shuffle();
            (
                Just(n),
                Just(facts),
                Just(alive_mask),
                vec(member_order, n),
                vec(fact_order, n),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Gossip convergence. N nodes (3..6) author pin/claim changes with `Directive::next` on
    /// their own maps, create namespaces (epoch 1, possibly concurrently) and pass namespaces
    /// on (only a node whose own map names it holder). Updates are delivered in a random order,
    /// duplicated, lost, and partly carried by random anti-entropy. Checks at every delivery
    /// that `apply` reports a change exactly when the update is newer by the protocol's order
    /// (so re-deliveries return false); before repair, that digests differ exactly when maps
    /// do; and at the end, after one anti-entropy round, that all maps and digests are equal
    /// and hold the newest version of every authored fact, and that late or repeated
    /// deliveries of anything already applied return false.
    #[test]
    fn gossip_with_loss_and_duplication_converges_after_anti_entropy(
        n in 3usize..=6,
        events in vec(event(), 1..200),
    ) {
        let mut cluster = Cluster::new(node_ids(n));
        for event in &events {
            run_gossip_event(&mut cluster, event)?;
        }
        cluster.check_digests()?;
        cluster.repair()?;
        cluster.check_converged()?;
    }

    /// Gossip under an adversary. As the gossip convergence test, with an adversary that sends
    /// forged updates to random nodes: epochs above `MAX_EPOCH`, `u64::MAX`, `MAX_EPOCH`
    /// itself, leaps more than `MAX_EPOCH_JUMP` ahead of anything known, and small plausible
    /// ones. Every node merges what it receives with `apply_plausible`. Checks at every
    /// delivery that exactly the implausible updates are refused (by the rule written out
    /// again in `Cluster::apply`), that a refusal changes nothing and never hits an honest
    /// update; after every event, that no node holds a forged high epoch; and at the end, once
    /// the forgeries still in flight arrived and after anti-entropy, that all maps are equal and hold the newest version of every
    /// fact authored or accepted.
    #[test]
    fn gossip_with_an_adversary_refuses_implausible_epochs_and_converges(
        n in 3usize..=6,
        events in vec(adversary_event(), 1..200),
    ) {
        let mut cluster = Cluster::checked(node_ids(n));
        for event in &events {
            match event {
                AdversaryEvent::Honest(event) => run_gossip_event(&mut cluster, event)?,
                AdversaryEvent::Forge { to, ns, kind, epoch, who } => {
                    forge(&mut cluster, to, ns, *kind, *epoch, who);
                }
            }
            check_no_implausible_epoch(&cluster)?;
        }
        cluster.check_digests()?;
        // The adversary's last messages arrive (a plausible one still in flight would be news
        // after convergence, as any unsent update would).
        let (forged, honest): (Vec<_>, Vec<_>) = std::mem::take(&mut cluster.in_flight)
            .into_iter()
            .partition(|(_, update)| cluster.forged.contains(update));
        cluster.in_flight = honest;
        for (to, update) in forged {
            cluster.apply(to, update)?;
        }
        cluster.repair()?;
        check_no_implausible_epoch(&cluster)?;
        cluster.check_converged()?;
    }

    /// Handoff safety. One namespace, created by its desired owner, then handed along a random
    /// chain of holders: the giver runs a `Handoff` to commit, writes its `commit_record` on its
    /// own map, and the record reaches the other nodes (the receiver included) in a random
    /// order, possibly duplicated, lost or carried by anti-entropy. With no concurrent creation,
    /// checks after EVERY event that at most one node routes requests to itself
    /// (`Route::Serve`), that such a node has the newest record ever written, and that no
    /// node's known holder epoch ever decreases. At the end, after anti-entropy, exactly the
    /// last receiver serves, at epoch 1 + the number of handoffs.
    #[test]
    fn handoff_chains_never_have_two_serving_nodes(
        n in 3usize..=6,
        events in vec(handoff_event(), 1..200),
    ) {
        let namespace = "ns";
        let mut cluster = Cluster::new(node_ids(n));
        let alive: BTreeSet<NodeId> = cluster.ids.iter().cloned().collect();
        let ring = Ring::new(&alive, DEFAULT_VNODES);
        let placement = desired_owner(namespace, &ring, &alive, None, None);
        let creator_id = placement.as_ref().expect("members are alive").owner.clone();
        let creator = cluster.ids.iter().position(|id| *id == creator_id).expect("a member");
        let routes = |cluster: &Cluster| -> Vec<Route> {
            (0..cluster.len())
                .map(|i| {
                    route(&cluster.ids[i], namespace, &cluster.maps[i], placement.as_ref(), &alive, Intent::Write)
                })
                .collect()
        };
        // Before anything exists, exactly the desired owner creates; the others forward to it.
        for (i, r) in routes(&cluster).into_iter().enumerate() {
            let expected = if i == creator {
                Route::Create
            } else {
                Route::Forward { to: creator_id.clone(), epoch: 0 }
            };
            prop_assert_eq!(r, expected);
        }
        cluster.author(creator, Update::Holder {
            namespace: namespace.into(),
            record: HolderRecord { holder: creator_id.clone(), epoch: 1 },
        })?;
        let mut last_holder = creator;
        let mut handoffs = 0u64;
        let mut epochs = known_epochs(&cluster, namespace);

        for event in &events {
            match event {
                HandoffEvent::Pass { to } => {
                    let holders = cluster.self_holders(namespace);
                    let to = to.index(n);
                    if let [giver] = holders[..]
                        && giver != to
                    {
                        let record = cluster.maps[giver].holder(namespace).cloned().expect("held");
                        let mut handoff = Handoff::new(record, cluster.ids[to].clone());
                        for step in &ORDER[..4] {
                            handoff.advance(*step).expect("steps in order");
                        }
                        let committed = handoff.commit_record().expect("caught up");
                        cluster.author(giver, Update::Holder {
                            namespace: namespace.into(),
                            record: committed,
                        })?;
                        handoff.advance(HandoffStep::Committed).expect("commit");
                        last_holder = to;
                        handoffs += 1;
                    }
                }
                HandoffEvent::Deliver(pick) => cluster.deliver(*pick, false)?,
                HandoffEvent::Duplicate(pick) => cluster.deliver(*pick, true)?,
                HandoffEvent::Drop(pick) => cluster.drop_message(*pick),
                HandoffEvent::Sync { from, to } => cluster.sync(from.index(n), to.index(n))?,
            }

            let serving: Vec<usize> = routes(&cluster)
                .iter()
                .enumerate()
                .filter(|(_, r)| **r == Route::Serve)
                .map(|(i, _)| i)
                .collect();
            prop_assert!(serving.len() <= 1, "{:?} all serve after {:?}", serving, event);
            let newest = cluster.authored.last().expect("created").clone();
            for i in serving {
                prop_assert_eq!(current(&cluster.maps[i], namespace, UpdateKind::Holder), Some(newest.clone()));
            }
            let now = known_epochs(&cluster, namespace);
            for (node, (before, after)) in epochs.iter().zip(&now).enumerate() {
                prop_assert!(after >= before, "node {} went from epoch {} to {}", node, before, after);
            }
            epochs = now;
        }

        cluster.repair()?;
        for (i, r) in routes(&cluster).iter().enumerate() {
            let expected = if i == last_holder {
                Route::Serve
            } else {
                Route::Forward { to: cluster.ids[last_holder].clone(), epoch: 1 + handoffs }
            };
            prop_assert_eq!(r, &expected);
        }
        cluster.check_converged()?;
    }

    /// Concurrent creation. Two nodes (of 3..6, with arbitrary ids) each create an epoch-1
    /// record for the same new namespace before hearing of the other's. Whatever the delivery
    /// order (with duplicates), every node ends up naming the creator with the higher id as
    /// holder, the other creator stops serving, and all maps are equal.
    #[test]
    fn concurrent_creations_resolve_to_the_higher_holder_id(
        ids in proptest::collection::btree_set("[a-z]{1,3}", 3..=6),
        creators in (any::<Index>(), any::<Index>()),
        deliveries in vec((any::<Index>(), any::<bool>()), 0..40),
    ) {
        let ids: Vec<NodeId> = ids.into_iter().collect();
        let n = ids.len();
        let (x, y) = (creators.0.index(n), creators.1.index(n));
        prop_assume!(x != y);
        let mut cluster = Cluster::new(ids);
        for creator in [x, y] {
            let holder = cluster.ids[creator].clone();
            cluster.author(creator, Update::Holder {
                namespace: "new".into(),
                record: HolderRecord { holder, epoch: 1 },
            })?;
        }
        for (pick, duplicate) in &deliveries {
            cluster.deliver(*pick, *duplicate)?;
        }
        while let Some((to, update)) = cluster.in_flight.pop() {
            cluster.apply(to, update)?;
        }
        let winner = cluster.ids[x].clone().max(cluster.ids[y].clone());
        for map in &cluster.maps {
            prop_assert_eq!(map.holder("new"), Some(&HolderRecord { holder: winner.clone(), epoch: 1 }));
        }
        let holders: Vec<&NodeId> = cluster.self_holders("new").into_iter().map(|i| &cluster.ids[i]).collect();
        prop_assert_eq!(holders, vec![&winner]);
        cluster.check_converged()?;
    }

    /// The `Handoff` state machine. Random attempts (biased towards the right next step):
    /// `advance` succeeds exactly when the step is the next of Offered, Copied, Frozen,
    /// CaughtUp, Committed (nothing after Committed) and leaves the handoff unchanged
    /// otherwise; `commit_record` succeeds only right after CaughtUp, with the record passed to
    /// the receiver at the next epoch; `holds_writes` is true exactly after Frozen and before
    /// Committed.
    #[test]
    fn handoff_steps_succeed_exactly_in_order(
        epoch in 1u64..1000,
        attempts in vec(handoff_attempt(), 0..24),
    ) {
        let record = HolderRecord { holder: "giver".into(), epoch };
        let mut handoff = Handoff::new(record.clone(), "receiver".into());
        let mut done = 0usize;
        for attempt in attempts {
            let step = attempt.unwrap_or(ORDER[done.min(ORDER.len() - 1)]);
            let before = handoff.clone();
            let expected_ok = done < ORDER.len() && step == ORDER[done];
            match handoff.advance(step) {
                Ok(()) => {
                    prop_assert!(expected_ok, "{:?} accepted after {:?}", step, before.done);
                    done += 1;
                }
                Err(e) => {
                    prop_assert!(!expected_ok, "{:?} refused after {:?}", step, before.done);
                    prop_assert_eq!(&handoff, &before);
                    prop_assert_eq!(e.attempted, step);
                    prop_assert_eq!(e.done, before.done);
                }
            }
            prop_assert_eq!(handoff.done, done.checked_sub(1).map(|i| ORDER[i]));
            prop_assert_eq!(handoff.record.clone(), record.clone());
            match handoff.commit_record() {
                Ok(next) => {
                    prop_assert_eq!(done, 4, "commit_record after {:?}", handoff.done);
                    prop_assert_eq!(next, HolderRecord { holder: "receiver".into(), epoch: epoch + 1 });
                }
                Err(CommitError::OutOfOrder(e)) => {
                    prop_assert_ne!(done, 4, "commit_record refused after CaughtUp");
                    prop_assert_eq!(e.attempted, HandoffStep::Committed);
                    prop_assert_eq!(e.done, handoff.done);
                }
                Err(e @ CommitError::Epoch(_)) => {
                    return Err(TestCaseError::fail(format!("epoch {epoch} cannot run out: {e}")));
                }
            }
            prop_assert_eq!(handoff.holds_writes(), done == 3 || done == 4);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Equal decisions. N nodes (3..6) each receive the same facts (holder records, pins,
    /// claims, every one twice) in their own random order, and learn the members in their own
    /// random order. Checks that their maps are equal, and that for every namespace they all
    /// compute the same `desired_owner` (which honours pin > live claim > ring) and the same
    /// `route` and `handoff_target` for every node and intent; a held namespace is served by
    /// exactly its holder (the only node with a handoff target: the desired owner, when another
    /// live node), and a new one is created by exactly its desired owner.
    #[test]
    fn equal_maps_and_members_give_equal_decisions(case in decision_case()) {
        let (n, facts, alive_mask, member_orders, fact_orders) = case;
        let ids = node_ids(n);
        let alive: BTreeSet<NodeId> =
            (0..n).filter(|i| alive_mask & (1 << i) != 0).map(|i| ids[i].clone()).collect();
        let mut views: Vec<(ClusterMap, Ring)> = Vec::new();
        for (members, order) in member_orders.iter().zip(&fact_orders) {
            let mut map = ClusterMap::new();
            for i in order {
                map.apply(facts[*i].clone());
            }
            let learned: Vec<NodeId> = members
                .iter()
                .map(|i| ids[*i].clone())
                .filter(|id| alive.contains(id))
                .collect();
            views.push((map, Ring::new(&learned, DEFAULT_VNODES)));
        }
        let (map0, _) = &views[0];
        for (map, _) in &views {
            prop_assert_eq!(map, map0);
            prop_assert_eq!(map.digest(), map0.digest());
        }

        for namespace in NAMESPACES.iter().copied().chain(["fresh"]) {
            let decisions: Vec<Decisions> = views
                .iter()
                .map(|(map, ring)| {
                    let placement = desired_owner(namespace, ring, &alive, map.pin(namespace), map.claim(namespace));
                    let mut routes = Vec::new();
                    let mut targets = Vec::new();
                    for me in &ids {
                        for intent in [Intent::Read, Intent::Write] {
                            routes.push(route(me, namespace, map, placement.as_ref(), &alive, intent));
                        }
                        targets.push(handoff_target(me, namespace, map, placement.as_ref(), &alive));
                    }
                    (placement, routes, targets)
                })
                .collect();
            for d in &decisions {
                prop_assert_eq!(d, &decisions[0]);
            }

            let (placement, routes, targets) = &decisions[0];
            let pin = map0.pin(namespace).and_then(|d| d.target.clone());
            let claim = map0.claim(namespace).and_then(|d| d.target.clone()).filter(|c| alive.contains(c));
            match (placement, pin, claim) {
                (Some(p), Some(pin), _) => prop_assert_eq!(p, &Placement { owner: pin, reason: Reason::Pin }),
                (Some(p), None, Some(claim)) => prop_assert_eq!(p, &Placement { owner: claim, reason: Reason::Claim }),
                (Some(p), None, None) => {
                    prop_assert_eq!(p.reason, Reason::Ring);
                    prop_assert!(alive.contains(&p.owner));
                }
                (None, pin, claim) => {
                    prop_assert!(pin.is_none() && claim.is_none() && alive.is_empty());
                }
            }
            // Only the holder hands over, and only to a live desired owner other than itself.
            for (me, target) in ids.iter().zip(targets) {
                let expected = map0
                    .holder(namespace)
                    .filter(|r| r.holder == *me)
                    .and(placement.as_ref())
                    .map(|p| p.owner.clone())
                    .filter(|owner| owner != me && alive.contains(owner));
                prop_assert_eq!(target, &expected);
            }
            // routes holds (Read, Write) per node, in `ids` order.
            let writes: Vec<&Route> = routes.iter().skip(1).step_by(2).collect();
            match map0.holder(namespace) {
                Some(record) => {
                    let serving: Vec<&NodeId> = ids.iter().zip(&writes).filter(|(_, r)| matches!(r, Route::Serve)).map(|(id, _)| id).collect();
                    prop_assert_eq!(serving, vec![&record.holder]);
                }
                None => {
                    let creating: Vec<&NodeId> = ids.iter().zip(&writes).filter(|(_, r)| matches!(r, Route::Create)).map(|(id, _)| id).collect();
                    let expected: Vec<&NodeId> = placement.iter().map(|p| &p.owner).collect();
                    prop_assert_eq!(creating, expected);
                }
            }
        }
    }
}
