//! [`Watch`]: a namespace change stream that survives disconnects, node restarts and
//! namespace moves.
//!
//! The client keeps a cursor per namespace (the last revision it delivered) and, whenever the
//! stream breaks, opens a new one on the next node with those cursors: the node continues
//! right after them, so the caller sees every event once, in revision order per namespace.
//! Events at or below a cursor are dropped (belt and braces: the server never repeats one).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use cfgnode_transport::{
    MAX_FRAME_BYTES, PushResponse, Response, ResponseEnvelope, WireEvent, WireEventKind,
    WireWatchItem, WireWatchRequest, decode_payload, read_frame,
};
use quinn::RecvStream;

use crate::backoff::{Backoff, unit_random};
use crate::client::{Client, Snapshot, SnapshotResult};
use crate::error::ClientError;

/// A change in a namespace.
pub type Event = WireEvent;
/// What a change did.
pub type EventKind = WireEventKind;

/// What to watch and from where.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    namespaces: Vec<(String, Option<u64>)>,
    prefixes: Vec<String>,
    progress: Option<Duration>,
    resync: bool,
}

impl WatchOptions {
    /// Nothing watched yet: add namespaces with [`namespace`](Self::namespace) or
    /// [`namespace_after`](Self::namespace_after).
    pub fn new() -> Self {
        WatchOptions::default()
    }

    /// Watch `namespace` from now on.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push((namespace.into(), None));
        self
    }

    /// Watch `namespace` from the event after `revision` (0: everything the log retains).
    pub fn namespace_after(mut self, namespace: impl Into<String>, revision: u64) -> Self {
        self.namespaces.push((namespace.into(), Some(revision)));
        self
    }

    /// Only keys (and aliases) starting with `prefix`; may be given several times.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    /// How often an idle namespace reports progress (the node's default is 10 s).
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.progress = Some(every);
        self
    }

    /// On a reset (the cursor is older than the retained log), read the namespace's snapshot
    /// and hand it over as [`WatchEvent::Resynced`] instead of [`WatchEvent::Reset`].
    pub fn resync_on_reset(mut self, resync: bool) -> Self {
        self.resync = resync;
        self
    }
}

/// What [`Watch::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A change, in revision order per namespace, each exactly once.
    Change(Event),
    /// Everything in `namespace` up to `revision` has been delivered (idle namespaces say so
    /// periodically; the first item of every namespace is one, with its starting revision).
    Progress {
        /// Namespace.
        namespace: String,
        /// Up to date with this revision.
        revision: u64,
    },
    /// The log no longer holds the events after the cursor: read a snapshot, then keep
    /// watching (the watch goes on after `current`).
    Reset {
        /// Namespace.
        namespace: String,
        /// The oldest revision the log still holds.
        oldest_retained: u64,
        /// The namespace's revision when the reset was found.
        current: u64,
    },
    /// After a reset, with [`WatchOptions::resync_on_reset`]: the namespace's snapshot.
    /// Replace your state with it; the watch continues after its revision.
    Resynced(Snapshot),
}

/// A running watch. Call [`next`](Self::next) in a loop.
#[derive(Debug)]
pub struct Watch {
    client: Client,
    options: WatchOptions,
    /// The last revision received per namespace: where a new stream resumes.
    received: BTreeMap<String, u64>,
    /// The last revision handed to the caller per namespace.
    delivered: BTreeMap<String, u64>,
    stream: Option<(SocketAddr, RecvStream)>,
    pending: VecDeque<WatchEvent>,
    backoff: Backoff,
    turn: usize,
}

/// How long a stream may stay silent before it is considered dead: a few progress intervals.
fn silence_limit(progress: Option<Duration>) -> Duration {
    progress.unwrap_or(Duration::from_secs(10)) * 3 + Duration::from_secs(5)
}

impl Watch {
    pub(crate) fn new(client: Client, options: WatchOptions) -> Self {
        let cursors: BTreeMap<String, u64> = options
            .namespaces
            .iter()
            .filter_map(|(ns, rev)| rev.map(|rev| (ns.clone(), rev)))
            .collect();
        Watch {
            client,
            options,
            delivered: cursors.clone(),
            received: cursors,
            stream: None,
            pending: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            turn: 0,
        }
    }

    /// The last revision delivered per namespace: save it to resume a later watch with
    /// [`WatchOptions::namespace_after`].
    pub fn cursors(&self) -> &BTreeMap<String, u64> {
        &self.delivered
    }

