//! [`RegistryService`]: the registry role's operations, independent of HTTP or QUIC.
//!
//! Instances are namespace records of kind [`INSTANCE_KIND`] named `service/instance`, whose
//! value is the JSON of [`InstanceRecord`]: a registration, a status change and a removal are
//! each one write of the namespace (a revision, a log event), so they move with the namespace
//! and reach every watch, SSE stream, webhook and agent. The holder's soft state (the latest
//! check outcome of each instance, TTL clocks) lives in [`Probes`]; only status changes are
//! written.
//!
//! Callers hold the namespace's permit (the front ends take it when routing, the prober before
//! each status write): the service itself takes none, so it never waits on a gate it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cfgnode_storage::{NamespaceState, Record, RecordDelete, RecordPut, StoreError};
use cfgnode_transport::codes;
use cfgnode_transport::registry::{
    WireCheck, WireCheckResult, WireInstance, WireInstanceFilter, WireInstanceSpec,
    WireServiceSummary, WireServiceView, WireServices, WireStatus,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::json::{InstanceRecord, decode_record, encode_record};
use super::validate::{Invalid, check_name, check_spec};
use crate::records::NamespaceRecords;
use crate::roles::config::ConfigService;
use crate::roles::push::webhooks::Sender;
use crate::time::now_millis;

/// The record kind of instances.
pub const INSTANCE_KIND: &str = "instance";

/// Records read per storage call when a whole service or namespace is listed.
const LIST_PAGE: usize = 1000;

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request breaks a rule; the field and the reason say which.
    #[error("invalid instance: {0}")]
    InvalidInstance(Invalid),
    /// A subscription breaks a rule.
    #[error("invalid subscription: {0}")]
    InvalidSubscription(Invalid),
    /// No such instance.
    #[error(
        "no instance {instance:?} of service {service:?} in namespace {namespace:?}; register it first"
    )]
    InstanceNotFound {
        /// Namespace asked.
        namespace: String,
        /// Service asked.
        service: String,
        /// Instance asked.
        instance: String,
    },
    /// A heartbeat for an instance whose check is not a TTL check.
    #[error(
        "instance {instance:?} of service {service:?} has no ttl check, so it takes no heartbeats; register it with \"check\": {{\"kind\": \"ttl\", \"ttl\": \"10s\"}}"
    )]
    NoTtlCheck {
        /// Service asked.
        service: String,
        /// Instance asked.
        instance: String,
    },
    /// No such subscription.
    #[error("no subscription {name:?} in namespace {namespace:?}")]
    SubscriptionNotFound {
        /// Namespace asked.
        namespace: String,
        /// Subscription asked.
        name: String,
    },
    /// Storage refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not decode: a bug or a damaged file.
    #[error("stored instance {name:?} is unreadable: {why}")]
    Corrupt {
        /// Record name.
        name: String,
        /// What is wrong with it.
        why: Invalid,
    },
}

impl RegistryError {
    /// The stable error code (transport's vocabulary).
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::InvalidInstance(_) => codes::INVALID_INSTANCE,
            RegistryError::InvalidSubscription(_) => codes::INVALID_SUBSCRIPTION,
            RegistryError::InstanceNotFound { .. } => codes::INSTANCE_NOT_FOUND,
            RegistryError::NoTtlCheck { .. } => codes::NO_TTL_CHECK,
            RegistryError::SubscriptionNotFound { .. } => codes::SUBSCRIPTION_NOT_FOUND,
            RegistryError::Store(e) => crate::error::error_code(e),
            RegistryError::Corrupt { .. } => codes::INTERNAL,
        }
    }

    /// The error as the QUIC protocol carries it.
    pub fn to_wire(&self) -> cfgnode_transport::WireError {
        cfgnode_transport::WireError::new(self.code(), self.to_string())
    }
}

