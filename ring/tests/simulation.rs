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
    ClusterMap, Commit, CommitDecision, CommitError, DEFAULT_VNODES, Directive, Handoff,
    HandoffStep, HolderRecord, Intent, MAX_EPOCH, MAX_EPOCH_JUMP, NodeId, Offer, Placement, Reason,
    Receiver, Receiving, Refusal, Ring, Route, Update, UpdateKind, check_offer, desired_owner,
    handoff_target, route,
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
        strict: epoch.is_multiple_of(2),
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
                strict: !epoch.is_multiple_of(2),
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
    /// compute the same `desired_owner` (which honours strict or live pin > live claim > ring) and the same
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
            // A pin that is not strict counts only while its target is alive, as a claim does.
            let pin = map0
                .pin(namespace)
                .filter(|d| d.strict || d.target.as_ref().is_some_and(|t| alive.contains(t)))
                .and_then(|d| d.target.clone());
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

// ---- the receiving side of handoffs ---------------------------------------------------------

/// The namespace the receive simulation moves around.
const MOVED: &str = "moved";

/// A handoff in progress in the receive simulation, as its giver runs it.
#[derive(Clone, Debug)]
struct Run {
    giver: usize,
    to: usize,
    steps: Handoff,
}

/// A cluster whose nodes judge handoff requests with the crate's receiving rule, and model the
/// rest of what a node does (its copy's revision, durable records, gossip).
struct ReceiveSim {
    cluster: Cluster,
    alive: BTreeSet<NodeId>,
    /// Each node's table of accepted offers (the rule's state).
    receiving: Vec<Receiving>,
    /// Each node's accepted offer as the simulation itself tracks it from the protocol (giver,
    /// epoch), to check the rule's answers against.
    expected: Vec<Option<(usize, u64)>>,
    /// The revision of each node's copy of the namespace (`None`: no copy).
    store: Vec<Option<u64>>,
    /// Writes acknowledged so far; the serving copy must have exactly this revision.
    writes: u64,
    /// Fault injection per node: refuse every commit.
    refuse_commits: Vec<bool>,
    run: Option<Run>,
    /// Epoch -> the node whose commit at that epoch was taken.
    committed: BTreeMap<u64, usize>,
    /// Every commit that was answered yes: (receiver, commit), to send again later.
    acked: Vec<(usize, Commit)>,
}

/// One node's state the rule may change: its map, its table, its copy.
type NodeSnapshot = (ClusterMap, Receiving, Option<u64>);

impl ReceiveSim {
    /// `n` nodes; the namespace's desired owner created it (with one write), and every node
    /// learned that record.
    fn new(n: usize) -> Result<ReceiveSim, TestCaseError> {
        let mut cluster = Cluster::new(node_ids(n));
        let alive: BTreeSet<NodeId> = cluster.ids.iter().cloned().collect();
        let ring = Ring::new(&alive, DEFAULT_VNODES);
        let owner = desired_owner(MOVED, &ring, &alive, None, None)
            .expect("members are alive")
            .owner;
        let creator = cluster
            .ids
            .iter()
            .position(|id| *id == owner)
            .expect("a member");
        cluster.author(
            creator,
            Update::Holder {
                namespace: MOVED.into(),
                record: HolderRecord {
                    holder: owner,
                    epoch: 1,
                },
            },
        )?;
        cluster.repair()?;
        let mut store = vec![None; n];
        store[creator] = Some(1);
        Ok(ReceiveSim {
            cluster,
            alive,
            receiving: vec![Receiving::new(); n],
            expected: vec![None; n],
            store,
            writes: 1,
            refuse_commits: vec![false; n],
            run: None,
            committed: BTreeMap::new(),
            acked: Vec::new(),
        })
    }

