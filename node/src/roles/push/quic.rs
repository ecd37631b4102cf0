//! The push role over the QUIC protocol: the event log a watch reads (served by the holder,
//! after routing). Agents' requests are in [`super::agents`]; watch streams are served by
//! [`super::watch`] through the node's hub.

use cfgnode_storage::{Event, EventKind, LogRead};
use cfgnode_transport::{
    PushRequest, PushResponse, Response, WireError, WireEvent, WireEventKind, WireRecord, codes,
    limits::MAX_EVENTS,
};

use crate::error::to_wire_error;
use crate::roles::config::ConfigService;

/// Serves a push request for a namespace this node holds (`Events`).
pub async fn handle_routed(
    service: &ConfigService,
    request: PushRequest,
) -> Result<Response, WireError> {
    Ok(match request {
        PushRequest::Events {
            namespace,
            after,
            limit: n,
            ..
        } => {
            let limit = (n as usize).clamp(1, MAX_EVENTS);
            match service
                .events(&namespace, after, limit)
                .await
                .map_err(to_wire_error)?
            {
                (LogRead::Events(events), revision) => Response::Push(PushResponse::Events {
                    namespace,
                    revision,
                    events: events.into_iter().map(wire_event).collect(),
                }),
                (
                    LogRead::Compacted {
                        oldest_retained,
                        current,
                    },
                    _,
                ) => Response::Push(PushResponse::Compacted {
                    namespace,
                    oldest_retained,
                    current,
                }),
            }
        }
        PushRequest::Records {
            namespace,
            kind,
            prefix,
            cursor,
            limit,
        } => {
            let limit = (limit as usize).clamp(1, cfgnode_transport::limits::MAX_PAGE);
            let (revision, page) = service
                .read(move |s| {
                    let revision = s.namespace(&namespace)?.map_or(0, |state| state.revision);
                    let page = s.records(&namespace, &kind, &prefix, cursor.as_deref(), limit)?;
                    Ok((revision, page))
                })
                .await
                .map_err(to_wire_error)?;
            Response::Push(PushResponse::Records {
                revision,
                records: page
                    .items
                    .into_iter()
                    .map(|r| WireRecord {
                        name: r.name,
                        value: r.value,
                        version: r.version,
                        revision: r.revision,
                    })
                    .collect(),
                next_cursor: page.next_cursor,
            })
        }
        other => {
            return Err(WireError::new(
                codes::INVALID_REQUEST,
                format!("{} is not a request of a namespace's holder", other.name()),
            ));
        }
    })
}

/// A log event as the wire carries it.
pub fn wire_event(event: Event) -> WireEvent {
    let kind = match event.kind {
        EventKind::Set {
            key,
            version,
            value,
            codec,
        } => WireEventKind::Set {
            key,
            version,
            value,
            codec: codec.name().to_string(),
        },
        EventKind::Delete { key, version } => WireEventKind::Delete { key, version },
        EventKind::AliasSet { alias, target } => WireEventKind::AliasSet { alias, target },
        EventKind::AliasDelete { alias } => WireEventKind::AliasDelete { alias },
        EventKind::RecordSet {
            kind,
            name,
            version,
            value,
        } => WireEventKind::RecordSet {
            kind,
            name,
            version,
            value,
        },
        EventKind::RecordDelete {
            kind,
            name,
            version,
        } => WireEventKind::RecordDelete {
            kind,
            name,
            version,
        },
    };
    WireEvent {
        namespace: event.namespace,
        revision: event.revision,
        at: event.at,
        kind,
    }
}
