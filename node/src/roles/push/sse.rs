//! The pure parts of the SSE watch (`GET /v1/watch`): the query, the resume cursor, and the
//! JSON of each event. The handler is `http::watch_api`.
//!
//! The cursor (an SSE `id:`, sent back as `Last-Event-ID`, or given as `from=`) lists the last
//! revision delivered per namespace: `orders:12,users:40`. Namespace names cannot hold `:` or
//! `,`, so the format needs no escaping.

use std::collections::BTreeMap;
use std::time::Duration;

use cfgnode_storage::Revision;
use cfgnode_transport::{WireEvent, WireEventKind, WireWatchItem, WireWatchRequest};
use serde_json::{Value, json};

use super::longpoll::parse_wait;

/// Heartbeat comment interval when the caller names none.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// A parsed `GET /v1/watch` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchQuery {
    /// What to watch, from where.
    pub request: WireWatchRequest,
    /// How often to send a heartbeat comment.
    pub heartbeat: Duration,
}

/// Last delivered revision per namespace.
pub type Cursor = BTreeMap<String, Revision>;

/// Renders a cursor as an SSE id: `a:12,b:40`.
pub fn encode_cursor(cursor: &Cursor) -> String {
    cursor
        .iter()
        .map(|(ns, rev)| format!("{ns}:{rev}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `a:12,b:40`.
pub fn parse_cursor(text: &str) -> Result<Cursor, String> {
    let mut cursor = Cursor::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (ns, rev) = part.rsplit_once(':').ok_or_else(|| {
            format!("cursor part {part:?} is not NAMESPACE:REVISION (e.g. orders:12)")
        })?;
        let rev: Revision = rev
            .parse()
            .map_err(|_| format!("cursor part {part:?}: {rev:?} is not a revision"))?;
        cursor.insert(ns.to_string(), rev);
    }
    Ok(cursor)
}

impl WatchQuery {
    /// Parses the query string and the `Last-Event-ID` header (which wins over `from`).
    ///
    /// - `namespaces=a&namespaces=b` (or `namespaces=a,b`): what to watch (required);
    /// - `prefixes=app/` (repeatable): key prefixes;
    /// - `from=now` (default), `from=N` (every namespace after revision N), or a cursor
    ///   `a:12,b:40` (namespaces it leaves out start from now);
    /// - `progress=10s`, `heartbeat=15s`.
    pub fn parse(query: &str, last_event_id: Option<&str>) -> Result<WatchQuery, String> {
        let mut namespaces: Vec<String> = Vec::new();
        let mut prefixes = Vec::new();
        let mut from = None;
        let mut progress = Duration::ZERO;
        let mut heartbeat = DEFAULT_HEARTBEAT;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "namespaces" | "namespace" => namespaces.extend(
                    value
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string),
                ),
                "prefixes" | "prefix" => prefixes.push(value.into_owned()),
                "from" => from = Some(value.into_owned()),
                "progress" => {
                    progress = parse_wait(&value).map_err(|e| format!("progress: {e}"))?
                }
                "heartbeat" => {
                    heartbeat = parse_wait(&value).map_err(|e| format!("heartbeat: {e}"))?;
                    if heartbeat < Duration::from_millis(100) {
                        return Err("heartbeat must be at least 100ms".to_string());
                    }
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?}: use namespaces, prefixes, from, progress, heartbeat"
                    ));
                }
            }
        }
        // Where each namespace starts: Last-Event-ID, else `from`, else now.
        let (all, cursor) = match (last_event_id, from.as_deref()) {
            (Some(id), _) => (
                None,
                parse_cursor(id).map_err(|e| format!("Last-Event-ID: {e}"))?,
            ),
            (None, None | Some("now")) => (None, Cursor::new()),
            (None, Some(text)) => match text.parse::<Revision>() {
                Ok(rev) => (Some(rev), Cursor::new()),
                Err(_) => (None, parse_cursor(text).map_err(|e| format!("from: {e}"))?),
            },
        };
        let namespaces = namespaces
            .into_iter()
            .map(|ns| {
                let start = cursor.get(&ns).copied().or(all);
                (ns, start)
            })
            .collect();
        Ok(WatchQuery {
            request: WireWatchRequest {
                namespaces,
                prefixes,
                progress_ms: u32::try_from(progress.as_millis()).unwrap_or(u32::MAX),
            },
            heartbeat,
        })
    }
}

/// Moves `cursor` past `item`; returns the SSE event name and its JSON data.
pub fn render(item: &WireWatchItem, cursor: &mut Cursor) -> (&'static str, Value) {
    match item {
        WireWatchItem::Event(event) => {
            cursor.insert(event.namespace.clone(), event.revision);
            (event.kind.name(), event_json(event))
        }
        WireWatchItem::Progress {
            namespace,
            revision,
        } => {
            cursor.insert(namespace.clone(), *revision);
            (
                "progress",
                json!({ "namespace": namespace, "revision": revision }),
            )
        }
        WireWatchItem::Reset {
            namespace,
            oldest_retained,
            current,
        } => {
            cursor.insert(namespace.clone(), *current);
            (
                "reset",
                json!({
                    "namespace": namespace,
                    "oldest_retained": oldest_retained,
                    "current": current,
                    "message": "events after your cursor are no longer in the log: read the snapshot, then watch from its revision",
                }),
            )
        }
    }
}

