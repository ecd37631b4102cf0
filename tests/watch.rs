//! Watches over QUIC across a 3-node cluster: watchers on every node see exactly the namespace
//! log while writers write, one watcher's connections are cut again and again, a node restarts
//! and the namespace is claimed onto another node mid-stream. Also: a cursor older than the
//! retained log gets a reset (or a resync), and bad watches are refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cfgnode_client::{
    Client, ClientError, ConnectionEvent, EventsRead, Watch, WatchEvent, WatchOptions,
};
use cfgnode_tests::{DEADLINE, TOKEN, TestCluster, shutdown_all};
use cfgnode_transport::{WireEvent, WireEventKind};
use tokio::sync::watch;

/// A client for the nodes at `addrs`, the first preferred.
fn client_for(addrs: Vec<std::net::SocketAddr>) -> Client {
    Client::builder(addrs)
        .token(TOKEN)
        .insecure()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Collects a watch's changes of `ns` until its cursor reaches the revision `until` publishes.
fn collect(
    mut watch: Watch,
    ns: &'static str,
    until: watch::Receiver<Option<u64>>,
) -> tokio::task::JoinHandle<Vec<WireEvent>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            if let Some(last) = *until.borrow()
                && watch.cursors().get(ns).is_some_and(|c| *c >= last)
            {
                return seen;
            }
            let next = tokio::time::timeout(DEADLINE, watch.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the watch delivers within the deadline (cursors {:?}, until {:?})",
                        watch.cursors(),
                        *until.borrow()
                    )
                })
                .expect("the watch keeps going");
            match next {
                WatchEvent::Change(event) => seen.push(event),
                WatchEvent::Progress { .. } => {}
                other => panic!("unexpected watch item {other:?}"),
            }
        }
    })
}

/// The whole log of `ns`, read through `client`.
async fn whole_log(client: &Client, ns: &str) -> Vec<WireEvent> {
    let mut log = Vec::new();
    loop {
        let after = log.last().map_or(0, |e: &WireEvent| e.revision);
        match client.events(ns, after, 1000).await.expect("events") {
            EventsRead::Events { events, .. } if events.is_empty() => return log,
            EventsRead::Events { events, .. } => log.extend(events),
            EventsRead::Compacted { .. } => panic!("the log should reach back to the start"),
        }
    }
}

