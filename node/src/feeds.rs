//! [`Feeds`]: one change counter per namespace, moved at every committed change (and when the
//! namespace moves to another node), for waiters to wake on. Neutral: the push role waits on
//! it, storage commits and the cluster's handoffs move it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Change counters by namespace. Cheap to clone; clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct Feeds {
    inner: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Feeds {
    /// Feeds with no namespace yet.
    pub fn new() -> Self {
        Feeds::default()
    }

    /// Something happened to `namespace` (a committed change, or a move): wakes its waiters.
    pub fn changed(&self, namespace: &str) {
        let mut feeds = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match feeds.get(namespace) {
            Some(feed) => {
                feed.send_modify(|n| *n += 1);
            }
            None => {
                // Nobody waits yet: create the counter so later subscribers share it.
                feeds.insert(namespace.to_string(), watch::channel(0).0);
            }
        }
    }

    /// A receiver that sees every later change of `namespace`. Subscribe before checking the
    /// state you wait on, so a change between the check and the wait is not missed.
    pub fn subscribe(&self, namespace: &str) -> watch::Receiver<u64> {
        let mut feeds = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .entry(namespace.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_sees_a_change_made_after_it_subscribed() {
        let feeds = Feeds::new();
        let mut rx = feeds.subscribe("a");
        feeds.changed("b");
        assert!(!rx.has_changed().expect("open"));
        feeds.changed("a");
        rx.changed().await.expect("a change");
        assert!(!rx.has_changed().expect("open"), "seen once");
    }
}