    fn at(&self, node: usize) -> Receiver<'_> {
        Receiver {
            me: &self.cluster.ids[node],
            map: &self.cluster.maps[node],
            alive: &self.alive,
        }
    }

    fn snapshot(&self, node: usize) -> NodeSnapshot {
        (
            self.cluster.maps[node].clone(),
            self.receiving[node].clone(),
            self.store[node],
        )
    }

    fn record(&self, node: usize) -> Option<HolderRecord> {
        self.cluster.maps[node].holder(MOVED).cloned()
    }

    fn holds(&self, node: usize) -> bool {
        self.record(node)
            .is_some_and(|r| r.holder == self.cluster.ids[node])
    }

    /// Whether `node` is a giver whose namespace is frozen (it serves nothing meanwhile).
    fn frozen(&self, node: usize) -> bool {
        self.run.as_ref().is_some_and(|run| {
            run.giver == node && run.steps.done.is_some_and(|d| d >= HandoffStep::Frozen)
        })
    }

    /// The nodes that serve the namespace: they hold it by their own map and are not frozen.
    fn serving(&self) -> Vec<usize> {
        (0..self.cluster.len())
            .filter(|n| self.holds(*n) && !self.frozen(*n))
            .collect()
    }

    /// The offer epoch the expected table holds for `node`, else its known holder epoch.
    fn epoch_at(&self, node: usize) -> u64 {
        self.expected[node]
            .map(|(_, e)| e)
            .or_else(|| self.record(node).map(|r| r.epoch))
            .unwrap_or(0)
    }

    /// Checks that a refused request changed nothing at `node`.
    fn unchanged(
        &self,
        node: usize,
        before: &NodeSnapshot,
        what: &str,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            &self.snapshot(node) == before,
            "a refused {} changed {}",
            what,
            &self.cluster.ids[node]
        );
        Ok(())
    }

    /// `from` offers the namespace at `epoch` to `to`. Checks the rule against the protocol
    /// (taken exactly when `to` is not giving it, does not hold it, and knows `{from, epoch}`);
    /// a taken offer writes the giver's record at `to` and fills its table.
    fn offer(&mut self, from: usize, to: usize, epoch: u64) -> Result<bool, TestCaseError> {
        let giver = self.cluster.ids[from].clone();
        let still_giving = self.run.as_ref().is_some_and(|r| r.giver == to);
        let before = self.snapshot(to);
        let offer = Offer {
            giver: giver.clone(),
            epoch,
        };
        let decision = check_offer(&self.at(to), still_giving, MOVED, &offer);
        let known = self.record(to);
        let expected_ok = !still_giving
            && !self.holds(to)
            && match &known {
                Some(r) => r.holder == giver && r.epoch == epoch,
                None => epoch == 1 && from != to,
            };
        prop_assert_eq!(
            decision.is_ok(),
            expected_ok,
            "offer {:?} to {} knowing {:?}: {:?}",
            &offer,
            to,
            &known,
            &decision
        );
        match decision {
            Ok(record) => {
                prop_assert_eq!(
                    &record,
                    &HolderRecord {
                        holder: giver,
                        epoch
                    }
                );
                self.cluster.apply(
                    to,
                    Update::Holder {
                        namespace: MOVED.into(),
                        record,
                    },
                )?;
                self.receiving[to].accept(MOVED, offer);
                self.expected[to] = Some((from, epoch));
                Ok(true)
            }
            Err(refusal) => {
                let expected = if still_giving {
                    "StillGiving"
                } else if self.holds(to) {
                    "AlreadyHeld"
                } else {
                    "OfferMismatch"
                };
                prop_assert!(
                    format!("{refusal:?}").starts_with(expected),
                    "{:?}",
                    refusal
                );
                self.unchanged(to, &before, "offer")?;
                Ok(false)
            }
        }
    }

    /// Checks the table answer for a request from `from` at offer epoch `epoch` at `to`: taken
    /// exactly from the accepted giver at its epoch; from anyone else a `WrongSender`, and
    /// otherwise `NotInProgress`.
    fn check_table_answer(
        &self,
        from: usize,
        to: usize,
        epoch: u64,
        answer: Result<(), &Refusal>,
    ) -> Result<(), TestCaseError> {
        match (self.expected[to], answer) {
            (Some(accepted), Ok(())) => prop_assert_eq!(accepted, (from, epoch)),
            (None, Ok(())) => {
                return Err(TestCaseError::fail(format!(
                    "{} took a request without an accepted offer",
                    &self.cluster.ids[to]
                )));
            }
            (Some((giver, _)), Err(refusal)) if giver != from => {
                prop_assert_eq!(
                    refusal,
                    &Refusal::WrongSender {
                        namespace: MOVED.into(),
                        giver: self.cluster.ids[giver].clone(),
                        sender: self.cluster.ids[from].clone(),
                    }
                );
            }
            (accepted, Err(refusal)) => {
                prop_assert_ne!(
                    accepted,
                    Some((from, epoch)),
                    "refused the accepted giver: {}",
                    refusal
                );
                prop_assert_eq!(
                    refusal,
                    &Refusal::NotInProgress {
                        namespace: MOVED.into(),
                        epoch
                    }
                );
            }
        }
        Ok(())
    }

    /// `from` sends a chunk at `epoch` that brings `to`'s copy to `revision`.
    fn chunk(
        &mut self,
        from: usize,
        to: usize,
        epoch: u64,
        revision: u64,
    ) -> Result<bool, TestCaseError> {
        let before = self.snapshot(to);
        let sender = self.cluster.ids[from].clone();
        let answer = self.receiving[to].check_chunk(MOVED, &sender, epoch);
        self.check_table_answer(from, to, epoch, answer.as_ref().map(|_| ()))?;
        if answer.is_ok() {
            self.store[to] = Some(revision);
            Ok(true)
        } else {
            self.unchanged(to, &before, "chunk")?;
            Ok(false)
        }
    }

    /// `from` asks `to` to commit at `epoch` with `revision`; true when answered yes. Checks
    /// the rule's decision against the protocol; that a taken commit is the only one ever
    /// taken at its epoch; and that a refused one changes nothing (in particular, leaves `to`
    /// without the namespace unless it held it before).
    fn commit(
        &mut self,
        from: usize,
        to: usize,
        epoch: u64,
        revision: u64,
    ) -> Result<bool, TestCaseError> {
        let before = self.snapshot(to);
        let held_before = self.holds(to);
        let commit = Commit {
            sender: self.cluster.ids[from].clone(),
            epoch,
            revision,
        };
        let disabled = self.refuse_commits[to];
        let decision = self.receiving[to].check_commit(&self.at(to), disabled, MOVED, &commit);
        let already = self
            .record(to)
            .is_some_and(|r| r.holder == self.cluster.ids[to] && r.epoch >= epoch);
        let outcome = match decision {
            Ok(CommitDecision::AlreadyHolder) => {
                prop_assert!(
                    already,
                    "AlreadyHolder at {} with {:?}",
                    to,
                    self.record(to)
                );
                Ok(None)
            }
            Ok(CommitDecision::CheckRevision(pending)) => {
                prop_assert!(!already && !disabled);
                self.check_table_answer(from, to, epoch.saturating_sub(1), Ok(()))?;
                let have = self.store[to].unwrap_or(0);
                match pending.check_revision(have) {
                    Ok(record) => {
                        prop_assert_eq!(have, revision);
                        Ok(Some(record))
                    }
                    Err(refusal) => {
                        prop_assert_ne!(have, revision);
                        prop_assert_eq!(
                            &refusal,
                            &Refusal::RevisionMismatch {
                                namespace: MOVED.into(),
                                revision,
                                have
                            }
                        );
                        Err(refusal)
                    }
                }
            }
            Err(refusal) => {
                prop_assert!(
                    !already,
                    "{} holds at {:?} but refused: {}",
                    to,
                    self.record(to),
                    refusal
                );
                if disabled {
                    prop_assert_eq!(
                        &refusal,
                        &Refusal::CommitsDisabled {
                            namespace: MOVED.into()
                        }
                    );
                } else {
                    self.check_table_answer(from, to, epoch.saturating_sub(1), Err(&refusal))?;
                }
                Err(refusal)
            }
        };
        match outcome {
            Ok(None) => {
                self.unchanged(to, &before, "repeated commit")?;
                self.acked.push((to, commit));
                Ok(true)
            }
            Ok(Some(record)) => {
                prop_assert_eq!(
                    &record,
                    &HolderRecord {
                        holder: self.cluster.ids[to].clone(),
                        epoch
                    }
                );
                if let Some(other) = self.committed.insert(epoch, to) {
                    return Err(TestCaseError::fail(format!(
                        "{} and {} both committed epoch {epoch}",
                        &self.cluster.ids[other], &self.cluster.ids[to]
                    )));
                }
                self.cluster.author(
                    to,
                    Update::Holder {
                        namespace: MOVED.into(),
                        record,
                    },
                )?;
                self.receiving[to].committed(MOVED);
                self.expected[to] = None;
                self.acked.push((to, commit));
                Ok(true)
            }
            Err(_) => {
                self.unchanged(to, &before, "commit")?;
                prop_assert_eq!(
                    self.holds(to),
                    held_before,
                    "a refused commit made {} holder",
                    to
                );
                Ok(false)
            }
        }
    }

    /// The giver gives up (a refusal): it unfreezes and goes on serving.
    fn abort(&mut self) {
        self.run = None;
    }

    /// The giver takes its run's next step. `lose_answer`: the commit's answer is lost (the
    /// giver stays frozen and asks again); `skip_catch_up`: a faulty giver commits without
    /// sending what changed after its copy.
    fn step(&mut self, lose_answer: bool, skip_catch_up: bool) -> Result<(), TestCaseError> {
        let Some(mut run) = self.run.clone() else {
            return Ok(());
        };
        let (giver, to, epoch) = (run.giver, run.to, run.steps.record.epoch);
        let revision = self.store[giver].unwrap_or(0);
        let taken = match run.steps.done {
            None => self
                .offer(giver, to, epoch)?
                .then_some(HandoffStep::Offered),
            Some(HandoffStep::Offered) => self
                .chunk(giver, to, epoch, revision)?
                .then_some(HandoffStep::Copied),
            Some(HandoffStep::Copied) => Some(HandoffStep::Frozen),
            Some(HandoffStep::Frozen) => (skip_catch_up
                || self.chunk(giver, to, epoch, revision)?)
            .then_some(HandoffStep::CaughtUp),
            Some(HandoffStep::CaughtUp) => {
                let next = run
                    .steps
                    .commit_record()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                // The giver learned the new record by gossip: the receiver took the commit.
                let learned = self.record(giver).as_ref() == Some(&next);
                let acked = learned || self.commit(giver, to, next.epoch, revision)?;
                if !learned && lose_answer {
                    // Unknown outcome: stay frozen, ask again at the next step.
                    return Ok(());
                }
                if !acked {
                    self.abort();
                    return Ok(());
                }
                if self.record(giver).as_ref() != Some(&next) {
                    self.cluster.author(
                        giver,
                        Update::Holder {
                            namespace: MOVED.into(),
                            record: next,
                        },
                    )?;
                }
                self.store[giver] = None;
                Some(HandoffStep::Committed)
            }
            Some(HandoffStep::Committed) => None,
        };
        match taken {
            Some(HandoffStep::Committed) => {
                run.steps
                    .advance(HandoffStep::Committed)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.run = None;
            }
            Some(step) => {
                run.steps
                    .advance(step)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.run = Some(run);
            }
            None => self.abort(),
        }
        Ok(())
    }

    /// The invariants that hold after every event: at most one node serves, and it serves
    /// every acknowledged write.
    fn check(&self, event: &ReceiveEvent) -> Result<(), TestCaseError> {
        let serving = self.serving();
        prop_assert!(
            serving.len() <= 1,
            "{:?} all serve after {:?}",
            serving,
            event
        );
        for node in serving {
            prop_assert_eq!(
                self.store[node],
                Some(self.writes),
                "{} lost writes after {:?}",
                node,
                event
            );
        }
        Ok(())
    }
}

