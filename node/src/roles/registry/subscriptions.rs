//! Subscriptions: signed POSTs of a service's changes to a subscriber, at least once and in
//! order, plus a full-state `reconcile` every `--registry-reconcile`.
//!
//! A subscription is a namespace attachment (`subscription/NAME`, JSON: what to send, the
//! delivery cursor, the last outcome), like a webhook and for the same reasons: it moves with
//! the namespace at a handoff, and its secret and cursor stay out of the revision log (a watch
//! must not show a secret, and moving a cursor must not wake every watcher). Deliveries run
//! only on the holder and go through the webhooks' [`Sender`] (the same target fence, the same
//! signature): each instance event of a subscribed service in the log, oldest first, is one
//! POST; the cursor moves only after the subscriber answered 2xx, under a permit on the
//! namespace's gate, so a move or a crash may repeat a notification, never skip one.
//!
//! A reconcile is sent only when the cursor has caught up with the log, so it never overtakes
//! a change it already reflects. One goes out when delivery starts (a new subscription, a new
//! holder, a restart), then every period.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cfgnode_ring::Intent;
use cfgnode_storage::{EventKind, LogRead};
use cfgnode_transport::registry::{WireInstanceFilter, WireSubscription, WireSubscriptionSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::json::{decode_record, instance_json, parse_subscription, spec_json};
use super::service::{INSTANCE_KIND, RegistryError, RegistryService, split_name};
use super::validate::{Invalid, check_subscription};
use crate::cluster::{Cluster, Target};
use crate::http::error::ApiResult;
use crate::http::extract::{ApiBody, ApiPath, json_body};
use crate::metrics::OutcomeLabels;
use crate::roles::Roles;
use crate::roles::push::webhooks::{RetryPause, check_target, supervise_attachments};
use crate::shutdown::until_stopped;
use crate::time::{now_millis, rfc3339};

/// Attachment names of subscriptions start with this.
pub const PREFIX: &str = "subscription/";
/// The reconcile period when `--registry-reconcile` is not given.
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(60);
/// Log events read per delivery round.
const BATCH: usize = 100;

/// A subscription as stored (the attachment's JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// What the subscriber asked for.
    pub url: String,
    /// The services it follows.
    pub services: Vec<String>,
    /// The HMAC key (never shown by the API); `None` sends unsigned.
    pub secret: Option<String>,
    /// The last revision delivered and acknowledged (or skipped: not a subscribed service).
    pub cursor: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When a delivery last succeeded (ms).
    pub last_success_at: Option<u64>,
}

impl Stored {
    fn wire(&self, name: &str) -> WireSubscription {
        WireSubscription {
            name: name.to_string(),
            url: self.url.clone(),
            services: self.services.clone(),
            cursor: self.cursor,
            last_error: self.last_error.clone(),
        }
    }
}

