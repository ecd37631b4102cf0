//! A watch: one follower task per namespace, each with its own cursor, feeding one channel of
//! item batches that the QUIC or SSE front end writes out.
//!
//! A follower delivers the events after its cursor in revision order: from the hub's topic
//! when the topic has them, else from the log (a catch-up read). It skips events that do not
//! match the prefixes but moves its cursor past them, says `Progress` when idle, and `Reset`
//! when the log no longer reaches back to its cursor (or the namespace was re-created). Since
//! revisions are contiguous and each follower only moves forward by whole events, a watcher
//! sees no gap and no duplicate; after a disconnect the client resumes from its cursors.

use std::sync::Arc;
use std::time::Duration;

use cfgnode_storage::{Revision, validate_namespace};
use cfgnode_transport::{
    PushResponse, Response, WireError, WireEvent, WireWatchItem, WireWatchRequest, codes,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::hub::{Hub, Topic, TopicRead, event_bytes};
use crate::auth::Principal;
use crate::metrics::WatchLabels;
use cfgnode_transport::limits::MAX_EVENTS;
use prometheus_client::metrics::gauge::Gauge;

/// Most namespaces one watch covers.
pub const MAX_NAMESPACES: usize = 64;
/// Most prefixes one watch filters on.
pub const MAX_PREFIXES: usize = 64;
/// Longest prefix.
const MAX_PREFIX_BYTES: usize = 512;
/// Progress interval when the watcher names none.
pub const DEFAULT_PROGRESS: Duration = Duration::from_secs(10);
/// Shortest and longest progress interval a watcher may ask for.
const MIN_PROGRESS: Duration = Duration::from_millis(100);
const MAX_PROGRESS: Duration = Duration::from_secs(300);
/// Most events a follower takes from the topic at once.
const BATCH_EVENTS: usize = 256;
/// A follower sends what it has once its batch holds this many value bytes.
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches buffered per watch before followers wait for the writer (back-pressure).
const CHANNEL_BATCHES: usize = 16;
/// Pause after a failed catch-up read, doubling up to the maximum.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A checked watch request.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// Namespaces and their cursors (`None`: from now).
    pub namespaces: Vec<(String, Option<Revision>)>,
    /// Key prefixes (empty: all keys).
    pub prefixes: Arc<Vec<String>>,
    /// How often an idle namespace says `Progress`.
    pub progress: Duration,
}

impl WatchSpec {
    /// Checks a request from the wire (or built from SSE query parameters) for `principal`.
    pub fn check(request: WireWatchRequest, principal: &Principal) -> Result<Self, WireError> {
        let invalid = |why: String| WireError::new(cfgnode_transport::codes::INVALID_WATCH, why);
        if request.namespaces.is_empty() {
            return Err(invalid("name at least one namespace to watch".to_string()));
        }
        if request.namespaces.len() > MAX_NAMESPACES {
            return Err(invalid(format!(
                "a watch covers at most {MAX_NAMESPACES} namespaces; open several watches"
            )));
        }
        for (i, (namespace, _)) in request.namespaces.iter().enumerate() {
            validate_namespace(namespace).map_err(|e| invalid(e.to_string()))?;
            if request.namespaces[..i].iter().any(|(n, _)| n == namespace) {
                return Err(invalid(format!("namespace {namespace:?} is named twice")));
            }
            if !principal.access(namespace).read {
                return Err(WireError::new(
                    codes::FORBIDDEN,
                    format!("this token may not read namespace {namespace:?}"),
                ));
            }
        }
        if request.prefixes.len() > MAX_PREFIXES {
            return Err(invalid(format!("at most {MAX_PREFIXES} prefixes")));
        }
        if let Some(long) = request.prefixes.iter().find(|p| p.len() > MAX_PREFIX_BYTES) {
            return Err(invalid(format!(
                "prefix of {} bytes is longer than {MAX_PREFIX_BYTES}",
                long.len()
            )));
        }
        let progress = match request.progress_ms {
            0 => DEFAULT_PROGRESS,
            ms => {
                let asked = Duration::from_millis(u64::from(ms));
                if !(MIN_PROGRESS..=MAX_PROGRESS).contains(&asked) {
                    return Err(invalid(format!(
                        "progress interval {asked:?} is outside {MIN_PROGRESS:?}..={MAX_PROGRESS:?}"
                    )));
                }
                asked
            }
        };
        Ok(WatchSpec {
            namespaces: request.namespaces,
            prefixes: Arc::new(request.prefixes),
            progress,
        })
    }
}

