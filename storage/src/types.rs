//! The values storage hands out: entries, versions, namespace states, aliases, records, events,
//! pages.

use serde::{Deserialize, Serialize};

use crate::model::Codec;

/// A namespace's revision: it grows by one at every mutation of the namespace.
pub type Revision = u64;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A live key with its current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The namespace holding the key.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// How to read the value.
    pub codec: Codec,
    /// The key's version: 1 at its first write, +1 at every write or delete of the key.
    pub version: u64,
    /// The namespace revision of the write that produced this version.
    pub revision: Revision,
    /// When the key was created (its current life: a delete ends a life).
    pub created_at: Millis,
    /// When this version was written.
    pub updated_at: Millis,
}

/// One retained version of a key; a delete is recorded as a version without a value, so history
/// shows who removed a key and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    /// The key.
    pub key: String,
    /// The version number.
    pub version: u64,
    /// The namespace revision of the write.
    pub revision: Revision,
    /// The value, or `None` when this version is a delete.
    pub value: Option<Vec<u8>>,
    /// The value's codec, or `None` when this version is a delete.
    pub codec: Option<Codec>,
    /// When the version was written.
    pub at: Millis,
}

/// A namespace's bookkeeping: revision, counts, log bounds. Read in O(1), so ETags and listings
/// never scan the namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceState {
    /// The namespace name.
    pub name: String,
    /// A random id given when the namespace was first written. It keeps ETags from colliding
    /// across a namespace re-created on a wiped data dir.
    pub uid: u64,
    /// The holder epoch: bumped when the namespace changes hands (cluster issue).
    pub epoch: u64,
    /// The revision of the latest mutation.
    pub revision: Revision,
    /// The number of live keys.
    pub key_count: u64,
    /// The number of aliases.
    pub alias_count: u64,
    /// The oldest revision still in the log; older events were compacted away.
    pub log_start: Revision,
    /// When the namespace was first written.
    pub created_at: Millis,
    /// When the namespace last changed.
    pub updated_at: Millis,
}

impl NamespaceState {
    /// The namespace ETag (quoted, as HTTP wants it): derived from uid, epoch and revision, so it
    /// changes exactly when the namespace does, without reading a single entry.
    pub fn etag(&self) -> String {
        format!("\"{:016x}-{}-{}\"", self.uid, self.epoch, self.revision)
    }
}

/// An alias: another name for a key in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// The namespace.
    pub namespace: String,
    /// The alias name (key syntax).
    pub alias: String,
    /// The key it points to.
    pub target: String,
    /// The revision that created it.
    pub revision: Revision,
    /// When it was created.
    pub created_at: Millis,
}

/// A record: a role's piece of namespace state (a registry instance, a subscription, a route),
/// named by `(kind, name)` inside its namespace.
///
/// Records are namespace data: every write takes the next namespace revision and appends an
/// event to the log, so they move on handoff and reach watches and webhooks like keys do. They
/// are not part of the config view ([`Snapshot`]) and keep no history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The namespace holding the record.
    pub namespace: String,
    /// The family of records it belongs to (`[a-z][a-z0-9_]{0,31}`), chosen by the role.
    pub kind: String,
    /// Its name within the kind (key syntax).
    pub name: String,
    /// Opaque bytes, encoded by the role (JSON in practice).
    pub value: Vec<u8>,
    /// 1 at creation, +1 at every put. A deleted and re-created record starts again at 1 (no
    /// history is kept), so order writes by `revision`, not by version.
    pub version: u64,
    /// The namespace revision of the record's last write.
    pub revision: Revision,
    /// When the record was created (its current life).
    pub created_at: Millis,
    /// When it was last written.
    pub updated_at: Millis,
}

/// What one namespace mutation did; the log stores these in revision order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A key was written.
    Set {
        /// The key.
        key: String,
        /// Its new version.
        version: u64,
        /// The value written.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The value's codec.
        codec: Codec,
    },
    /// A key was deleted.
    Delete {
        /// The key.
        key: String,
        /// The version the delete took.
        version: u64,
    },
    /// An alias was created.
    AliasSet {
        /// The alias name.
        alias: String,
        /// The key it points to.
        target: String,
    },
    /// An alias was removed.
    AliasDelete {
        /// The alias name.
        alias: String,
    },
    /// A record was written (created or replaced).
    RecordSet {
        /// The record's kind.
        kind: String,
        /// The record's name.
        name: String,
        /// Its new version.
        version: u64,
        /// The value written.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A record was deleted.
    RecordDelete {
        /// The record's kind.
        kind: String,
        /// The record's name.
        name: String,
        /// The version the record had when it was deleted.
        version: u64,
    },
}

/// One entry of a namespace log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The namespace.
    pub namespace: String,
    /// The revision this event took.
    pub revision: Revision,
    /// When it happened.
    pub at: Millis,
    /// What happened.
    pub kind: EventKind,
}

/// Every entry and alias of a namespace at one revision: the config view.
///
/// Records ([`Record`]) are not in it, yet they are namespace data: a record write moves the
/// namespace revision, and so its ETag, without changing the snapshot's entries or aliases.
/// Consumers that compare snapshots should compare content, not only the ETag, to tell config
/// changes apart.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The namespace state the snapshot was read at.
    pub state: NamespaceState,
    /// Every live entry, in key order.
    pub entries: Vec<Entry>,
    /// Every alias, in name order.
    pub aliases: Vec<Alias>,
}

/// A page of a listing, with the cursor that continues it.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass this back to get the next page; `None` when the listing is complete.
    pub next_cursor: Option<String>,
}

/// The answer to "events after revision R".
#[derive(Clone, Debug)]
pub enum LogRead {
    /// The events, in order, with no gap after the asked revision.
    Events(Vec<Event>),
    /// Events the reader needs were compacted away: resync from a snapshot, then read from its
    /// revision.
    Compacted {
        /// The oldest revision still retained.
        oldest_retained: Revision,
        /// The namespace's current revision.
        current: Revision,
    },
}

/// The result of looking up a name that may be a key or an alias.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The name is a live key.
    Entry(Entry),
    /// The name is an alias; `entry` is its target, or `None` if the target does not exist.
    Alias {
        /// The alias.
        alias: Alias,
        /// The target entry, if it exists.
        entry: Option<Entry>,
    },
    /// Neither a key nor an alias.
    Missing,
}
