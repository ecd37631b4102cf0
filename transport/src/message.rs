//! The messages of the client protocol: one [`Request`] per bidirectional stream, answered by
//! one [`ResponseEnvelope`].
//!
//! These mirror the HTTP API (docs/http-api.md) operation for operation, so the client library
//! and the CLI can do everything curl can. Timestamps are milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// How a write treats an existing key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireWriteMode {
    /// Create or replace.
    #[default]
    Upsert,
    /// Create only.
    Create,
    /// Replace only.
    Update,
}

/// The first frame of every client request: who asks, and how to answer. It is small and read
/// with a small bound ([`MAX_HEADER_BYTES`](crate::MAX_HEADER_BYTES)), and its token is checked
/// before the second frame, the [`Request`] itself (up to the frame limit), is read: a caller
/// without a valid token never makes the node buffer more than a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// The cluster the client believes it talks to; a mismatch is refused.
    pub cluster_id: String,
    /// Chosen by the client, echoed in the answer (for logs and tracing).
    pub request_id: u64,
    /// The bearer token.
    pub token: Option<String>,
    /// True when the caller follows [`Response::Redirect`] itself (the client library): a node
    /// that does not hold the namespace then answers with the holder instead of forwarding.
    /// Callers that leave it false are served through forwarding.
    pub follow_redirects: bool,
}

/// Both frames of a client request (header, then request), ready to write on a fresh stream.
/// Fails when the header is over [`MAX_HEADER_BYTES`](crate::MAX_HEADER_BYTES) (a token that
/// long is not a token) or the request over the frame limit.
pub fn encode_request(
    header: &RequestHeader,
    request: &Request,
) -> Result<Vec<u8>, crate::FrameError> {
    let mut out = crate::encode_frame(
        &crate::encode_payload(header),
        crate::frame::MAX_HEADER_BYTES,
    )?;
    out.extend(crate::encode_frame(
        &crate::encode_payload(request),
        crate::MAX_FRAME_BYTES,
    )?);
    Ok(out)
}

/// What the node answers on the same stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The answering node's cluster id.
    pub cluster_id: String,
    /// The request's id (0 when the request could not be decoded).
    pub request_id: u64,
    /// The answering node's id.
    pub node_id: String,
    /// The answer, or an error with a stable code (the HTTP API's vocabulary).
    pub result: Result<Response, WireError>,
}