/// A running watch: read batches from `items`; dropping it stops the followers.
#[derive(Debug)]
pub struct Watch {
    /// Item batches, in order per namespace. Ends when the node stops.
    pub items: mpsc::Receiver<Vec<WireWatchItem>>,
    _followers: JoinSet<()>,
    active: Gauge,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Starts a watch on this node's hub; `transport` (`quic`, `sse`) labels the metrics.
pub fn open(hub: &Hub, spec: WatchSpec, transport: &'static str) -> Watch {
    let metrics = hub.metrics();
    metrics
        .watches_opened
        .get_or_create(&WatchLabels { transport })
        .inc();
    let active = metrics.watches_active.clone();
    active.inc();
    let (tx, items) = mpsc::channel(CHANNEL_BATCHES);
    let mut followers = JoinSet::new();
    for (namespace, cursor) in spec.namespaces {
        let follower = Follower {
            hub: hub.clone(),
            topic: hub.topic(&namespace),
            prefixes: Arc::clone(&spec.prefixes),
            progress: spec.progress,
            tx: tx.clone(),
        };
        followers.spawn(follower.run(cursor));
    }
    Watch {
        items,
        _followers: followers,
        active,
    }
}

/// The bytes an item takes, roughly (for batching under the frame limit).
pub fn item_bytes(item: &WireWatchItem) -> usize {
    match item {
        WireWatchItem::Event(event) => event_bytes(event),
        _ => 64,
    }
}

/// Follows one namespace for one watch.
struct Follower {
    hub: Hub,
    topic: Arc<Topic>,
    prefixes: Arc<Vec<String>>,
    progress: Duration,
    tx: mpsc::Sender<Vec<WireWatchItem>>,
}

/// What a follower does after one step.
enum Step {
    /// Go on at once.
    Continue,
    /// Wait for the topic to change (or the progress interval).
    Wait,
    /// Pause before retrying a failed read.
    Retry,
    /// The watcher is gone.
    Stop,
}

impl Follower {
    async fn run(self, cursor: Option<Revision>) {
        let mut stop = self.hub.stopping();
        let mut retry = RETRY_FIRST;
        // "From now": the namespace's current revision where it is held, told to the watcher
        // at once (it is the watcher's cursor from then on).
        let from_now = cursor.is_none();
        let mut cursor = loop {
            if let Some(cursor) = cursor {
                break cursor;
            }
            let read = tokio::select! {
                read = self.hub.read(self.namespace(), None, 1, Duration::ZERO) => read,
                _ = crate::shutdown::until_stopped(&mut stop) => return,
                _ = self.tx.closed() => return,
            };
            match read {
                Ok(Response::Push(PushResponse::Events { revision, .. })) => break revision,
                other => {
                    tracing::debug!(namespace = self.namespace(), answer = ?other.err(), "watch: cannot resolve \"now\" yet");
                    if !self.pause(&mut retry, &mut stop).await {
                        return;
                    }
                }
            }
        };
        if from_now && !self.send(vec![self.progress_item(cursor)]).await {
            return;
        }
        let mut quiet_since = Instant::now();
        loop {
            let mut changes = self.topic.subscribe();
            let step = match self.topic.read_after(cursor, BATCH_EVENTS) {
                TopicRead::Events(events) => {
                    let events: Vec<WireEvent> = events.iter().map(|e| (**e).clone()).collect();
                    self.deliver(&mut cursor, events, &mut quiet_since).await
                }
                TopicRead::Behind => self.catch_up(&mut cursor, &mut quiet_since).await,
                TopicRead::UpToDate { ahead: true } => {
                    self.check_ahead(&mut cursor, &mut quiet_since).await
                }
                TopicRead::UpToDate { ahead: false } => Step::Wait,
            };
            match step {
                Step::Continue => retry = RETRY_FIRST,
                Step::Stop => return,
                Step::Retry => {
                    if !self.pause(&mut retry, &mut stop).await {
                        return;
                    }
                }
                Step::Wait => {
                    let progress_at = quiet_since + self.progress;
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = tokio::time::sleep_until(progress_at) => {
                            if self.topic.live() && !self.send(vec![self.progress_item(cursor)]).await {
                                return;
                            }
                            quiet_since = Instant::now();
                        }
                        _ = crate::shutdown::until_stopped(&mut stop) => return,
                        _ = self.tx.closed() => return,
                    }
                }
            }
        }
    }

    fn namespace(&self) -> &str {
        self.topic.namespace()
    }

    fn progress_item(&self, revision: Revision) -> WireWatchItem {
        WireWatchItem::Progress {
            namespace: self.namespace().to_string(),
            revision,
        }
    }