fn attachment(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn decode(bytes: &[u8]) -> Option<Stored> {
    serde_json::from_slice(bytes).ok()
}

fn encode(stored: &Stored) -> Vec<u8> {
    serde_json::to_vec(stored).expect("a subscription always encodes as JSON")
}

impl RegistryService {
    /// Creates or replaces a subscription. A new one starts from the namespace's current
    /// revision (it is sent a reconcile first, so it still learns the whole state); a
    /// replaced one keeps its cursor.
    pub async fn put_subscription(
        &self,
        namespace: &str,
        name: &str,
        spec: WireSubscriptionSpec,
    ) -> Result<(bool, WireSubscription), RegistryError> {
        super::validate::check_name("name", name).map_err(RegistryError::InvalidSubscription)?;
        check_subscription(&spec).map_err(RegistryError::InvalidSubscription)?;
        if let Err(refused) = check_target(&spec.url, self.sender().policy()) {
            return Err(RegistryError::InvalidSubscription(Invalid::new(
                "url",
                refused.to_string(),
            )));
        }
        let existing = self.load_subscription(namespace, name).await?;
        let cursor = match &existing {
            Some(old) => old.cursor,
            None => self
                .config()
                .namespace_state(namespace)
                .await?
                .map_or(0, |state| state.revision),
        };
        let stored = Stored {
            url: spec.url,
            services: spec.services,
            secret: spec.secret,
            cursor,
            last_error: None,
            last_success_at: existing.as_ref().and_then(|o| o.last_success_at),
        };
        self.config()
            .store()
            .put_attachment(namespace, &attachment(name), Some(encode(&stored)))
            .await?;
        Ok((existing.is_none(), stored.wire(name)))
    }

    /// Removes a subscription (its delivery stops at the next scan).
    pub async fn delete_subscription(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(), RegistryError> {
        if self.load_subscription(namespace, name).await?.is_none() {
            return Err(RegistryError::SubscriptionNotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        self.config()
            .store()
            .put_attachment(namespace, &attachment(name), None)
            .await?;
        Ok(())
    }

    /// One subscription, secret left out.
    pub async fn subscription(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<WireSubscription, RegistryError> {
        self.load_subscription(namespace, name)
            .await?
            .map(|s| s.wire(name))
            .ok_or_else(|| RegistryError::SubscriptionNotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
    }

    /// Every subscription of a namespace, by name, secrets left out.
    pub async fn subscriptions(
        &self,
        namespace: &str,
    ) -> Result<Vec<WireSubscription>, RegistryError> {
        let ns = namespace.to_string();
        let all = self
            .config()
            .read(move |s| s.attachments(&ns, PREFIX))
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(name, bytes)| {
                let stored = decode(&bytes)?;
                Some(stored.wire(name.strip_prefix(PREFIX).unwrap_or(&name)))
            })
            .collect())
    }

    async fn load_subscription(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored>, RegistryError> {
        let (ns, full) = (namespace.to_string(), attachment(name));
        let all = self
            .config()
            .read(move |s| s.attachments(&ns, &full))
            .await?;
        let full = attachment(name);
        Ok(all
            .into_iter()
            .find(|(n, _)| *n == full)
            .and_then(|(_, bytes)| decode(&bytes)))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The subscription routes.
pub fn routes() -> axum::Router<Arc<Roles>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/namespaces/{ns}/subscriptions", get(list))
        .route(
            "/v1/namespaces/{ns}/subscriptions/{name}",
            get(get_one).put(put).delete(delete),
        )
}

/// The HTTP shape of a subscription.
pub fn subscription_json(s: &WireSubscription) -> Value {
    json!({
        "name": s.name,
        "url": s.url,
        "services": s.services,
        "cursor": s.cursor,
        "last_error": s.last_error,
    })
}

async fn put(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    let body: Value = json_body(&body)?;
    let spec = parse_subscription(&body).map_err(RegistryError::InvalidSubscription)?;
    let (created, subscription) = roles.registry.put_subscription(&ns, &name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(subscription_json(&subscription))).into_response())
}

async fn get_one(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(subscription_json(
        &roles.registry.subscription(&ns, &name).await?,
    )))
}

async fn delete(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    roles.registry.delete_subscription(&ns, &name).await?;
    Ok(Json(json!({"name": name, "deleted": true})))
}

async fn list(
    State(roles): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let all = roles.registry.subscriptions(&ns).await?;
    Ok(Json(json!({
        "namespace": ns,
        "subscriptions": all.iter().map(subscription_json).collect::<Vec<_>>(),
    })))
}

// ---------------------------------------------------------------------------------------------
// Delivery

/// Keeps one delivery task per subscription of every namespace held here, until the node
/// stops.
pub async fn supervise(
    cluster: Cluster,
    registry: RegistryService,
    reconcile_every: Duration,
    stop: watch::Receiver<bool>,
) {
    let (c, r) = (cluster.clone(), registry.clone());
    supervise_attachments(
        &cluster,
        registry.config(),
        PREFIX,
        stop,
        move |namespace, attachment, stop| {
            let delivery = Delivery {
                cluster: c.clone(),
                registry: r.clone(),
                namespace,
                name: attachment
                    .strip_prefix(PREFIX)
                    .unwrap_or(&attachment)
                    .to_string(),
                reconcile_every,
            };
            delivery.run(stop)
        },
    )
    .await;
}

/// Delivers one subscription of one namespace while this node holds it.
struct Delivery {
    cluster: Cluster,
    registry: RegistryService,
    namespace: String,
    name: String,
    reconcile_every: Duration,
}

/// What one round has to send.
enum Next {
    /// Nothing new: wait for a change or the next reconcile.
    Idle,
    /// The log was compacted past the cursor: skip to what is retained.
    Compacted(u64),
    /// One notification for the event at `revision` (or `None`: the events up to `revision`
    /// concern no subscribed service).
    Event { revision: u64, body: Option<Value> },
}

impl Delivery {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut retry = RetryPause::default();
        // Due at once: a new subscriber (or a new holder) learns the whole state first.
        let mut reconcile_due = Instant::now();
        loop {
            if *stop.borrow() || !self.held_here() {
                return;
            }
            let mut feed = self.registry.config().feeds().subscribe(&self.namespace);
            let Ok(Some(sub)) = self
                .registry
                .load_subscription(&self.namespace, &self.name)
                .await
            else {
                return;
            };
            let (bodies, advance_to) = match self.next(&sub).await {
                Next::Compacted(oldest) => {
                    tracing::warn!(namespace = %self.namespace, subscription = %self.name, "events were compacted away before delivery; continuing after them");
                    if !self.save(|s| s.cursor = oldest.saturating_sub(1)).await {
                        return;
                    }
                    continue;
                }
                Next::Event {
                    revision,
                    body: None,
                } => {
                    if !self.save(|s| s.cursor = s.cursor.max(revision)).await {
                        return;
                    }
                    continue;
                }
                Next::Event {
                    revision,
                    body: Some(body),
                } => (vec![body], Some(revision)),
                Next::Idle if Instant::now() >= reconcile_due => match self.reconcile(&sub).await {
                    Some(bodies) => (bodies, None),
                    None => {
                        reconcile_due = Instant::now() + self.reconcile_every;
                        continue;
                    }
                },
                Next::Idle => {
                    tokio::select! {
                        _ = feed.changed() => {}
                        _ = tokio::time::sleep_until(reconcile_due) => {}
                        _ = until_stopped(&mut stop) => return,
                    }
                    continue;
                }
            };
            let outcome = self.post_all(&sub, bodies).await;
            let saved = match &outcome {
                Ok(()) => {
                    retry = RetryPause::default();
                    if advance_to.is_none() {
                        reconcile_due = Instant::now() + self.reconcile_every;
                    }
                    self.save(|s| {
                        if let Some(revision) = advance_to {
                            s.cursor = s.cursor.max(revision);
                        }
                        s.last_error = None;
                        s.last_success_at = Some(now_millis());
                    })
                    .await
                }
                Err(why) => {
                    let why = why.clone();
                    self.save(|s| s.last_error = Some(why.clone())).await
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

    /// POSTs notifications in order, stopping at the first that fails.
    async fn post_all(&self, sub: &Stored, bodies: Vec<Value>) -> Result<(), String> {
        for body in bodies {
            let delivery = format!(
                "{}/{}/{}/{}",
                self.namespace,
                self.name,
                body["event_type"].as_str().unwrap_or_default(),
                body["revision"].as_u64().unwrap_or_default()
            );
            let outcome = self
                .registry
                .sender()
                .post(&sub.url, sub.secret.as_deref(), &delivery, body.to_string())
                .await;
            self.cluster
                .metrics()
                .registry_notifications
                .get_or_create(&OutcomeLabels {
                    outcome: if outcome.is_ok() { "ok" } else { "failed" },
                })
                .inc();
            outcome?;
        }
        Ok(())
    }

    fn held_here(&self) -> bool {
        self.cluster
            .holder(&self.namespace)
            .is_some_and(|r| r.holder == self.cluster.me())
    }

    /// The first notification after the cursor, or how far the cursor may skip.
    async fn next(&self, sub: &Stored) -> Next {
        let read = self
            .registry
            .config()
            .events(&self.namespace, Some(sub.cursor), BATCH)
            .await;
        let events = match read {
            Ok((LogRead::Events(events), _)) => events,
            Ok((
                LogRead::Compacted {
                    oldest_retained, ..
                },
                _,
            )) => return Next::Compacted(oldest_retained),
            Err(e) => {
                tracing::debug!(error = %e, "subscription: log read failed");
                return Next::Idle;
            }
        };
        let Some(last) = events.last().map(|e| e.revision) else {
            return Next::Idle;
        };
        for event in events {
            if let Some(body) = notification(&self.namespace, &self.name, sub, &event) {
                return Next::Event {
                    revision: event.revision,
                    body: Some(body),
                };
            }
        }
        Next::Event {
            revision: last,
            body: None,
        }
    }

    /// The full state of each subscribed service, one `reconcile` notification per service
    /// (the same shape as the others, with every instance). `None` when a read failed.
    async fn reconcile(&self, sub: &Stored) -> Option<Vec<Value>> {
        let mut bodies = Vec::new();
        for service in &sub.services {
            let view = match self
                .registry
                .service(&self.namespace, service, &WireInstanceFilter::default())
                .await
            {
                Ok(view) => view,
                Err(e) => {
                    tracing::debug!(error = %e, "subscription: reconcile read failed");
                    return None;
                }
            };
            bodies.push(json!({
                "namespace": self.namespace,
                "subscription": self.name,
                "service": service,
                "event_type": "reconcile",
                "timestamp": rfc3339(now_millis()),
                "revision": view.revision,
                "instances": view.instances.iter().map(instance_json).collect::<Vec<_>>(),
            }));
        }
        Some(bodies)
    }

    /// Changes the stored subscription under a permit on the namespace's gate, only while
    /// this node holds the namespace and the subscription still exists. False when the task
    /// should end.
    async fn save(&self, change: impl FnOnce(&mut Stored)) -> bool {
        let permit = match self.cluster.route(&self.namespace, Intent::Read).await {
            Ok(Target::Local(permit)) => permit,
            _ => return false,
        };
        let Ok(Some(mut sub)) = self
            .registry
            .load_subscription(&self.namespace, &self.name)
            .await
        else {
            return false;
        };
        change(&mut sub);
        let saved = self
            .registry
            .config()
            .store()
            .put_attachment(&self.namespace, &attachment(&self.name), Some(encode(&sub)))
            .await;
        drop(permit);
        if let Err(e) = saved {
            tracing::warn!(namespace = %self.namespace, subscription = %self.name, error = %e, "subscription: cannot save the cursor");
            return false;
        }
        true
    }
}

/// The notification for one log event, if it is an instance event of a subscribed service:
/// `register` (a new instance), `update` (a changed one: registration or status), or
/// `unregister`.
pub fn notification(
    namespace: &str,
    subscription: &str,
    sub: &Stored,
    event: &cfgnode_storage::Event,
) -> Option<Value> {
    let (event_type, name, instance) = match &event.kind {
        EventKind::RecordSet {
            kind,
            name,
            version,
            value,
        } if kind == INSTANCE_KIND => {
            let (service, instance) = split_name(name);
            let mut shown = match decode_record(value) {
                Ok(record) => {
                    let mut shown = spec_json(&record.spec);
                    shown["status"] = json!(record.status.as_str());
                    shown["status_since"] = json!(rfc3339(record.status_since));
                    shown
                }
                Err(_) => json!({}),
            };
            shown["service"] = json!(service);
            shown["instance"] = json!(instance);
            shown["version"] = json!(version);
            let event_type = if *version == 1 { "register" } else { "update" };
            (event_type, name, shown)
        }
        EventKind::RecordDelete { kind, name, .. } if kind == INSTANCE_KIND => {
            let (service, instance) = split_name(name);
            (
                "unregister",
                name,
                json!({"service": service, "instance": instance}),
            )
        }
        _ => return None,
    };
    let service = split_name(name).0;
    if !sub.services.iter().any(|s| s == service) {
        return None;
    }
    Some(json!({
        "namespace": namespace,
        "subscription": subscription,
        "service": service,
        "event_type": event_type,
        "timestamp": rfc3339(event.at),
        "revision": event.revision,
        "instances": [instance],
    }))
}
