//! The registry role's messages: services, their instances and endpoints, health checks,
//! heartbeats and subscriptions (docs/registry.md).
//!
//! These are the protocol's shapes, shared by the node, the client library and the CLI.
//! Durations travel as milliseconds; the HTTP API writes them as `"1s"`/`"500ms"` strings. The
//! node checks every rule ([`limits`]) on the way in, whichever way a request arrives, so a
//! client may build these freely and still get a precise `invalid_instance` answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The registry's bounds, the same over QUIC and HTTP.
pub mod limits {
    /// Longest service or instance name, in bytes.
    pub const MAX_NAME: usize = 128;
    /// Most endpoints per instance.
    pub const MAX_ENDPOINTS: usize = 64;
    /// Longest endpoint name and protocol name.
    pub const MAX_ENDPOINT_NAME: usize = 32;
    /// Longest address (a DNS name is at most 253 bytes).
    pub const MAX_ADDRESS: usize = 253;
    /// Most tags per instance, and the longest tag.
    pub const MAX_TAGS: usize = 64;
    /// Longest tag, in bytes.
    pub const MAX_TAG: usize = 128;
    /// Most metadata entries per instance.
    pub const MAX_METADATA: usize = 64;
    /// Longest metadata key.
    pub const MAX_METADATA_KEY: usize = 128;
    /// Longest metadata value.
    pub const MAX_METADATA_VALUE: usize = 1024;
    /// Longest check URL or address.
    pub const MAX_CHECK_TARGET: usize = 2048;
    /// Shortest check interval and TTL: a faster prober would be a load generator.
    pub const MIN_INTERVAL_MS: u64 = 100;
    /// Longest check interval and TTL (one day): anything longer is a typo.
    pub const MAX_INTERVAL_MS: u64 = 86_400_000;
    /// Shortest check timeout.
    pub const MIN_TIMEOUT_MS: u64 = 10;
    /// Largest `unhealthy_after` / `healthy_after`.
    pub const MAX_THRESHOLD: u32 = 100;
    /// Most services one subscription names.
    pub const MAX_SUBSCRIBED_SERVICES: usize = 256;
}

/// A registry operation. Every one is served by the namespace's holder (the records are the
/// namespace's), so each names its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryRequest {
    /// Creates or replaces an instance of a service. A replaced instance keeps its status when
    /// its check is unchanged; a new (or re-checked) one starts `unknown` if it has a check.
    Register {
        /// Namespace the service lives in.
        namespace: String,
        /// Service name ([`limits::MAX_NAME`], letters, digits, `.`, `_`, `-`).
        service: String,
        /// Instance name, unique within the service (same syntax).
        instance: String,
        /// What the instance offers and how it is checked.
        spec: WireInstanceSpec,
    },
    /// Removes an instance (and, with it, its check).
    Deregister {
        /// Namespace the service lives in.
        namespace: String,
        /// Service name.
        service: String,
        /// Instance name.
        instance: String,
    },
    /// Renews a `ttl` check: the instance is healthy until the TTL passes without another.
    Heartbeat {
        /// Namespace the service lives in.
        namespace: String,
        /// Service name.
        service: String,
        /// Instance name.
        instance: String,
    },
    /// Every service of the namespace with its instance counts by status.
    Services {
        /// Namespace to list.
        namespace: String,
    },
    /// One service's instances, filtered; with `wait`, a long-poll that answers when the
    /// filtered view differs from `wait.etag` (or when the wait ends).
    Service {
        /// Namespace the service lives in.
        namespace: String,
        /// Service name.
        service: String,
        /// Which instances to return.
        filter: WireInstanceFilter,
        /// Long-poll: answer once the view's ETag differs from this one.
        wait: Option<WireWait>,
    },
    /// Creates or replaces a subscription: signed POSTs of the named services' changes.
    PutSubscription {
        /// Namespace the services live in.
        namespace: String,
        /// Subscription name (key syntax).
        name: String,
        /// Where and what to notify.
        spec: WireSubscriptionSpec,
    },
    /// Removes a subscription.
    DeleteSubscription {
        /// Namespace of the subscription.
        namespace: String,
        /// Subscription name.
        name: String,
    },
    /// The namespace's subscriptions (secrets are never returned).
    Subscriptions {
        /// Namespace to list.
        namespace: String,
    },
}

