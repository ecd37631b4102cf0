//! Webhooks: the holder of a namespace POSTs its events, in order, at least once, signed, to
//! each webhook's URL, and keeps each webhook's delivery cursor durable (docs/push.md).
//!
//! A webhook is a namespace attachment (`webhook/NAME`, JSON): config, cursor, last outcome.
//! Attachments move with the namespace at a handoff, so the new holder continues from the
//! moved cursor. The cursor is saved under a permit on the namespace's gate and only while this
//! node holds the namespace; the POST itself holds nothing (a slow receiver never delays a
//! handoff). So an event may be delivered twice around a move or a crash (at-least-once),
//! never skipped.

use std::collections::HashMap;
use std::time::Duration;

use cfgnode_ring::Intent;
use cfgnode_storage::{LogRead, validate_key};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Target};
use crate::config_service::ConfigService;
use crate::push::sse::event_json;
use crate::push::until_stopped;
use crate::wire_api::wire_event;

/// Attachment names of webhooks start with this.
pub const PREFIX: &str = "webhook/";
/// Events per POST, at most.
const BATCH: usize = 100;
/// How long a receiver may take to answer.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry pauses after a failed delivery: from the first to the longest, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
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
    crate::push::agents::now_millis()
}

/// Keeps one delivery task per webhook of every namespace held here, until the node stops.
pub async fn supervise(cluster: Cluster, service: ConfigService, mut stop: watch::Receiver<bool>) {
    let http = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: no HTTP client");
            return;
        }
    };
    let mut running: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        for namespace in cluster.held() {
            let store = service.store().clone();
            let ns = namespace.clone();
            let hooks = tokio::task::spawn_blocking(move || store.attachments(&ns, PREFIX))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            for (name, _) in hooks {
                let key = (namespace.clone(), name.clone());
                if running.contains_key(&key) {
                    continue;
                }
                let delivery = Delivery {
                    cluster: cluster.clone(),
                    service: service.clone(),
                    http: http.clone(),
                    namespace: namespace.clone(),
                    attachment: name,
                };
                running.insert(key, tokio::spawn(delivery.run(stop.clone())));
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
    http: reqwest::Client,
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
        let mut retry = RETRY_FIRST;
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
                    retry = RETRY_FIRST;
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
            if outcome.is_err() {
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                tokio::select! {
                    _ = tokio::time::sleep(retry.mul_f64(jitter)) => {}
                    _ = until_stopped(&mut stop) => return,
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }

    /// The webhook as stored now; `None` when it is gone.
    async fn load(&self) -> Option<Webhook> {
        let store = self.service.store().clone();
        let (ns, name) = (self.namespace.clone(), self.attachment.clone());
        let all = tokio::task::spawn_blocking(move || store.attachments(&ns, &name))
            .await
            .ok()?
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
        let answer = self
            .http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&hook.secret, body.as_bytes()))
            .header(
                "x-cfgnode-delivery",
                format!("{}/{}/{first}-{last}", self.namespace, self.name()),
            )
            .body(body)
            .send()
            .await;
        match answer {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("{} answered {}", hook.url, resp.status())),
            Err(e) => Err(format!("{}: {e}", hook.url)),
        }
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
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
