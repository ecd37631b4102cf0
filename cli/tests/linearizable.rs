//! A Jepsen-style history test across real processes (docs/replication.md, "History checker"):
//! three `cfgnode start` processes, four clients doing gets, puts and compare-and-sets on three
//! keys through any node over HTTP, while a nemesis SIGKILLs and restarts nodes (holder
//! included) and moves the namespace with a claim (a handoff under load). Every operation is
//! recorded with its outcome, the history ends with a read of every key once the cluster is whole
//! again, and `cfgnode-lincheck` checks it: linearizable per key, and no acknowledged write lost.
//!
//! It runs three times. With `--replicas 1` a namespace has one copy, on its holder: a killed
//! holder's namespace answers 503 until it is back, so this checks the single-holder design's
//! promises (durable acknowledgements, one holder at a time, handoff under load). With
//! `--replicas 3` a killed holder's namespace fails over (docs/replication.md, "Promotion"):
//! victims, the holder in about half the rounds, stay down 3 to 4 s, and writes must also be
//! acknowledged while they are down. The third run is `--replicas 3` on five processes, where
//! the kills and cuts also change the set and claims hand the namespace to nodes outside it.
//!
//! `CFGNODE_HISTORY_SECS` lengthens the run (default 12 s); the seed is printed, and
//! `CFGNODE_HISTORY_SEED` replays a schedule. `CFGNODE_HISTORY_KEEP=1` keeps the run's
//! directory (each node's data and its `cfgnode-N.stderr` log, with replication's and the
//! cluster's debug lines, and `history.txt`: every operation with its times on the wall clock,
//! the node asked, the node that served it and the revision it answered at) and prints where
//! it is.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cfgnode_lincheck::{ClientId, Op, Outcome, Recorder};
use common::{Node, alive_everywhere, poll_until};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const NS: &str = "jep";
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const CLIENTS: u64 = 4;
const TOKEN: &str = "history-test-shared-token-0123456789abcdef";

/// A small deterministic generator (xorshift64*), so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What an HTTP answer means for the history.
enum Answer {
    /// The operation took effect (or read) with this outcome.
    Done(Outcome<String>),
    /// It certainly did not take effect: refused before it reached the holder.
    Failed,
    /// It may or may not have taken effect (timeout, connection lost, anything else).
    Unknown,
}

/// The error code of a JSON error body, if any.
async fn code_of(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap_or_default();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Refusals that are answered before the request reaches the namespace's holder: the holder is
/// down (its data is there only), or the node cannot route yet. Nothing was applied.
fn refused_before_the_holder(code: &str) -> bool {
    matches!(code, "holder_down" | "not_ready")
}

/// What a kept history notes of an answer: its status, the node that served it and the
/// revision it answered at (`x-cfgnode-node`, `x-cfgnode-revision`).
fn served(resp: &reqwest::Response) -> String {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    format!(
        "{} served by {} at revision {}",
        resp.status().as_u16(),
        header("x-cfgnode-node"),
        header("x-cfgnode-revision")
    )
}

/// `GET` a key: its value and version, `None` when it does not exist.
async fn get(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    note: &mut String,
) -> (Answer, Option<(String, u64)>) {
    let url = format!("{base}/v1/namespaces/{NS}/keys/{key}?raw=true");
    let resp = match http.get(url).bearer_auth(TOKEN).send().await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => return (Answer::Failed, None),
        Err(e) => {
            *note = format!("{e}");
            return (Answer::Unknown, None);
        }
    };
    *note = served(&resp);
    match resp.status() {
        StatusCode::OK => {
            let version = resp
                .headers()
                .get("x-cfgnode-version")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            match (version, resp.text().await) {
                (Some(version), Ok(value)) => (
                    Answer::Done(Outcome::Read(Some(value.clone()))),
                    Some((value, version)),
                ),
                _ => (Answer::Unknown, None),
            }
        }
        StatusCode::NOT_FOUND => (Answer::Done(Outcome::Read(None)), None),
        _ => (Answer::Unknown, None),
    }
}