fn revisions(events: &[WireEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_watcher_sees_exactly_the_log_through_cuts_restarts_and_moves() {
    const NS: &str = "orders";
    const WRITES: usize = 300;
    let mut cluster = TestCluster::start(3).await;
    let addrs: Vec<_> = cluster.running().map(|n| n.quic_addr()).collect();
    let https: Vec<_> = cluster.running().map(|n| n.http_addr()).collect();
    // The namespace starts on n1.
    cluster.put(cluster.node(0), NS, "seed", "0").await;
    cluster.direct(0, "claims", NS, "n1").await;
    cluster.wait_held_by(NS, "n1").await;

    // One watcher per node (each prefers its node), plus one whose connections get cut.
    let (until_tx, until) = watch::channel(None);
    let mut watchers = Vec::new();
    for i in 0..3 {
        let mut order = addrs.clone();
        order.rotate_left(i);
        let client = client_for(order);
        let w = client.watch(
            WatchOptions::new()
                .namespace_after(NS, 0)
                .progress_every(Duration::from_millis(300)),
        );
        watchers.push(collect(w, NS, until.clone()));
    }
    let cuts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&cuts);
    let cut_client = Client::builder(vec![addrs[1], addrs[0]])
        .token(TOKEN)
        .insecure()
        .on_connection_change(move |event| {
            if matches!(event, ConnectionEvent::Disconnected { .. }) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .expect("client");
    let w = cut_client.watch(
        WatchOptions::new()
            .namespace_after(NS, 0)
            .progress_every(Duration::from_millis(200)),
    );
    watchers.push(collect(w, NS, until.clone()));
    let cutter = {
        let client = cut_client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(120)).await;
                client.close_connections().await;
            }
        })
    };

    // The writer goes through n1 (never restarted) while the namespace moves and n3 restarts.
    // A write refused while the namespace moves (503) is retried: the log is the truth the
    // watchers are held to, whatever the writer saw.
    let (written_tx, mut written) = watch::channel(0usize);
    let writer = {
        let http = reqwest::Client::new();
        let base = format!("http://{}", https[0]);
        tokio::spawn(async move {
            for i in 0..WRITES {
                let mut attempts = 0;
                loop {
                    let resp = http
                        .put(format!("{base}/v1/namespaces/{NS}/keys/k{}", i % 37))
                        .bearer_auth(TOKEN)
                        .header("content-type", "text/plain")
                        .body(format!("v{i}"))
                        .send()
                        .await
                        .expect("put answers");
                    if resp.status().is_success() {
                        break;
                    }
                    attempts += 1;
                    assert!(attempts < 50, "write {i}: {}", resp.status());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = written_tx.send(i + 1);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let _ = written.wait_for(|n| *n >= WRITES / 3).await;
    cluster.direct(0, "claims", NS, "n2").await;
    let _ = written.wait_for(|n| *n >= WRITES / 2).await;
    let n3 = cluster.stop(2).await;
    let (quic, http) = (n3.quic_addr(), n3.http_addr());
    n3.shutdown().await.expect("n3 stops");
    cluster.restart_at("n3", quic, http).await;
    writer.await.expect("writer");
    cutter.abort();
    cluster.wait_held_by(NS, "n2").await;
    let log = whole_log(&cluster.client(cluster.node(0)), NS).await;
    let last = log.last().map_or(0, |e| e.revision);
    assert!(last > WRITES as u64, "every write is in the log");
    let _ = until_tx.send(Some(last));
    assert_eq!(
        revisions(&log),
        (1..=last).collect::<Vec<_>>(),
        "the log has no hole"
    );
    for (i, watcher) in watchers.into_iter().enumerate() {
        let seen = watcher.await.expect("watcher");
        assert_eq!(revisions(&seen), revisions(&log), "watcher {i}: revisions");
        assert_eq!(seen, log, "watcher {i}: events");
    }
    assert!(
        cuts.load(Ordering::Relaxed) >= 5,
        "the cut watcher lost its connection only {} times",
        cuts.load(Ordering::Relaxed)
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_log_gets_a_reset_or_a_resync() {
    const NS: &str = "small";
    let mut cluster = TestCluster::start_with(1, |c| c.log_per_namespace = 10).await;
    let node = cluster.node(0);
    for i in 0..30 {
        cluster.put(node, NS, &format!("k{i}"), "x").await;
    }
    let client = cluster.client(node);
    let mut plain = client.watch(WatchOptions::new().namespace_after(NS, 3));
    let first = plain.next().await.expect("first item");
    let WatchEvent::Reset {
        oldest_retained,
        current,
        ..
    } = first
    else {
        panic!("expected a reset, got {first:?}");
    };
    assert_eq!(current, 30);
    assert!(
        oldest_retained > 4 && oldest_retained <= 21,
        "{oldest_retained}"
    );
    assert_eq!(plain.cursors().get(NS), Some(&30));

    let mut resync = client.watch(
        WatchOptions::new()
            .namespace_after(NS, 0)
            .resync_on_reset(true),
    );
    let WatchEvent::Resynced(snapshot) = resync.next().await.expect("resync") else {
        panic!("expected a resync");
    };
    assert_eq!(snapshot.revision, 30);
    assert_eq!(snapshot.entries.len(), 30);
    // Both go on after the reset with the next write, exactly once.
    cluster.put(node, NS, "after", "y").await;
    for watch in [&mut plain, &mut resync] {
        let event = loop {
            match watch.next().await.expect("next") {
                WatchEvent::Change(event) => break event,
                WatchEvent::Progress { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(event.revision, 31);
        assert!(matches!(&event.kind, WireEventKind::Set { key, .. } if key == "after"));
    }
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_filter_and_bad_watches_are_refused() {
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    let client = cluster.client(node);
    let mut w = client.watch(
        WatchOptions::new()
            .namespace("app")
            .prefix("db/")
            .progress_every(Duration::from_millis(100)),
    );
    let WatchEvent::Progress { revision: 0, .. } = w.next().await.expect("start") else {
        panic!("the first item says where the watch starts");
    };
    cluster.put(node, "app", "web/port", "80").await;
    cluster.put(node, "app", "db/url", "pg").await;
    let change = tokio::time::timeout(DEADLINE, async {
        loop {
            if let WatchEvent::Change(e) = w.next().await.expect("next") {
                break e;
            }
        }
    })
    .await
    .expect("the db/ change arrives");
    assert_eq!(change.revision, 2, "web/port (revision 1) is filtered out");
    // The cursor moved past the filtered event too.
    assert_eq!(w.cursors().get("app"), Some(&2));
    // An idle watch hears progress.
    cluster.put(node, "app", "web/host", "x").await;
    let progress = tokio::time::timeout(DEADLINE, w.next())
        .await
        .expect("progress within the deadline")
        .expect("progress");
    assert_eq!(
        progress,
        WatchEvent::Progress {
            namespace: "app".to_string(),
            revision: 3
        }
    );

    for options in [
        WatchOptions::new(),
        WatchOptions::new().namespace("Bad Name"),
        WatchOptions::new().namespace("a").namespace("a"),
        WatchOptions::new()
            .namespace("a")
            .progress_every(Duration::from_millis(1)),
    ] {
        let err = client.watch(options).next().await.expect_err("refused");
        assert!(matches!(err, ClientError::Invalid { .. }), "{err:?}");
    }
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_each_namespace_once_for_all_its_watchers() {
    let mut cluster = TestCluster::start(2).await;
    cluster.put(cluster.node(0), "shared", "k", "0").await;
    cluster.direct(0, "claims", "shared", "n1").await;
    cluster.wait_held_by("shared", "n1").await;
    // Twenty watchers on n2, for a namespace n1 holds.
    let client = cluster.client(cluster.node(1));
    let mut watches = Vec::new();
    for _ in 0..20 {
        let mut w = client.watch(WatchOptions::new().namespace("shared"));
        assert!(matches!(
            w.next().await.expect("opens"),
            WatchEvent::Progress { .. }
        ));
        watches.push(w);
    }
    let metrics = cluster.metrics(cluster.node(1)).await;
    let gauge = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        gauge("cfgnode_push_watch_topics").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(gauge("cfgnode_push_watches_active").as_deref(), Some("20"));
    cluster.put(cluster.node(0), "shared", "k", "1").await;
    for w in &mut watches {
        let event = loop {
            if let WatchEvent::Change(e) = w.next().await.expect("next") {
                break e;
            }
        };
        assert_eq!(event.revision, 2);
    }
    drop(watches);
    shutdown_all(&mut cluster).await;
}
