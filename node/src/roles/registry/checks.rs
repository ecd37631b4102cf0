//! The prober: the holder of a namespace runs its instances' health checks, and only the
//! holder, so there is one prober per instance in the cluster.
//!
//! [`supervise`] follows every namespace this node holds: it loads the instance records once,
//! then reads the namespace log for record changes (a new registration, a changed check, a
//! removal), and keeps one task per checked instance. A namespace that moves away has its
//! tasks stopped at the next scan; and every status write is made under a permit on the
//! namespace's gate, which routing grants only to the holder, so a prober that has not noticed
//! the move yet cannot write: the old holder's last probe may run, its result is dropped. The
//! new holder starts from the stored status (see [`super::health`]).
//!
//! Probes start at a random offset within their first interval (so 10 000 instances registered
//! at once do not probe in lockstep), at most [`MAX_IN_FLIGHT`] run at once, and a probe that
//! falls behind its schedule skips the missed rounds instead of bursting to catch up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cfgnode_ring::Intent;
use cfgnode_storage::{EventKind, LogRead};
use cfgnode_transport::registry::{
    WireCheck, WireCheckResult, WireProbe, WireProbeTarget, WireStatus,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::health::Damper;
use super::json::decode_record;
use super::service::{INSTANCE_KIND, InstanceKey, RegistryService};
use crate::cluster::{Cluster, Target};
use crate::metrics::{CheckLabels, StatusLabels};
use crate::shutdown::until_stopped;
use crate::time::now_millis;

/// Most probes running at once on one node.
pub const MAX_IN_FLIGHT: usize = 512;
/// How often the supervisor looks for namespaces gained or lost and for record changes.
const SCAN_EVERY: Duration = Duration::from_millis(200);
/// Log events read per scan of one namespace.
const EVENTS_PER_SCAN: usize = 10_000;
/// Longest probe output kept (an error chain can be long).
const MAX_OUTPUT: usize = 200;

/// One namespace the supervisor follows: the revision it has applied, and its tasks.
#[derive(Default)]
struct Followed {
    applied: Option<u64>,
    tasks: HashMap<String, Running>,
    /// Every instance's stored status (for the by-status gauge).
    statuses: HashMap<String, WireStatus>,
}

/// A running check task and the check it runs (a changed check restarts it).
struct Running {
    check: WireCheck,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every probe task shares.
#[derive(Clone)]
struct ProbeContext {
    cluster: Cluster,
    registry: RegistryService,
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
}

/// Runs the checks of every namespace held here until the node stops.
pub async fn supervise(
    cluster: Cluster,
    registry: RegistryService,
    mut stop: watch::Receiver<bool>,
) {
    let http = match probe_client() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "health checks disabled: no HTTP client");
            return;
        }
    };
    let context = ProbeContext {
        cluster: cluster.clone(),
        registry: registry.clone(),
        http,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    let mut followed: HashMap<String, Followed> = HashMap::new();
    loop {
        let held: HashSet<String> = cluster.held().into_iter().collect();
        followed.retain(|namespace, f| {
            let keep = held.contains(namespace);
            if !keep {
                for name in f.tasks.keys() {
                    registry.probes().forget(&(namespace.clone(), name.clone()));
                }
            }
            keep
        });
        for namespace in held {
            let f = followed.entry(namespace.clone()).or_default();
            if let Err(e) = follow(&context, &namespace, f).await {
                tracing::debug!(%namespace, error = %e, "registry: cannot read the namespace's instances");
            }
        }
        publish_counts(cluster.metrics(), &followed);
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = until_stopped(&mut stop) => break,
        }
    }
}

/// Sets the registry gauges from what the supervisor follows.
fn publish_counts(metrics: &crate::metrics::Metrics, followed: &HashMap<String, Followed>) {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics
        .registry_checked
        .set(gauge(followed.values().map(|f| f.tasks.len()).sum()));
    for status in [
        WireStatus::Healthy,
        WireStatus::Unhealthy,
        WireStatus::Unknown,
    ] {
        let count = followed
            .values()
            .flat_map(|f| f.statuses.values())
            .filter(|s| **s == status)
            .count();
        metrics
            .registry_instances
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .set(gauge(count));
    }
}