/// `PUT` a key, unconditionally (`if_version` `None`) or as a compare-and-set on a version
/// (0: the key must not exist).
async fn put(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    value: &str,
    if_version: Option<u64>,
    note: &mut String,
) -> Answer {
    let mut url = format!("{base}/v1/namespaces/{NS}/keys/{key}");
    if let Some(version) = if_version {
        url.push_str(&format!("?if_version={version}"));
    }
    let sent = http
        .put(url)
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(value.to_string())
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        // Nothing was sent: the node is down (killed), so the write cannot have happened.
        Err(e) if e.is_connect() => return Answer::Failed,
        Err(e) => {
            *note = format!("{e}");
            return Answer::Unknown;
        }
    };
    *note = served(&resp);
    let status = resp.status();
    if status.is_success() {
        return Answer::Done(match if_version {
            Some(_) => Outcome::Cas(true),
            None => Outcome::Written,
        });
    }
    let code = code_of(resp).await;
    note.push_str(&format!(" {code}"));
    match (status, code.as_str()) {
        (StatusCode::CONFLICT, "version_mismatch" | "already_exists") if if_version.is_some() => {
            Answer::Done(Outcome::Cas(false))
        }
        (_, code) if refused_before_the_holder(code) => Answer::Failed,
        _ => Answer::Unknown,
    }
}

fn settle(recorder: &Recorder<String, String>, id: cfgnode_lincheck::OpId, answer: Answer) {
    let recorded = match answer {
        Answer::Done(outcome) => recorder.complete(id, outcome),
        Answer::Failed => recorder.fail(id),
        Answer::Unknown => recorder.unknown(id),
    };
    recorded.expect("each operation is answered once");
}

/// One client: random operations on random keys through random nodes until `until`.
async fn client(
    id: ClientId,
    seed: u64,
    bases: Arc<Vec<String>>,
    recorder: Arc<Recorder<String, String>>,
    notes: Notes,
    until: Instant,
) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut count = 0;
    while Instant::now() < until {
        let via = rng.below(bases.len() as u64) as usize;
        let base = &bases[via];
        let note = |op: cfgnode_lincheck::OpId, what: String| {
            notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(op.0, format!("via n{}: {what}", via + 1));
        };
        let mut what = String::new();
        let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_string();
        count += 1;
        let value = format!("c{id}-{count}");
        match rng.below(10) {
            0..=3 => {
                let op = recorder.invoke(id, key.clone(), Op::Get);
                let (answer, _) = get(&http, base, &key, &mut what).await;
                settle(&recorder, op, answer);
                note(op, what);
            }
            4..=6 => {
                let op = recorder.invoke(id, key.clone(), Op::Put(value.clone()));
                let answer = put(&http, base, &key, &value, None, &mut what).await;
                settle(&recorder, op, answer);
                note(op, what);
            }
            _ => {
                // Read, then compare-and-set on the version read. Values are unique, so "the
                // version I read" and "the value I read" name the same state.
                let read = recorder.invoke(id, key.clone(), Op::Get);
                let (answer, seen) = get(&http, base, &key, &mut what).await;
                let known = matches!(answer, Answer::Done(_));
                settle(&recorder, read, answer);
                note(read, std::mem::take(&mut what));
                if !known {
                    continue;
                }
                let (expect, version) = match seen {
                    Some((value, version)) => (Some(value), version),
                    None => (None, 0),
                };
                let op = recorder.invoke(
                    id,
                    key.clone(),
                    Op::Cas {
                        expect,
                        new: value.clone(),
                    },
                );
                let answer = put(&http, base, &key, &value, Some(version), &mut what).await;
                settle(&recorder, op, answer);
                note(op, what);
            }
        }
    }
    count
}