    /// The next item. Reconnects by itself (backoff with jitter, node after node) whenever the
    /// stream breaks; fails only for what retrying cannot fix (a bad filter, a refused token).
    /// Dropping the future (a timeout around it) loses nothing: at worst the stream is
    /// reopened from the cursors of what was already received.
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                let (namespace, revision) = match &event {
                    WatchEvent::Change(e) => (&e.namespace, e.revision),
                    WatchEvent::Progress {
                        namespace,
                        revision,
                    } => (namespace, *revision),
                    WatchEvent::Reset {
                        namespace, current, ..
                    } => (namespace, *current),
                    WatchEvent::Resynced(snapshot) => (&snapshot.namespace, snapshot.revision),
                };
                self.delivered.insert(namespace.clone(), revision);
                return Ok(event);
            }
            let Some((addr, stream)) = self.stream.as_mut() else {
                self.connect().await?;
                continue;
            };
            let addr = *addr;
            let limit = silence_limit(self.options.progress);
            let frame = match tokio::time::timeout(limit, read_frame(stream, MAX_FRAME_BYTES)).await
            {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => {
                    self.broken(addr, "the node ended the watch").await;
                    continue;
                }
                Ok(Err(e)) => {
                    self.broken(addr, &e.to_string()).await;
                    continue;
                }
                Err(_) => {
                    self.broken(addr, &format!("no frame for {limit:?}")).await;
                    continue;
                }
            };
            let envelope: ResponseEnvelope = match decode_payload(&frame) {
                Ok(envelope) => envelope,
                Err(e) => {
                    self.broken(addr, &format!("unreadable frame: {e}")).await;
                    continue;
                }
            };
            match envelope.result {
                Ok(Response::Push(PushResponse::Watch(items))) => {
                    self.backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
                    for item in items {
                        self.take(item).await?;
                    }
                }
                Ok(other) => return Err(Client::unexpected(other)),
                Err(error) => {
                    let error = ClientError::from_wire(error);
                    if !matches!(error, ClientError::Unavailable(_) | ClientError::Timeout(_)) {
                        return Err(error);
                    }
                    self.broken(addr, &error.to_string()).await;
                }
            }
        }
    }

    /// Files one item under its namespace's cursor.
    async fn take(&mut self, item: WireWatchItem) -> Result<(), ClientError> {
        match item {
            WireWatchItem::Event(event) => {
                let cursor = self.received.entry(event.namespace.clone()).or_insert(0);
                if event.revision > *cursor {
                    *cursor = event.revision;
                    self.pending.push_back(WatchEvent::Change(event));
                }
            }
            WireWatchItem::Progress {
                namespace,
                revision,
            } => {
                let cursor = self.received.entry(namespace.clone()).or_insert(revision);
                *cursor = (*cursor).max(revision);
                let revision = *cursor;
                self.pending.push_back(WatchEvent::Progress {
                    namespace,
                    revision,
                });
            }
            WireWatchItem::Reset {
                namespace,
                oldest_retained,
                current,
            } => {
                if self.options.resync {
                    let snapshot = loop {
                        match self.client.snapshot(&namespace, None).await {
                            Ok(SnapshotResult::Modified(snapshot)) => break snapshot,
                            Ok(SnapshotResult::NotModified { .. }) => {}
                            Err(ClientError::NotFound { .. }) => {
                                break Snapshot {
                                    namespace: namespace.clone(),
                                    revision: current,
                                    etag: String::new(),
                                    entries: Vec::new(),
                                    aliases: Vec::new(),
                                };
                            }
                            Err(e @ (ClientError::Unavailable(_) | ClientError::Timeout(_))) => {
                                tracing::debug!(error = %e, "watch resync: snapshot failed; retrying");
                                tokio::time::sleep(self.backoff.next_delay(unit_random())).await;
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    self.received.insert(namespace, snapshot.revision);
                    self.pending.push_back(WatchEvent::Resynced(snapshot));
                } else {
                    self.received.insert(namespace.clone(), current);
                    self.pending.push_back(WatchEvent::Reset {
                        namespace,
                        oldest_retained,
                        current,
                    });
                }
            }
        }
        Ok(())
    }

    /// Opens a stream on the next node, from the cursors.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let request = WireWatchRequest {
            namespaces: self
                .options
                .namespaces
                .iter()
                .map(|(ns, from)| (ns.clone(), self.received.get(ns).copied().or(*from)))
                .collect(),
            prefixes: self.options.prefixes.clone(),
            progress_ms: self
                .options
                .progress
                .map_or(0, |p| u32::try_from(p.as_millis()).unwrap_or(u32::MAX)),
        };
        match self.client.open_watch_stream(self.turn, request).await {
            Ok(stream) => {
                self.stream = Some(stream);
                Ok(())
            }
            Err(reason) => {
                tracing::debug!(%reason, "watch: cannot open a stream; trying the next node");
                self.turn += 1;
                tokio::time::sleep(self.backoff.next_delay(unit_random())).await;
                Ok(())
            }
        }
    }

    /// The stream is gone: back off, then resume on the next node.
    async fn broken(&mut self, addr: SocketAddr, reason: &str) {
        tracing::debug!(%addr, %reason, "watch stream broken; resuming from the cursors");
        self.stream = None;
        self.client.forget_addr(addr, reason).await;
        self.turn += 1;
        tokio::time::sleep(self.backoff.next_delay(unit_random())).await;
    }
}

impl Client {
    /// Watches namespaces: every change after the given cursors (or from now), in order,
    /// exactly once, across disconnects, node restarts and namespace moves (docs/push.md).
    pub fn watch(&self, options: WatchOptions) -> Watch {
        Watch::new(self.clone(), options)
    }
}
