//! kill -9 loses no acknowledged write (the last ones before the kill are durable only in the
//! write-ahead log: each restart must replay it).
//!
//! The real binary serves 16 concurrent writers (puts, deletes and alias creations over 4
//! namespaces) and is SIGKILLed while they are still writing. It is restarted on the same data
//! dir and every write it acknowledged before dying is checked: each key's newest version is at
//! least the newest acknowledged one (and equal to it in value when no later write landed), each
//! acknowledged version still in the retained history reads back with its value and revision,
//! each acknowledged alias exists, each namespace's revision reached the highest acknowledged one,
//! and no two acknowledgements in a namespace share a revision. Three kill/restart cycles, the
//! writers carrying on after each restart and the expectations accumulating.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{EXIT_DEADLINE, Launch, Node, POLL_INTERVAL};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Concurrent writer tasks; writer `w` writes namespace `crash-{w % 4}`.
const WRITERS: usize = 16;
/// Namespaces written.
const NAMESPACES: usize = 4;
/// Keys per writer: `w{w}/k0` .. `w{w}/k19`, written round-robin.
const KEYS_PER_WRITER: u64 = 20;
/// Acknowledged writes per cycle before the kill.
const ACKS_PER_CYCLE: usize = 1500;
/// The kill comes after this long even if fewer writes were acknowledged (a slow disk).
const CYCLE_WRITE_LIMIT: Duration = Duration::from_secs(15);
/// Fewest acknowledged writes per cycle for the cycle to prove anything.
const MIN_ACKS_PER_CYCLE: usize = 100;
/// Kill/restart cycles.
const CYCLES: usize = 3;
/// Versions kept per key: the default of `cfgnode start --history-limit`.
const HISTORY_LIMIT: u64 = 10;
/// Concurrent verification tasks.
const VERIFIERS: usize = 8;

/// What an acknowledged request did.
#[derive(Clone, Debug)]
enum Op {
    /// Wrote these bytes.
    Put(Vec<u8>),
    /// Deleted the key.
    Delete,
    /// Created the alias (the ack's key) pointing at this key.
    Alias { target: String },
}

/// One acknowledged (2xx) write, as the node reported it.
#[derive(Clone, Debug)]
struct Ack {
    namespace: String,
    /// The key, or the alias name for [`Op::Alias`].
    key: String,
    /// The key's version (0 for aliases, which have none).
    version: u64,
    /// The namespace revision of the write.
    revision: u64,
    op: Op,
}

/// What the writers share with the test.
#[derive(Default)]
struct Record {
    acks: Mutex<Vec<Ack>>,
    /// Acknowledgements so far (all cycles).
    count: AtomicUsize,
    /// Answers a live node should never give: a writer that meets one stops and notes it here.
    unexpected: Mutex<Vec<String>>,
}

