//! Every error code a node answers with, over QUIC ([`WireError::code`](crate::WireError)) and
//! HTTP (`error.code`): one vocabulary, one place. Codes are stable strings, not an enum, so a
//! newer node's new code still decodes on an older client (which treats it as a generic
//! error). Grouped by who produces them; a new role adds its group here.

// ---- transport and cluster ----
/// The payload could not be decoded.
pub const MALFORMED: &str = "malformed";
/// The peer speaks another protocol version.
pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
/// The peer belongs to another cluster.
pub const WRONG_CLUSTER: &str = "wrong_cluster";
/// A frame was over the size limit.
pub const FRAME_TOO_LARGE: &str = "frame_too_large";
/// Missing or wrong token.
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// The node is shutting down or overloaded.
pub const UNAVAILABLE: &str = "unavailable";
/// The server failed.
pub const INTERNAL: &str = "internal";
/// The request took too long.
pub const TIMEOUT: &str = "timeout";
/// The namespace's holder is down (its data is on that node only).
pub const HOLDER_DOWN: &str = "holder_down";
/// The namespace is moving between nodes and the request could not follow it within the
/// hop limit; retry.
pub const MOVING: &str = "namespace_moving";
/// A node named in the request is not a member of the cluster.
pub const UNKNOWN_NODE: &str = "unknown_node";
/// The request is only for nodes of the cluster (handoff, anti-entropy).
pub const FORBIDDEN: &str = "forbidden";
/// The node cannot decide yet: it has not merged the cluster map from a peer since it
/// started, or the members do not agree yet on who creates a new namespace; retry shortly.
pub const NOT_READY: &str = "not_ready";
/// The node that should hold the namespace refused to take it over.
pub const HANDOFF_REFUSED: &str = "handoff_refused";
/// A replica refused an append from an epoch below its promise: the sender is a deposed
/// holder (replication).
pub const FENCED: &str = "fenced";
/// A replica already promised this epoch or a later one (replication: promise, begin epoch).
pub const ALREADY_PROMISED: &str = "already_promised";
/// A replica is at another log position than the append was built on; the message names it
/// (replication).
pub const NOT_MY_POSITION: &str = "not_my_position";
/// An append contradicts itself (epoch, full copy, target revision) (replication).
pub const INVALID_APPEND: &str = "invalid_append";
/// A write reached the holder but not a majority of the namespace's replicas in time; it is
/// not acknowledged (replication).
pub const NO_QUORUM: &str = "no_quorum";
/// A full copy would move a replica back to before rows it already took (a late or repeated
/// copy) (replication).
pub const STALE_COPY: &str = "stale_copy";
/// The receiver of an append is not in the sender's replica set, or the sender is not its
/// first member, or the receiver holds the namespace itself at that epoch or a later one
/// (replication).
pub const NOT_A_REPLICA: &str = "not_a_replica";
/// A replica still heard from its holder less than a lease ago, so it promises no new epoch
/// yet (replication: promotion); retry after the lease.
pub const HOLDER_LEASED: &str = "holder_leased";
/// A peer answered with a message that does not fit the request.
pub const UNEXPECTED_RESPONSE: &str = "unexpected_response";
/// Another node answered a forwarded HTTP request with an error code this node does not know
/// (a newer node's code): answered as 502 rather than guessed at (HTTP).
pub const UPSTREAM_ERROR: &str = "upstream_error";

// ---- requests in general (HTTP and QUIC) ----
/// The request is malformed or a parameter is out of range.
pub const INVALID_REQUEST: &str = "invalid_request";
/// The request (or its value) is over the node's size limit.
pub const VALUE_TOO_LARGE: &str = "value_too_large";
/// The request body did not arrive within the node's body timeout (HTTP).
pub const REQUEST_TIMEOUT: &str = "request_timeout";
/// No route has this path (HTTP).
pub const ROUTE_NOT_FOUND: &str = "route_not_found";
/// The route exists, not with this method (HTTP).
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
/// The request's content type is not one the route takes (HTTP).
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";

// ---- config role ----
/// The namespace name is not valid.
pub const INVALID_NAMESPACE: &str = "invalid_namespace";
/// The key name is not valid.
pub const INVALID_KEY: &str = "invalid_key";
/// The codec is not one the node knows.
pub const UNKNOWN_CODEC: &str = "unknown_codec";
/// The value does not parse as its codec, or the codec differs from the key's.
pub const CODEC_MISMATCH: &str = "codec_mismatch";
/// The namespace does not exist.
pub const NAMESPACE_NOT_FOUND: &str = "namespace_not_found";
/// The key does not exist (or an alias points to a deleted key).
pub const KEY_NOT_FOUND: &str = "key_not_found";
/// The alias does not exist.
pub const ALIAS_NOT_FOUND: &str = "alias_not_found";
/// The version is not (or no longer) retained.
pub const VERSION_NOT_FOUND: &str = "version_not_found";
/// A create-only write found the key.
pub const ALREADY_EXISTS: &str = "already_exists";
/// An update-only write found no key.
pub const DOES_NOT_EXIST: &str = "does_not_exist";
/// A compare-and-set found another version.
pub const VERSION_MISMATCH: &str = "version_mismatch";
/// The name is taken by a key or an alias of the other kind.
pub const NAME_TAKEN: &str = "name_taken";

