//! The push role's HTTP routes (docs/http-api.md, docs/push.md): `GET /v1/watch`, a watch as
//! Server-Sent Events, and `GET /v1/agents`, the agents registry.
//!
//! Same followers, cursors and guarantees as the QUIC watch; each event's `id:` is the resume
//! cursor, and a reconnecting client's `Last-Event-ID` continues exactly after it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cfgnode_transport::codes;
use futures_util::stream;

use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::views::rfc3339;
use crate::roles::Roles;
use crate::roles::push::agents;
use crate::roles::push::sse::{Cursor, WatchQuery, encode_cursor, render};
use crate::roles::push::watch::{self, WatchSpec};
use crate::shutdown::until_stopped;

/// Opens the SSE stream, or answers 400/403 for a bad query (nothing is started then).
pub async fn watch_sse(
    State(state): State<Arc<Roles>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let query = match WatchQuery::parse(query.as_deref().unwrap_or(""), last_event_id) {
        Ok(query) => query,
        Err(why) => {
            return ApiError::from_code(codes::INVALID_WATCH, why).into_response();
        }
    };
    let spec = match WatchSpec::check(query.request, &principal) {
        Ok(spec) => spec,
        Err(e) if e.code == codes::FORBIDDEN => {
            return ApiError::from_code(codes::FORBIDDEN, e.message).into_response();
        }
        Err(e) => {
            return ApiError::from_code(codes::INVALID_WATCH, e.message).into_response();
        }
    };
    // The cursor starts with what the caller gave, so every id carries every namespace.
    let cursor: Cursor = spec
        .namespaces
        .iter()
        .filter_map(|(ns, rev)| rev.map(|rev| (ns.clone(), rev)))
        .collect();
    let watch = watch::open(&state.push.hub, spec, "sse");
    let stop = state.push.hub.stopping();
    let events = stream::unfold(
        (watch, cursor, VecDeque::new(), stop),
        |(mut watch, mut cursor, mut pending, mut stop)| async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((
                        Ok::<Event, Infallible>(event),
                        (watch, cursor, pending, stop),
                    ));
                }
                // The stream ends when the node stops, even if followers are mid-send.
                let batch = tokio::select! {
                    batch = watch.items.recv() => batch?,
                    _ = until_stopped(&mut stop) => return None,
                };
                for item in &batch {
                    let (name, data) = render(item, &mut cursor);
                    pending.push_back(
                        Event::default()
                            .event(name)
                            .id(encode_cursor(&cursor))
                            .data(data.to_string()),
                    );
                }
            }
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(query.heartbeat).text("heartbeat"))
        .into_response()
}

/// `GET /v1/agents[?namespace=NS]`: every agent of the cluster, newest heartbeat per id.
pub async fn agents(State(state): State<Arc<Roles>>, RawQuery(query): RawQuery) -> Response {
    let mut namespace = None;
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "namespace" => namespace = Some(value.into_owned()),
            other => {
                return ApiError::bad_request(format!(
                    "unknown parameter {other:?}: use namespace"
                ))
                .into_response();
            }
        }
    }
    let now = crate::time::now_millis();
    let (list, missing) = agents::cluster_wide(&state.cluster, &state.push.agents, now).await;
    let agents: Vec<serde_json::Value> = list
        .into_iter()
        .filter(|seen| {
            namespace
                .as_ref()
                .is_none_or(|ns| *ns == seen.agent.namespace)
        })
        .map(|seen| {
            let age = now.saturating_sub(seen.last_seen);
            let a = seen.agent;
            serde_json::json!({
                "id": a.id,
                "namespace": a.namespace,
                "prefixes": a.prefixes,
                "applied_revision": a.applied_revision,
                "outputs": a.outputs,
                "mode": a.mode,
                "hostname": a.hostname,
                "pid": a.pid,
                "started_at": rfc3339(a.started_at),
                "last_error": a.last_error,
                "last_seen": rfc3339(seen.last_seen),
                "age_ms": age,
                "status": if age < agents::STALE_AFTER_MS { "live" } else { "stale" },
                "node": seen.node,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "agents": agents, "missing": missing })).into_response()
}