/// One event of the receive simulation.
#[derive(Clone, Debug)]
enum ReceiveEvent {
    /// The node serving the namespace starts handing it to `to` (if no handoff runs).
    Start { to: Index },
    /// The running handoff takes its next step.
    Step {
        lose_answer: bool,
        skip_catch_up: bool,
    },
    /// A client writes through the serving node.
    Write,
    /// A chunk from `from` at an epoch near `to`'s, other than the accepted giver's own.
    StrayChunk { from: Index, to: Index, delta: u64 },
    /// A commit from `from` at an epoch near `to`'s, other than the accepted giver's own.
    StrayCommit {
        from: Index,
        to: Index,
        delta: u64,
        revision: u64,
    },
    /// An offer from `from` that does not match `to`'s record (stale epoch or another giver).
    StaleOffer { from: Index, to: Index, delta: u64 },
    /// A commit answered yes arrives again.
    RepeatCommit(Index),
    /// `node` starts or stops refusing every commit.
    ToggleRefusal(Index),
    /// Deliver one in-flight map update.
    Deliver(Index),
    /// Deliver one and keep a copy in flight.
    Duplicate(Index),
    /// Lose one.
    Drop(Index),
    /// Anti-entropy from one node to another.
    Sync { from: Index, to: Index },
}

