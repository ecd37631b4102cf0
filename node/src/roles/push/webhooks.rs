//! Webhooks: the holder of a namespace POSTs its events, in order, at least once, signed, to
//! each webhook's URL, and keeps each webhook's delivery cursor durable (docs/push.md).
//!
//! A webhook is a namespace attachment (`webhook/NAME`, JSON): config, cursor, last outcome.
//! Attachments move with the namespace at a handoff, so the new holder continues from the
//! moved cursor. The cursor is saved under a permit on the namespace's gate and only while this
//! node holds the namespace; the POST itself holds nothing (a slow receiver never delays a
//! handoff). So an event may be delivered twice around a move or a crash (at-least-once),
//! never skipped.
//!
//! # Targets
//!
//! A webhook's URL is chosen by an API caller but requested by the node, so deliveries are
//! fenced (docs/push.md, "Webhook targets"): only addresses [`TargetPolicy`] allows are
//! connected to. A literal IP host is checked at creation ([`check_target`]) and before every
//! POST; a host name is resolved by [`CheckedResolver`] at every new connection, every address
//! it yields is checked, and the connection goes to those checked addresses (no second
//! lookup that could answer differently). Redirects are never followed (a 3xx could point
//! anywhere) and no proxy from the environment is used (it would connect on the node's
//! behalf, unchecked). `last_error` says what failed in a few generic words
//! ([`delivery_error`]); the target's answer and the error chain go to the debug log only, so
//! the API never becomes a way to read internal services' responses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cfgnode_ring::Intent;
use cfgnode_storage::{LogRead, validate_key};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Target};
use crate::roles::config::ConfigService;
use crate::roles::push::quic::wire_event;
use crate::roles::push::sse::event_json;
use crate::roles::push::webhook_targets::{TargetPolicy, TargetRefused};
use crate::shutdown::until_stopped;

/// Attachment names of webhooks start with this.
pub const PREFIX: &str = "webhook/";
/// Events per POST, at most.
const BATCH: usize = 100;
/// How long a receiver may take to answer.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (resolution included) may take, within [`POST_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry pauses after a failed delivery: from the first to the longest, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The pause before a delivery loop (webhooks, registry subscriptions) tries again after a
/// failure: [`RETRY_FIRST`], doubling up to [`RETRY_MAX`], each with ±25 % jitter so receivers
/// that failed together are not retried in lockstep. `default()` starts over (after a success).
#[derive(Debug)]
pub(crate) struct RetryPause {
    next: Duration,
}

impl Default for RetryPause {
    fn default() -> Self {
        RetryPause { next: RETRY_FIRST }
    }
}

impl RetryPause {
    /// Sleeps the current pause (jittered) and doubles the next; `false` when `stop` turned
    /// true meanwhile (the loop should end).
    pub(crate) async fn pause(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let slept = tokio::select! {
            _ = tokio::time::sleep(self.next.mul_f64(jitter)) => true,
            _ = until_stopped(stop) => false,
        };
        self.next = (self.next * 2).min(RETRY_MAX);
        slept
    }
}
/// How often the supervisor looks for webhooks to start or stop.
const SCAN_EVERY: Duration = Duration::from_millis(500);
/// Most prefixes per webhook, longest secret.
const MAX_PREFIXES: usize = 64;
const MAX_SECRET: usize = 256;

/// The signature header: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-cfgnode-signature";

/// What `PUT .../webhooks/{name}` takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (http://).
    pub url: String,
    /// Key prefixes (empty: every key).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The HMAC secret.
    pub secret: String,
    /// Deliver the events after this revision (default: the namespace's current revision).
    #[serde(default)]
    pub from: Option<u64>,
}

/// A webhook as stored (the attachment's JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// Key prefixes.
    pub prefixes: Vec<String>,
    /// The HMAC secret (never shown by the API).
    pub secret: String,
    /// The last revision delivered and acknowledged (or skipped by the filter).
    pub cursor: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When it failed (ms).
    pub last_error_at: Option<u64>,
    /// When a delivery last succeeded (ms).
    pub last_success_at: Option<u64>,
    /// When created (ms).
    pub created_at: u64,
    /// When the config last changed (ms).
    pub updated_at: u64,
}

