//! Prometheus metrics: HTTP requests by route and status, request latency, HTTP connections
//! open and refused, the storage writer's commits, batch sizes and commit latency, the cluster's
//! handoffs, forwards, redirects and refused map updates, and refused peers and connections.

use std::sync::Arc;
use std::time::Duration;

use cfgnode_storage::{CommitObserver, CommitStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method, one of [`METHOD_LABELS`] (any other is `other`): a client picks the
    /// method, so taking it as it comes would let anyone grow the metric without bound.
    pub method: &'static str,
    /// The matched route template (`/v1/namespaces/{ns}/keys/{*key}`), never the raw path, so
    /// label cardinality stays bounded; [`UNMATCHED_ROUTE`] when no route matched.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Labels that name only a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template.
    pub route: String,
}

/// Labels of a commit outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    /// `committed`, `deferred` (a follower's appends, logged and left in the open
    /// transaction) or `failed`.
    pub outcome: &'static str,
}

/// Labels of the open transaction's commit: why it came (`age`, `read`, `write`, `stop`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlushLabels {
    /// See [`cfgnode_storage::Flush`].
    pub reason: &'static str,
}

/// Labels of an outcome (`ok` or `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

/// Labels of how a handoff brought the receiver the namespace's rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoffCopyLabels {
    /// `full` (every row), `changes` (the rows since the copy, frozen) or `stream` (the
    /// receiver was a follower: its replication stream brought it everything).
    pub how: &'static str,
}

/// Labels of a health check run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    /// `namespace/route`: routes are created by operators, so the label set stays bounded.
    pub route: String,
    /// The answer's status class (`2xx` ... `5xx`).
    pub class: &'static str,
}

/// Labels of an instance status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `healthy`, `unhealthy` or `unknown`.
    pub status: &'static str,
}

/// Labels of a forwarded request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// `http` or `quic`.
    pub transport: &'static str,
}

/// Labels of a watch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `quic` or `sse`.
    pub transport: &'static str,
}

/// Labels of a refusal, from a fixed set of reasons (never caller-chosen text).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why (`bad_proof`, `timeout`, `per_address_cap`, ...).
    pub reason: &'static str,
}