/// One operation a client asks for (config, push and cluster-admin operations). Node-to-node
/// operations are not here: they are [`PeerRequest`](crate::PeerRequest)s, served only on
/// connections that proved the cluster key. `Request` is not recursive, so decoding one is
/// bounded by its size alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity.
    Ping,
    /// Read a key (an alias resolves to its target).
    Get {
        /// Namespace.
        namespace: String,
        /// Key or alias name.
        key: String,
    },
    /// Write a key.
    Put {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Codec name (`json`, `client:proto`, ...).
        codec: String,
        /// Create, update or either.
        mode: WireWriteMode,
        /// Compare-and-set on this version (0 = must be absent).
        if_version: Option<u64>,
    },
    /// Delete a key.
    Delete {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Only if at this version.
        if_version: Option<u64>,
    },
    /// A page of entries.
    List {
        /// Namespace.
        namespace: String,
        /// Key prefix.
        prefix: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// A page of a key's history, newest first.
    Versions {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// One version of a key.
    Version {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The version.
        version: u64,
    },
    /// Two versions and their differences.
    Diff {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Older version (default: `v2 - 1`).
        v1: Option<u64>,
        /// Newer version (default: the newest).
        v2: Option<u64>,
    },
    /// Every entry and alias at one revision.
    Snapshot {
        /// Namespace.
        namespace: String,
        /// Answer `NotModified` if the namespace ETag is still this.
        if_none_match: Option<String>,
    },
    /// Namespaces holding at least one key.
    Namespaces {
        /// Name prefix.
        prefix: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// What the caller may do in a namespace.
    Access {
        /// Namespace.
        namespace: String,
    },
    /// Create an alias.
    PutAlias {
        /// Namespace.
        namespace: String,
        /// Alias name.
        alias: String,
        /// Target key.
        target: String,
    },
    /// Read an alias.
    GetAlias {
        /// Namespace.
        namespace: String,
        /// Alias name.
        alias: String,
    },
    /// Remove an alias.
    DeleteAlias {
        /// Namespace.
        namespace: String,
        /// Alias name.
        alias: String,
    },
    /// A page of aliases.
    ListAliases {
        /// Namespace.
        namespace: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// The codecs the node knows.
    Codecs,

    // ---- cluster operations (operators) ----
    /// Every member this node knows.
    Members,
    /// Where a namespace is and should be.
    Placement {
        /// Namespace.
        namespace: String,
    },
    /// Namespaces per node (held and desired).
    Ring,
    /// Claim a namespace for a node (durable ownership that follows the node while it lives).
    Claim {
        /// Namespace.
        namespace: String,
        /// The claimant; `None` = the node receiving the request.
        node: Option<String>,
    },
    /// Drop a namespace's claim.
    Release {
        /// Namespace.
        namespace: String,
    },
    /// Pin a namespace to a node (strict placement).
    Pin {
        /// Namespace.
        namespace: String,
        /// The node.
        node: String,
    },
    /// Drop a namespace's pin.
    Unpin {
        /// Namespace.
        namespace: String,
    },

    /// Log events of one namespace after a revision: the catch-up read of a watch, and (with
    /// `wait_ms`) the long-poll a node's watch hub subscribes to the holder with.
    Events {
        /// Namespace.
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
}

impl Request {
    /// True when repeating the request cannot change the outcome: reads, and nothing else.
    /// Clients retry only these blindly; a write whose answer was lost is not resent, because
    /// a second upsert would create a second version.
    pub fn is_idempotent(&self) -> bool {
        !self.is_write()
    }

    /// True for the requests that change a namespace (they may create it).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put { .. }
                | Request::Delete { .. }
                | Request::PutAlias { .. }
                | Request::DeleteAlias { .. }
                | Request::Claim { .. }
                | Request::Release { .. }
                | Request::Pin { .. }
                | Request::Unpin { .. }
        )
    }

    /// The namespace whose holder must serve this request, for requests of the config role;
    /// `None` for requests any node answers itself.
    pub fn routed_namespace(&self) -> Option<&str> {
        match self {
            Request::Get { namespace, .. }
            | Request::Put { namespace, .. }
            | Request::Delete { namespace, .. }
            | Request::List { namespace, .. }
            | Request::Versions { namespace, .. }
            | Request::Version { namespace, .. }
            | Request::Diff { namespace, .. }
            | Request::Snapshot { namespace, .. }
            | Request::PutAlias { namespace, .. }
            | Request::GetAlias { namespace, .. }
            | Request::DeleteAlias { namespace, .. }
            | Request::ListAliases { namespace, .. }
            | Request::Events { namespace, .. } => Some(namespace),
            _ => None,
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Get { .. } => "get",
            Request::Put { .. } => "put",
            Request::Delete { .. } => "delete",
            Request::List { .. } => "list",
            Request::Versions { .. } => "versions",
            Request::Version { .. } => "version",
            Request::Diff { .. } => "diff",
            Request::Snapshot { .. } => "snapshot",
            Request::Namespaces { .. } => "namespaces",
            Request::Access { .. } => "access",
            Request::PutAlias { .. } => "put_alias",
            Request::GetAlias { .. } => "get_alias",
            Request::DeleteAlias { .. } => "delete_alias",
            Request::ListAliases { .. } => "list_aliases",
            Request::Codecs => "codecs",
            Request::Members => "members",
            Request::Placement { .. } => "placement",
            Request::Ring => "ring",
            Request::Claim { .. } => "claim",
            Request::Release { .. } => "release",
            Request::Pin { .. } => "pin",
            Request::Unpin { .. } => "unpin",
            Request::Events { .. } => "events",
            Request::Watch(_) => "watch",
            Request::AgentHeartbeat(_) => "agent_heartbeat",
            Request::AgentLeave { .. } => "agent_leave",
            Request::Agents { .. } => "agents",
        }
    }
}

/// A live key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Codec name.
    pub codec: String,
    /// The key's version.
    pub version: u64,
    /// The namespace revision of this version.
    pub revision: u64,
    /// When the key was created (ms).
    pub created_at: u64,
    /// When this version was written (ms).
    pub updated_at: u64,
    /// The alias the request named, when resolved through one.
    pub alias: Option<String>,
}

/// One retained version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVersion {
    /// Key.
    pub key: String,
    /// Version number.
    pub version: u64,
    /// Namespace revision.
    pub revision: u64,
    /// The value, or `None` for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The codec, or `None` for a delete.
    pub codec: Option<String>,
    /// When it was written (ms).
    pub at: u64,
}

/// The result of a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDeleted {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// The version the delete took.
    pub version: u64,
    /// The namespace revision of the delete.
    pub revision: u64,
}