fn receive_event() -> impl Strategy<Value = ReceiveEvent> {
    prop_oneof![
        2 => any::<Index>().prop_map(|to| ReceiveEvent::Start { to }),
        8 => (any::<bool>(), proptest::bool::weighted(0.1))
            .prop_map(|(lose_answer, skip_catch_up)| ReceiveEvent::Step { lose_answer, skip_catch_up }),
        3 => Just(ReceiveEvent::Write),
        1 => (any::<Index>(), any::<Index>(), 0u64..3)
            .prop_map(|(from, to, delta)| ReceiveEvent::StrayChunk { from, to, delta }),
        1 => (any::<Index>(), any::<Index>(), 0u64..3, 0u64..20)
            .prop_map(|(from, to, delta, revision)| ReceiveEvent::StrayCommit { from, to, delta, revision }),
        1 => (any::<Index>(), any::<Index>(), 0u64..3)
            .prop_map(|(from, to, delta)| ReceiveEvent::StaleOffer { from, to, delta }),
        1 => any::<Index>().prop_map(ReceiveEvent::RepeatCommit),
        1 => any::<Index>().prop_map(ReceiveEvent::ToggleRefusal),
        3 => any::<Index>().prop_map(ReceiveEvent::Deliver),
        1 => any::<Index>().prop_map(ReceiveEvent::Duplicate),
        1 => any::<Index>().prop_map(ReceiveEvent::Drop),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| ReceiveEvent::Sync { from, to }),
    ]
}