/// The methods that keep their own `method` label; every other is counted as `other`.
pub const METHOD_LABELS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// The `route` label of a request no route matched (a 404 from the fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label of `method`: itself when it is one of [`METHOD_LABELS`], else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHOD_LABELS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// Labels of a refused cluster-map update.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// Why: `above_maximum` or `too_far_ahead` (`cfgnode_ring::ImplausibleUpdate::reason`),
    /// a bounded set, never the sender or the namespace.
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the node exports, with the registry that renders them.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served.
    pub http_requests: Family<RequestLabels, Counter>,
    /// HTTP request latency in seconds.
    pub http_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Storage transactions.
    pub commits: Family<CommitLabels, Counter>,
    /// Transactions committed durably in redb (checkpoints), not through the write-ahead log.
    pub checkpoints: Counter,
    /// Commits of the open transaction of followers' appends, by reason.
    pub open_commits: Family<FlushLabels, Counter>,
    /// Writes committed (or refused) per transaction.
    pub batch_size: Histogram,
    /// Writes rejected inside batches (conflicts, missing keys): they fail alone.
    pub rejected_writes: Counter,
    /// Transaction time, including the durable commit, in seconds.
    pub commit_latency: Histogram,
    /// Time writes waited for the writer thread, in seconds.
    pub queue_wait: Histogram,
    /// 1 once the node is serving.
    pub up: Gauge,
    /// Handoffs this node gave, by outcome.
    pub handoffs: Family<OutcomeLabels, Counter>,
    /// Elections this node ran for a down holder's namespace, by outcome (`won`: it became
    /// the holder; `deferred`: a member with more of the log should run; `failed`: no quorum).
    pub elections: Family<OutcomeLabels, Counter>,
    /// Appends this holder sent to followers, by outcome (`ok`, `failed`).
    pub appends: Family<OutcomeLabels, Counter>,
    /// Copies this node dropped because their holder's replica set no longer has it
    /// (`replication::release`).
    pub releases: Counter,
    /// How many revisions a follower was behind the holder when it answered an append (0: it
    /// had everything the holder had when the append was built).
    pub replication_lag: Histogram,
    /// Duration of successful handoffs given, in seconds.
    pub handoff_duration: Histogram,
    /// How handoffs this node gave moved the rows: counted per copy (a handoff makes one or
    /// two: a full copy and then the changes, or the stream alone).
    pub handoff_copies: Family<HandoffCopyLabels, Counter>,
    /// Requests this node forwarded to a namespace's holder.
    pub forwarded: Family<ForwardLabels, Counter>,
    /// Redirects answered to clients that follow them.
    pub redirects: Counter,
    /// Namespaces this node holds.
    pub namespaces_held: Gauge,
    /// Watches opened on this node, by transport.
    pub watches_opened: Family<WatchLabels, Counter>,
    /// Watches open on this node now.
    pub watches_active: Gauge,
    /// Namespaces this node's watch hub follows (one upstream each).
    pub watch_topics: Gauge,
    /// Webhook POSTs, by outcome.
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    /// Peer connections that failed the cluster-key handshake (either side), by reason: a
    /// rogue node, a node with another key, or a client certificate posing as a node.
    pub peer_auth_failures: Family<ReasonLabels, Counter>,
    /// QUIC connections refused before their handshake, by reason (connection caps).
    pub quic_connections_refused: Family<ReasonLabels, Counter>,
    /// HTTP connections open now (each holds a slot under `--http-max-connections`).
    pub http_connections_open: Gauge,
    /// HTTP connections closed as soon as accepted because every slot was taken.
    pub http_connections_refused: Counter,
    /// Cluster-map updates from peers refused as implausible (epochs no honest history
    /// reaches), by reason: any increase means a faulty or hostile node.
    pub cluster_updates_refused: Family<RefusedLabels, Counter>,
    /// Instances of the namespaces this node holds, by status.
    pub registry_instances: Family<StatusLabels, Gauge>,
    /// Instances whose check runs on this node (probes and TTL clocks).
    pub registry_checked: Gauge,
    /// Health probes run, by kind and outcome.
    pub registry_checks: Family<CheckLabels, Counter>,
    /// How long a probe took, in seconds.
    pub registry_check_latency: Histogram,
    /// How late a probe started against its schedule, in seconds (queueing for a probe
    /// slot, or an overloaded node).
    pub registry_check_lag: Histogram,
    /// Subscription notifications POSTed, by outcome.
    pub registry_notifications: Family<OutcomeLabels, Counter>,
    /// Proxied requests, by route and status class.
    pub proxy_requests: Family<ProxyLabels, Counter>,
    /// Proxied request latency in seconds, by route (to the answer's head).
    pub proxy_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Requests tried again on another backend, by route.
    pub proxy_retries: Family<RouteLabels, Counter>,
    /// Requests refused by a route's rate limit.
    pub proxy_rate_limited: Family<RouteLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(node_id: &str) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix_and_labels(
            "cfgnode",
            [("node".into(), node_id.to_string().into())].into_iter(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let http_latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_latency.clone(),
        );
        let commits = Family::<CommitLabels, Counter>::default();
        registry.register(
            "storage_commits",
            "Storage write transactions by outcome",
            commits.clone(),
        );
        let checkpoints = Counter::default();
        registry.register(
            "storage_checkpoints",
            "Write transactions made durable by a durable redb commit instead of the write-ahead log",
            checkpoints.clone(),
        );
        let open_commits = Family::<FlushLabels, Counter>::default();
        registry.register(
            "storage_open_commits",
            "Commits of the transaction holding followers' deferred appends, by reason",
            open_commits.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "storage_commit_batch_size",
            "Writes carried by one transaction (group commit)",
            batch_size.clone(),
        );
        let rejected_writes = Counter::default();
        registry.register(
            "storage_rejected_writes",
            "Writes rejected inside a batch (conflicts, missing keys)",
            rejected_writes.clone(),
        );
        let commit_latency = latency_histogram();
        registry.register(
            "storage_commit_duration_seconds",
            "Transaction time including the durable commit",
            commit_latency.clone(),
        );
        let queue_wait = latency_histogram();
        registry.register(
            "storage_queue_wait_seconds",
            "Time the oldest write of a batch waited for the writer",
            queue_wait.clone(),
        );
        let up = Gauge::default();
        registry.register("up", "1 while the node is serving", up.clone());
        let handoffs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cluster_handoffs",
            "Namespace handoffs this node gave, by outcome",
            handoffs.clone(),
        );
        // 1 ms .. ~65 s
        let handoff_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "cluster_handoff_duration_seconds",
            "Duration of successful handoffs given (offer to commit)",
            handoff_duration.clone(),
        );
        let handoff_copies = Family::<HandoffCopyLabels, Counter>::default();
        registry.register(
            "cluster_handoff_copies",
            "How handoffs this node gave moved the rows (full, changes, stream)",
            handoff_copies.clone(),
        );
        let forwarded = Family::<ForwardLabels, Counter>::default();
        registry.register(
            "cluster_forwarded_requests",
            "Requests forwarded to the namespace's holder",
            forwarded.clone(),
        );
        let redirects = Counter::default();
        registry.register(
            "cluster_redirects",
            "Redirects answered to clients that follow them",
            redirects.clone(),
        );
        let namespaces_held = Gauge::default();
        registry.register(
            "cluster_namespaces_held",
            "Namespaces this node holds",
            namespaces_held.clone(),
        );
        let watches_opened = Family::<WatchLabels, Counter>::default();
        registry.register(
            "push_watches_opened",
            "Watches opened on this node, by transport",
            watches_opened.clone(),
        );
        let watches_active = Gauge::default();
        registry.register(
            "push_watches_active",
            "Watches open on this node",
            watches_active.clone(),
        );
        let watch_topics = Gauge::default();
        registry.register(
            "push_watch_topics",
            "Namespaces this node's watch hub follows (one upstream subscription each)",
            watch_topics.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "push_webhook_deliveries",
            "Webhook POSTs by outcome (ok, failed)",
            webhook_deliveries.clone(),
        );
        let elections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "replication_elections",
            "Elections run here for namespaces whose holder is down, by outcome (won, deferred, failed)",
            elections.clone(),
        );
        let appends = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "replication_appends",
            "Appends sent to followers, by outcome (ok, failed)",
            appends.clone(),
        );
        let releases = Counter::default();
        registry.register(
            "replication_copies_released",
            "Copies dropped here because their holder's replica set no longer has this node",
            releases.clone(),
        );
        let replication_lag = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "replication_lag_revisions",
            "Revisions a follower was behind the holder when it answered an append",
            replication_lag.clone(),
        );
        let peer_auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "peer_auth_failures",
            "Peer connections refused by the cluster-key handshake, by reason",
            peer_auth_failures.clone(),
        );
        let quic_connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "quic_connections_refused",
            "QUIC connections refused at the connection caps, by reason",
            quic_connections_refused.clone(),
        );
        let http_connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open on the admin port",
            http_connections_open.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because --http-max-connections were open",
            http_connections_refused.clone(),
        );
        let cluster_updates_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "cluster_updates_refused",
            "Cluster-map updates from peers refused as implausible (epoch above the maximum or too far ahead), by reason",
            cluster_updates_refused.clone(),
        );
        let registry_instances = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "registry_instances",
            "Instances of the namespaces this node holds, by status",
            registry_instances.clone(),
        );
        let registry_checked = Gauge::default();
        registry.register(
            "registry_checked_instances",
            "Instances whose health check runs on this node",
            registry_checked.clone(),
        );
        let registry_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "registry_checks",
            "Health probes run, by kind and outcome",
            registry_checks.clone(),
        );
        let registry_check_latency = latency_histogram();
        registry.register(
            "registry_check_duration_seconds",
            "How long a health probe took",
            registry_check_latency.clone(),
        );
        let registry_check_lag = latency_histogram();
        registry.register(
            "registry_check_lag_seconds",
            "How late a health probe started against its schedule",
            registry_check_lag.clone(),
        );
        let registry_notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "registry_notifications",
            "Subscription notifications POSTed, by outcome (ok, failed)",
            registry_notifications.clone(),
        );
        let proxy_requests = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Proxied requests by route and status class",
            proxy_requests.clone(),
        );
        let proxy_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "proxy_request_duration_seconds",
            "Proxied request latency by route (to the answer's head)",
            proxy_duration.clone(),
        );
        let proxy_retries = Family::<RouteLabels, Counter>::default();
        registry.register(
            "proxy_retries",
            "Proxied requests tried again on another backend, by route",
            proxy_retries.clone(),
        );
        let proxy_rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "proxy_rate_limited",
            "Proxied requests refused by the route's rate limit",
            proxy_rate_limited.clone(),
        );
        Arc::new(Metrics {
            registry,
            http_requests,
            http_latency,
            commits,
            checkpoints,
            open_commits,
            batch_size,
            rejected_writes,
            commit_latency,
            queue_wait,
            up,
            handoffs,
            handoff_duration,
            handoff_copies,
            forwarded,
            redirects,
            namespaces_held,
            watches_opened,
            watches_active,
            watch_topics,
            webhook_deliveries,
            peer_auth_failures,
            elections,
            appends,
            releases,
            replication_lag,
            quic_connections_refused,
            http_connections_open,
            http_connections_refused,
            cluster_updates_refused,
            registry_instances,
            registry_checked,
            registry_checks,
            registry_check_latency,
            registry_check_lag,
            registry_notifications,
            proxy_requests,
            proxy_duration,
            proxy_retries,
            proxy_rate_limited,
        })
    }

    /// Records one finished HTTP request. `method` is the request's own (any string: it is
    /// folded into [`method_label`]); `route` must be a route template or [`UNMATCHED_ROUTE`].
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route.to_string(),
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Feeds the storage writer's commit statistics into [`Metrics`].
#[derive(Debug)]
pub struct CommitMetrics(pub Arc<Metrics>);

impl CommitObserver for CommitMetrics {
    fn on_commit(&self, stats: &CommitStats) {
        let m = &self.0;
        let outcome = match (stats.committed, stats.deferred) {
            (false, _) => "failed",
            (true, true) => "deferred",
            (true, false) => "committed",
        };
        m.commits.get_or_create(&CommitLabels { outcome }).inc();
        if stats.checkpoint {
            m.checkpoints.inc();
        }
        m.batch_size.observe(stats.batch_size as f64);
        m.rejected_writes.inc_by(stats.rejected as u64);
        m.commit_latency.observe(stats.duration.as_secs_f64());
        m.queue_wait.observe(stats.queue_wait.as_secs_f64());
    }

    fn on_open_commit(&self, why: cfgnode_storage::Flush, _held: std::time::Duration) {
        let reason = why.label();
        self.0
            .open_commits
            .get_or_create(&FlushLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_known_set_share_one_label() {
        for known in METHOD_LABELS {
            assert_eq!(method_label(known), known);
        }
        for custom in ["PROPFIND", "get", "XYZZY", "", "GETT"] {
            assert_eq!(method_label(custom), "other", "{custom}");
        }
    }
}
