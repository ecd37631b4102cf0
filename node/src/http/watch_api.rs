//! `GET /v1/watch`: a watch as Server-Sent Events (docs/http-api.md, docs/push.md).
//!
//! Same followers, cursors and guarantees as the QUIC watch; each event's `id:` is the resume
//! cursor, and a reconnecting client's `Last-Event-ID` continues exactly after it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cfgnode_transport::codes;
use futures_util::stream;

use super::AppState;
use super::error::ApiError;
use crate::auth::Principal;
use crate::push::sse::{Cursor, WatchQuery, encode_cursor, render};
use crate::push::until_stopped;
use crate::push::watch::{self, WatchSpec};

/// Opens the SSE stream, or answers 400/403 for a bad query (nothing is started then).
pub async fn watch_sse(
    State(state): State<Arc<AppState>>,
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
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_watch", why).into_response();
        }
    };
    let spec = match WatchSpec::check(query.request, &principal) {
        Ok(spec) => spec,
        Err(e) if e.code == codes::FORBIDDEN => {
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.message).into_response();
        }
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_watch", e.message)
                .into_response();
        }
    };
    // The cursor starts with what the caller gave, so every id carries every namespace.
    let cursor: Cursor = spec
        .namespaces
        .iter()
        .filter_map(|(ns, rev)| rev.map(|rev| (ns.clone(), rev)))
        .collect();
    let watch = watch::open(&state.hub, spec, "sse");
    let stop = state.hub.stopping();
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
