//! The desired owner of a namespace: pin > live claim > ring.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::directive::Directive;
use crate::ring::{NodeId, Ring};

/// Why a node is the desired owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// An operator pinned the namespace there (and the node is alive, or the pin is strict).
    Pin,
    /// The node claimed the namespace and is alive.
    Claim,
    /// The consistent-hash ring chose it.
    Ring,
}

/// A namespace's desired owner and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The node that should hold the namespace.
    pub owner: NodeId,
    /// Why.
    pub reason: Reason,
}

/// Where `namespace` should live.
///
/// - A strict pin's target owns the namespace even while down (the namespace is then
///   unavailable rather than moved against the operator's word). A pin that is not strict
///   counts only while its target is alive, as a claim does.
/// - A claim counts only while its claimant is alive; a dead claimant's namespaces fall back to
///   the ring, and return when it comes back (claims are durable).
/// - Otherwise the ring over alive members decides; `None` when no member is alive.
pub fn desired_owner(
    namespace: &str,
    ring: &Ring,
    alive: &BTreeSet<NodeId>,
    pin: Option<&Directive>,
    claim: Option<&Directive>,
) -> Option<Placement> {
    if let Some(owner) = pin
        .filter(|p| p.strict || p.target.as_ref().is_some_and(|t| alive.contains(t)))
        .and_then(|p| p.target.clone())
    {
        return Some(Placement {
            owner,
            reason: Reason::Pin,
        });
    }
    if let Some(owner) = claim
        .and_then(|c| c.target.clone())
        .filter(|c| alive.contains(c))
    {
        return Some(Placement {
            owner,
            reason: Reason::Claim,
        });
    }
    ring.owner(namespace).map(|owner| Placement {
        owner: owner.clone(),
        reason: Reason::Ring,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> BTreeSet<NodeId> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn directive(target: Option<&str>, epoch: u64) -> Directive {
        Directive {
            target: target.map(Into::into),
            epoch,
            author: "op".into(),
            strict: false,
        }
    }

    #[test]
    fn pin_beats_claim_beats_ring() {
        let alive = ids(&["a", "b", "c"]);
        let ring = Ring::new(alive.iter(), 64);
        let by_ring = desired_owner("ns", &ring, &alive, None, None).expect("owner");
        assert_eq!(by_ring.reason, Reason::Ring);

        let claim = directive(Some("b"), 1);
        let claimed = desired_owner("ns", &ring, &alive, None, Some(&claim)).expect("owner");
        assert_eq!(
            claimed,
            Placement {
                owner: "b".into(),
                reason: Reason::Claim
            }
        );

        let pin = directive(Some("c"), 1);
        let pinned = desired_owner("ns", &ring, &alive, Some(&pin), Some(&claim)).expect("owner");
        assert_eq!(
            pinned,
            Placement {
                owner: "c".into(),
                reason: Reason::Pin
            }
        );
    }

    #[test]
    fn dead_claimants_and_pins_fall_back_to_the_ring_but_strict_pins_hold() {
        let alive = ids(&["a", "b"]);
        let ring = Ring::new(alive.iter(), 64);
        let claim = directive(Some("dead"), 3);
        let p = desired_owner("ns", &ring, &alive, None, Some(&claim)).expect("owner");
        assert_eq!(p.reason, Reason::Ring);
        assert!(alive.contains(&p.owner));

        // A pin names the preferred holder: the claim (alive) or the ring decides meanwhile.
        let pin = directive(Some("dead"), 1);
        let live_claim = directive(Some("b"), 1);
        let p = desired_owner("ns", &ring, &alive, Some(&pin), Some(&live_claim)).expect("owner");
        assert_eq!((p.owner.as_str(), p.reason), ("b", Reason::Claim));
        let p = desired_owner("ns", &ring, &alive, Some(&pin), None).expect("owner");
        assert_eq!(p.reason, Reason::Ring);

        let pin = directive(Some("dead"), 1).strict(true);
        let p = desired_owner("ns", &ring, &alive, Some(&pin), None).expect("owner");
        assert_eq!(
            p,
            Placement {
                owner: "dead".into(),
                reason: Reason::Pin
            }
        );

        // Released pins and claims are ignored.
        let released = directive(None, 4);
        let p =
            desired_owner("ns", &ring, &alive, Some(&released), Some(&released)).expect("owner");
        assert_eq!(p.reason, Reason::Ring);
        let empty = BTreeSet::new();
        let nobody = Ring::new(empty.iter(), 64);
        assert_eq!(desired_owner("ns", &nobody, &empty, None, None), None);
    }
}