/// What each operation's answer said beyond its outcome (`served`), by operation index, for a
/// kept history.
type Notes = Arc<std::sync::Mutex<HashMap<usize, String>>>;

/// Writes the whole history to `history.txt` in the kept directory: one line per operation
/// with its times as UTC wall clock (to line up with the nodes' logs), its outcome and its note.
fn keep_history(
    dir: &std::path::Path,
    history: &cfgnode_lincheck::History<String, String>,
    notes: &Notes,
    started_at: std::time::SystemTime,
) {
    let notes = notes.lock().unwrap_or_else(|p| p.into_inner());
    let clock = |nanos: u64| {
        let at = started_at + Duration::from_nanos(nanos);
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let of_day = since.as_secs() % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            since.subsec_micros()
        )
    };
    let mut text = String::new();
    for r in history.records() {
        let end = r.completed_at().map_or_else(|| "-".to_string(), clock);
        text.push_str(&format!(
            "{} client {} {} {:?} [{} .. {}] {:?} | {}\n",
            r.id,
            r.client,
            r.key,
            r.op,
            clock(r.invoked_at),
            end,
            r.status,
            notes.get(&r.id.0).map_or("", String::as_str)
        ));
    }
    let path = dir.join("history.txt");
    match std::fs::write(&path, text) {
        Ok(()) => eprintln!("history test: the history is in {}", path.display()),
        Err(e) => eprintln!("history test: cannot write {}: {e}", path.display()),
    }
}

/// Starts node `name` of the test cluster (joining `seed` unless it is the first) with
/// `--replicas replicas`; the partition switch (`PUT /v1/debug/partition`) is on for these
/// processes only.
async fn start(dir: &std::path::Path, name: &str, seed: Option<&str>, replicas: &str) -> Node {
    let mut envs = vec![("CFGNODE_FAULT_INJECTION", "1")];
    if std::env::var_os("CFGNODE_HISTORY_KEEP").is_some() {
        // Kept logs are read after a failure: replication's and the cluster's steps in them.
        envs.push((
            "RUST_LOG",
            "info,cfgnode_node::replication=debug,cfgnode_node::cluster=debug",
        ));
    }
    common::start_member(dir, name, seed, TOKEN, &["--replicas", replicas], &envs).await
}

/// Cuts `node` off from `cut` (empty heals) through its fault-injection endpoint.
async fn partition(node: &Node, cut: &[&str]) {
    let resp = node
        .request(Method::PUT, "/v1/debug/partition")
        .json(&serde_json::json!({ "cut": cut }))
        .send()
        .await
        .expect("the partition switch answers");
    assert!(resp.status().is_success(), "partition: {}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_kills_and_handoffs_are_linearizable() {
    history(Mode::SingleCopy, 3).await;
}

/// The same history with `--replicas 3`: a killed holder's namespace fails over, so the victim
/// stays down long enough for a promotion (3 to 4 s), and writes must be acknowledged while it
/// is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_with_three_replicas_under_holder_kills_are_linearizable() {
    history(Mode::Replicated, 3).await;
}

/// The same on five nodes: sets of three among five, so every kill and cut of a member also
/// changes the set (a replacement learns, then is switched in; the returning node is taken
/// back and the replacement's copy released), and a claim onto a node outside the set is a
/// handoff that makes it a member first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_with_three_replicas_on_five_nodes_are_linearizable() {
    history(Mode::Replicated, 5).await;
}

/// How the cluster keeps the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `--replicas 1`: one copy; a killed holder's namespace waits for it.
    SingleCopy,
    /// `--replicas 3`: a killed holder's namespace fails over to a follower.
    Replicated,
}

