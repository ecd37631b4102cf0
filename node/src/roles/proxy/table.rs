//! The routing table (pure): which route answers a host and path, and which backend of it
//! takes the next request.
//!
//! A [`Table`] is built from the routes and instances of every followed namespace and replaced
//! whole on each change (readers hold an `Arc` to the one they started with, so a request
//! never sees half an update). Matching: an exact host beats a wildcard, a longer wildcard
//! suffix beats a shorter one, and within a host the longest `path_prefix` wins; ties go to
//! the first (namespace, route) in name order, so every node picks the same.
//!
//! [`Pool`] is round robin over a route's backends, skipping any marked down: the proxy marks
//! a backend down for [`DOWN_FOR`] when connecting to it fails, so the requests after the
//! first failure go elsewhere at once, without waiting for the holder's health check.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::limiter::Limiter;
use super::route::Route;
use super::server::RouteMetrics;

/// How long a backend that refused a connection is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// One route, ready to serve.
#[derive(Debug)]
pub struct Entry {
    /// The namespace the route lives in.
    pub namespace: String,
    /// The route's name.
    pub name: String,
    /// The route.
    pub route: Route,
    /// Its backends.
    pub pool: Pool,
    /// Its rate limit, if it has one (kept across table rebuilds while the limit is the same).
    pub limiter: Option<Arc<Limiter>>,
}

/// An [`Entry`] in a [`Table`], with what serving it needs on every request computed once per
/// table build rather than once per request.
#[derive(Debug)]
pub struct Served {
    /// The route.
    pub entry: Entry,
    /// `namespace/name`, the route's metrics label.
    pub label: String,
    /// The route's metric handles, looked up by the server on the route's first request (so a
    /// route that serves nothing adds no series).
    pub metrics: OnceLock<RouteMetrics>,
}

impl Deref for Served {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        &self.entry
    }
}

/// A route's backends: `host:port` authorities, round robin, with local down marks.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<String>,
    next: AtomicUsize,
    /// Per backend: until when it is skipped, in ms since `epoch` (0: not down).
    down_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl Pool {
    /// A pool over `backends` (in a stable order, so every node rotates the same way).
    pub fn new(backends: Vec<String>) -> Pool {
        let down_until = backends.iter().map(|_| AtomicU64::new(0)).collect();
        Pool {
            backends,
            next: AtomicUsize::new(0),
            down_until,
            epoch: Instant::now(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The next backend in turn that is not down at `now` and not in `tried`; `None` when
    /// there is none left.
    pub fn pick(&self, now: Instant, tried: &[usize]) -> Option<(usize, &str)> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now_ms = self.ms(now);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| !tried.contains(i) && self.down_until[*i].load(Ordering::Relaxed) <= now_ms)
            .map(|i| (i, self.backends[i].as_str()))
    }

    /// Skips backend `index` until `now + DOWN_FOR`.
    pub fn mark_down(&self, index: usize, now: Instant) {
        if let Some(slot) = self.down_until.get(index) {
            slot.store(self.ms(now + DOWN_FOR), Ordering::Relaxed);
        }
    }
}

/// Every followed route, indexed by host.
#[derive(Debug, Default)]
pub struct Table {
    exact: HashMap<String, Vec<Arc<Served>>>,
    /// (".suffix", entries), longest suffix first.
    wildcard: Vec<(String, Vec<Arc<Served>>)>,
}

impl Table {
    /// Builds a table from entries (in any order).
    pub fn new(mut entries: Vec<Entry>) -> Table {
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut exact: HashMap<String, Vec<Arc<Served>>> = HashMap::new();
        let mut wildcard: BTreeMap<String, Vec<Arc<Served>>> = BTreeMap::new();
        let served = entries.into_iter().map(|entry| {
            Arc::new(Served {
                label: format!("{}/{}", entry.namespace, entry.name),
                entry,
                metrics: OnceLock::new(),
            })
        });
        for entry in served {
            for host in &entry.route.hosts {
                match host.strip_prefix('*') {
                    Some(suffix) => wildcard
                        .entry(suffix.to_string())
                        .or_default()
                        .push(Arc::clone(&entry)),
                    None => exact
                        .entry(host.clone())
                        .or_default()
                        .push(Arc::clone(&entry)),
                }
            }
        }
        // Longest path prefix first within a host; the sort is stable, so name order breaks ties.
        let by_prefix = |list: &mut Vec<Arc<Served>>| {
            list.sort_by_key(|e| std::cmp::Reverse(e.route.path_prefix.len()));
        };
        exact.values_mut().for_each(by_prefix);
        let mut wildcard: Vec<(String, Vec<Arc<Served>>)> = wildcard.into_iter().collect();
        wildcard.iter_mut().for_each(|(_, list)| by_prefix(list));
        wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Table { exact, wildcard }
    }

    /// The route for `host` (without port, any case) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Served>> {
        // Hosts are stored lowercase; most clients send them so, which saves a copy.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(found) = self.exact.get(host).and_then(|list| by_path(list, path)) {
            return Some(found);
        }
        self.wildcard
            .iter()
            .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .find_map(|(_, list)| by_path(list, path))
    }
}