/// The holder's soft state of its instances: what the prober last saw and when each TTL
/// instance last sent a heartbeat. Lost on a move or restart by design (the new holder probes
/// again; a TTL instance gets one TTL of grace).
#[derive(Default)]
pub struct Probes {
    latest: Mutex<HashMap<InstanceKey, WireCheckResult>>,
    heartbeats: Mutex<HashMap<InstanceKey, Instant>>,
    /// Wakes TTL watchers when a heartbeat arrives.
    beat: Notify,
}

/// An instance across namespaces: (namespace, `service/instance`).
pub type InstanceKey = (String, String);

impl Probes {
    /// Records the outcome of a check.
    pub fn record_result(&self, key: &InstanceKey, result: WireCheckResult) {
        self.latest
            .lock()
            .expect("probe results lock")
            .insert(key.clone(), result);
    }

    /// The latest outcome seen for an instance, if any.
    pub fn latest(&self, key: &InstanceKey) -> Option<WireCheckResult> {
        self.latest
            .lock()
            .expect("probe results lock")
            .get(key)
            .cloned()
    }

    /// The last heartbeat of a TTL instance.
    pub fn last_beat(&self, key: &InstanceKey) -> Option<Instant> {
        self.heartbeats
            .lock()
            .expect("heartbeats lock")
            .get(key)
            .copied()
    }

    /// Starts a TTL clock if none runs (a new holder's grace period); returns its start.
    pub fn start_clock(&self, key: &InstanceKey) -> Instant {
        *self
            .heartbeats
            .lock()
            .expect("heartbeats lock")
            .entry(key.clone())
            .or_insert_with(Instant::now)
    }

    /// Resolves at the next heartbeat of any instance.
    pub fn next_beat(&self) -> tokio::sync::futures::Notified<'_> {
        self.beat.notified()
    }

    /// Forgets an instance (removed, or its namespace moved away).
    pub fn forget(&self, key: &InstanceKey) {
        self.latest.lock().expect("probe results lock").remove(key);
        self.heartbeats.lock().expect("heartbeats lock").remove(key);
    }

    fn beat(&self, key: &InstanceKey) {
        self.heartbeats
            .lock()
            .expect("heartbeats lock")
            .insert(key.clone(), Instant::now());
        self.beat.notify_waiters();
    }
}

/// The registry role over one store.
#[derive(Clone)]
pub struct RegistryService {
    config: ConfigService,
    records: NamespaceRecords,
    probes: Arc<Probes>,
    sender: Sender,
}

impl RegistryService {
    /// The registry over the config role's store (the records share the namespaces);
    /// subscriptions are delivered by `sender` (the webhooks', so one target fence).
    pub fn new(
        config: ConfigService,
        records: NamespaceRecords,
        sender: Sender,
    ) -> RegistryService {
        RegistryService {
            config,
            records,
            probes: Arc::new(Probes::default()),
            sender,
        }
    }

    /// Delivers subscription notifications.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// The holder's soft state (the prober writes it, reads overlay it).
    pub fn probes(&self) -> &Arc<Probes> {
        &self.probes
    }

    /// The config role (for the store, feeds and namespace state).
    pub fn config(&self) -> &ConfigService {
        &self.config
    }

