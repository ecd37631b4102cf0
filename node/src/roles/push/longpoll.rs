//! Long-polling a namespace: wait until its ETag differs from the caller's, or a deadline.
//!
//! The wait holds no permit on the namespace's gate: it reads the ETag under a permit, drops
//! it, then waits on the namespace's feed. So a handoff can freeze the namespace meanwhile; the
//! handoff's commit wakes the waiter, which then finds the namespace elsewhere and reports
//! [`Waited::Moved`] (the caller forwards the request, with the time left, to the new holder).

use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri, header};
use cfgnode_ring::Intent;
use cfgnode_storage::NamespaceState;
use tokio::time::Instant;

use crate::cluster::{Cluster, RouteError, Target};
use cfgnode_transport::registry::RegistryRequest;
use cfgnode_transport::{PushRequest, Request, WireError};

use crate::roles::config::{ConfigService, etag_list_matches};

/// Longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// What the caller waited for happened (for a long-poll: the namespace's ETag differs
    /// from the caller's, or the namespace is gone).
    Changed,
    /// The deadline passed with the ETag unchanged.
    TimedOut,
    /// Another node holds the namespace now.
    Moved,
}

/// A long-poll's parameters: the caller's `If-None-Match` and when to stop waiting.
#[derive(Clone, Debug)]
pub struct LongPoll {
    /// The ETags the caller holds.
    pub if_none_match: String,
    /// When to answer 304 if nothing changed.
    pub deadline: Instant,
}

impl LongPoll {
    /// The long-poll a request asks for: `GET .../snapshot?wait=DURATION` or
    /// `GET .../services/{service}?wait=DURATION` (whose ETag is the namespace's) with
    /// `If-None-Match`. `Ok(None)` for any other request; `Err` for a malformed `wait`.
    pub fn from_request(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<LongPoll>, String> {
        if method != Method::GET || !long_pollable(uri.path()) {
            return Ok(None);
        }
        let Some(wait) = query_value(uri, "wait") else {
            return Ok(None);
        };
        let Some(tags) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let wait = parse_wait(&wait)?;
        Ok(Some(LongPoll {
            if_none_match: tags.to_string(),
            deadline: Instant::now() + wait,
        }))
    }

    /// The time left.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Whether a path is a route whose ETag is the namespace's: the snapshot, and a registry
/// service view.
fn long_pollable(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/namespaces/") else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    matches!(segments.as_slice(), [_, "snapshot"] | [_, "services", _])
}

/// `30s`, `500ms`, `1m` (humantime), or plain seconds; at most [`MAX_WAIT`].
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("wait={text:?} is not a duration (use e.g. 30s or 500ms): {e}"))?,
    };
    if wait > MAX_WAIT {
        return Err(format!(
            "wait={text} is longer than the maximum of {}s",
            MAX_WAIT.as_secs()
        ));
    }
    Ok(wait)
}

/// The same URI with `wait` set to `left` (in milliseconds), for a request forwarded mid-wait.
pub fn with_wait(uri: &Uri, left: Duration) -> String {
    let path = uri.path();
    let mut pairs: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("wait="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("wait={}ms", left.as_millis()));
    format!("{path}?{}", pairs.join("&"))
}

fn query_value(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Waits until `namespace`'s ETag differs from the caller's, the deadline passes, or the
/// namespace is held elsewhere.
pub async fn wait_while_unchanged(
    cluster: &Cluster,
    service: &ConfigService,
    namespace: &str,
    poll: &LongPoll,
) -> Result<Waited, RouteError> {
    wait_for_state(cluster, service, namespace, poll.deadline, |state| {
        !state.is_some_and(|s| etag_list_matches(&poll.if_none_match, &s.etag()))
    })
    .await
}

/// Waits until `done` holds for `namespace`'s state (`None` before the namespace exists), the
/// deadline passes, or the namespace is held elsewhere. The state is read under a permit on
/// the namespace's gate, which is dropped before waiting on the namespace's feed.
pub async fn wait_for_state(
    cluster: &Cluster,
    service: &ConfigService,
    namespace: &str,
    deadline: Instant,
    done: impl Fn(Option<&NamespaceState>) -> bool,
) -> Result<Waited, RouteError> {
    let mut stop = cluster.stopping();
    loop {
        // Subscribe first: a change between the check and the wait still wakes us.
        let mut feed = service.feeds().subscribe(namespace);
        let state = match cluster.route(namespace, Intent::Read).await? {
            Target::Remote { .. } => return Ok(Waited::Moved),
            Target::Local(permit) => {
                let state = service.namespace_state(namespace).await?;
                drop(permit);
                state
            }
        };
        if done(state.as_ref()) {
            return Ok(Waited::Changed);
        }
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return Ok(Waited::Changed);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(Waited::TimedOut),
            // A stopping node answers with what it has rather than keep its caller waiting.
            _ = crate::shutdown::until_stopped(&mut stop) => return Ok(Waited::TimedOut),
        }
    }
}

/// Does the waiting part of a QUIC long-poll here when this node holds the namespace, holding
/// no gate permit (see [`wait_for_state`]): an `Events` read waits for a revision past its
/// `after`, a registry `Service` read for an ETag other than its own. Afterwards the request
/// asks for no more wait, or (when the namespace is held elsewhere) for the time left, to be
/// forwarded.
pub async fn settle_wait(
    cluster: &Cluster,
    service: &ConfigService,
    request: &mut Request,
) -> Result<(), WireError> {
    match request {
        Request::Push(PushRequest::Events {
            namespace,
            after: Some(after),
            wait_ms,
            ..
        }) if *wait_ms > 0 => {
            let after = *after;
            let left = wait_then_left(cluster, service, namespace, *wait_ms, move |state| {
                state.map_or(0, |s| s.revision) > after
            })
            .await?;
            *wait_ms = left;
        }
        Request::Registry(RegistryRequest::Service {
            namespace,
            wait: Some(wait),
            ..
        }) => {
            let etag = wait.etag.clone();
            let left = wait_then_left(cluster, service, namespace, wait.wait_ms, move |state| {
                state.is_none_or(|s| !etag_list_matches(&etag, &s.etag()))
            })
            .await?;
            wait.wait_ms = left;
        }
        _ => {}
    }
    Ok(())
}

/// Waits up to `wait_ms` for `done`; the milliseconds still to wait on the new holder when
/// the namespace moved meanwhile, else 0.
async fn wait_then_left(
    cluster: &Cluster,
    service: &ConfigService,
    namespace: &str,
    wait_ms: u32,
    done: impl Fn(Option<&NamespaceState>) -> bool,
) -> Result<u32, WireError> {
    let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let waited = wait_for_state(cluster, service, namespace, deadline, done)
        .await
        .map_err(|e| e.to_wire())?;
    Ok(match waited {
        Waited::Moved => u32::try_from(
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis(),
        )
        .unwrap_or(u32::MAX),
        Waited::Changed | Waited::TimedOut => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_and_are_bounded() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert!(parse_wait("2m").is_err(), "over the maximum");
        assert!(parse_wait("soon").is_err());
        let uri: Uri = "/v1/namespaces/a/snapshot?x=1&wait=30s"
            .parse()
            .expect("uri");
        assert_eq!(
            with_wait(&uri, Duration::from_millis(1500)),
            "/v1/namespaces/a/snapshot?x=1&wait=1500ms"
        );
    }
}