/// The first entry (longest prefix first) whose path prefix `path` starts with.
fn by_path<'a>(list: &'a [Arc<Served>], path: &str) -> Option<&'a Arc<Served>> {
    list.iter().find(|e| path.starts_with(&e.route.path_prefix))
}

/// The host of a `Host` header value: the name without its port (IPv6 literals keep their
/// brackets).
pub fn host_of(header: &str) -> &str {
    if header.starts_with('[') {
        return header
            .split_once(']')
            .map_or(header, |(h, _)| &header[..=h.len()]);
    }
    header.rsplit_once(':').map_or(header, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            header
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::proxy::route::parse_route;
    use serde_json::json;

    fn entry(ns: &str, name: &str, hosts: &[&str], prefix: &str) -> Entry {
        let route = parse_route(
            &json!({"hosts": hosts, "path_prefix": prefix, "backend": {"service": "web"}}),
        )
        .expect("route");
        Entry {
            namespace: ns.into(),
            name: name.into(),
            route,
            pool: Pool::new(vec![]),
            limiter: None,
        }
    }

    fn found(table: &Table, host: &str, path: &str) -> Option<String> {
        table
            .find(host, path)
            .map(|e| format!("{}/{}", e.namespace, e.name))
    }

    #[test]
    fn exact_beats_wildcard_longer_suffix_and_prefix_win() {
        let table = Table::new(vec![
            entry("b", "wild", &["*.example.com"], "/"),
            entry("a", "exact", &["shop.example.com"], "/"),
            entry("a", "api", &["shop.example.com"], "/api/"),
            entry("a", "deep", &["*.eu.example.com"], "/"),
        ]);
        assert_eq!(
            found(&table, "Shop.Example.com", "/x"),
            Some("a/exact".into())
        );
        assert_eq!(
            found(&table, "shop.example.com", "/api/v1"),
            Some("a/api".into())
        );
        assert_eq!(found(&table, "a.example.com", "/"), Some("b/wild".into()));
        assert_eq!(
            found(&table, "x.eu.example.com", "/"),
            Some("a/deep".into())
        );
        assert_eq!(
            found(&table, "example.com", "/"),
            None,
            "a wildcard needs a label"
        );
        assert_eq!(found(&table, "other.org", "/"), None);
    }

    #[test]
    fn ties_go_to_the_first_name_and_prefixes_must_match() {
        let table = Table::new(vec![
            entry("z", "b", &["h"], "/"),
            entry("a", "a", &["h"], "/"),
            entry("a", "only", &["p"], "/only/"),
        ]);
        assert_eq!(found(&table, "h", "/"), Some("a/a".into()));
        assert_eq!(found(&table, "p", "/other"), None);
    }

    #[test]
    fn round_robin_skips_down_and_tried_backends() {
        let pool = Pool::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        let now = Instant::now();
        let picks: Vec<&str> = (0..6)
            .map(|_| pool.pick(now, &[]).expect("one").1)
            .collect();
        assert_eq!(picks, ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
        pool.mark_down(1, now);
        let picks: Vec<&str> = (0..4)
            .map(|_| pool.pick(now, &[]).expect("one").1)
            .collect();
        assert!(!picks.contains(&"b:1"), "{picks:?}");
        assert_eq!(
            pool.pick(now, &[0, 2]),
            None,
            "b is down, a and c were tried"
        );
        assert_eq!(
            pool.pick(now + DOWN_FOR, &[0, 2]).map(|p| p.1),
            Some("b:1"),
            "back after DOWN_FOR"
        );
        assert_eq!(Pool::new(vec![]).pick(now, &[]), None);
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("shop.example.com:8000"), "shop.example.com");
        assert_eq!(host_of("shop.example.com"), "shop.example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
    }
}