/// A namespace summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireNamespace {
    /// Name.
    pub name: String,
    /// Live keys.
    pub key_count: u64,
    /// Aliases.
    pub alias_count: u64,
    /// Latest revision.
    pub revision: u64,
    /// Namespace ETag.
    pub etag: String,
    /// First written (ms).
    pub created_at: u64,
    /// Last changed (ms).
    pub updated_at: u64,
}

/// An alias.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAlias {
    /// Namespace.
    pub namespace: String,
    /// Alias name.
    pub alias: String,
    /// Target key.
    pub target: String,
    /// Revision that created it.
    pub revision: u64,
    /// When (ms).
    pub created_at: u64,
}

/// A page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePage<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page, `None` when complete.
    pub next_cursor: Option<String>,
}

/// A namespace snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshot {
    /// Namespace.
    pub namespace: String,
    /// The revision it was read at.
    pub revision: u64,
    /// The namespace ETag at that revision.
    pub etag: String,
    /// Every entry.
    pub entries: Vec<WireEntry>,
    /// Every alias.
    pub aliases: Vec<WireAlias>,
}

/// Two versions and their differences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDiff {
    /// The older version.
    pub v1: WireVersion,
    /// The newer version.
    pub v2: WireVersion,
    /// Whether value or codec differ.
    pub changed: bool,
    /// For two JSON values, the structural diff as JSON text (`{"added","removed","changed"}`,
    /// as in the HTTP API). JSON text because bincode cannot carry a self-describing value.
    pub structural_json: Option<String>,
}

/// A codec the node knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCodec {
    /// Name.
    pub name: String,
    /// Content type of raw values.
    pub content_type: String,
    /// Whether values are validated on write.
    pub validated: bool,
    /// Description.
    pub description: String,
}