    /// Sends the events after `cursor` that match, in batches under the size limit, and moves
    /// the cursor past all of them.
    async fn deliver(
        &self,
        cursor: &mut Revision,
        events: Vec<WireEvent>,
        quiet_since: &mut Instant,
    ) -> Step {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for event in events {
            if event.revision <= *cursor {
                continue;
            }
            if event.revision != *cursor + 1 {
                // A hole would break the guarantee: send what is in order, then read the log.
                if !batch.is_empty() && !self.send(batch).await {
                    return Step::Stop;
                }
                return Step::Retry;
            }
            *cursor = event.revision;
            if !event.kind.matches(&self.prefixes) {
                continue;
            }
            bytes += event_bytes(&event);
            batch.push(WireWatchItem::Event(event));
            if bytes >= BATCH_BYTES {
                if !self.send(std::mem::take(&mut batch)).await {
                    return Step::Stop;
                }
                bytes = 0;
                *quiet_since = Instant::now();
            }
        }
        if !batch.is_empty() {
            if !self.send(batch).await {
                return Step::Stop;
            }
            *quiet_since = Instant::now();
        }
        Step::Continue
    }

    /// Reads the log after `cursor` (the topic's buffer no longer reaches back to it).
    async fn catch_up(&self, cursor: &mut Revision, quiet_since: &mut Instant) -> Step {
        let limit = u32::try_from(MAX_EVENTS.min(BATCH_EVENTS * 4)).unwrap_or(1000);
        match self
            .hub
            .read(self.namespace(), Some(*cursor), limit, Duration::ZERO)
            .await
        {
            Ok(Response::Push(PushResponse::Events { events, .. })) if !events.is_empty() => {
                self.deliver(cursor, events, quiet_since).await
            }
            // The topic is ahead of where the log is read (the namespace just moved, or a
            // node read it before a crash): wait and read again.
            Ok(Response::Push(PushResponse::Events { .. })) => Step::Retry,
            Ok(Response::Push(PushResponse::Compacted {
                oldest_retained,
                current,
                ..
            })) => self.reset(cursor, oldest_retained, current).await,
            Ok(_) => Step::Retry,
            Err(e) => {
                tracing::debug!(namespace = self.namespace(), error = %e, "watch catch-up read failed");
                Step::Retry
            }
        }
    }

    /// The cursor is past the topic's head: either the topic lags (wait), or the namespace is
    /// behind the cursor (it was re-created): reset.
    async fn check_ahead(&self, cursor: &mut Revision, quiet_since: &mut Instant) -> Step {
        match self
            .hub
            .read(self.namespace(), None, 1, Duration::ZERO)
            .await
        {
            Ok(Response::Push(PushResponse::Events { revision, .. })) if revision < *cursor => {
                *quiet_since = Instant::now();
                self.reset(cursor, 0, revision).await
            }
            Ok(_) => Step::Wait,
            Err(_) => Step::Retry,
        }
    }

    async fn reset(
        &self,
        cursor: &mut Revision,
        oldest_retained: Revision,
        current: Revision,
    ) -> Step {
        *cursor = current;
        let item = WireWatchItem::Reset {
            namespace: self.namespace().to_string(),
            oldest_retained,
            current,
        };
        if self.send(vec![item]).await {
            Step::Continue
        } else {
            Step::Stop
        }
    }

    async fn send(&self, items: Vec<WireWatchItem>) -> bool {
        self.tx.send(items).await.is_ok()
    }

    /// Waits out a retry pause; false when the node stops or the watcher left meanwhile.
    async fn pause(
        &self,
        retry: &mut Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let delay = *retry;
        *retry = (*retry * 2).min(RETRY_MAX);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = crate::shutdown::until_stopped(stop) => false,
            _ = self.tx.closed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(namespaces: &[&str], prefixes: &[&str], progress_ms: u32) -> WireWatchRequest {
        WireWatchRequest {
            namespaces: namespaces.iter().map(|n| (n.to_string(), None)).collect(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            progress_ms,
        }
    }

    fn refused(r: WireWatchRequest) -> String {
        WatchSpec::check(r, &Principal::Admin)
            .expect_err("refused")
            .message
    }

    #[test]
    fn watch_requests_are_checked_before_anything_starts() {
        let spec =
            WatchSpec::check(request(&["a", "b"], &["x/"], 0), &Principal::Admin).expect("valid");
        assert_eq!(spec.progress, DEFAULT_PROGRESS);
        assert_eq!(spec.prefixes.as_slice(), ["x/".to_string()]);
        assert!(refused(request(&[], &[], 0)).contains("at least one"));
        assert!(refused(request(&["a", "a"], &[], 0)).contains("twice"));
        assert!(refused(request(&["_sys"], &[], 0)).contains("reserved"));
        assert!(refused(request(&["a"], &[], 5)).contains("progress"));
        let many: Vec<String> = (0..=MAX_NAMESPACES).map(|i| format!("n{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(refused(request(&many, &[], 0)).contains("at most"));
        let long = "p".repeat(MAX_PREFIX_BYTES + 1);
        assert!(refused(request(&["a"], &[&long], 0)).contains("longer"));
    }
}