/// Checks a webhook name and config; the message says what to fix.
pub fn check(name: &str, config: &WebhookConfig) -> Result<(), String> {
    if name.len() > 128 || name.contains('/') {
        return Err(format!("webhook name {name:?}: at most 128 bytes, no '/'"));
    }
    validate_key(name).map_err(|e| format!("webhook name: {e}"))?;
    let url = reqwest::Url::parse(&config.url).map_err(|e| format!("url {:?}: {e}", config.url))?;
    if url.scheme() != "http" || url.host().is_none() {
        return Err(format!(
            "url {:?}: only http:// URLs with a host are supported (put a TLS-terminating proxy in front for https)",
            config.url
        ));
    }
    if config.prefixes.len() > MAX_PREFIXES || config.prefixes.iter().any(|p| p.len() > 512) {
        return Err(format!(
            "at most {MAX_PREFIXES} prefixes of at most 512 bytes"
        ));
    }
    if config.secret.is_empty() || config.secret.len() > MAX_SECRET {
        return Err(format!("secret must be 1..={MAX_SECRET} bytes"));
    }
    Ok(())
}

/// Checks the host of a webhook URL against the node's target rule when it is a literal IP
/// address (a name is checked at every delivery, once resolved). `Ok` for a URL that does not
/// parse: [`check`] reports that.
pub fn check_target(url: &str, policy: &TargetPolicy) -> Result<(), TargetRefused> {
    match literal_ip(url) {
        Some(ip) => policy.check(ip),
        None => Ok(()),
    }
}

/// The host of `url` when it is an IP address (in any form the URL standard accepts, e.g.
/// `0x7f.1` is 127.0.0.1).
fn literal_ip(url: &str) -> Option<IpAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    // The parser has normalised the host: dotted IPv4, or bracketed IPv6.
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The attachment name of webhook `name`.
pub fn attachment(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Decodes a stored webhook.
pub fn decode(bytes: &[u8]) -> Option<Webhook> {
    serde_json::from_slice(bytes).ok()
}

/// Encodes a webhook for storage.
pub fn encode(webhook: &Webhook) -> Vec<u8> {
    serde_json::to_vec(webhook).unwrap_or_default()
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The wall clock, ms.
fn now() -> u64 {
    crate::time::now_millis()
}

/// Signed JSON POSTs to targets the node's policy allows: what webhooks and the registry's
/// subscriptions deliver with (one fence, one signature, one vocabulary of failures).
#[derive(Clone)]
pub struct Sender {
    /// Built by [`delivery_client`]: resolves through the policy.
    http: reqwest::Client,
    /// For literal IP hosts, which the client connects to without resolving.
    policy: Arc<TargetPolicy>,
}

impl Sender {
    /// A sender fenced by `policy`.
    pub fn new(policy: TargetPolicy) -> reqwest::Result<Sender> {
        let policy = Arc::new(policy);
        Ok(Sender {
            http: delivery_client(&policy)?,
            policy,
        })
    }

    /// The rule of which addresses deliveries may reach (checked at creation too).
    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// POSTs `body` (JSON) to `url`, signed with `secret` when there is one; `delivery` names
    /// the attempt for the receiver (`x-cfgnode-delivery`, the same on a retry). `Err` says in
    /// a few generic words why it did not count as delivered.
    pub async fn post(
        &self,
        url: &str,
        secret: Option<&str>,
        delivery: &str,
        body: String,
    ) -> Result<(), String> {
        if let Some(ip) = literal_ip(url) {
            self.policy
                .check(ip)
                .map_err(|refused| refused.to_string())?;
        }
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-cfgnode-delivery", delivery);
        if let Some(secret) = secret {
            request = request.header(SIGNATURE_HEADER, sign(secret, body.as_bytes()));
        }
        let answer = request.body(body).send().await;
        // The body of a failed answer is never read: it is the target's, not the caller's.
        match answer {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                tracing::debug!(%url, %delivery, status = %resp.status(), "delivery refused by the receiver");
                Err(status_error(resp.status()))
            }
            Err(e) => {
                tracing::debug!(%url, %delivery, error = %error_chain(&e), "delivery failed");
                Err(delivery_error(&e))
            }
        }
    }
}

/// The HTTP client of deliveries: names resolved through [`CheckedResolver`], no redirects,
/// no proxy from the environment.
fn delivery_client(policy: &Arc<TargetPolicy>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver {
            policy: Arc::clone(policy),
        }))
        .build()
}

/// Resolves a webhook's host name and yields its addresses only when every one of them is
/// allowed: the client then connects to exactly these (reqwest asks no one else), so a name
/// cannot pass the check with one answer and connect with another (DNS rebinding). A name
/// with any refused address is refused whole: a receiver's DNS is the caller's to choose.
struct CheckedResolver {
    policy: Arc<TargetPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: the connector puts in the URL's port.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                policy.check(addr.ip())?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// What `last_error` says about a failed request: generic words about the target, or the
/// refusal of its address (found in the error chain, where the resolver put it).
fn delivery_error(error: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<TargetRefused>() {
            return refused.to_string();
        }
        source = e.source();
    }
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    }
}

