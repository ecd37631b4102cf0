//! Pins and claims as stored and gossiped, and how two versions of one merge.

use serde::{Deserialize, Serialize};

use crate::epoch::{Epoch, EpochError, next_epoch};
use crate::ring::NodeId;

/// One pin or claim on a namespace. `target: None` records a release (claim) or an unpin, so a
/// removal spreads and wins over the older directive like any other change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Directive {
    /// The node the namespace should live on, or `None` once released.
    pub target: Option<NodeId>,
    /// The version: higher wins.
    pub epoch: Epoch,
    /// The node that wrote this version; breaks ties between equal epochs.
    pub author: NodeId,
    /// For a pin: the namespace stays on `target` even while that node is down (503
    /// `holder_down` meanwhile), as every pin did before replication. A pin that is not strict
    /// names the preferred holder, like a claim: the namespace fails over while the node is
    /// down and returns once it is back. Always false for claims.
    pub strict: bool,
}

impl Directive {
    /// The next version of this directive, pointing at `target`, written by `author`.
    /// Refused once the epoch is exhausted (the current one is at [`crate::MAX_EPOCH`], which
    /// only a faulty or hostile writer reaches), so it never wraps.
    pub fn next(
        current: Option<&Directive>,
        target: Option<NodeId>,
        author: NodeId,
    ) -> Result<Directive, EpochError> {
        Ok(Directive {
            target,
            epoch: current.map_or(Ok(1), |d| next_epoch(d.epoch))?,
            author,
            strict: false,
        })
    }

    /// This directive with `strict` set (a strict pin).
    pub fn strict(self, strict: bool) -> Directive {
        Directive { strict, ..self }
    }

    /// Whether `self` wins over `other`: the higher epoch, then the higher author id, then
    /// the higher target, then strict over not (so even two identical epochs from one author
    /// resolve the same way everywhere).
    pub fn supersedes(&self, other: &Directive) -> bool {
        (self.epoch, &self.author, &self.target, self.strict)
            > (other.epoch, &other.author, &other.target, other.strict)
    }

    /// The winner of two versions. Commutative, associative and idempotent, so the order in
    /// which gossip and anti-entropy deliver versions does not matter.
    pub fn merge(a: Directive, b: Directive) -> Directive {
        if b.supersedes(&a) { b } else { a }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn directive() -> impl Strategy<Value = Directive> {
        (
            proptest::option::of("n[0-3]"),
            0u64..4,
            "n[0-3]",
            proptest::bool::ANY,
        )
            .prop_map(|(target, epoch, author, strict)| Directive {
                target,
                epoch,
                author,
                strict,
            })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(a in directive(), b in directive(), c in directive()) {
            prop_assert_eq!(Directive::merge(a.clone(), b.clone()), Directive::merge(b.clone(), a.clone()));
            prop_assert_eq!(
                Directive::merge(Directive::merge(a.clone(), b.clone()), c.clone()),
                Directive::merge(a.clone(), Directive::merge(b.clone(), c.clone()))
            );
            prop_assert_eq!(Directive::merge(a.clone(), a.clone()), a);
        }
    }

    #[test]
    fn next_versions_win_and_releases_are_versions() {
        let first = Directive::next(None, Some("n1".into()), "n1".into()).expect("epoch 1");
        assert_eq!(first.epoch, 1);
        let released = Directive::next(Some(&first), None, "n2".into()).expect("epoch 2");
        assert_eq!(released.epoch, 2);
        assert_eq!(Directive::merge(first.clone(), released.clone()), released);
        let concurrent = Directive {
            target: Some("n3".into()),
            epoch: 2,
            author: "n3".into(),
            strict: false,
        };
        assert_eq!(
            Directive::merge(released, concurrent.clone()),
            concurrent,
            "tie: higher author"
        );
    }

    #[test]
    fn next_refuses_an_exhausted_epoch_instead_of_wrapping() {
        for epoch in [crate::MAX_EPOCH, u64::MAX] {
            let top = Directive {
                target: Some("evil".into()),
                epoch,
                author: "evil".into(),
                strict: false,
            };
            assert_eq!(
                Directive::next(Some(&top), None, "n1".into()),
                Err(EpochError::Exhausted { current: epoch })
            );
        }
    }
}
