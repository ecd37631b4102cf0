//! Simulations of the cluster map with randomized event orders (proptest picks the orders):
//!
//! - gossip of directory records, pins and claims delivered in any order, duplicated or lost and
//!   repaired by anti-entropy, leaves every node with the same map (and digest);
//! - during chains of handoffs, no two nodes ever believe they hold a namespace at once, and the
//!   epoch a node knows never goes back;
//! - equal maps and memberships give equal routing decisions on every node.

use std::collections::{BTreeSet, VecDeque};

use cfgnode_ring::{
    ClusterMap, DEFAULT_VNODES, Directive, HolderRecord, Intent, NodeId, Ring, Route, Update,
    desired_owner, route,
};
use proptest::prelude::*;

const NODES: [&str; 4] = ["n0", "n1", "n2", "n3"];
const NAMESPACES: [&str; 3] = ["a", "b", "c"];

/// One thing that can happen in the simulated cluster.
#[derive(Clone, Debug)]
enum Step {
    /// Node `author` sets (or removes, `None`) a pin or claim.
    Directive {
        author: usize,
        ns: usize,
        pin: bool,
        target: Option<usize>,
    },
    /// The node that believes it holds `ns` hands it to `to` (if it holds it).
    HandOff { ns: usize, to: usize },
    /// Deliver the in-flight message at this position (modulo the queue length).
    Deliver(usize),
    /// Deliver it twice.
    Duplicate(usize),
    /// Lose it.
    Drop(usize),
    /// Node `from` sends its whole map to node `to` (anti-entropy).
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0..4usize,
            0..3usize,
            any::<bool>(),
            proptest::option::of(0..4usize)
        )
            .prop_map(|(author, ns, pin, target)| Step::Directive {
                author,
                ns,
                pin,
                target
            }),
        (0..3usize, 0..4usize).prop_map(|(ns, to)| Step::HandOff { ns, to }),
        any::<usize>().prop_map(Step::Deliver),
        any::<usize>().prop_map(Step::Deliver),
        any::<usize>().prop_map(Step::Duplicate),
        any::<usize>().prop_map(Step::Drop),
        (0..4usize, 0..4usize).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Nodes, their maps, and the messages in flight (to, update).
struct Sim {
    maps: Vec<ClusterMap>,
    in_flight: VecDeque<(usize, Update)>,
}

impl Sim {
    /// Every namespace starts held by n0 at epoch 1, known everywhere.
    fn new() -> Sim {
        let mut maps = vec![ClusterMap::new(); NODES.len()];
        for map in &mut maps {
            for ns in NAMESPACES {
                map.apply(Update::Holder {
                    namespace: ns.into(),
                    record: HolderRecord {
                        holder: NODES[0].into(),
                        epoch: 1,
                    },
                });
            }
        }
        Sim {
            maps,
            in_flight: VecDeque::new(),
        }
    }

    /// A node applies its own update and sends it to every other node.
    fn author(&mut self, node: usize, update: Update) {
        assert!(
            self.maps[node].apply(update.clone()),
            "an authored update is new"
        );
        for other in 0..NODES.len() {
            if other != node {
                self.in_flight.push_back((other, update.clone()));
            }
        }
    }

    fn run(&mut self, step: &Step) {
        match step {
            Step::Directive {
                author,
                ns,
                pin,
                target,
            } => {
                let namespace = NAMESPACES[*ns];
                let map = &self.maps[*author];
                let current = if *pin {
                    map.pin(namespace)
                } else {
                    map.claim(namespace)
                };
                let directive = Directive::next(
                    current,
                    target.map(|t| NODES[t].to_string()),
                    NODES[*author].into(),
                );
                let update = if *pin {
                    Update::Pin {
                        namespace: namespace.into(),
                        directive,
                    }
                } else {
                    Update::Claim {
                        namespace: namespace.into(),
                        directive,
                    }
                };
                self.author(*author, update);
            }
            Step::HandOff { ns, to } => {
                let namespace = NAMESPACES[*ns];
                // Only the node whose own map names it holder may pass the record on.
                let giver = (0..NODES.len()).find(|n| {
                    self.maps[*n]
                        .holder(namespace)
                        .is_some_and(|r| r.holder == NODES[*n])
                });
                if let Some(giver) = giver
                    && giver != *to
                {
                    let record = self.maps[giver]
                        .holder(namespace)
                        .cloned()
                        .expect("the giver holds it");
                    let update = Update::Holder {
                        namespace: namespace.into(),
                        record: record.passed_to(NODES[*to].into()),
                    };
                    self.author(giver, update);
                }
            }
            Step::Deliver(i) | Step::Duplicate(i) => {
                if self.in_flight.is_empty() {
                    return;
                }
                let (to, update) = self
                    .in_flight
                    .remove(i % self.in_flight.len())
                    .expect("in range");
                self.maps[to].apply(update.clone());
                assert!(
                    !self.maps[to].apply(update.clone()),
                    "applying an update twice changes nothing the second time"
                );
                if matches!(step, Step::Duplicate(_)) {
                    // A copy arrives again later, out of order.
                    self.in_flight.push_back((to, update));
                }
            }
            Step::Drop(i) => {
                if !self.in_flight.is_empty() {
                    let len = self.in_flight.len();
                    self.in_flight.remove(i % len);
                }
            }
            Step::Sync { from, to } => {
                for update in self.maps[*from].updates() {
                    self.maps[*to].apply(update);
                }
            }
        }
    }

