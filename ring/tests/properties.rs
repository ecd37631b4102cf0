//! Properties of placement over many namespaces and random member orders.

use std::collections::{BTreeMap, BTreeSet};

use cfgnode_ring::{DEFAULT_VNODES, NodeId, Ring};
use proptest::prelude::*;

fn members(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| format!("node-{i:02}")).collect()
}

fn namespaces(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("app-{i}.ns")).collect()
}

fn owners(ring: &Ring, names: &[String]) -> Vec<NodeId> {
    names
        .iter()
        .map(|ns| ring.owner(ns).expect("non-empty ring").clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Every node computes the same owners whatever order it learned the members in.
    #[test]
    fn owners_do_not_depend_on_member_order(seed in any::<u64>()) {
        let mut shuffled = members(8);
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let names = namespaces(500);
        let a = Ring::new(members(8).iter(), DEFAULT_VNODES);
        let b = Ring::new(shuffled.iter(), DEFAULT_VNODES);
        prop_assert_eq!(owners(&a, &names), owners(&b, &names));
    }
}

#[test]
fn eight_nodes_share_ten_thousand_namespaces_evenly() {
    let nodes = members(8);
    let names = namespaces(10_000);
    let ring = Ring::new(nodes.iter(), DEFAULT_VNODES);
    let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
    for owner in owners(&ring, &names) {
        *counts.entry(owner).or_default() += 1;
    }
    let mean = names.len() as f64 / nodes.len() as f64;
    let max = counts.values().copied().max().unwrap_or(0) as f64;
    eprintln!("max/mean = {:.3} ({counts:?})", max / mean);
    assert_eq!(counts.len(), 8, "every node owns something: {counts:?}");
    assert!(
        max <= 1.25 * mean,
        "max {max} over 1.25 x mean {mean}: {counts:?}"
    );
}

#[test]
fn adding_a_node_moves_about_one_nth_and_only_to_it() {
    let names = namespaces(10_000);
    let before = Ring::new(members(8).iter(), DEFAULT_VNODES);
    let nine = members(9);
    let after = Ring::new(nine.iter(), DEFAULT_VNODES);
    let newcomer = &nine[8];
    let mut moved = 0;
    for (old, new) in owners(&before, &names).iter().zip(owners(&after, &names)) {
        if *old != new {
            assert_eq!(&new, newcomer, "a namespace moved between two old members");
            moved += 1;
        }
    }
    let expected = names.len() as f64 / 9.0;
    let moved = moved as f64;
    eprintln!("moved {moved} of {} (1/9 = {expected:.0})", names.len());
    assert!(
        (0.6 * expected..=1.4 * expected).contains(&moved),
        "moved {moved}, expected about {expected}"
    );
}

#[test]
fn removing_a_node_moves_only_its_namespaces() {
    let names = namespaces(5_000);
    let all = members(5);
    let survivors: BTreeSet<NodeId> = all[1..].iter().cloned().collect();
    let before = Ring::new(all.iter(), DEFAULT_VNODES);
    let after = Ring::new(survivors.iter(), DEFAULT_VNODES);
    for (old, new) in owners(&before, &names).iter().zip(owners(&after, &names)) {
        if old != &all[0] {
            assert_eq!(old, &new, "a namespace of a surviving node moved");
        }
    }
}
