//! The register every key is: what an operation asks and what its answer may be.
//!
//! A key starts absent (`None`). [`Op`] is what a client asked, [`Outcome`] what it was told.
//! The sequential meaning of each pair is [`Op::apply`]; the checker runs the same rules on
//! interned values (`check::Step`), and this plain version serves replays and tests.

use std::fmt::{self, Debug};

use serde::{Deserialize, Serialize};

/// One operation on one key's register, as a client asked it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op<V> {
    /// Set the value unconditionally; answers [`Outcome::Written`].
    Put(V),
    /// Read the value; answers [`Outcome::Read`] with what was observed (`None`: absent).
    Get,
    /// Set `new` only if the register holds `expect` (`None`: only if absent, i.e. create);
    /// answers [`Outcome::Cas`] with whether it swapped.
    Cas {
        /// The value the register must hold for the swap; `None` means "absent".
        expect: Option<V>,
        /// The value written when the swap happens.
        new: V,
    },
    /// Make the key absent; answers [`Outcome::Written`].
    Delete,
}

/// What a client was told about a completed operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome<V> {
    /// A [`Op::Put`] or [`Op::Delete`] was acknowledged.
    Written,
    /// A [`Op::Get`] observed this value (`None`: the key was absent).
    Read(Option<V>),
    /// A [`Op::Cas`] answered whether it swapped.
    Cas(bool),
}

impl<V> Op<V> {
    /// Whether `outcome` is the kind of answer this operation gives (a put is not answered
    /// with a read). A mismatch is a bug in the recording harness, refused when recorded.
    pub fn answers_with(&self, outcome: &Outcome<V>) -> bool {
        matches!(
            (self, outcome),
            (Op::Put(_) | Op::Delete, Outcome::Written)
                | (Op::Get, Outcome::Read(_))
                | (Op::Cas { .. }, Outcome::Cas(_))
        )
    }

    /// The operation's kind, for messages that must not print values.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Put(_) => "put",
            Op::Get => "get",
            Op::Cas { .. } => "cas",
            Op::Delete => "delete",
        }
    }
}

impl<V> Outcome<V> {
    /// The outcome's kind, for messages that must not print values.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Read(_) => "read",
            Outcome::Cas(_) => "cas",
        }
    }
}

impl<V: Clone + Eq> Op<V> {
    /// Runs the operation on `state` as a sequential register would: returns the outcome it
    /// gives and the state after it. The checker's rules are these, on interned values.
    pub fn apply(&self, state: &Option<V>) -> (Outcome<V>, Option<V>) {
        match self {
            Op::Put(value) => (Outcome::Written, Some(value.clone())),
            Op::Delete => (Outcome::Written, None),
            Op::Get => (Outcome::Read(state.clone()), state.clone()),
            Op::Cas { expect, new } => {
                if state == expect {
                    (Outcome::Cas(true), Some(new.clone()))
                } else {
                    (Outcome::Cas(false), state.clone())
                }
            }
        }
    }

    /// The state after this operation took effect, if it was not observed (an unknown
    /// operation that did apply): the outcome does not matter, only the effect.
    pub fn effect(&self, state: &Option<V>) -> Option<V> {
        self.apply(state).1
    }
}

impl<V: Debug> fmt::Display for Op<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put(value) => write!(f, "put {value:?}"),
            Op::Get => write!(f, "get"),
            Op::Cas { expect, new } => write!(f, "cas {} -> {new:?}", Shown(expect)),
            Op::Delete => write!(f, "delete"),
        }
    }
}

impl<V: Debug> fmt::Display for Outcome<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Written => write!(f, "ok"),
            Outcome::Read(value) => write!(f, "{}", Shown(value)),
            Outcome::Cas(true) => write!(f, "swapped"),
            Outcome::Cas(false) => write!(f, "not swapped"),
        }
    }
}

/// Shows a register state as a person reads it: `absent` or the value's `Debug`.
pub(crate) struct Shown<'a, V>(pub(crate) &'a Option<V>);

impl<V: Debug> fmt::Display for Shown<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "absent"),
            Some(value) => write!(f, "{value:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_swaps_only_on_the_expected_state() {
        let create = Op::Cas {
            expect: None,
            new: "a",
        };
        assert_eq!(create.apply(&None), (Outcome::Cas(true), Some("a")));
        assert_eq!(create.apply(&Some("b")), (Outcome::Cas(false), Some("b")));
        let swap = Op::Cas {
            expect: Some("a"),
            new: "b",
        };
        assert_eq!(swap.apply(&Some("a")), (Outcome::Cas(true), Some("b")));
        assert_eq!(swap.apply(&None), (Outcome::Cas(false), None));
    }

    #[test]
    fn outcomes_match_their_operations() {
        assert!(Op::Put("a").answers_with(&Outcome::Written));
        assert!(Op::<&str>::Delete.answers_with(&Outcome::Written));
        assert!(Op::<&str>::Get.answers_with(&Outcome::Read(None)));
        assert!(!Op::<&str>::Get.answers_with(&Outcome::Written));
        assert!(!Op::Put("a").answers_with(&Outcome::Cas(true)));
    }
}
