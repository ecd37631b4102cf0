//! Node-to-node messages: what one node asks another, on a connection that proved the cluster
//! key (see [`crate::peer_auth`]). A client connection can never carry them: the node decodes
//! a [`PeerEnvelope`] only on connections negotiated with [`PEER_ALPN`](crate::PEER_ALPN) whose
//! handshake proved the key.
//!
//! Answers are [`ResponseEnvelope`](crate::ResponseEnvelope)s, like a client's; what only a
//! peer asks for is answered with a [`PeerResponse`].

use serde::{Deserialize, Serialize};

use super::Request;

/// One node-to-node request on its own stream (one frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEnvelope {
    /// Chosen by the sender, echoed in the answer.
    pub request_id: u64,
    /// The operation.
    pub request: PeerRequest,
}

/// What a node asks another node. The sender's node id is not in the message: the receiver
/// knows it from the connection's handshake, so no request can speak for another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A client's namespace request passed on by the node that received it; the receiver
    /// serves it or answers [`Response::Redirect`](crate::Response::Redirect), never forwards
    /// again. `request` is a client [`Request`], which cannot itself be a forward: the shape is
    /// not recursive.
    Forward {
        /// How many nodes the request has been sent to so far (1 for the first forward).
        hops: u8,
        /// Who the forwarding node authenticated the client as (its token stays there).
        principal: String,
        /// The client's request.
        request: Request,
    },
    /// An HTTP request passed on by the node that received it (same rules as `Forward`); the
    /// forwarding node checked the caller's token, and strips it before sending.
    ForwardHttp {
        /// Who the forwarding node authenticated the caller as.
        principal: String,
        /// The request.
        http: WireHttpRequest,
    },
    /// A cluster-wide listing asks each member for the namespaces it holds.
    HeldNamespaces {
        /// Only namespaces whose name starts with this (empty: all).
        prefix: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// A cluster-wide agents listing asks each member for the agents that heartbeat to it.
    LocalAgents,
    /// Anti-entropy: "my cluster map has this digest". Answered with [`PeerResponse::ClusterMap`]
    /// (the whole map) when the digests differ, [`PeerResponse::ClusterInSync`] otherwise.
    ClusterSync {
        /// The asker's map digest.
        digest: u64,
    },
    /// Anti-entropy, second half: the asker's whole map, sent when the answerer's map lacked
    /// some of its facts (node-defined bincode). Answered with `Ack`.
    ClusterPush {
        /// The encoded updates.
        #[serde(with = "serde_bytes")]
        updates: Vec<u8>,
    },
    /// Before creating a namespace nobody holds, its desired owner asks every alive member
    /// whether it knows a holder or sees another desired owner (docs/cluster.md, Creation).
    /// Answered with [`PeerResponse::CreateCheck`].
    CreateCheck {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
    },
    /// Handoff, first step: drop any partial copy of the namespace and get ready to receive it
    /// from the sender, which holds it at `epoch`.
    HandoffOffer {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The sender's holder epoch.
        epoch: u64,
    },
    /// Handoff: rows of the namespace (node-defined bincode of its transfer ops).
    HandoffChunk {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The sender's holder epoch.
        epoch: u64,
        /// The ops.
        #[serde(with = "serde_bytes")]
        ops: Vec<u8>,
    },
    /// Handoff, last step: the receiver takes the namespace over under `epoch` if it has
    /// exactly `revision`, records that durably, and only then answers `Ack`; the sender drops
    /// its copy only after that answer.
    HandoffCommit {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The new holder epoch.
        epoch: u64,
        /// The namespace revision the receiver must have.
        revision: u64,
    },
    /// Replication (docs/replication.md, "Writes"): rows of a namespace from its holder, the
    /// authenticated sender, at `epoch`. The receiver takes them only if it is in `replicas`
    /// (the holder first), has promised nothing above `epoch`, and is at `base` (`None`: a
    /// full copy, whose ops start by clearing the namespace); it applies them and its new
    /// position `to` in one durable commit, then answers [`PeerResponse::Replica`].
    ReplicaAppend {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The sender's holder epoch.
        epoch: u64,
        /// The replica set, holder first (at most 64 nodes).
        replicas: Vec<String>,
        /// The position the sender believes the receiver is at; `None` for a full copy.
        base: Option<WireLogPosition>,
        /// The receiver's position once the rows are applied (`to.epoch == epoch`).
        to: WireLogPosition,
        /// The rows (node-defined bincode of transfer ops, as in `HandoffChunk`).
        #[serde(with = "serde_bytes")]
        ops: Vec<u8>,
        /// Which of the holder's sets `replicas` is: the holder's position when it began
        /// replicating to it. Sets are ordered by it, so an election can tell an older set's
        /// grant (docs/replication.md, "Set versions").
        set_version: WireLogPosition,
    },
    /// Promotion (docs/replication.md, "Promotion"): the sender asks the receiver to take
    /// nothing from an epoch below `epoch` from now on. Granted only above the receiver's
    /// promise and once its lease from the holder it follows has run out; durable before the
    /// answer ([`PeerResponse::Replica`], whose position tells the candidate how far the
    /// receiver's log reaches).
    ReplicaPromise {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The epoch the sender proposes to hold the namespace at.
        epoch: u64,
    },
    /// The receiver's replica state of a namespace (what a holder asks a follower whose
    /// append it refused, to resync it). Answered with [`PeerResponse::Replica`].
    ReplicaState {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
    },
}

