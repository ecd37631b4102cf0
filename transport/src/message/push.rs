//! The push role's messages: the event log a watch follows, watches, and agents
//! (docs/push.md).

use serde::{Deserialize, Serialize};

/// A push operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushRequest {
    /// Log events of one namespace after a revision: the catch-up read of a watch, and (with
    /// `wait_ms`) the long-poll a node's watch hub subscribes to the holder with.
    Events {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// Events after this revision; `None` asks only for the current revision ("now").
        after: Option<u64>,
        /// At most this many events (1..=10000).
        limit: u32,
        /// When there is no event after `after` yet, wait up to this long (at most 60 000 ms)
        /// for one before answering with none.
        wait_ms: u32,
    },
    /// An agent says it is alive and what it has applied (docs/push.md, Agents). The receiving
    /// node keeps it in memory.
    AgentHeartbeat(WireAgent),
    /// An agent stops (clean exit): forget it.
    AgentLeave {
        /// The agent's id.
        id: String,
    },
    /// The agents known: this node's only (`local_only`, what nodes ask each other), or the
    /// whole cluster's (the receiving node asks every alive member).
    Agents {
        /// Only the agents that heartbeat to this node.
        local_only: bool,
    },
    /// Opens a watch: the node answers with a stream of [`Response::Watch`] frames on this
    /// stream until the client closes it (docs/push.md). Served by any node.
    Watch(WireWatchRequest),
    /// A page of one kind of the namespace's records (a role's state: registry instances,
    /// proxy routes), with the revision read before it: what a follower loads before watching
    /// from that revision (every later change then reaches it as an event). Served by the
    /// holder.
    Records {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The record kind (`instance`, `route`).
        kind: String,
        /// Only names starting with this.
        prefix: String,
        /// The `next_cursor` of the previous page.
        cursor: Option<String>,
        /// At most this many (1..=1000).
        limit: u32,
    },
}

impl PushRequest {
    /// The namespace whose holder must serve this request (the log is the holder's); `None`
    /// for requests any node answers itself (watches follow through the node's hub).
    pub fn routed_namespace(&self) -> Option<&str> {
        match self {
            PushRequest::Events { namespace, .. } | PushRequest::Records { namespace, .. } => {
                Some(namespace)
            }
            PushRequest::AgentHeartbeat(_)
            | PushRequest::AgentLeave { .. }
            | PushRequest::Agents { .. }
            | PushRequest::Watch(_) => None,
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            PushRequest::Events { .. } => "events",
            PushRequest::AgentHeartbeat(_) => "agent_heartbeat",
            PushRequest::AgentLeave { .. } => "agent_leave",
            PushRequest::Agents { .. } => "agents",
            PushRequest::Watch(_) => "watch",
            PushRequest::Records { .. } => "records",
        }
    }
}

/// A push operation's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushResponse {
    /// Answer to `Events`: the events (in revision order, no gap after `after`) and the
    /// namespace's current revision (0 when it does not exist yet).
    Events {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The namespace's revision when the events were read.
        revision: u64,
        /// The events after `after`, in revision order with no gap.
        events: Vec<WireEvent>,
    },
    /// Answer to `Events` when events after `after` were compacted away: resync from a
    /// snapshot.
    Compacted {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The oldest revision still in the log.
        oldest_retained: u64,
        /// The namespace's current revision.
        current: u64,
    },
    /// One frame of a watch stream: items in order.
    Watch(Vec<WireWatchItem>),
    /// Answer to `Agents`.
    Agents {
        /// The agents, newest heartbeat per id.
        agents: Vec<WireAgentSeen>,
        /// Members that could not be asked (the list may miss their agents).
        missing: Vec<String>,
    },
    /// Answer to `Records`.
    Records {
        /// The namespace's revision, read before the page (0 when it does not exist).
        revision: u64,
        /// The records, by name.
        records: Vec<WireRecord>,
        /// Pass back for the next page; `None` when complete.
        next_cursor: Option<String>,
    },
}

/// One namespace record as `Records` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Its name within its kind (key syntax).
    pub name: String,
    /// The role's encoding of it (JSON for the registry and the proxy).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Bumped by each write of it (restarts at 1 after a delete).
    pub version: u64,
    /// The namespace revision of its last write.
    pub revision: u64,
}

/// What an agent reports in its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAgent {
    /// A stable id chosen by the agent (key syntax, at most 128 bytes).
    pub id: String,
    /// The namespace it follows.
    pub namespace: String,
    /// The key prefixes it follows.
    pub prefixes: Vec<String>,
    /// The namespace revision it has applied (0: nothing yet).
    pub applied_revision: u64,
    /// What it does with a change (`out:FILE`, `post:URL`, `exec`), for people.
    pub outputs: Vec<String>,
    /// `watch` or `poll`: how it is following right now.
    pub mode: String,
    /// The host it runs on.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// When it started (ms since the Unix epoch).
    pub started_at: u64,
    /// Its last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// An agent with when a node last heard from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAgentSeen {
    /// The heartbeat.
    pub agent: WireAgent,
    /// When it arrived (ms since the Unix epoch, the receiving node's clock).
    pub last_seen: u64,
    /// The node it heartbeats to.
    pub node: String,
}