/// An event as SSE and webhooks show it: key values in base64, like the rest of the HTTP API.
/// A record's value is shown as the JSON document it is when it parses (roles encode their
/// records as JSON), else in base64; `value_encoding` (`json` or `base64`) says which, since a
/// JSON string and a base64 string look alike.
pub fn event_json(event: &WireEvent) -> Value {
    use base64::Engine;
    let at = crate::http::views::rfc3339(event.at);
    let mut out = json!({
        "namespace": event.namespace,
        "revision": event.revision,
        "at": at,
        "type": event.kind.name(),
    });
    let fields = match &event.kind {
        WireEventKind::Set {
            key,
            version,
            value,
            codec,
        } => json!({
            "key": key,
            "version": version,
            "codec": codec,
            "value": base64::engine::general_purpose::STANDARD.encode(value),
        }),
        WireEventKind::Delete { key, version } => json!({ "key": key, "version": version }),
        WireEventKind::AliasSet { alias, target } => json!({ "alias": alias, "target": target }),
        WireEventKind::AliasDelete { alias } => json!({ "alias": alias }),
        WireEventKind::RecordSet {
            kind,
            name,
            version,
            value,
        } => {
            let (value, encoding) = match serde_json::from_slice::<Value>(value) {
                Ok(document) => (document, "json"),
                Err(_) => (
                    Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
                    "base64",
                ),
            };
            json!({
                "kind": kind,
                "name": name,
                "version": version,
                "value": value,
                "value_encoding": encoding,
            })
        }
        WireEventKind::RecordDelete {
            kind,
            name,
            version,
        } => json!({ "kind": kind, "name": name, "version": version }),
    };
    if let (Some(out), Value::Object(fields)) = (out.as_object_mut(), fields) {
        out.extend(fields);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = parse_cursor("a:12,b.c-d:40").expect("parses");
        assert_eq!(cursor.get("a"), Some(&12));
        assert_eq!(encode_cursor(&cursor), "a:12,b.c-d:40");
        assert!(parse_cursor("a12").is_err());
        assert!(parse_cursor("a:x").is_err());
        assert!(parse_cursor("a:-1").is_err());
    }

    fn record_event(kind: WireEventKind) -> WireEvent {
        WireEvent {
            namespace: "reg".into(),
            revision: 7,
            at: 0,
            kind,
        }
    }

    #[test]
    fn record_events_render_their_value_as_json_when_it_is_json() {
        let set = |value: &[u8]| {
            event_json(&record_event(WireEventKind::RecordSet {
                kind: "instance".into(),
                name: "web/a".into(),
                version: 3,
                value: value.to_vec(),
            }))
        };
        let json_value = set(br#"{"status":"healthy","port":8080}"#);
        assert_eq!(json_value["type"], "record_set");
        assert_eq!(json_value["namespace"], "reg");
        assert_eq!(json_value["revision"], 7);
        assert_eq!(json_value["kind"], "instance");
        assert_eq!(json_value["name"], "web/a");
        assert_eq!(json_value["version"], 3);
        assert_eq!(json_value["value"]["status"], "healthy");
        assert_eq!(json_value["value"]["port"], 8080);
        assert_eq!(json_value["value_encoding"], "json");
        // Not JSON: base64, said so.
        let opaque = set(&[0xff, 0x00, 0x01]);
        assert_eq!(opaque["value"], "/wAB");
        assert_eq!(opaque["value_encoding"], "base64");
        let delete = event_json(&record_event(WireEventKind::RecordDelete {
            kind: "instance".into(),
            name: "web/a".into(),
            version: 3,
        }));
        assert_eq!(delete["type"], "record_delete");
        assert_eq!(delete["kind"], "instance");
        assert_eq!(delete["name"], "web/a");
        assert_eq!(delete["version"], 3);
        assert!(delete.get("value").is_none());
    }

    #[test]
    fn queries_parse_with_last_event_id_winning() {
        let q = WatchQuery::parse("namespaces=a&namespaces=b&prefixes=app%2F&from=5", None)
            .expect("parses");
        assert_eq!(
            q.request.namespaces,
            vec![("a".to_string(), Some(5)), ("b".to_string(), Some(5))]
        );
        assert_eq!(q.request.prefixes, vec!["app/".to_string()]);
        let q = WatchQuery::parse("namespaces=a,b&from=a:3", Some("b:9")).expect("parses");
        assert_eq!(
            q.request.namespaces,
            vec![("a".to_string(), None), ("b".to_string(), Some(9))]
        );
        let q = WatchQuery::parse("namespaces=a", None).expect("parses");
        assert_eq!(q.request.namespaces, vec![("a".to_string(), None)]);
        assert!(WatchQuery::parse("namespaces=a&bogus=1", None).is_err());
        assert!(WatchQuery::parse("namespaces=a&from=a:zz", None).is_err());
        assert!(WatchQuery::parse("namespaces=a&heartbeat=1ms", None).is_err());
    }
}