    /// Nodes whose own map names them holder of `ns`.
    fn self_holders(&self, ns: &str) -> Vec<usize> {
        (0..NODES.len())
            .filter(|n| {
                self.maps[*n]
                    .holder(ns)
                    .is_some_and(|r| r.holder == NODES[*n])
            })
            .collect()
    }

    fn epochs(&self) -> Vec<Vec<u64>> {
        self.maps
            .iter()
            .map(|m| {
                NAMESPACES
                    .iter()
                    .map(|ns| m.holder(ns).map_or(0, |r| r.epoch))
                    .collect()
            })
            .collect()
    }

    /// Anti-entropy rounds until nothing changes: every node pulls from every other.
    fn repair(&mut self) {
        for from in 0..NODES.len() {
            for to in 0..NODES.len() {
                let updates = self.maps[from].updates();
                for update in updates {
                    self.maps[to].apply(update);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the order, duplication and loss of gossip, anti-entropy leaves every node with
    /// the same map, and at no moment do two nodes both believe they hold a namespace (holder
    /// records are only passed on by their holder). Epochs a node knows never decrease.
    #[test]
    fn maps_converge_and_a_namespace_never_has_two_self_holders(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let mut sim = Sim::new();
        let mut epochs = sim.epochs();
        for step in &steps {
            sim.run(step);
            for ns in NAMESPACES {
                let holders = sim.self_holders(ns);
                prop_assert!(holders.len() <= 1, "{ns} held by {holders:?} after {step:?}");
            }
            let now = sim.epochs();
            for (before, after) in epochs.iter().zip(&now) {
                for (b, a) in before.iter().zip(after) {
                    prop_assert!(a >= b, "an epoch went back: {before:?} -> {after:?}");
                }
            }
            epochs = now;
        }
        sim.repair();
        let first = &sim.maps[0];
        for map in &sim.maps {
            prop_assert_eq!(map, first);
            prop_assert_eq!(map.digest(), first.digest());
        }
        // After repair exactly one node holds each namespace.
        for ns in NAMESPACES {
            prop_assert_eq!(sim.self_holders(ns).len(), 1);
        }
    }

    /// Two nodes creating the same new namespace at once (epoch 1 each): every node ends up
    /// agreeing on the higher holder id, whatever the delivery order.
    #[test]
    fn concurrent_creations_resolve_the_same_everywhere(order in Just((0..4usize).collect::<Vec<_>>()).prop_shuffle(), creators in (0..4usize, 0..4usize)) {
        let (x, y) = creators;
        prop_assume!(x != y);
        let updates: Vec<Update> = [x, y]
            .iter()
            .map(|n| Update::Holder {
                namespace: "new".into(),
                record: HolderRecord { holder: NODES[*n].into(), epoch: 1 },
            })
            .collect();
        let winner = NODES[x.max(y)];
        for node in order {
            let mut map = ClusterMap::new();
            let seq: Vec<&Update> = if node % 2 == 0 { updates.iter().collect() } else { updates.iter().rev().collect() };
            for u in seq {
                map.apply(u.clone());
            }
            prop_assert_eq!(map.holder("new").map(|r| r.holder.as_str()), Some(winner));
        }
    }

    /// Every node computes the same desired owner and the same route from equal inputs,
    /// whatever order it learned the members in.
    #[test]
    fn equal_inputs_give_equal_decisions(
        members in Just(NODES.to_vec()).prop_shuffle(),
        alive_mask in 1u8..16,
        namespace in "[a-z]{1,8}",
        pin in proptest::option::of(0..4usize),
        claim in proptest::option::of(0..4usize),
    ) {
        let alive: BTreeSet<NodeId> = members
            .iter()
            .enumerate()
            .filter(|(i, _)| alive_mask & (1 << i) != 0)
            .map(|(_, m)| m.to_string())
            .collect();
        let mut reversed: Vec<&NodeId> = alive.iter().collect();
        reversed.reverse();
        let ring_a = Ring::new(&alive, DEFAULT_VNODES);
        let ring_b = Ring::new(reversed, DEFAULT_VNODES);
        let directive = |t: Option<usize>| t.map(|t| Directive { target: Some(NODES[t].into()), epoch: 1, author: "n0".into() });
        let (pin, claim) = (directive(pin), directive(claim));
        let a = desired_owner(&namespace, &ring_a, &alive, pin.as_ref(), claim.as_ref());
        let b = desired_owner(&namespace, &ring_b, &alive, pin.as_ref(), claim.as_ref());
        prop_assert_eq!(&a, &b);
        let map = ClusterMap::new();
        for me in NODES {
            let r1 = route(me, &namespace, &map, a.as_ref(), &alive, Intent::Write);
            let r2 = route(me, &namespace, &map, b.as_ref(), &alive, Intent::Write);
            prop_assert_eq!(&r1, &r2);
            // Exactly the desired owner creates; everyone else forwards or reports it down.
            if let Some(p) = &a {
                prop_assert_eq!(r1 == Route::Create, p.owner == me);
            }
        }
    }
}