    /// Creates or replaces an instance. The status survives a re-registration with the same
    /// check (a restarted registrant does not flap its instance); a new check starts over.
    pub async fn register(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
        spec: WireInstanceSpec,
    ) -> Result<(bool, WireInstance), RegistryError> {
        check_name("service", service).map_err(RegistryError::InvalidInstance)?;
        check_name("instance", instance).map_err(RegistryError::InvalidInstance)?;
        check_spec(&spec).map_err(RegistryError::InvalidInstance)?;
        let name = record_name(service, instance);
        // A concurrent status write may land between the read and the put: the put is a
        // compare-and-set, so one of them retries on fresh state instead of undoing the other.
        loop {
            let existing = self.read(namespace, &name).await?;
            let now = now_millis();
            let record = match &existing {
                Some((_, old)) if old.spec.check == spec.check => InstanceRecord {
                    spec: spec.clone(),
                    ..old.clone()
                },
                _ => InstanceRecord {
                    status: initial_status(&spec.check),
                    status_since: now,
                    last_check: None,
                    spec: spec.clone(),
                },
            };
            let if_version = Some(existing.as_ref().map_or(0, |(r, _)| r.version));
            match self.put(namespace, &name, &record, if_version).await {
                Ok(stored) => {
                    let key = (namespace.to_string(), name.clone());
                    if existing
                        .as_ref()
                        .is_none_or(|(_, old)| old.spec.check != spec.check)
                    {
                        self.probes.forget(&key);
                    }
                    return Ok((existing.is_none(), self.view(namespace, &stored, record)));
                }
                Err(RegistryError::Store(StoreError::RecordVersionMismatch { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes an instance; the revision of the removal.
    pub async fn deregister(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
    ) -> Result<u64, RegistryError> {
        check_name("service", service).map_err(RegistryError::InvalidInstance)?;
        check_name("instance", instance).map_err(RegistryError::InvalidInstance)?;
        let name = record_name(service, instance);
        let deleted = self
            .records
            .delete(RecordDelete {
                namespace: namespace.to_string(),
                kind: INSTANCE_KIND.to_string(),
                name: name.clone(),
                if_version: None,
            })
            .await
            .map_err(|e| not_found_as_instance(e, namespace, service, instance))?;
        self.probes.forget(&(namespace.to_string(), name));
        Ok(deleted.revision)
    }

    /// One instance as readers see it.
    pub async fn instance(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
    ) -> Result<WireInstance, RegistryError> {
        check_name("service", service).map_err(RegistryError::InvalidInstance)?;
        check_name("instance", instance).map_err(RegistryError::InvalidInstance)?;
        let name = record_name(service, instance);
        match self.read(namespace, &name).await? {
            Some((record, decoded)) => Ok(self.view(namespace, &record, decoded)),
            None => Err(RegistryError::InstanceNotFound {
                namespace: namespace.to_string(),
                service: service.to_string(),
                instance: instance.to_string(),
            }),
        }
    }

    /// Renews a TTL instance: healthy from now until its TTL passes without another heartbeat.
    pub async fn heartbeat(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
    ) -> Result<WireStatus, RegistryError> {
        check_name("service", service).map_err(RegistryError::InvalidInstance)?;
        check_name("instance", instance).map_err(RegistryError::InvalidInstance)?;
        let name = record_name(service, instance);
        let Some((_, record)) = self.read(namespace, &name).await? else {
            return Err(RegistryError::InstanceNotFound {
                namespace: namespace.to_string(),
                service: service.to_string(),
                instance: instance.to_string(),
            });
        };
        if !matches!(record.spec.check, Some(WireCheck::Ttl { .. })) {
            return Err(RegistryError::NoTtlCheck {
                service: service.to_string(),
                instance: instance.to_string(),
            });
        }
        let key = (namespace.to_string(), name);
        self.probes.beat(&key);
        let result = WireCheckResult {
            at: now_millis(),
            ok: true,
            output: "heartbeat".to_string(),
        };
        self.probes.record_result(&key, result.clone());
        self.set_status(namespace, &key.1, WireStatus::Healthy, result)
            .await?;
        Ok(WireStatus::Healthy)
    }

    /// Writes a status change decided by a check; `Ok(false)` when the instance is gone (its
    /// prober should stop). No write when the status is already `status`.
    pub async fn set_status(
        &self,
        namespace: &str,
        name: &str,
        status: WireStatus,
        result: WireCheckResult,
    ) -> Result<bool, RegistryError> {
        loop {
            let Some((stored, mut record)) = self.read(namespace, name).await? else {
                return Ok(false);
            };
            if record.status == status {
                return Ok(true);
            }
            record.status = status;
            record.status_since = result.at;
            record.last_check = Some(result.clone());
            match self
                .put(namespace, name, &record, Some(stored.version))
                .await
            {
                Ok(_) => return Ok(true),
                Err(RegistryError::Store(StoreError::RecordVersionMismatch { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Every service of the namespace with its counts by status.
    pub async fn services(&self, namespace: &str) -> Result<WireServices, RegistryError> {
        let state = self.existing_namespace(namespace).await?;
        let mut summaries: BTreeMap<String, WireServiceSummary> = BTreeMap::new();
        for (record, decoded) in self.list(namespace, "").await? {
            let service = service_of(&record.name).to_string();
            let summary = summaries
                .entry(service.clone())
                .or_insert_with(|| WireServiceSummary {
                    service,
                    instances: 0,
                    healthy: 0,
                    unhealthy: 0,
                    unknown: 0,
                });
            summary.instances += 1;
            match decoded.status {
                WireStatus::Healthy => summary.healthy += 1,
                WireStatus::Unhealthy => summary.unhealthy += 1,
                WireStatus::Unknown => summary.unknown += 1,
            }
        }
        Ok(WireServices {
            revision: state.revision,
            services: summaries.into_values().collect(),
        })
    }

    /// One service's instances that pass `filter`. The ETag is the namespace's: it changes
    /// whenever the view can (and sometimes when it does not, which costs a reader one
    /// identical answer, never a missed change).
    pub async fn service(
        &self,
        namespace: &str,
        service: &str,
        filter: &WireInstanceFilter,
    ) -> Result<WireServiceView, RegistryError> {
        check_name("service", service).map_err(RegistryError::InvalidInstance)?;
        let state = self.existing_namespace(namespace).await?;
        let prefix = format!("{service}/");
        let instances = self
            .list(namespace, &prefix)
            .await?
            .into_iter()
            .map(|(record, decoded)| self.view(namespace, &record, decoded))
            .filter(|instance| matches(filter, instance))
            .collect();
        Ok(WireServiceView {
            service: service.to_string(),
            revision: state.revision,
            etag: state.etag(),
            instances,
        })
    }

    /// Every instance record of a namespace (or of the services under `prefix`), decoded.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(Record, InstanceRecord)>, RegistryError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .records
                .list(
                    namespace,
                    INSTANCE_KIND,
                    prefix,
                    after.as_deref(),
                    LIST_PAGE,
                )
                .await?;
            for record in page.items {
                let decoded = decode(&record)?;
                out.push((record, decoded));
            }
            match page.next_cursor {
                Some(cursor) => after = Some(cursor),
                None => return Ok(out),
            }
        }
    }

    /// One instance record, decoded.
    pub async fn read(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(Record, InstanceRecord)>, RegistryError> {
        let record = self.records.get(namespace, INSTANCE_KIND, name).await?;
        record
            .map(|record| decode(&record).map(|decoded| (record, decoded)))
            .transpose()
    }

    /// The instance as readers see it: the record, with the holder's latest check outcome.
    fn view(&self, namespace: &str, record: &Record, decoded: InstanceRecord) -> WireInstance {
        let key = (namespace.to_string(), record.name.clone());
        let (service, instance) = split_name(&record.name);
        WireInstance {
            service: service.to_string(),
            instance: instance.to_string(),
            last_check: self.probes.latest(&key).or(decoded.last_check),
            spec: decoded.spec,
            status: decoded.status,
            status_since: decoded.status_since,
            version: record.version,
            revision: record.revision,
        }
    }

    async fn put(
        &self,
        namespace: &str,
        name: &str,
        record: &InstanceRecord,
        if_version: Option<u64>,
    ) -> Result<Record, RegistryError> {
        Ok(self
            .records
            .put(RecordPut {
                namespace: namespace.to_string(),
                kind: INSTANCE_KIND.to_string(),
                name: name.to_string(),
                value: encode_record(record),
                if_version,
            })
            .await?)
    }

    async fn existing_namespace(&self, namespace: &str) -> Result<NamespaceState, RegistryError> {
        self.config
            .namespace_state(namespace)
            .await?
            .ok_or_else(|| {
                RegistryError::Store(StoreError::NamespaceNotFound {
                    namespace: namespace.to_string(),
                })
            })
    }
}

/// The status a registration starts in: healthy with no check, unknown until checked.
fn initial_status(check: &Option<WireCheck>) -> WireStatus {
    match check {
        None => WireStatus::Healthy,
        Some(_) => WireStatus::Unknown,
    }
}

/// Whether an instance passes a filter.
pub fn matches(filter: &WireInstanceFilter, instance: &WireInstance) -> bool {
    filter.status.is_none_or(|s| s == instance.status)
        && filter
            .protocol
            .as_ref()
            .is_none_or(|p| instance.spec.endpoints.iter().any(|e| &e.protocol == p))
        && filter
            .tag
            .as_ref()
            .is_none_or(|t| instance.spec.tags.contains(t))
}

/// The record name of an instance: `service/instance` (neither may contain `/`).
pub fn record_name(service: &str, instance: &str) -> String {
    format!("{service}/{instance}")
}

/// The (service, instance) of a record name.
pub fn split_name(name: &str) -> (&str, &str) {
    name.split_once('/').unwrap_or((name, ""))
}

fn service_of(name: &str) -> &str {
    split_name(name).0
}

fn decode(record: &Record) -> Result<InstanceRecord, RegistryError> {
    decode_record(&record.value).map_err(|why| RegistryError::Corrupt {
        name: record.name.clone(),
        why,
    })
}

fn not_found_as_instance(
    error: StoreError,
    namespace: &str,
    service: &str,
    instance: &str,
) -> RegistryError {
    match error {
        StoreError::RecordNotFound { .. } | StoreError::NamespaceNotFound { .. } => {
            RegistryError::InstanceNotFound {
                namespace: namespace.to_string(),
                service: service.to_string(),
                instance: instance.to_string(),
            }
        }
        other => RegistryError::Store(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfgnode_transport::registry::WireEndpoint;

    fn instance(status: WireStatus, protocol: &str, tags: &[&str]) -> WireInstance {
        WireInstance {
            service: "web".into(),
            instance: "a".into(),
            spec: WireInstanceSpec {
                endpoints: vec![WireEndpoint {
                    name: "api".into(),
                    protocol: protocol.into(),
                    address: "10.0.0.1".into(),
                    port: 80,
                }],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            },
            status,
            status_since: 0,
            last_check: None,
            version: 1,
            revision: 1,
        }
    }

    #[test]
    fn filters_match_every_set_field() {
        let healthy_http_v2 = instance(WireStatus::Healthy, "http", &["v2"]);
        let all = WireInstanceFilter::default();
        assert!(matches(&all, &healthy_http_v2));
        let f = |status, protocol: Option<&str>, tag: Option<&str>| WireInstanceFilter {
            status,
            protocol: protocol.map(str::to_string),
            tag: tag.map(str::to_string),
        };
        assert!(matches(
            &f(Some(WireStatus::Healthy), Some("http"), Some("v2")),
            &healthy_http_v2
        ));
        assert!(!matches(
            &f(Some(WireStatus::Unhealthy), None, None),
            &healthy_http_v2
        ));
        assert!(!matches(&f(None, Some("grpc"), None), &healthy_http_v2));
        assert!(!matches(&f(None, None, Some("v1")), &healthy_http_v2));
    }

    #[test]
    fn record_names_split_back() {
        assert_eq!(split_name(&record_name("web", "pod-1")), ("web", "pod-1"));
        assert_eq!(initial_status(&None), WireStatus::Healthy);
        assert_eq!(
            initial_status(&Some(WireCheck::Ttl { ttl_ms: 1000 })),
            WireStatus::Unknown
        );
    }
}
