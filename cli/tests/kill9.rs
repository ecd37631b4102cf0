//! kill -9 loses no acknowledged write: the real binary under concurrent writers is SIGKILLed
//! mid-stream, restarted on the same data dir, and every acknowledged write is found, with its
//! version, value and revision, three times over.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use support::{NodeProcess, poll_until};
use tokio::sync::Mutex;

const WRITERS: usize = 16;
const NAMESPACES: [&str; 4] = ["crash-a", "crash-b", "crash-c", "crash-d"];
const KEYS_PER_WRITER: usize = 4;
const ACKS_PER_CYCLE: usize = 1500;
const HISTORY: u64 = 10;

/// One acknowledged write or delete.
#[derive(Clone, Debug)]
struct Ack {
    namespace: String,
    key: String,
    version: u64,
    revision: u64,
    /// The value written, `None` for a delete.
    value: Option<Vec<u8>>,
}

async fn writer(
    base: String,
    token: String,
    w: usize,
    cycle: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::new();
    let ns = NAMESPACES[w % NAMESPACES.len()];
    let mut seq = 0usize;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("w{w}/k{}", seq % KEYS_PER_WRITER);
        let url = format!("{base}/v1/namespaces/{ns}/keys/{key}");
        if seq.is_multiple_of(25) {
            // An alias to a key of ours: takes a revision too.
            let alias_url = format!("{base}/v1/namespaces/{ns}/aliases/a{w}-{cycle}-{seq}");
            let body = format!(r#"{{"target":"{key}"}}"#);
            match client
                .put(alias_url)
                .bearer_auth(&token)
                .body(body)
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => {
                    let v: Value = resp.json().await.unwrap_or_default();
                    if let Some(revision) = v["revision"].as_u64() {
                        acks.lock().await.push(Ack {
                            namespace: ns.to_string(),
                            key: format!("alias:{}", v["alias"].as_str().unwrap_or_default()),
                            version: 0,
                            revision,
                            value: None,
                        });
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
            continue;
        }
        let (request, value) = if seq.is_multiple_of(10) {
            (client.delete(&url), None)
        } else {
            let body = format!(r#"{{"w":{w},"cycle":{cycle},"seq":{seq}}}"#).into_bytes();
            (
                client
                    .put(&url)
                    .header("content-type", "application/json")
                    .body(body.clone()),
                Some(body),
            )
        };
        match request.bearer_auth(&token).send().await {
            Ok(resp) if resp.status().is_success() => {
                let Ok(v) = resp.json::<Value>().await else {
                    return;
                };
                let (Some(version), Some(revision)) =
                    (v["version"].as_u64(), v["revision"].as_u64())
                else {
                    panic!("acknowledged write without version/revision: {v}");
                };
                acks.lock().await.push(Ack {
                    namespace: ns.to_string(),
                    key,
                    version,
                    revision,
                    value,
                });
                count.fetch_add(1, Ordering::Relaxed);
            }
            // 404 deleting an already-deleted key: not acknowledged, nothing to check.
            Ok(_) => {}
            // The node was killed under us: unacknowledged, fine.
            Err(_) => return,
        }
    }
}

/// Checks every acknowledged write against what the restarted node serves.
async fn verify(node: &NodeProcess, acks: &[Ack]) {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client
            .get(format!("{}{path}", node.base))
            .bearer_auth(&node.token);
        async move { request.send().await.expect("restarted node answers") }
    };

    // Revisions are unique per namespace, and each namespace reached its highest acked one.
    let mut revisions: HashMap<&str, HashSet<u64>> = HashMap::new();
    for ack in acks {
        let fresh = revisions
            .entry(&ack.namespace)
            .or_default()
            .insert(ack.revision);
        assert!(
            fresh,
            "two acknowledged writes share revision {} in {}",
            ack.revision, ack.namespace
        );
    }
    for (ns, revs) in &revisions {
        let snapshot: Value = get(format!("/v1/namespaces/{ns}/snapshot"))
            .await
            .json()
            .await
            .expect("json");
        let current = snapshot["revision"].as_u64().expect("revision");
        let highest = revs.iter().max().copied().unwrap_or(0);
        assert!(
            current >= highest,
            "{ns}: revision {current} < acknowledged {highest}"
        );
    }

    // Per key: the newest version is at least the newest acknowledged, and every acknowledged
    // version still retained reads back exactly.
    let mut by_key: BTreeMap<(&str, &str), Vec<&Ack>> = BTreeMap::new();
    for ack in acks.iter().filter(|a| !a.key.starts_with("alias:")) {
        by_key
            .entry((&ack.namespace, &ack.key))
            .or_default()
            .push(ack);
    }
    for ((ns, key), key_acks) in by_key {
        let history: Value = get(format!("/v1/namespaces/{ns}/versions/{key}?limit=1"))
            .await
            .json()
            .await
            .expect("json");
        let latest = history["items"][0]["version"]
            .as_u64()
            .expect("history exists");
        let newest_ack = key_acks.iter().map(|a| a.version).max().unwrap_or(0);
        assert!(
            latest >= newest_ack,
            "{ns}/{key}: version {latest} < acknowledged {newest_ack}"
        );
        for ack in key_acks.iter().filter(|a| a.version + HISTORY > latest) {
            let stored: Value = get(format!(
                "/v1/namespaces/{ns}/versions/{key}?version={}",
                ack.version
            ))
            .await
            .json()
            .await
            .expect("json");
            assert_eq!(
                stored["revision"], ack.revision,
                "{ns}/{key} v{}",
                ack.version
            );
            match &ack.value {
                Some(bytes) => {
                    assert_eq!(
                        stored["value"],
                        STANDARD.encode(bytes),
                        "{ns}/{key} v{}",
                        ack.version
                    );
                    assert_eq!(stored["deleted"], false);
                }
                None => assert_eq!(stored["deleted"], true, "{ns}/{key} v{}", ack.version),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let mut node = NodeProcess::start(&data, &[]).await;
    for cycle in 0..3 {
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            tasks.push(tokio::spawn(writer(
                node.base.clone(),
                node.token.clone(),
                w,
                cycle,
                Arc::clone(&acks),
                Arc::clone(&count),
                Arc::clone(&stop),
            )));
        }
        poll_until(
            Duration::from_secs(120),
            "enough acknowledged writes",
            || {
                let done = count.load(Ordering::Relaxed) >= ACKS_PER_CYCLE;
                async move { done.then_some(()) }
            },
        )
        .await;
        // Mid-stream: the writers are still writing when the process dies.
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("writer task");
        }
        node = NodeProcess::start(&data, &[]).await;
        let snapshot = acks.lock().await.clone();
        assert!(snapshot.len() >= ACKS_PER_CYCLE * (cycle + 1));
        verify(&node, &snapshot).await;
    }
}