// ---- records (namespace state kept by roles) ----
/// The record kind is not valid (`[a-z][a-z0-9_]{0,31}`).
pub const INVALID_RECORD_KIND: &str = "invalid_record_kind";
/// The record does not exist.
pub const RECORD_NOT_FOUND: &str = "record_not_found";

// ---- push role ----
/// A watch request is malformed (no namespace, too many, bad cursor).
pub const INVALID_WATCH: &str = "invalid_watch";
/// An agent heartbeat is malformed.
pub const INVALID_AGENT: &str = "invalid_agent";
/// A webhook definition is malformed.
pub const INVALID_WEBHOOK: &str = "invalid_webhook";
/// The webhook does not exist.
pub const WEBHOOK_NOT_FOUND: &str = "webhook_not_found";
/// The webhook's target is refused by the node's `--webhook-allow` policy.
pub const WEBHOOK_TARGET_NOT_ALLOWED: &str = "webhook_target_not_allowed";

// ---- registry role ----
/// A registration is malformed; the message names the field (`endpoints[0].port`).
pub const INVALID_INSTANCE: &str = "invalid_instance";
/// The instance is not registered.
pub const INSTANCE_NOT_FOUND: &str = "instance_not_found";
/// A heartbeat for an instance whose check is not a TTL check.
pub const NO_TTL_CHECK: &str = "no_ttl_check";
/// A subscription is malformed; the message names the field.
pub const INVALID_SUBSCRIPTION: &str = "invalid_subscription";
/// The subscription does not exist.
pub const SUBSCRIPTION_NOT_FOUND: &str = "subscription_not_found";

// ---- proxy role ----
/// A route record is malformed; the message names the field.
pub const INVALID_ROUTE: &str = "invalid_route";
/// The route record does not exist (`route_not_found` is the HTTP API's own "no such path").
pub const PROXY_ROUTE_NOT_FOUND: &str = "proxy_route_not_found";
/// The proxy has no route for the request's host and path.
pub const NO_ROUTE: &str = "no_route";
/// The client is over the route's rate limit (with `Retry-After`).
pub const RATE_LIMITED: &str = "rate_limited";
/// The route has no healthy backend.
pub const NO_HEALTHY_BACKEND: &str = "no_healthy_backend";
/// The backend refused the connection or failed mid-answer.
pub const BACKEND_UNAVAILABLE: &str = "backend_unavailable";
/// The backend did not answer within the route's timeout.
pub const BACKEND_TIMEOUT: &str = "backend_timeout";

/// A `/hit` URL is not in the namespace's `allow` list.
pub const HIT_NOT_ALLOWED: &str = "hit_not_allowed";

/// Every code above, for turning a code that arrived as a string (from another node) back into
/// this vocabulary ([`known`]). A test checks that no constant of this file is missing.
pub const ALL: &[&str] = &[
    MALFORMED,
    UNSUPPORTED_VERSION,
    WRONG_CLUSTER,
    FRAME_TOO_LARGE,
    UNAUTHENTICATED,
    UNAVAILABLE,
    INTERNAL,
    TIMEOUT,
    HOLDER_DOWN,
    MOVING,
    UNKNOWN_NODE,
    FORBIDDEN,
    NOT_READY,
    HANDOFF_REFUSED,
    FENCED,
    ALREADY_PROMISED,
    NOT_MY_POSITION,
    INVALID_APPEND,
    STALE_COPY,
    NO_QUORUM,
    NOT_A_REPLICA,
    HOLDER_LEASED,
    UNEXPECTED_RESPONSE,
    UPSTREAM_ERROR,
    INVALID_REQUEST,
    VALUE_TOO_LARGE,
    REQUEST_TIMEOUT,
    ROUTE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_NAMESPACE,
    INVALID_KEY,
    UNKNOWN_CODEC,
    CODEC_MISMATCH,
    NAMESPACE_NOT_FOUND,
    KEY_NOT_FOUND,
    ALIAS_NOT_FOUND,
    VERSION_NOT_FOUND,
    ALREADY_EXISTS,
    DOES_NOT_EXIST,
    VERSION_MISMATCH,
    NAME_TAKEN,
    INVALID_WATCH,
    INVALID_AGENT,
    INVALID_WEBHOOK,
    WEBHOOK_NOT_FOUND,
    WEBHOOK_TARGET_NOT_ALLOWED,
    INVALID_RECORD_KIND,
    RECORD_NOT_FOUND,
    INVALID_INSTANCE,
    INSTANCE_NOT_FOUND,
    NO_TTL_CHECK,
    INVALID_SUBSCRIPTION,
    SUBSCRIPTION_NOT_FOUND,
    INVALID_ROUTE,
    PROXY_ROUTE_NOT_FOUND,
    NO_ROUTE,
    RATE_LIMITED,
    NO_HEALTHY_BACKEND,
    BACKEND_UNAVAILABLE,
    BACKEND_TIMEOUT,
    HIT_NOT_ALLOWED,
];