/// What a watch covers and where it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWatchRequest {
    /// The namespaces, each with its cursor: events after that revision, or `None` for
    /// "from now" (the first frame then carries a progress item with the revision chosen).
    pub namespaces: Vec<(String, Option<u64>)>,
    /// Key prefixes; an event matches when its key (or alias name or target) starts with any
    /// of them. Empty: every key.
    pub prefixes: Vec<String>,
    /// How often an idle namespace sends a progress item, in milliseconds (0: the node's
    /// default of 10 s).
    pub progress_ms: u32,
}

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireWatchItem {
    /// A change.
    Event(WireEvent),
    /// Every event of `namespace` up to `revision` has been delivered (or did not match the
    /// filter): the watcher's cursor may move there.
    Progress {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The revision the watcher is now up to date with.
        revision: u64,
    },
    /// The watcher's cursor is older than the retained log (or ahead of the namespace, which
    /// was re-created): resync from a snapshot, then resume after the snapshot's revision. The
    /// stream carries on after `current`.
    Reset {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The oldest revision still in the log.
        oldest_retained: u64,
        /// The namespace's revision when the reset was found.
        current: u64,
    },
}

/// One event of a namespace log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The revision the event took.
    pub revision: u64,
    /// When it happened (ms since the Unix epoch).
    pub at: u64,
    /// What happened.
    pub kind: WireEventKind,
}

/// What an event did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireEventKind {
    /// A key was written.
    Set {
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// Its new version.
        version: u64,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Its codec: `json`, `yaml`, `toml`, `text`, `bytes` (checked) or `client:...` (opaque).
        codec: String,
    },
    /// A key was deleted.
    Delete {
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// The version the delete took.
        version: u64,
    },
    /// An alias was created.
    AliasSet {
        /// The alias's name: the rules of a key, and no key may have it too.
        alias: String,
        /// The key it points to.
        target: String,
    },
    /// An alias was removed.
    AliasDelete {
        /// The alias's name: the rules of a key, and no key may have it too.
        alias: String,
    },
    /// A record (a role's namespace state: a registry instance, a route) was written.
    /// Appended after the config kinds so their encodings stay as they were.
    RecordSet {
        /// The record's kind (`instance`, `route`, ...).
        kind: String,
        /// The record's name within its kind.
        name: String,
        /// Its new version.
        version: u64,
        /// The value (opaque bytes, JSON in practice).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A record was deleted.
    RecordDelete {
        /// The record's kind.
        kind: String,
        /// The record's name within its kind.
        name: String,
        /// The version the record had when it was deleted.
        version: u64,
    },
}

impl WireEventKind {
    /// The event's type name, as SSE and webhooks spell it.
    pub fn name(&self) -> &'static str {
        match self {
            WireEventKind::Set { .. } => "set",
            WireEventKind::Delete { .. } => "delete",
            WireEventKind::AliasSet { .. } => "alias_set",
            WireEventKind::AliasDelete { .. } => "alias_delete",
            WireEventKind::RecordSet { .. } => "record_set",
            WireEventKind::RecordDelete { .. } => "record_delete",
        }
    }

    /// Whether the event changed a record rather than the config view (entries and aliases),
    /// so consumers of config snapshots can tell it changes nothing they render.
    pub fn is_record(&self) -> bool {
        matches!(
            self,
            WireEventKind::RecordSet { .. } | WireEventKind::RecordDelete { .. }
        )
    }

    /// Whether the event concerns a key (or alias name or target) under one of `prefixes`
    /// (every event when `prefixes` is empty). Prefixes are key prefixes: a record event
    /// matches only a watch without prefixes (one that asked for everything).
    pub fn matches(&self, prefixes: &[String]) -> bool {
        if prefixes.is_empty() {
            return true;
        }
        let names: [Option<&str>; 2] = match self {
            WireEventKind::Set { key, .. } | WireEventKind::Delete { key, .. } => [Some(key), None],
            WireEventKind::AliasSet { alias, target } => [Some(alias), Some(target)],
            WireEventKind::AliasDelete { alias } => [Some(alias), None],
            WireEventKind::RecordSet { .. } | WireEventKind::RecordDelete { .. } => [None, None],
        };
        names
            .into_iter()
            .flatten()
            .any(|name| prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_set() -> WireEventKind {
        WireEventKind::RecordSet {
            kind: "instance".into(),
            name: "app/web-1".into(),
            version: 1,
            value: b"{}".to_vec(),
        }
    }

    #[test]
    fn record_events_match_only_watches_without_prefixes() {
        let delete = WireEventKind::RecordDelete {
            kind: "instance".into(),
            name: "app/web-1".into(),
            version: 1,
        };
        for event in [record_set(), delete] {
            assert!(event.is_record());
            assert!(event.matches(&[]));
            // Even a prefix the record's name starts with: prefixes are key prefixes.
            assert!(!event.matches(&["app/".to_string()]));
            assert!(!event.matches(&[String::new()]));
        }
        let set = WireEventKind::Set {
            key: "app/x".into(),
            version: 1,
            value: vec![],
            codec: "text".into(),
        };
        assert!(!set.is_record());
        assert!(set.matches(&["app/".to_string()]));
        assert_eq!(record_set().name(), "record_set");
    }

    #[test]
    fn the_config_kinds_keep_their_encoding() {
        // Older peers and clients decode these: appending the record kinds must not renumber.
        let config = bincode::config::standard();
        let alias_delete = WireEventKind::AliasDelete { alias: "a".into() };
        let bytes = bincode::serde::encode_to_vec(&alias_delete, config).expect("encodes");
        assert_eq!(bytes, [3, 1, b'a']);
        let bytes = bincode::serde::encode_to_vec(record_set(), config).expect("encodes");
        assert_eq!(bytes[0], 4);
    }
}