/// The whole chain of `error`, for the node's debug log (never for the API).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// What `last_error` says about an answer that is not a success.
fn status_error(status: reqwest::StatusCode) -> String {
    if status.is_redirection() {
        format!("redirect refused (HTTP {})", status.as_u16())
    } else {
        format!("HTTP {}", status.as_u16())
    }
}

/// Keeps one delivery task per webhook of every namespace held here, until the node stops.
/// Deliveries reach only the addresses the sender's policy allows.
pub async fn supervise(
    cluster: Cluster,
    service: ConfigService,
    sender: Sender,
    stop: watch::Receiver<bool>,
) {
    let (c, s) = (cluster.clone(), service.clone());
    supervise_attachments(
        &cluster,
        &service,
        PREFIX,
        stop,
        move |namespace, attachment, stop| {
            let delivery = Delivery {
                cluster: c.clone(),
                service: s.clone(),
                sender: sender.clone(),
                namespace,
                attachment,
            };
            delivery.run(stop)
        },
    )
    .await;
}

/// Keeps one task (made by `start`) per attachment under `prefix` of every namespace this
/// node holds, scanning every [`SCAN_EVERY`] until the node stops, then waits for the tasks.
/// A task ends by itself when its namespace moves away or its attachment is removed; the next
/// scan starts it again if it is still due. Shared by webhooks and registry subscriptions.
pub async fn supervise_attachments<F, Fut>(
    cluster: &Cluster,
    service: &ConfigService,
    prefix: &'static str,
    mut stop: watch::Receiver<bool>,
    mut start: F,
) where
    F: FnMut(String, String, watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        for namespace in cluster.held() {
            let ns = namespace.clone();
            let attachments = service
                .read(move |s| s.attachments(&ns, prefix))
                .await
                .unwrap_or_default();
            for (name, _) in attachments {
                let key = (namespace.clone(), name.clone());
                if running.contains_key(&key) {
                    continue;
                }
                let task = tokio::spawn(start(namespace.clone(), name, stop.clone()));
                running.insert(key, task);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = until_stopped(&mut stop) => break,
        }
    }
    for (_, task) in running {
        let _ = task.await;
    }
}

/// Delivers one webhook of one namespace while this node holds it.
struct Delivery {
    cluster: Cluster,
    service: ConfigService,
    sender: Sender,
    namespace: String,
    attachment: String,
}

impl Delivery {
    fn name(&self) -> &str {
        self.attachment
            .strip_prefix(PREFIX)
            .unwrap_or(&self.attachment)
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut retry = RetryPause::default();
        loop {
            let held_here = self
                .cluster
                .holder(&self.namespace)
                .is_some_and(|r| r.holder == self.cluster.me());
            if *stop.borrow() || !held_here {
                return;
            }
            let mut feed = self.service.feeds().subscribe(&self.namespace);
            let Some(hook) = self.load().await else {
                return;
            };
            let read = self
                .service
                .events(&self.namespace, Some(hook.cursor), BATCH)
                .await;
            let (events, last) = match read {
                Ok((LogRead::Events(events), _)) => {
                    let last = events.last().map(|e| e.revision);
                    (events, last)
                }
                Ok((
                    LogRead::Compacted {
                        oldest_retained, ..
                    },
                    _,
                )) => {
                    let message = format!(
                        "events {}..{} were compacted away before delivery; continuing after them",
                        hook.cursor + 1,
                        oldest_retained - 1
                    );
                    tracing::warn!(namespace = %self.namespace, webhook = self.name(), %message);
                    if !self
                        .save(|h| {
                            h.cursor = oldest_retained - 1;
                            h.last_error = Some(message.clone());
                            h.last_error_at = Some(now());
                        })
                        .await
                    {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "webhook: log read failed");
                    (Vec::new(), None)
                }
            };
            let Some(last) = last else {
                // Nothing new: wait for a change (or look again now and then).
                tokio::select! {
                    _ = feed.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = until_stopped(&mut stop) => return,
                }
                continue;
            };
            let matching: Vec<_> = events
                .into_iter()
                .map(wire_event)
                .filter(|e| e.kind.matches(&hook.prefixes))
                .collect();
            let outcome = if matching.is_empty() {
                Ok(())
            } else {
                let outcome = self.post(&hook, &matching).await;
                let label = if outcome.is_ok() { "ok" } else { "failed" };
                self.cluster
                    .metrics()
                    .webhook_deliveries
                    .get_or_create(&crate::metrics::OutcomeLabels { outcome: label })
                    .inc();
                outcome
            };
            let saved = match &outcome {
                Ok(()) => {
                    retry = RetryPause::default();
                    self.save(|h| {
                        h.cursor = h.cursor.max(last);
                        if !matching.is_empty() {
                            h.last_success_at = Some(now());
                        }
                    })
                    .await
                }
                Err(why) => {
                    let why = why.clone();
                    self.save(|h| {
                        h.last_error = Some(why.clone());
                        h.last_error_at = Some(now());
                    })
                    .await
                }
            };
            if !saved {
                return;
            }
            if outcome.is_err() && !retry.pause(&mut stop).await {
                return;
            }
        }
    }