impl RegistryRequest {
    /// True for the requests that change the namespace (they may create it). A heartbeat only
    /// renews the holder's in-memory TTL clock, but it must reach the holder like a write.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            RegistryRequest::Register { .. }
                | RegistryRequest::Deregister { .. }
                | RegistryRequest::Heartbeat { .. }
                | RegistryRequest::PutSubscription { .. }
                | RegistryRequest::DeleteSubscription { .. }
        )
    }

    /// True when sending the request twice has the effect of sending it once, so a client may
    /// resend it when its answer was lost: the reads, and `Heartbeat`, which only moves the
    /// holder's TTL clock to "now" (a second one moves it a few milliseconds further, which is
    /// what the caller wanted anyway). The other writes are not: a resent `Register` after a
    /// `Deregister` from elsewhere would bring an instance back.
    pub fn is_idempotent(&self) -> bool {
        !self.is_write() || matches!(self, RegistryRequest::Heartbeat { .. })
    }

    /// The namespace whose holder serves the request: always one.
    pub fn routed_namespace(&self) -> Option<&str> {
        match self {
            RegistryRequest::Register { namespace, .. }
            | RegistryRequest::Deregister { namespace, .. }
            | RegistryRequest::Heartbeat { namespace, .. }
            | RegistryRequest::Services { namespace }
            | RegistryRequest::Service { namespace, .. }
            | RegistryRequest::PutSubscription { namespace, .. }
            | RegistryRequest::DeleteSubscription { namespace, .. }
            | RegistryRequest::Subscriptions { namespace } => Some(namespace),
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            RegistryRequest::Register { .. } => "register",
            RegistryRequest::Deregister { .. } => "deregister",
            RegistryRequest::Heartbeat { .. } => "heartbeat",
            RegistryRequest::Services { .. } => "services",
            RegistryRequest::Service { .. } => "service",
            RegistryRequest::PutSubscription { .. } => "put_subscription",
            RegistryRequest::DeleteSubscription { .. } => "delete_subscription",
            RegistryRequest::Subscriptions { .. } => "subscriptions",
        }
    }
}

/// A registry answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryResponse {
    /// Answer to `Register`: the instance as stored, and whether it was new.
    Registered {
        /// False when an existing instance was replaced.
        created: bool,
        /// The instance as the registry now has it.
        instance: WireInstance,
    },
    /// Answer to `Deregister`: the namespace revision of the removal.
    Deregistered {
        /// Revision of the removal in the namespace log.
        revision: u64,
    },
    /// Answer to `Heartbeat`: the instance's status after it.
    HeartbeatAccepted {
        /// `healthy`, unless the instance has no TTL check (then it says what it is).
        status: WireStatus,
    },
    /// Answer to `Services`.
    Services(WireServices),
    /// Answer to `Service`.
    Service(WireServiceView),
    /// Answer to `PutSubscription`.
    SubscriptionPut {
        /// False when an existing subscription was replaced.
        created: bool,
        /// The subscription as stored (without its secret).
        subscription: WireSubscription,
    },
    /// Answer to `DeleteSubscription`.
    SubscriptionDeleted,
    /// Answer to `Subscriptions`.
    Subscriptions(Vec<WireSubscription>),
}

/// What a registration says about an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInstanceSpec {
    /// Where the instance listens, one entry per protocol or port (at most
    /// [`limits::MAX_ENDPOINTS`], names unique).
    pub endpoints: Vec<WireEndpoint>,
    /// Free labels for filtering (`?tag=v2`).
    pub tags: Vec<String>,
    /// Free key/value facts (zone, version, weight...); the registry does not read them.
    pub metadata: BTreeMap<String, String>,
    /// How the holder decides the instance is healthy; `None`: healthy until removed.
    pub check: Option<WireCheck>,
}

/// One place an instance listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEndpoint {
    /// What callers ask for (`api`, `metrics`), unique within the instance.
    pub name: String,
    /// `http`, `https`, `tcp`, `udp`, `grpc`, or a free-form lowercase name (`pfcp`, `gtp`).
    pub protocol: String,
    /// IP address or DNS name.
    pub address: String,
    /// 1..=65535.
    pub port: u16,
}

/// A health check, run only by the namespace's holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireCheck {
    /// The holder probes the instance every `interval_ms`.
    Probe(WireProbe),
    /// The instance renews itself with heartbeats; unhealthy once `ttl_ms` passes without one.
    Ttl {
        /// How long a heartbeat keeps the instance healthy.
        ttl_ms: u64,
    },
}