fn run_receive_event(sim: &mut ReceiveSim, event: &ReceiveEvent) -> Result<(), TestCaseError> {
    let n = sim.cluster.len();
    match event {
        ReceiveEvent::Start { to } => {
            let to = to.index(n);
            if sim.run.is_none()
                && let [giver] = sim.serving()[..]
                && giver != to
            {
                let record = sim.record(giver).expect("a holder has a record");
                sim.run = Some(Run {
                    giver,
                    to,
                    steps: Handoff::new(record, sim.cluster.ids[to].clone()),
                });
            }
        }
        ReceiveEvent::Step {
            lose_answer,
            skip_catch_up,
        } => sim.step(*lose_answer, *skip_catch_up)?,
        ReceiveEvent::Write => {
            if let [node] = sim.serving()[..] {
                sim.store[node] = Some(sim.store[node].unwrap_or(0) + 1);
                sim.writes += 1;
            }
        }
        ReceiveEvent::StrayChunk { from, to, delta } => {
            let (from, to) = (from.index(n), to.index(n));
            let epoch = sim.epoch_at(to) + delta;
            if sim.expected[to] != Some((from, epoch)) {
                prop_assert!(!sim.chunk(from, to, epoch, 0)?, "a stray chunk was taken");
            }
        }
        ReceiveEvent::StrayCommit {
            from,
            to,
            delta,
            revision,
        } => {
            let (from, to) = (from.index(n), to.index(n));
            let epoch = sim.epoch_at(to) + delta;
            if sim.expected[to] != Some((from, epoch.saturating_sub(1))) {
                let committed = sim.committed.clone();
                sim.commit(from, to, epoch, *revision)?;
                prop_assert_eq!(&sim.committed, &committed, "a stray commit was taken");
            }
        }
        ReceiveEvent::StaleOffer { from, to, delta } => {
            let (from, to) = (from.index(n), to.index(n));
            let known = sim.record(to).expect("every node learned the creation");
            // delta 0, 1, 2: one epoch behind, the known epoch, one ahead.
            let epoch = (known.epoch + delta).saturating_sub(1);
            if (known.holder.as_str(), known.epoch) != (sim.cluster.ids[from].as_str(), epoch) {
                prop_assert!(!sim.offer(from, to, epoch)?, "a stale offer was taken");
            }
        }
        ReceiveEvent::RepeatCommit(pick) => {
            if !sim.acked.is_empty() {
                let (to, commit) = sim.acked[pick.index(sim.acked.len())].clone();
                let from = sim
                    .cluster
                    .ids
                    .iter()
                    .position(|id| *id == commit.sender)
                    .expect("a member");
                let committed = sim.committed.clone();
                sim.commit(from, to, commit.epoch, commit.revision)?;
                prop_assert_eq!(
                    &sim.committed,
                    &committed,
                    "a repeated commit was taken again"
                );
            }
        }
        ReceiveEvent::ToggleRefusal(node) => {
            let node = node.index(n);
            sim.refuse_commits[node] = !sim.refuse_commits[node];
        }
        ReceiveEvent::Deliver(pick) => sim.cluster.deliver(*pick, false)?,
        ReceiveEvent::Duplicate(pick) => sim.cluster.deliver(*pick, true)?,
        ReceiveEvent::Drop(pick) => sim.cluster.drop_message(*pick),
        ReceiveEvent::Sync { from, to } => sim.cluster.sync(from.index(n), to.index(n))?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The receiving rule under a running cluster. One namespace, created by its desired owner,
    /// is handed along by givers that run the protocol (offer, copy, freeze, catch up, commit,
    /// drop) while clients write, map updates are delivered late, duplicated or lost, commits
    /// are refused by fault injection, commit answers are lost (the giver stays frozen and asks
    /// again), and a faulty giver sometimes skips its catch-up. Stray requests arrive too:
    /// chunks and commits from nodes other than the accepted giver or at other epochs, offers
    /// with a stale epoch or from a node that does not hold the namespace, and repeats of
    /// commits already answered. Every request goes through the crate's rule
    /// (`check_offer`, `Receiving`), whose answers are checked against the protocol written out
    /// again in `ReceiveSim`. Checks: a chunk or commit from anyone but the accepted giver at
    /// its epoch is always refused; no two nodes ever take a commit at the same epoch; a
    /// refused request changes nothing (a refused commit leaves the receiver without the
    /// namespace); after every event at most one node serves, and it has every acknowledged
    /// write. At the end, once the handoff in progress finished and anti-entropy ran, exactly
    /// one node holds the namespace, at epoch 1 + the commits taken, with every write.
    #[test]
    fn handoff_receivers_take_only_the_accepted_giver_and_one_commit_per_epoch(
        n in 2usize..=5,
        events in vec(receive_event(), 1..200),
    ) {
        let mut sim = ReceiveSim::new(n)?;
        let mut epochs = known_epochs(&sim.cluster, MOVED);
        for event in &events {
            run_receive_event(&mut sim, event)?;
            sim.check(event)?;
            let now = known_epochs(&sim.cluster, MOVED);
            for (node, (before, after)) in epochs.iter().zip(&now).enumerate() {
                prop_assert!(after >= before, "node {} went from epoch {} to {}", node, before, after);
            }
            epochs = now;
        }
        // Finish: commits are no longer refused, answers arrive, the giver completes or gives up.
        sim.refuse_commits = vec![false; n];
        for _ in 0..6 {
            sim.step(false, false)?;
        }
        prop_assert!(sim.run.is_none(), "the handoff did not finish: {:?}", sim.run);
        sim.cluster.repair()?;
        let holders = sim.cluster.self_holders(MOVED);
        prop_assert_eq!(holders.len(), 1, "holders {:?}", holders);
        let holder = holders[0];
        prop_assert_eq!(sim.record(holder).map(|r| r.epoch), Some(1 + sim.committed.len() as u64));
        if let Some((_, last)) = sim.committed.last_key_value() {
            prop_assert_eq!(*last, holder);
        }
        prop_assert_eq!(sim.store[holder], Some(sim.writes));
        sim.cluster.check_converged()?;
    }
}