    /// The webhook as stored now; `None` when it is gone.
    async fn load(&self) -> Option<Webhook> {
        let (ns, name) = (self.namespace.clone(), self.attachment.clone());
        let all = crate::blocking::read(self.service.store(), move |s| s.attachments(&ns, &name))
            .await
            .ok()?;
        all.into_iter()
            .find(|(n, _)| *n == self.attachment)
            .and_then(|(_, bytes)| decode(&bytes))
    }

    /// POSTs `events` in one request; `Err` says why it did not count as delivered.
    async fn post(
        &self,
        hook: &Webhook,
        events: &[cfgnode_transport::WireEvent],
    ) -> Result<(), String> {
        let first = events.first().map_or(0, |e| e.revision);
        let last = events.last().map_or(0, |e| e.revision);
        let body = json!({
            "namespace": self.namespace,
            "webhook": self.name(),
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
        })
        .to_string();
        let delivery = format!("{}/{}/{first}-{last}", self.namespace, self.name());
        self.sender
            .post(&hook.url, Some(&hook.secret), &delivery, body)
            .await
    }

    /// Changes the stored webhook under a permit on the namespace's gate, only while this node
    /// holds the namespace and the webhook still exists. False when the task should end.
    async fn save(&self, change: impl FnOnce(&mut Webhook)) -> bool {
        let permit = match self.cluster.route(&self.namespace, Intent::Read).await {
            Ok(Target::Local(permit)) => permit,
            _ => return false,
        };
        let Some(mut hook) = self.load().await else {
            return false;
        };
        change(&mut hook);
        let saved = self
            .service
            .store()
            .put_attachment(&self.namespace, &self.attachment, Some(encode(&hook)))
            .await;
        drop(permit);
        if let Err(e) = saved {
            tracing::warn!(namespace = %self.namespace, webhook = self.name(), error = %e, "webhook: cannot save the cursor");
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_string(),
            prefixes: vec![],
            secret: "s".to_string(),
            from: None,
        }
    }

    #[test]
    fn configs_are_checked() {
        assert!(check("deploy", &config("http://127.0.0.1:9/hook")).is_ok());
        assert!(check("deploy", &config("https://example.com/")).is_err());
        assert!(check("deploy", &config("not a url")).is_err());
        assert!(check("a/b", &config("http://h/")).is_err());
        let mut c = config("http://h/");
        c.secret = String::new();
        assert!(check("x", &c).is_err());
    }

    #[test]
    fn literal_ip_targets_are_checked_names_wait_for_delivery() {
        let strict = TargetPolicy::default();
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/",
            "http://[::ffff:10.0.0.5]/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
        ] {
            assert!(check_target(url, &strict).is_err(), "{url}");
        }
        assert!(check_target("http://localhost:9/", &strict).is_ok());
        assert!(check_target("http://93.184.216.34/", &strict).is_ok());
        assert!(
            check_target("not a url", &strict).is_ok(),
            "check() reports it"
        );
        let loopback = TargetPolicy::new(vec!["127.0.0.1/32".parse().expect("cidr")]);
        assert!(check_target("http://127.0.0.1:9/hook", &loopback).is_ok());
        assert!(check_target("http://[::1]:9/", &loopback).is_err());
    }

    #[test]
    fn failed_answers_are_described_generically() {
        assert_eq!(
            status_error(reqwest::StatusCode::FOUND),
            "redirect refused (HTTP 302)"
        );
        assert_eq!(
            status_error(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
            "HTTP 500"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_a_refused_address() {
        use reqwest::dns::Resolve;
        let resolver = CheckedResolver {
            policy: Arc::new(TargetPolicy::default()),
        };
        let name = "localhost".parse().expect("name");
        let error = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost is loopback"),
            Err(e) => e,
        };
        let refused = error.downcast_ref::<TargetRefused>().expect("a refusal");
        assert!(refused.ip.is_loopback(), "{refused}");
        let allowing = CheckedResolver {
            policy: Arc::new(TargetPolicy::new(vec![
                "127.0.0.0/8".parse().expect("cidr"),
                "::1".parse().expect("cidr"),
            ])),
        };
        let addrs: Vec<SocketAddr> = allowing
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("allowed")
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