/// Brings one namespace's tasks up to date with its records.
async fn follow(
    context: &ProbeContext,
    namespace: &str,
    f: &mut Followed,
) -> Result<(), super::service::RegistryError> {
    let config = context.registry.config();
    let Some(applied) = f.applied else {
        return reload(context, namespace, f).await;
    };
    let (read, revision) = config
        .events(namespace, Some(applied), EVENTS_PER_SCAN)
        .await?;
    if revision == applied {
        return Ok(());
    }
    let events = match read {
        LogRead::Events(events) => events,
        LogRead::Compacted { .. } => return reload(context, namespace, f).await,
    };
    for event in events {
        f.applied = Some(event.revision);
        match event.kind {
            EventKind::RecordSet {
                kind, name, value, ..
            } if kind == INSTANCE_KIND => match decode_record(&value) {
                Ok(record) => apply(
                    context,
                    namespace,
                    f,
                    name,
                    record.spec.check,
                    record.status,
                ),
                Err(why) => {
                    tracing::warn!(%namespace, %name, %why, "registry: unreadable instance record")
                }
            },
            EventKind::RecordDelete { kind, name, .. } if kind == INSTANCE_KIND => {
                f.tasks.remove(&name);
                f.statuses.remove(&name);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Starts over from the records (first sight of a namespace, or a log compacted past us).
async fn reload(
    context: &ProbeContext,
    namespace: &str,
    f: &mut Followed,
) -> Result<(), super::service::RegistryError> {
    // The revision is read before the records: a change between the two is applied twice,
    // which is harmless, rather than missed.
    let Some(state) = context.registry.config().namespace_state(namespace).await? else {
        f.applied = Some(0);
        return Ok(());
    };
    let records = context.registry.list(namespace, "").await?;
    let names: HashSet<&str> = records.iter().map(|(r, _)| r.name.as_str()).collect();
    f.tasks.retain(|name, _| names.contains(name.as_str()));
    f.statuses.clear();
    for (record, decoded) in records {
        apply(
            context,
            namespace,
            f,
            record.name,
            decoded.spec.check,
            decoded.status,
        );
    }
    f.applied = Some(state.revision);
    Ok(())
}

/// Makes the task of one instance match its record: none without a check, a fresh one when
/// the check changed, the running one otherwise (a status write by the task itself lands here
/// too and changes nothing).
fn apply(
    context: &ProbeContext,
    namespace: &str,
    f: &mut Followed,
    name: String,
    check: Option<WireCheck>,
    status: WireStatus,
) {
    f.statuses.insert(name.clone(), status);
    let Some(check) = check else {
        f.tasks.remove(&name);
        return;
    };
    if f.tasks
        .get(&name)
        .is_some_and(|running| running.check == check)
    {
        return;
    }
    let key = (namespace.to_string(), name.clone());
    let task = match &check {
        WireCheck::Probe(probe) => {
            tokio::spawn(run_probe(context.clone(), key, probe.clone(), status))
        }
        WireCheck::Ttl { ttl_ms } => tokio::spawn(run_ttl(
            context.clone(),
            key,
            Duration::from_millis(*ttl_ms),
            status,
        )),
    };
    f.tasks.insert(name, Running { check, task });
}

/// Probes one instance on its schedule, writing each status change.
async fn run_probe(context: ProbeContext, key: InstanceKey, probe: WireProbe, status: WireStatus) {
    let interval = Duration::from_millis(probe.interval_ms);
    let timeout = Duration::from_millis(probe.timeout_ms);
    let mut damper = Damper::new(status);
    let mut due = Instant::now() + interval.mul_f64(rand::random::<f64>());
    let metrics = context.cluster.metrics();
    let kind = match probe.target {
        WireProbeTarget::Http { .. } => "http",
        WireProbeTarget::Tcp { .. } => "tcp",
    };
    loop {
        tokio::time::sleep_until(due).await;
        let Ok(slot) = context.in_flight.acquire().await else {
            return;
        };
        let started = Instant::now();
        metrics
            .registry_check_lag
            .observe(started.saturating_duration_since(due).as_secs_f64());
        // Boxed, like the status write below: inline, the HTTP client's future (~3 KiB) would
        // make every task that size while it sleeps (10 000 instances: ~40 MiB); boxed, the
        // memory is taken only while a probe runs, at most MAX_IN_FLIGHT at once.
        let (ok, output) = Box::pin(probe_once(&context.http, &probe.target, timeout)).await;
        drop(slot);
        metrics
            .registry_check_latency
            .observe(started.elapsed().as_secs_f64());
        metrics
            .registry_checks
            .get_or_create(&CheckLabels {
                kind,
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
        let result = WireCheckResult {
            at: now_millis(),
            ok,
            output,
        };
        context
            .registry
            .probes()
            .record_result(&key, result.clone());
        if let Some(new) = damper.observe(ok, probe.unhealthy_after, probe.healthy_after)
            && !Box::pin(write_status(&context, &key, new, result)).await
        {
            return;
        }
        due += interval;
        let now = Instant::now();
        if due < now {
            // Behind (an overloaded node, a long pause): skip the missed rounds.
            due = now + interval;
        }
    }
}

/// Watches one TTL instance's heartbeats; unhealthy once its TTL passes without one.
async fn run_ttl(context: ProbeContext, key: InstanceKey, ttl: Duration, status: WireStatus) {
    let probes = Arc::clone(context.registry.probes());
    let mut expired = status == WireStatus::Unhealthy;
    probes.start_clock(&key);
    loop {
        let beat = probes.next_beat();
        let last = probes.last_beat(&key).unwrap_or_else(Instant::now);
        let deadline = last + ttl;
        if Instant::now() < deadline {
            expired = false;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = beat => {}
            }
            continue;
        }
        if !expired {
            expired = true;
            let result = WireCheckResult {
                at: now_millis(),
                ok: false,
                output: format!(
                    "TTL of {} expired without a heartbeat",
                    super::json::duration(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                ),
            };
            probes.record_result(&key, result.clone());
            if !write_status(&context, &key, WireStatus::Unhealthy, result).await {
                return;
            }
        }
        // Expired: nothing to do until a heartbeat (which writes `healthy` itself).
        beat.await;
    }
}

/// Writes a status change under a permit on the namespace's gate, only while this node holds
/// it. False when the task should end (moved away, instance gone).
async fn write_status(
    context: &ProbeContext,
    key: &InstanceKey,
    status: WireStatus,
    result: WireCheckResult,
) -> bool {
    let (namespace, name) = key;
    let permit = match context.cluster.route(namespace, Intent::Write).await {
        Ok(Target::Local(permit)) => permit,
        _ => return false,
    };
    let written = context
        .registry
        .set_status(namespace, name, status, result)
        .await;
    drop(permit);
    match written {
        Ok(exists) => exists,
        Err(e) => {
            tracing::warn!(%namespace, instance = %name, error = %e, "registry: cannot write a status change");
            // A failed write (disk full...) is retried by the next status change.
            true
        }
    }
}

/// Runs one probe; `(passed, what happened)`.
pub async fn probe_once(
    http: &reqwest::Client,
    target: &WireProbeTarget,
    timeout: Duration,
) -> (bool, String) {
    match target {
        WireProbeTarget::Http { url } => match http.get(url).timeout(timeout).send().await {
            Ok(answer) if answer.status().is_success() => {
                (true, format!("HTTP {}", answer.status().as_u16()))
            }
            Ok(answer) => (false, format!("HTTP {}", answer.status().as_u16())),
            Err(e) if e.is_timeout() => (
                false,
                format!(
                    "no answer within {}",
                    super::json::duration(millis(timeout))
                ),
            ),
            Err(e) => (false, short(&error_chain(&e))),
        },
        WireProbeTarget::Tcp { address } => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address.as_str()))
                .await
            {
                Ok(Ok(_)) => (true, "connected".to_string()),
                Ok(Err(e)) => (false, short(&e.to_string())),
                Err(_) => (
                    false,
                    format!(
                        "no connection within {}",
                        super::json::duration(millis(timeout))
                    ),
                ),
            }
        }
    }
}

/// The client probes share: keep-alive pools per backend, no redirects (a 3xx is an answer, not
/// a pass), no proxy from the environment (a check reaches the instance itself).
fn probe_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("cfgnode-health/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The innermost causes of an error, joined: reqwest's own message ("error sending request")
/// says nothing an operator can act on.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

fn short(text: &str) -> String {
    if text.len() <= MAX_OUTPUT {
        return text.to_string();
    }
    let mut end = MAX_OUTPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
