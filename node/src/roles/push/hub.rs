//! The watch hub: one upstream subscription per namespace, fanned out to every watcher on this
//! node.
//!
//! A [`Topic`] per watched namespace keeps the namespace's recent events, contiguous and in
//! revision order, up to its `head` (the newest revision read). One upstream task per topic
//! fills it: a chain of `Events` long-polls routed like any request, so it reads the local log
//! when this node holds the namespace and the holder's log otherwise, follows the namespace
//! when it moves, and resumes from `head` after any failure. Watchers read the topic; one that
//! is behind the buffer reads the log itself (a catch-up read), then comes back to the topic.
//!
//! Nothing here decides what a watcher has seen: watchers keep their own cursors, and the log
//! (which moves with the namespace) is the truth. The topic is a shared cache of its tail.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cfgnode_storage::Revision;
use cfgnode_transport::{
    PushRequest, PushResponse, Request, Response, WireError, WireEvent, WireEventKind, codes,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::cluster::{Cluster, serve_routed};
use crate::roles::config::ConfigService;

/// How long one upstream long-poll waits on the holder for a new event.
const UPSTREAM_WAIT: Duration = Duration::from_secs(20);
/// Most events one upstream read takes.
const UPSTREAM_BATCH: u32 = 1000;
/// Most events a topic keeps.
const BUFFER_EVENTS: usize = 4096;
/// Most value bytes a topic keeps (at least one event is always kept).
const BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// How long a topic without watchers keeps its upstream before it is dropped.
const LINGER: Duration = Duration::from_secs(30);
/// First and longest pause after a failed upstream read.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The hub. Cheap to clone; clones share the topics.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    cluster: Cluster,
    service: ConfigService,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    stop: watch::Receiver<bool>,
}

/// What a topic knows of its namespace's log tail.
#[derive(Debug, Default)]
struct Tail {
    /// The newest revision read; `None` until the first upstream answer.
    head: Option<Revision>,
    /// Events up to `head`, contiguous.
    events: VecDeque<Arc<WireEvent>>,
    /// Value bytes in `events`.
    bytes: usize,
    /// Whether the last upstream read succeeded (progress is only claimed while it did).
    live: bool,
}

/// One watched namespace on this node.
#[derive(Debug)]
pub struct Topic {
    namespace: String,
    tail: Mutex<Tail>,
    /// Moves whenever the tail does; watchers wait on it.
    changes: watch::Sender<u64>,
}

/// What a watcher at some cursor gets from a topic.
#[derive(Debug)]
pub enum TopicRead {
    /// The next events after the cursor, in order (never empty).
    Events(Vec<Arc<WireEvent>>),
    /// The cursor is older than the buffer: read the log.
    Behind,
    /// Nothing newer than the cursor is known (yet): wait for a change. `ahead` is set when
    /// the cursor is newer than the head of a live topic.
    UpToDate {
        /// The cursor is past the newest revision the hub has read.
        ahead: bool,
    },
}

impl Hub {
    /// A hub serving this node's watchers; its tasks end when `stop` turns true.
    pub fn new(cluster: Cluster, service: ConfigService, stop: watch::Receiver<bool>) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                cluster,
                service,
                topics: Mutex::new(HashMap::new()),
                stop,
            }),
        }
    }

    /// The topic of `namespace`, started (with its upstream) if nobody watched it yet.
    pub fn topic(&self, namespace: &str) -> Arc<Topic> {
        let mut topics = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = topics.get(namespace) {
            return Arc::clone(topic);
        }
        let topic = Arc::new(Topic {
            namespace: namespace.to_string(),
            tail: Mutex::new(Tail::default()),
            changes: watch::channel(0).0,
        });
        topics.insert(namespace.to_string(), Arc::clone(&topic));
        self.metrics().watch_topics.set(gauge_value(topics.len()));
        tokio::spawn(upstream(self.clone(), Arc::clone(&topic)));
        topic
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.inner.cluster.metrics()
    }

    /// A receiver that turns true when the node stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stop.clone()
    }

    /// Reads `namespace`'s log wherever it is held: events after `after` (or, for `None`, just
    /// the current revision), waiting up to `wait` for one.
    pub async fn read(
        &self,
        namespace: &str,
        after: Option<Revision>,
        limit: u32,
        wait: Duration,
    ) -> Result<Response, WireError> {
        let mut request = Request::Push(PushRequest::Events {
            namespace: namespace.to_string(),
            after,
            limit,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        });
        let (cluster, service) = (&self.inner.cluster, &self.inner.service);
        super::longpoll::settle_wait(cluster, service, &mut request).await?;
        serve_routed(
            cluster,
            &Principal::Admin,
            false,
            namespace,
            request,
            async |request| match request {
                Request::Push(request) => super::quic::handle_routed(service, request).await,
                other => Err(WireError::new(
                    codes::INTERNAL,
                    format!("the hub asked for {}", other.name()),
                )),
            },
        )
        .await
    }

    /// Drops `topic` if nobody but the hub and its upstream holds it. True when dropped.
    fn drop_if_idle(&self, topic: &Arc<Topic>) -> bool {
        let mut topics = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
        // The map's handle and the upstream task's: no watcher left. Clones of a topic are
        // only made under this lock (or from a watcher's own handle), so the count is stable.
        if Arc::strong_count(topic) <= 2 {
            topics.remove(&topic.namespace);
            self.metrics().watch_topics.set(gauge_value(topics.len()));
            true
        } else {
            false
        }
    }
}