/// The code of this vocabulary spelled `code`, or `None` for a code this node does not know
/// (an error from a newer node).
pub fn known(code: &str) -> Option<&'static str> {
    ALL.iter().copied().find(|c| *c == code)
}
/// The HTTP status that goes with a code, for codes the HTTP API answers (500 for unknown
/// ones). One table, so QUIC and HTTP answers of the same failure agree.
pub fn http_status(code: &str) -> u16 {
    match code {
        VALUE_TOO_LARGE | FRAME_TOO_LARGE => 413,
        UNAUTHENTICATED => 401,
        FORBIDDEN | HIT_NOT_ALLOWED => 403,
        REQUEST_TIMEOUT => 408,
        ROUTE_NOT_FOUND | UNKNOWN_NODE => 404,
        METHOD_NOT_ALLOWED => 405,
        UNSUPPORTED_MEDIA_TYPE => 415,
        TIMEOUT | BACKEND_TIMEOUT => 504,
        RATE_LIMITED => 429,
        NO_ROUTE => 404,
        NO_HEALTHY_BACKEND => 503,
        BACKEND_UNAVAILABLE => 502,
        UNAVAILABLE | HOLDER_DOWN | MOVING | NOT_READY | NO_QUORUM => 503,
        ALREADY_EXISTS | DOES_NOT_EXIST | VERSION_MISMATCH | NAME_TAKEN => 409,
        FENCED | ALREADY_PROMISED | NOT_MY_POSITION | STALE_COPY | NOT_A_REPLICA
        | HOLDER_LEASED => 409,
        INTERNAL | UNEXPECTED_RESPONSE => 500,
        UPSTREAM_ERROR => 502,
        c if c.ends_with("_not_found") => 404,
        c if c.starts_with("invalid_")
            || c == MALFORMED
            || c == UNKNOWN_CODEC
            || c == CODEC_MISMATCH
            || c == WEBHOOK_TARGET_NOT_ALLOWED
            || c == NO_TTL_CHECK
            || c == WRONG_CLUSTER
            || c == UNSUPPORTED_VERSION =>
        {
            400
        }
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_code_families() {
        assert_eq!(http_status(KEY_NOT_FOUND), 404);
        assert_eq!(http_status(WEBHOOK_NOT_FOUND), 404);
        assert_eq!(http_status(VERSION_MISMATCH), 409);
        assert_eq!(http_status(INVALID_KEY), 400);
        assert_eq!(http_status(HOLDER_DOWN), 503);
        assert_eq!(http_status(VALUE_TOO_LARGE), 413);
        assert_eq!(http_status(RECORD_NOT_FOUND), 404);
        assert_eq!(http_status(INVALID_RECORD_KIND), 400);
        assert_eq!(http_status(UNKNOWN_NODE), 404);
        assert_eq!(http_status(UPSTREAM_ERROR), 502);
        assert_eq!(http_status(INSTANCE_NOT_FOUND), 404);
        assert_eq!(http_status(INVALID_INSTANCE), 400);
        assert_eq!(http_status(NO_TTL_CHECK), 400);
        assert_eq!(http_status(FENCED), 409);
        assert_eq!(http_status(INVALID_APPEND), 400);
        assert_eq!(http_status("brand_new_code"), 500);
    }

    #[test]
    fn every_code_of_this_file_is_known() {
        let source = include_str!("codes.rs");
        let declared: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub const "))
            .filter(|rest| rest.contains(": &str = \""))
            .filter_map(|rest| rest.split('"').nth(1))
            .collect();
        assert!(
            declared.len() > 30,
            "the scan found too few codes: {declared:?}"
        );
        for code in &declared {
            assert_eq!(known(code), Some(*code), "{code} is missing from ALL");
        }
        assert_eq!(declared.len(), ALL.len(), "ALL lists a code twice");
        assert_eq!(known("brand_new_code"), None);
    }
}