impl Record {
    fn ack(&self, ack: Ack) {
        self.acks.lock().expect("acks lock").push(ack);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn unexpected(&self, what: String) {
        self.unexpected.lock().expect("unexpected lock").push(what);
    }
}

fn namespace(writer: usize) -> String {
    format!("crash-{}", writer % NAMESPACES)
}

/// Sends `request`; `Some(body)` when it was acknowledged with `expected`. `None` when the
/// connection failed (the node died: not acknowledged, fine) or the answer was wrong (noted).
async fn acknowledged(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
    record: &Record,
) -> Option<Value> {
    let response = request.send().await.ok()?;
    let status = response.status();
    // A body cut off by the kill leaves the write unconfirmed: not counted as acknowledged.
    let body = response.text().await.ok()?;
    if status != expected {
        record.unexpected(format!("{what}: {status} {body}"));
        return None;
    }
    match serde_json::from_str(&body) {
        Ok(value) => Some(value),
        Err(e) => {
            record.unexpected(format!(
                "{what}: {status} with a body that is not JSON ({e}): {body}"
            ));
            None
        }
    }
}

fn field(body: &Value, name: &str) -> u64 {
    body[name]
        .as_u64()
        .unwrap_or_else(|| panic!("acknowledgement without {name:?}: {body}"))
}

/// Writes until the node stops answering; returns the last sequence number used. Each step puts
/// the writer's next key; some steps then alias it (it exists: only this writer touches its
/// keys, and it was just written) and some then delete it.
async fn writer(node: Arc<NodeAddress>, w: usize, mut seq: u64, record: Arc<Record>) -> u64 {
    let ns = namespace(w);
    loop {
        seq += 1;
        let key = format!("w{w}/k{}", seq % KEYS_PER_WRITER);
        let value = json!({ "writer": w, "seq": seq }).to_string().into_bytes();
        let put = node
            .request(Method::PUT, &format!("/v1/namespaces/{ns}/keys/{key}"))
            .header("content-type", "application/json")
            .body(value.clone());
        let what = format!("PUT {ns}/{key}");
        let Some(body) = acknowledged(put, StatusCode::OK, &what, &record).await else {
            return seq;
        };
        record.ack(Ack {
            namespace: ns.clone(),
            key: key.clone(),
            version: field(&body, "version"),
            revision: field(&body, "revision"),
            op: Op::Put(value),
        });

        if seq % 11 == 7 {
            let alias = format!("w{w}/alias-{seq}");
            let create = node
                .request(Method::PUT, &format!("/v1/namespaces/{ns}/aliases/{alias}"))
                .header("content-type", "application/json")
                .body(json!({ "target": key }).to_string());
            let what = format!("PUT alias {ns}/{alias}");
            let Some(body) = acknowledged(create, StatusCode::CREATED, &what, &record).await else {
                return seq;
            };
            record.ack(Ack {
                namespace: ns.clone(),
                key: alias,
                version: 0,
                revision: field(&body, "revision"),
                op: Op::Alias {
                    target: key.clone(),
                },
            });
        }

        if seq % 9 == 4 {
            let delete = node.request(Method::DELETE, &format!("/v1/namespaces/{ns}/keys/{key}"));
            let what = format!("DELETE {ns}/{key}");
            let Some(body) = acknowledged(delete, StatusCode::OK, &what, &record).await else {
                return seq;
            };
            record.ack(Ack {
                namespace: ns.clone(),
                key,
                version: field(&body, "version"),
                revision: field(&body, "revision"),
                op: Op::Delete,
            });
        }
    }
}

/// Where a node serves and how to authenticate, shareable across tasks.
struct NodeAddress {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl NodeAddress {
    fn of(node: &Node) -> Arc<NodeAddress> {
        Arc::new(NodeAddress {
            base: node.base.clone(),
            token: node.token.clone(),
            http: node.http.clone(),
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// GET `path`: status and JSON body (null when there is none).
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the restarted node: {e}"));
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_concurrent_writes_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let launch = Launch::new(tmp.path());
    let mut node = Node::start(&launch).await;
    let record = Arc::new(Record::default());
    let mut seqs = [0u64; WRITERS];

    for cycle in 1..=CYCLES {
        let before = record.count.load(Ordering::SeqCst);
        let address = NodeAddress::of(&node);
        let writers: Vec<_> = seqs
            .iter()
            .enumerate()
            .map(|(w, &seq)| {
                tokio::spawn(writer(Arc::clone(&address), w, seq, Arc::clone(&record)))
            })
            .collect();

        let started = Instant::now();
        while record.count.load(Ordering::SeqCst) - before < ACKS_PER_CYCLE
            && started.elapsed() < CYCLE_WRITE_LIMIT
            && writers.iter().all(|w| !w.is_finished())
        {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        // Every writer is mid-stream when the process dies.
        let still_writing = writers.iter().filter(|w| !w.is_finished()).count();
        let status = node.kill9();
        assert_eq!(status.signal(), Some(9), "the node died of SIGKILL");
        for (w, task) in writers.into_iter().enumerate() {
            seqs[w] = tokio::time::timeout(EXIT_DEADLINE, task)
                .await
                .expect("a writer notices the dead node")
                .expect("writer task");
        }
        let unexpected = record.unexpected.lock().expect("lock").clone();
        assert!(
            unexpected.is_empty(),
            "the live node gave wrong answers:\n{}",
            unexpected.join("\n")
        );
        assert_eq!(
            still_writing, WRITERS,
            "all writers were writing at the kill"
        );
        let acked = record.count.load(Ordering::SeqCst) - before;
        assert!(
            acked >= MIN_ACKS_PER_CYCLE,
            "cycle {cycle}: only {acked} writes acknowledged in {CYCLE_WRITE_LIMIT:?}"
        );

        node = node.restart().await;
        // Writes were acknowledged up to the kill, and a checkpoint comes at most once a second:
        // the last ones were durable only in the write-ahead log, and the restart applied them.
        let log = std::fs::read_to_string(&node.stderr_path).unwrap_or_default();
        assert!(
            log.contains("replayed the write-ahead log"),
            "cycle {cycle}: the restart did not replay the write-ahead log; its stderr:\n{log}"
        );
        let acks = record.acks.lock().expect("lock").clone();
        eprintln!(
            "cycle {cycle}: {acked} writes acknowledged in {:?} before SIGKILL; verifying {} in all",
            started.elapsed(),
            acks.len()
        );
        verify(&node, &acks).await;
    }
}

/// Checks every acknowledged write against the restarted node; panics listing every mismatch.
async fn verify(node: &Node, acks: &[Ack]) {
    let mut problems = Vec::new();

    // No two acknowledgements in a namespace share a revision.
    let mut by_revision: HashMap<(&str, u64), &Ack> = HashMap::new();
    for ack in acks {
        if let Some(earlier) = by_revision.insert((&ack.namespace, ack.revision), ack) {
            problems.push(format!("revision shared by {earlier:?} and {ack:?}"));
        }
    }

    let address = NodeAddress::of(node);

    // Each namespace reached its highest acknowledged revision and holds every alias created.
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for ack in acks {
        let top = highest.entry(&ack.namespace).or_default();
        *top = (*top).max(ack.revision);
    }
    let (status, listing) = address.get("/v1/namespaces?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "list namespaces: {listing}");
    for (&ns, &acked) in &highest {
        let listed = listing["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["name"] == ns))
            .and_then(|item| item["revision"].as_u64());
        let (status, snapshot) = address.get(&format!("/v1/namespaces/{ns}/snapshot")).await;
        let current = snapshot["revision"].as_u64();
        if status != StatusCode::OK || current.is_none_or(|r| r < acked) {
            problems.push(format!(
                "{ns}: snapshot revision {current:?} ({status}) < acknowledged {acked}"
            ));
        }
        if listed != current {
            problems.push(format!(
                "{ns}: listed revision {listed:?} != snapshot revision {current:?}"
            ));
        }
        let aliases: HashMap<&str, &Value> = snapshot["aliases"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|a| Some((a["alias"].as_str()?, a)))
                    .collect()
            })
            .unwrap_or_default();
        for ack in acks.iter().filter(|a| a.namespace == ns) {
            if let Op::Alias { target } = &ack.op {
                match aliases.get(ack.key.as_str()) {
                    Some(alias)
                        if alias["target"] == target.as_str()
                            && alias["revision"] == ack.revision => {}
                    other => problems.push(format!("{ns}: alias {ack:?} is stored as {other:?}")),
                }
            }
        }
    }

    // Per key: the newest acknowledged version survived, and every acknowledged version still in
    // the retained history reads back exactly.
    let mut by_key: BTreeMap<(String, String), Vec<Ack>> = BTreeMap::new();
    for ack in acks.iter().filter(|a| !matches!(a.op, Op::Alias { .. })) {
        by_key
            .entry((ack.namespace.clone(), ack.key.clone()))
            .or_default()
            .push(ack.clone());
    }
    let keys: Vec<_> = by_key.into_iter().collect();
    let chunk = keys.len().div_ceil(VERIFIERS).max(1);
    let mut checks = tokio::task::JoinSet::new();
    for part in keys.chunks(chunk) {
        let part = part.to_vec();
        let address = Arc::clone(&address);
        checks.spawn(async move {
            let mut problems = Vec::new();
            for ((ns, key), acks) in part {
                verify_key(&address, &ns, &key, &acks, &mut problems).await;
            }
            problems
        });
    }
    while let Some(found) = checks.join_next().await {
        problems.extend(found.expect("verification task"));
    }

    assert!(
        problems.is_empty(),
        "{} acknowledged writes are missing or wrong after SIGKILL and restart:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Whether a version as served (`GET .../versions/{key}`) is what `ack` acknowledged.
fn same_write(stored: &Value, ack: &Ack) -> bool {
    let content = match &ack.op {
        Op::Put(bytes) => stored["deleted"] == false && stored["value"] == STANDARD.encode(bytes),
        Op::Delete => stored["deleted"] == true && stored["value"].is_null(),
        Op::Alias { .. } => false,
    };
    content && stored["version"] == ack.version && stored["revision"] == ack.revision
}

async fn verify_key(
    node: &NodeAddress,
    ns: &str,
    key: &str,
    acks: &[Ack],
    problems: &mut Vec<String>,
) {
    let last = acks
        .iter()
        .max_by_key(|a| a.version)
        .expect("a key has at least one ack");
    let (status, history) = node
        .get(&format!("/v1/namespaces/{ns}/versions/{key}?limit=1"))
        .await;
    let newest = &history["items"][0];
    let Some(newest_version) = newest["version"].as_u64() else {
        problems.push(format!(
            "{ns}/{key}: no history ({status} {history}); last ack {last:?}"
        ));
        return;
    };
    if newest_version < last.version {
        problems.push(format!(
            "{ns}/{key}: newest version {newest_version} < acknowledged {last:?}"
        ));
    }
    if newest_version == last.version && !same_write(newest, last) {
        problems.push(format!(
            "{ns}/{key}: newest version is {newest}, acknowledged as {last:?}"
        ));
    }

    // The current entry agrees with the newest version.
    let (status, current) = node.get(&format!("/v1/namespaces/{ns}/keys/{key}")).await;
    let live = newest["deleted"] == false;
    let agrees = if live {
        status == StatusCode::OK && current["version"] == newest_version
    } else {
        status == StatusCode::NOT_FOUND
    };
    if !agrees {
        problems.push(format!(
            "{ns}/{key}: GET answers {status} {current} but the newest version is {newest}"
        ));
    }

    for ack in acks
        .iter()
        .filter(|a| a.version + HISTORY_LIMIT > newest_version)
    {
        let (status, stored) = node
            .get(&format!(
                "/v1/namespaces/{ns}/versions/{key}?version={}",
                ack.version
            ))
            .await;
        if status != StatusCode::OK || !same_write(&stored, ack) {
            problems.push(format!(
                "{ns}/{key} v{}: stored {status} {stored}, acknowledged {ack:?}",
                ack.version
            ));
        }
    }
}