/// What the caller may do in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAccess {
    /// Namespace.
    pub namespace: String,
    /// Who the token authenticates as.
    pub principal: String,
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Get`.
    Entry(WireEntry),
    /// Answer to `Put`: the new metadata (the value is left out).
    Written(WireEntry),
    /// Answer to `Delete`.
    Deleted(WireDeleted),
    /// Answer to `List`.
    Entries(WirePage<WireEntry>),
    /// Answer to `Versions`.
    Versions(WirePage<WireVersion>),
    /// Answer to `Version`.
    Version(WireVersion),
    /// Answer to `Diff`.
    Diff(WireDiff),
    /// Answer to `Snapshot`.
    Snapshot(WireSnapshot),
    /// Answer to `Snapshot` when `if_none_match` still matches.
    NotModified {
        /// The unchanged ETag.
        etag: String,
    },
    /// Answer to `Namespaces`.
    Namespaces(WirePage<WireNamespace>),
    /// Answer to `Access`.
    Access(WireAccess),
    /// Answer to `PutAlias` (`created` false for an identical retry), `GetAlias`, `DeleteAlias`.
    Alias {
        /// The alias.
        alias: WireAlias,
        /// Whether this request created it.
        created: bool,
    },
    /// Answer to `ListAliases`.
    Aliases(WirePage<WireAlias>),
    /// Answer to `Codecs`.
    Codecs(Vec<WireCodec>),
    /// Answer to `Members`.
    Members(Vec<WireMember>),
    /// Answer to `Placement`, `Claim`, `Release`, `Pin`, `Unpin`.
    Placement(WirePlacement),
    /// Answer to `Ring`.
    Ring(Vec<WireRingShare>),
    /// "Not here": the namespace is held by another node. The client library follows it (at
    /// most two hops) and remembers the holder; a forwarding node does the same.
    Redirect(WireRedirect),
    /// Answer to a forwarded HTTP request.
    Http(WireHttpResponse),
    /// Answer to a peer's cluster sync when the digests differ: the whole map (node-defined
    /// bincode).
    ClusterMap {
        /// The encoded updates.
        #[serde(with = "serde_bytes")]
        updates: Vec<u8>,
    },
    /// Answer to a peer's cluster sync when the digests match.
    ClusterInSync,
    /// Answer to the handoff and cluster push requests.
    Ack,
    /// Answer to `Events`: the events (in revision order, no gap after `after`) and the
    /// namespace's current revision (0 when it does not exist yet).
    Events {
        /// Namespace.
        namespace: String,
        /// The namespace's revision when the events were read.
        revision: u64,
        /// The events.
        events: Vec<WireEvent>,
    },
    /// Answer to `Events` when events after `after` were compacted away: resync from a
    /// snapshot.
    Compacted {
        /// Namespace.
        namespace: String,
        /// The oldest revision still in the log.
        oldest_retained: u64,
        /// The namespace's current revision.
        current: u64,
    },
    /// One frame of a watch stream: items in order.
    Watch(Vec<WireWatchItem>),
    /// Answer to a peer's create check.
    CreateCheck(crate::peer::WireCreateCheck),
    /// Answer to `Agents`.
    Agents {
        /// The agents, newest heartbeat per id.
        agents: Vec<WireAgentSeen>,
        /// Members that could not be asked (the list may miss their agents).
        missing: Vec<String>,
    },
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
        /// Namespace.
        namespace: String,
        /// The revision the watcher is now up to date with.
        revision: u64,
    },
    /// The watcher's cursor is older than the retained log (or ahead of the namespace, which
    /// was re-created): resync from a snapshot, then resume after the snapshot's revision. The
    /// stream carries on after `current`.
    Reset {
        /// Namespace.
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
    /// Namespace.
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
        /// Key.
        key: String,
        /// Its new version.
        version: u64,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Codec name.
        codec: String,
    },
    /// A key was deleted.
    Delete {
        /// Key.
        key: String,
        /// The version the delete took.
        version: u64,
    },
    /// An alias was created.
    AliasSet {
        /// Alias name.
        alias: String,
        /// The key it points to.
        target: String,
    },
    /// An alias was removed.
    AliasDelete {
        /// Alias name.
        alias: String,
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
        }
    }

    /// Whether the event concerns a key (or alias name or target) under one of `prefixes`
    /// (every event when `prefixes` is empty).
    pub fn matches(&self, prefixes: &[String]) -> bool {
        if prefixes.is_empty() {
            return true;
        }
        let names: [Option<&str>; 2] = match self {
            WireEventKind::Set { key, .. } | WireEventKind::Delete { key, .. } => [Some(key), None],
            WireEventKind::AliasSet { alias, target } => [Some(alias), Some(target)],
            WireEventKind::AliasDelete { alias } => [Some(alias), None],
        };
        names
            .into_iter()
            .flatten()
            .any(|name| prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }
}

/// A cluster member as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMember {
    /// Node id.
    pub id: String,
    /// QUIC address.
    pub quic_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Grows at every start of the node.
    pub generation: u64,
}

/// Where a namespace is and should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePlacement {
    /// Namespace.
    pub namespace: String,
    /// The node that should hold it (`None` when no member is alive).
    pub desired_owner: Option<String>,
    /// The node that holds it (`None` before its first write).
    pub holder: Option<String>,
    /// The holder epoch (0 before its first write).
    pub epoch: u64,
    /// Why the desired owner: `pin`, `claim` or `ring`.
    pub reason: Option<String>,
}

/// How many namespaces a node holds and should hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRingShare {
    /// Node id.
    pub node: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Namespaces it holds.
    pub holds: u64,
    /// Namespaces whose desired owner it is.
    pub desired: u64,
}

/// Where a namespace really is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRedirect {
    /// Namespace.
    pub namespace: String,
    /// The node to ask.
    pub holder: String,
    /// Its QUIC address.
    pub quic_addr: String,
    /// The holder epoch the answer is based on (0 for a namespace nobody holds yet).
    pub epoch: u64,
}

/// An HTTP request carried between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHttpRequest {
    /// How many nodes the request has been sent to so far.
    pub hops: u8,
    /// Method (`GET`, `PUT`, ...).
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers (hop-by-hop ones removed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// An HTTP response carried between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{decode_payload, encode_payload};

    #[test]
    fn envelopes_round_trip() {
        let header = RequestHeader {
            cluster_id: "prod".into(),
            request_id: 42,
            token: Some("t".into()),
            follow_redirects: true,
        };
        let back: RequestHeader = decode_payload(&encode_payload(&header)).expect("decodes");
        assert_eq!(back, header);
        let request = Request::Put {
            namespace: "app".into(),
            key: "db/url".into(),
            value: vec![0, 1, 255],
            codec: "bytes".into(),
            mode: WireWriteMode::Create,
            if_version: Some(0),
        };
        let back: Request = decode_payload(&encode_payload(&request)).expect("decodes");
        assert_eq!(back, request);
        assert!(!back.is_idempotent());
        assert!(
            Request::Get {
                namespace: "a".into(),
                key: "b".into()
            }
            .is_idempotent()
        );

        let response = ResponseEnvelope {
            cluster_id: "prod".into(),
            request_id: 42,
            node_id: "n1".into(),
            result: Err(WireError::new("key_not_found", "no such key")),
        };
        let back: ResponseEnvelope = decode_payload(&encode_payload(&response)).expect("decodes");
        assert_eq!(back, response);
    }
}