/// A probe the holder runs, with flap damping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireProbe {
    /// What is probed.
    pub target: WireProbeTarget,
    /// Time between the starts of two probes.
    pub interval_ms: u64,
    /// A probe that takes longer fails (at most the interval).
    pub timeout_ms: u64,
    /// Consecutive failures that turn a healthy instance unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes that turn an unhealthy instance healthy.
    pub healthy_after: u32,
}

/// What a probe connects to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireProbeTarget {
    /// GET this `http://` URL; any 2xx answer passes (a redirect does not).
    Http {
        /// The URL to GET.
        url: String,
    },
    /// Open a TCP connection to `host:port`; connecting passes.
    Tcp {
        /// `host:port` to connect to.
        address: String,
    },
}

/// An instance's health as the holder last decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WireStatus {
    /// Checked, but not decided yet (a new instance with a check).
    Unknown,
    /// Passing (or not checked at all).
    Healthy,
    /// Failing past its threshold, or its TTL ran out.
    Unhealthy,
}

impl WireStatus {
    /// The name the HTTP API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            WireStatus::Unknown => "unknown",
            WireStatus::Healthy => "healthy",
            WireStatus::Unhealthy => "unhealthy",
        }
    }

    /// The status named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<WireStatus> {
        match name {
            "unknown" => Some(WireStatus::Unknown),
            "healthy" => Some(WireStatus::Healthy),
            "unhealthy" => Some(WireStatus::Unhealthy),
            _ => None,
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCheckResult {
    /// When the check finished (ms since the epoch).
    pub at: u64,
    /// Whether it passed.
    pub ok: bool,
    /// A short description: `HTTP 200`, `connection refused`, `TTL expired`...
    pub output: String,
}

/// An instance as the registry has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInstance {
    /// The service it belongs to.
    pub service: String,
    /// Its name within the service.
    pub instance: String,
    /// What it registered.
    pub spec: WireInstanceSpec,
    /// Its health now.
    pub status: WireStatus,
    /// When the status last changed (ms since the epoch).
    pub status_since: u64,
    /// The latest check the holder ran (`None` before the first, or with no check).
    pub last_check: Option<WireCheckResult>,
    /// Bumped by every write of the instance's record (registration or status change).
    pub version: u64,
    /// The namespace revision of that write.
    pub revision: u64,
}

/// Which instances a `Service` read returns; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInstanceFilter {
    /// Only instances with this status.
    pub status: Option<WireStatus>,
    /// Only instances with an endpoint of this protocol.
    pub protocol: Option<String>,
    /// Only instances carrying this tag.
    pub tag: Option<String>,
}

/// A long-poll's condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWait {
    /// The ETag the caller has; the answer comes when the view's differs.
    pub etag: String,
    /// The longest to wait (at most 60 000 ms); then the unchanged view is answered.
    pub wait_ms: u32,
}

/// One service's instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireServiceView {
    /// The service.
    pub service: String,
    /// The namespace revision the view was read at.
    pub revision: u64,
    /// Changes exactly when the filtered view does (quoted, as HTTP wants it).
    pub etag: String,
    /// The matching instances, by name.
    pub instances: Vec<WireInstance>,
}

/// The services of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireServices {
    /// The namespace revision the listing was read at.
    pub revision: u64,
    /// Every service with at least one instance, by name.
    pub services: Vec<WireServiceSummary>,
}

/// A service and its instance counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireServiceSummary {
    /// The service.
    pub service: String,
    /// All instances.
    pub instances: u64,
    /// Instances that pass.
    pub healthy: u64,
    /// Instances that fail.
    pub unhealthy: u64,
    /// Instances not decided yet.
    pub unknown: u64,
}

/// What a subscription asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSubscriptionSpec {
    /// Where the notifications are POSTed (`http://`, fenced like webhooks).
    pub url: String,
    /// The services whose changes are sent (at least one).
    pub services: Vec<String>,
    /// The HMAC-SHA256 key the body is signed with (`x-cfgnode-signature`); `None` sends
    /// notifications unsigned (seed 002's registrations carry no secret).
    pub secret: Option<String>,
}

/// A subscription as stored, secret left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSubscription {
    /// Its name.
    pub name: String,
    /// Where notifications go.
    pub url: String,
    /// The services it follows.
    pub services: Vec<String>,
    /// The namespace revision up to which notifications were delivered.
    pub cursor: u64,
    /// The last delivery failure, if the latest attempt failed.
    pub last_error: Option<String>,
}
