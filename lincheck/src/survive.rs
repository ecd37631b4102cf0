//! A quick, direct check that acknowledged writes survived: weaker than the linearizability
//! check, but its failure names the lost write in one line.
//!
//! An acknowledged write (a completed put, delete, or compare-and-set that swapped) survived
//! when the key's final value is what it wrote, or some other write could have overwritten it:
//! an acknowledged write that did not complete before it was invoked, or an unknown (or pending)
//! write, which may have applied at any time. Anything else is a lost write: the system said
//! yes and then forgot.
//!
//! The rule is sound (a linearizable history with these final values never fails it), because
//! in any linearization the last write before the final read is either this write or one placed
//! after it, and a write placed after it cannot have completed before it started. It is not
//! complete: it ignores reads, and with repeated values a surviving copy of the same value
//! hides a loss. Record the final reads with [`History::final_read`] and run the
//! linearizability check for the real verdict; use this for its message.

use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::hash::Hash;

use crate::history::{History, Record, Status};
use crate::model::{Op, Outcome, Shown};

/// An acknowledged write that neither survived nor could have been overwritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite<K, V> {
    /// The acknowledged write.
    pub write: Record<K, V>,
    /// The key's final value, which is not what it wrote.
    pub final_value: Option<V>,
}

/// Every lost write the check found, in history order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrites<K, V> {
    /// The lost writes (never empty in an `Err`).
    pub lost: Vec<LostWrite<K, V>>,
}

impl<K, V> History<K, V>
where
    K: Clone + Eq + Hash + Debug,
    V: Clone + Eq + Hash + Debug,
{
    /// Checks that every acknowledged write on a key in `final_values` survived (see the module
    /// docs). `final_values` are reads taken after every operation answered; keys missing from
    /// it are not checked.
    pub fn acknowledged_writes_survive(
        &self,
        final_values: &HashMap<K, Option<V>>,
    ) -> Result<(), LostWrites<K, V>> {
        let records = self.records();
        let lost: Vec<LostWrite<K, V>> = records
            .iter()
            .filter_map(|write| {
                let final_value = final_values.get(&write.key)?;
                let written = acknowledged_value(write)?;
                if written == *final_value {
                    return None;
                }
                let overwritable = records.iter().any(|other| {
                    other.id != write.id
                        && other.key == write.key
                        && may_overwrite(other)
                        && other
                            .completed_at()
                            .is_none_or(|completed| completed >= write.invoked_at)
                });
                (!overwritable).then(|| LostWrite {
                    write: write.clone(),
                    final_value: final_value.clone(),
                })
            })
            .collect();
        if lost.is_empty() {
            Ok(())
        } else {
            Err(LostWrites { lost })
        }
    }
}

/// What an acknowledged write left in the register, or `None` for anything else.
fn acknowledged_value<K, V: Clone>(record: &Record<K, V>) -> Option<Option<V>> {
    match (&record.op, record.outcome()?) {
        (Op::Put(value), Outcome::Written) => Some(Some(value.clone())),
        (Op::Delete, Outcome::Written) => Some(None),
        (Op::Cas { new, .. }, Outcome::Cas(true)) => Some(Some(new.clone())),
        _ => None,
    }
}

/// Whether the operation wrote or may have written: an acknowledged write, or an
/// indeterminate put, delete or compare-and-set.
fn may_overwrite<K, V: Clone>(record: &Record<K, V>) -> bool {
    match record.status {
        Status::Completed { .. } => acknowledged_value(record).is_some(),
        Status::Unknown | Status::Pending => !matches!(record.op, Op::Get),
        Status::Failed { .. } => false,
    }
}

impl<K: Debug, V: Debug> fmt::Display for LostWrites<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acknowledged writes lost (the final value is not theirs, and no write could \
             have overwritten them):",
            self.lost.len()
        )?;
        for lost in &self.lost {
            write!(
                f,
                "\n  {}; final value {}",
                lost.write,
                Shown(&lost.final_value)
            )?;
        }
        Ok(())
    }
}

impl<K: Debug, V: Debug> std::error::Error for LostWrites<K, V> {}