impl Topic {
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A receiver that moves at every change of the tail. Subscribe before reading, so a
    /// change in between still wakes the watcher.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the upstream's last read succeeded.
    pub fn live(&self) -> bool {
        self.lock().live
    }

    /// What a watcher whose cursor is `cursor` reads next: at most `max` events.
    pub fn read_after(&self, cursor: Revision, max: usize) -> TopicRead {
        let tail = self.lock();
        let Some(head) = tail.head else {
            return TopicRead::UpToDate { ahead: false };
        };
        if cursor >= head {
            return TopicRead::UpToDate {
                ahead: cursor > head && tail.live,
            };
        }
        let Some(first) = tail.events.front().map(|e| e.revision) else {
            return TopicRead::Behind;
        };
        if cursor + 1 < first {
            return TopicRead::Behind;
        }
        let skip = usize::try_from(cursor + 1 - first).unwrap_or(usize::MAX);
        TopicRead::Events(tail.events.iter().skip(skip).take(max).cloned().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn head(&self) -> Option<Revision> {
        self.lock().head
    }

    /// Takes in an upstream answer to "events after `after`".
    fn extend(&self, after: Option<Revision>, revision: Revision, events: Vec<WireEvent>) {
        let mut tail = self.lock();
        tail.live = true;
        match (after, events.last().map(|e| e.revision)) {
            (None, _) => tail.head = Some(revision),
            (Some(after), Some(last)) => {
                let contiguous = events
                    .iter()
                    .zip(after + 1..)
                    .all(|(event, expected)| event.revision == expected);
                if !contiguous {
                    // Never expected (the log has no holes); keep only a clean tail.
                    tracing::warn!(
                        namespace = %self.namespace,
                        after,
                        "non-contiguous events from upstream; restarting the topic buffer"
                    );
                    tail.events.clear();
                    tail.bytes = 0;
                }
                for event in events {
                    tail.bytes += event_bytes(&event);
                    tail.events.push_back(Arc::new(event));
                }
                tail.head = Some(last);
                while tail.events.len() > 1
                    && (tail.events.len() > BUFFER_EVENTS || tail.bytes > BUFFER_BYTES)
                {
                    if let Some(old) = tail.events.pop_front() {
                        tail.bytes -= event_bytes(&old);
                    }
                }
            }
            (Some(after), None) if revision < after => {
                // The namespace is behind what was read: it was re-created. Watchers ahead of
                // the new head are told to resync.
                tracing::warn!(
                    namespace = %self.namespace,
                    head = after,
                    revision,
                    "namespace revision went back (re-created?); restarting its topic"
                );
                tail.events.clear();
                tail.bytes = 0;
                tail.head = Some(revision);
            }
            (Some(_), None) => {}
        }
        drop(tail);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The log no longer reaches back to the head: continue from the oldest retained event.
    fn restart_at(&self, head: Revision) {
        let mut tail = self.lock();
        tail.events.clear();
        tail.bytes = 0;
        tail.head = Some(head);
        tail.live = true;
        drop(tail);
        self.changes.send_modify(|n| *n += 1);
    }

    fn set_live(&self, live: bool) {
        let mut tail = self.lock();
        if tail.live != live {
            tail.live = live;
            drop(tail);
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The bytes an event's value takes (what the buffer bounds).
pub fn event_bytes(event: &WireEvent) -> usize {
    let value = match &event.kind {
        WireEventKind::Set { value, .. } | WireEventKind::RecordSet { value, .. } => value.len(),
        _ => 0,
    };
    value + 64
}

/// Keeps a topic's tail up to date until nobody watches it or the node stops.
async fn upstream(hub: Hub, topic: Arc<Topic>) {
    let mut stop = hub.stopping();
    let mut retry = RETRY_FIRST;
    let mut idle_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if Arc::strong_count(&topic) <= 2 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= LINGER && hub.drop_if_idle(&topic) {
                tracing::debug!(namespace = %topic.namespace, "watch topic dropped (no watcher)");
                return;
            }
        } else {
            idle_since = None;
        }
        let after = topic.head();
        let wait = if after.is_some() {
            UPSTREAM_WAIT
        } else {
            Duration::ZERO
        };
        let read = tokio::select! {
            read = hub.read(&topic.namespace, after, UPSTREAM_BATCH, wait) => read,
            _ = crate::shutdown::until_stopped(&mut stop) => return,
        };
        let failed = match read {
            Ok(Response::Push(PushResponse::Events {
                revision, events, ..
            })) => {
                topic.extend(after, revision, events);
                None
            }
            Ok(Response::Push(PushResponse::Compacted {
                oldest_retained, ..
            })) => {
                topic.restart_at(oldest_retained.saturating_sub(1));
                None
            }
            Ok(_) => Some("the holder answered an Events read with something else".to_string()),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            None => retry = RETRY_FIRST,
            Some(why) => {
                tracing::debug!(namespace = %topic.namespace, error = %why, "watch upstream read failed; retrying");
                topic.set_live(false);
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = crate::shutdown::until_stopped(&mut stop) => return,
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        Topic {
            namespace: "ns".to_string(),
            tail: Mutex::new(Tail::default()),
            changes: watch::channel(0).0,
        }
    }

    fn events(revisions: std::ops::RangeInclusive<u64>) -> Vec<WireEvent> {
        revisions
            .map(|revision| WireEvent {
                namespace: "ns".to_string(),
                revision,
                at: 0,
                kind: WireEventKind::Delete {
                    key: format!("k{revision}"),
                    version: 1,
                },
            })
            .collect()
    }

    fn revisions(read: TopicRead) -> Vec<u64> {
        match read {
            TopicRead::Events(events) => events.iter().map(|e| e.revision).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn watchers_read_after_their_cursor_or_are_sent_to_the_log() {
        let t = topic();
        assert!(matches!(
            t.read_after(0, 10),
            TopicRead::UpToDate { ahead: false }
        ));
        t.extend(None, 5, Vec::new());
        assert!(
            matches!(t.read_after(3, 10), TopicRead::Behind),
            "before the buffer"
        );
        assert!(matches!(
            t.read_after(5, 10),
            TopicRead::UpToDate { ahead: false }
        ));
        assert!(matches!(
            t.read_after(9, 10),
            TopicRead::UpToDate { ahead: true }
        ));
        t.extend(Some(5), 8, events(6..=8));
        assert_eq!(revisions(t.read_after(5, 10)), vec![6, 7, 8]);
        assert_eq!(revisions(t.read_after(6, 1)), vec![7]);
        assert!(matches!(t.read_after(4, 10), TopicRead::Behind));
    }

    #[test]
    fn a_hole_or_a_rewind_restarts_the_buffer_cleanly() {
        let t = topic();
        t.extend(None, 0, Vec::new());
        t.extend(Some(0), 3, events(1..=3));
        // Not contiguous with the head: only the new run is kept.
        t.extend(Some(3), 9, events(7..=9));
        assert!(matches!(t.read_after(3, 10), TopicRead::Behind));
        assert_eq!(revisions(t.read_after(6, 10)), vec![7, 8, 9]);
        // The namespace went back (re-created): the head follows it down.
        t.extend(Some(9), 2, Vec::new());
        assert!(matches!(
            t.read_after(2, 10),
            TopicRead::UpToDate { ahead: false }
        ));
        assert!(matches!(
            t.read_after(9, 10),
            TopicRead::UpToDate { ahead: true }
        ));
    }

    #[test]
    fn the_buffer_is_bounded() {
        let t = topic();
        t.extend(None, 0, Vec::new());
        let n = BUFFER_EVENTS as u64 + 100;
        t.extend(Some(0), n, events(1..=n));
        assert!(matches!(t.read_after(50, 10), TopicRead::Behind));
        assert_eq!(revisions(t.read_after(n - 2, 10)), vec![n - 1, n]);
        assert_eq!(t.lock().events.len(), BUFFER_EVENTS);
    }
}