/// The history runs take turns: each starts three to five processes, and run side by side on a
/// 2-core machine they starve each other enough to make failover slower than the schedule's
/// windows (writes acknowledged while a node is down are asserted).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn history(mode: Mode, size: usize) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let replicas = match mode {
        Mode::SingleCopy => "1",
        Mode::Replicated => "3",
    };
    let secs: u64 = std::env::var("CFGNODE_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("CFGNODE_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("history test: seed {seed} ({secs} s; CFGNODE_HISTORY_SEED={seed} replays it)");
    let mut dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("CFGNODE_HISTORY_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("history test: keeping {}", dir.path().display());
    }
    std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
    common::write_cluster_key(dir.path());
    let all = ["n1", "n2", "n3", "n4", "n5"];
    let names = &all[..size];
    let n1 = start(dir.path(), "n1", None, replicas).await;
    let join = n1.quic.to_string();
    let mut nodes = vec![n1];
    for name in &names[1..] {
        nodes.push(start(dir.path(), name, Some(&join), replicas).await);
    }
    alive_everywhere(&nodes, names).await;
    let bases = Arc::new(nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>());

    let recorder = Arc::new(Recorder::new());
    let started_at = std::time::SystemTime::now();
    let notes = Notes::default();
    let until = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                seed,
                Arc::clone(&bases),
                Arc::clone(&recorder),
                Arc::clone(&notes),
                until,
            ))
        })
        .collect();

    // The nemesis: every ~2 s, SIGKILL a random node and restart it on the same ports a moment
    // later; every other round, claim the namespace onto a random node first (a handoff while
    // the clients write).
    let mut rng = Rng(seed | 1);
    let mut faults = Vec::new();
    // When each victim was down (from its kill to its restart), and when each was cut off, on
    // the recorder's clock.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    let mut cuts: Vec<(u64, u64)> = Vec::new();
    let mut round = 0;
    while Instant::now() + Duration::from_secs(2) < until {
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(1000))).await;
        round += 1;
        let mut claimed_onto = None;
        if round % 2 == 1 {
            let to = names[rng.below(size as u64) as usize];
            claimed_onto = Some(to);
            let via = &nodes[rng.below(size as u64) as usize];
            let claimed = via
                .request(Method::PUT, &format!("/v1/cluster/claims/{NS}"))
                .json(&serde_json::json!({ "node": to }))
                .send()
                .await
                .map(|r| r.status());
            faults.push(format!("claim onto {to}: {claimed:?}"));
        }
        let mut victim = rng.below(size as u64) as usize;
        if mode == Mode::Replicated && rng.below(2) == 0 {
            // Every other round on average, the holder itself.
            let placement: Option<Value> = async {
                let resp = nodes[0]
                    .request(Method::GET, &format!("/v1/cluster/placement/{NS}"))
                    .send()
                    .await
                    .ok()?;
                resp.json().await.ok()
            }
            .await;
            if let Some(holder) = placement.as_ref().and_then(|p| p["holder"].as_str()) {
                victim = names.iter().position(|n| *n == holder).unwrap_or(victim);
            }
        }
        if mode == Mode::Replicated && rng.below(2) == 0 {
            // A network partition instead of a kill: the victim is cut off from the other two
            // (both ways) while every client still reaches every node.
            let others: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| *n != names[victim])
                .collect();
            let cut_from = Instant::now();
            let started = recorder.now();
            for (i, node) in nodes.iter().enumerate() {
                let cut = if i == victim {
                    others.clone()
                } else {
                    vec![names[victim]]
                };
                partition(node, &cut).await;
            }
            tokio::time::sleep(Duration::from_millis(3000 + rng.below(1000))).await;
            for node in &nodes {
                partition(node, &[]).await;
            }
            cuts.push((started, recorder.now()));
            faults.push(format!(
                "{} cut off for {:?}",
                names[victim],
                cut_from.elapsed()
            ));
            continue;
        }
        nodes[victim].kill9();
        let down_for = match mode {
            Mode::SingleCopy => Duration::from_millis(300 + rng.below(900)),
            Mode::Replicated => Duration::from_millis(3000 + rng.below(1000)),
        };
        let killed = recorder.now();
        tokio::time::sleep(down_for).await;
        nodes[victim] = nodes[victim].restart_in_place().await;
        // A node killed right after a claim handed it the namespace may die before its first
        // append reached a follower; its followers, still following the previous holder, elect
        // one of themselves all the same (`handed_to_a_member` in replication/promote.rs).
        windows.push((killed, recorder.now()));
        if claimed_onto == Some(names[victim]) {
            faults.push(format!(
                "{} was killed right after the claim onto it",
                names[victim]
            ));
        }
        faults.push(format!("kill -9 and restart {}", names[victim]));
    }
    let mut operations = 0;
    for client in clients {
        operations += client.await.expect("client task");
    }
    eprintln!("history test: {operations} operations; faults: {faults:?}");

    // The cluster whole again: read every key once more, through any node.
    alive_everywhere(&nodes, names).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let mut finals = HashMap::new();
    for key in KEYS {
        let observed = poll_until(
            &format!("a final read of {key}"),
            Duration::from_secs(30),
            || async {
                match get(&http, &nodes[0].base, key, &mut String::new()).await {
                    (Answer::Done(Outcome::Read(value)), _) => Some(value),
                    _ => None,
                }
            },
        )
        .await;
        recorder.final_read(key.to_string(), observed.clone());
        finals.insert(key.to_string(), observed);
    }

    let history = recorder.snapshot();
    if std::env::var_os("CFGNODE_HISTORY_KEEP").is_some() {
        keep_history(dir.path(), &history, &notes, started_at);
    }
    let acknowledged = history
        .records()
        .iter()
        .filter(|r| matches!(r.status, cfgnode_lincheck::Status::Completed { .. }))
        .count();
    eprintln!(
        "history test: {} recorded, {acknowledged} answered",
        history.len()
    );
    assert!(
        acknowledged > 50,
        "too few answered operations to say anything ({acknowledged}); faults: {faults:?}"
    );
    if mode == Mode::Replicated {
        // Availability: writes were acknowledged while a node (the holder, in some rounds) was
        // down, once the failover had time to happen (SWIM detection plus a second). Partitions
        // are there for safety: a client stuck on the cut-off side waits out its timeout, so
        // their windows are only reported.
        let settled = Duration::from_millis(2800).as_nanos() as u64;
        let acknowledged_in = |windows: &[(u64, u64)]| -> usize {
            windows
                .iter()
                .map(|(from, to)| {
                    history
                        .records()
                        .iter()
                        .filter(|r| {
                            matches!(r.status, cfgnode_lincheck::Status::Completed { .. })
                                && !matches!(r.op, Op::Get)
                                && r.invoked_at >= *from + settled
                                && r.invoked_at < *to
                        })
                        .count()
                })
                .sum()
        };
        let during = acknowledged_in(&windows);
        let during_cuts = acknowledged_in(&cuts);
        eprintln!(
            "history test: {during} writes acknowledged while a node was down, {during_cuts} while one was cut off"
        );
        // Only a window in which the clients still sent requests after the failover's time can
        // show anything: the last round's kill may come as the clients stop.
        let last_sent = history
            .records()
            .iter()
            .filter(|r| r.client != cfgnode_lincheck::FINAL_READER)
            .map(|r| r.invoked_at)
            .max()
            .unwrap_or(0);
        let probed = windows
            .iter()
            .any(|(from, to)| (*to).min(last_sent) > from + settled + 200_000_000);
        assert!(
            !probed || during > 0,
            "no write was acknowledged while a node was down; faults: {faults:?}"
        );
    }
    if let Err(e) = history.check() {
        panic!("the history is not linearizable (seed {seed}): {e}\nfaults: {faults:?}");
    }
    if let Err(lost) = history.acknowledged_writes_survive(&finals) {
        panic!("acknowledged writes were lost (seed {seed}): {lost}\nfaults: {faults:?}");
    }
}