impl PeerRequest {
    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            PeerRequest::Forward { .. } => "forward",
            PeerRequest::ForwardHttp { .. } => "forward_http",
            PeerRequest::HeldNamespaces { .. } => "held_namespaces",
            PeerRequest::LocalAgents => "local_agents",
            PeerRequest::ClusterSync { .. } => "cluster_sync",
            PeerRequest::ClusterPush { .. } => "cluster_push",
            PeerRequest::CreateCheck { .. } => "create_check",
            PeerRequest::HandoffOffer { .. } => "handoff_offer",
            PeerRequest::HandoffChunk { .. } => "handoff_chunk",
            PeerRequest::HandoffCommit { .. } => "handoff_commit",
            PeerRequest::ReplicaAppend { .. } => "replica_append",
            PeerRequest::ReplicaPromise { .. } => "replica_promise",
            PeerRequest::ReplicaState { .. } => "replica_state",
        }
    }
}

/// A member's answer to [`PeerRequest::CreateCheck`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCreateCheck {
    /// The holder record it knows, as `(holder, epoch)`.
    pub holder: Option<(String, u64)>,
    /// The node it would pick as the namespace's desired owner.
    pub desired_owner: Option<String>,
    /// True when it has merged the cluster map from a peer since it started (a node that has
    /// not cannot vouch that the namespace is new).
    pub synced: bool,
    /// True when it is itself checking or creating the namespace right now.
    pub creating: bool,
}

/// What a peer answers to the requests only peers make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
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
    /// Answer to a peer's create check.
    CreateCheck(WireCreateCheck),
    /// Answer to the replica requests: the receiver's replica state of the namespace after the
    /// request (`None`: it keeps none, it was never a replica of it).
    Replica(Option<WireReplica>),
}

/// A replica's log position: the epoch of the holder that wrote its newest rows, and their
/// revision (docs/replication.md, "Terms"). Ordered by epoch, then revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireLogPosition {
    /// The holder epoch that wrote the newest rows.
    pub epoch: u64,
    /// Their revision.
    pub revision: u64,
}

/// A replica's durable state of one namespace, as it answers the replica requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReplica {
    /// It takes nothing from an epoch below this.
    pub promised: u64,
    /// How far its copy reaches.
    pub position: WireLogPosition,
    /// The holder it last took rows from (or itself, while it holds the namespace).
    pub holder: String,
    /// The replica set as that holder last sent it, holder first.
    pub replicas: Vec<String>,
    /// That set's version (`ReplicaAppend::set_version`; zero when never told one).
    pub set_version: WireLogPosition,
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
    /// The HTTP status the holder answered, passed on to the caller as it is.
    pub status: u16,
    /// The holder's response headers (the forwarding node drops the hop-by-hop ones).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}
