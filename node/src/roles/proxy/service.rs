//! [`ProxyService`]: the routes' operations, independent of HTTP (records of kind `route`,
//! written on the namespace's holder under its gate, like any namespace write).

use cfgnode_storage::{Record, RecordDelete, RecordPut, StoreError};
use serde_json::Value;

use cfgnode_transport::registry::{WireCheck, WireEndpoint, WireInstanceSpec};

use super::route::{Backend, ROUTE_KIND, Route, Target, parse_route, route_json};
use crate::records::NamespaceRecords;
use crate::roles::registry::RegistryService;
use crate::roles::registry::service::{RegistryError, split_name};
use crate::roles::registry::validate::{Invalid, check_name};

/// Most routes one listing returns.
const LIST_LIMIT: usize = 1000;

/// Why a route operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The route breaks a rule; the field and the reason say which.
    #[error("invalid route: {0}")]
    Invalid(Invalid),
    /// No such route.
    #[error("no route {name:?} in namespace {namespace:?}")]
    NotFound {
        /// Namespace asked.
        namespace: String,
        /// Route asked.
        name: String,
    },
    /// Storage refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest route name: its targets' service is `route.{name}` (at most 128 bytes).
const MAX_ROUTE_NAME: usize = 122;

/// The routes of the namespaces this node holds.
#[derive(Clone)]
pub struct ProxyService {
    records: NamespaceRecords,
    registry: RegistryService,
}

/// The registry service whose instances are a route's static targets, checked by the
/// registry's prober like any instance (one prober in the cluster, the status shared through
/// the namespace).
pub fn targets_service(route: &str) -> String {
    format!("route.{route}")
}

/// The instance name of a route's `index`th target.
pub fn target_instance(index: usize) -> String {
    format!("t{index}")
}

impl ProxyService {
    /// The service over the node's records; static targets are registered with `registry`.
    pub fn new(records: NamespaceRecords, registry: RegistryService) -> ProxyService {
        ProxyService { records, registry }
    }

    /// Creates or replaces a route; `(created, route as stored)`. A route with static targets
    /// also (re)registers them as instances of [`targets_service`], so the holder checks them.
    pub async fn put(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Result<(bool, Route), RouteError> {
        check_name("name", name).map_err(RouteError::Invalid)?;
        if name.len() > MAX_ROUTE_NAME {
            return Err(RouteError::Invalid(Invalid::new(
                "name",
                format!("must be at most {MAX_ROUTE_NAME} bytes"),
            )));
        }
        let route = parse_route(body).map_err(RouteError::Invalid)?;
        // Every target's check is built before anything is written: a refusal changes nothing.
        let mut targets = Vec::new();
        if let Backend::Targets(list) = &route.backend {
            for (i, target) in list.iter().enumerate() {
                let check = route
                    .target_check
                    .for_target(target)
                    .map_err(RouteError::Invalid)?;
                targets.push((target_instance(i), target_spec(target, check)?));
            }
        }
        let existed = self
            .records
            .get(namespace, ROUTE_KIND, name)
            .await?
            .is_some();
        self.sync_targets(namespace, name, targets).await?;
        self.records
            .put(RecordPut {
                namespace: namespace.to_string(),
                kind: ROUTE_KIND.to_string(),
                name: name.to_string(),
                value: route_json(&route).to_string().into_bytes(),
                if_version: None,
            })
            .await?;
        Ok((!existed, route))
    }

    /// One route.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<(Record, Route), RouteError> {
        let record = self
            .records
            .get(namespace, ROUTE_KIND, name)
            .await?
            .ok_or_else(|| not_found(namespace, name))?;
        let route = decode(&record)?;
        Ok((record, route))
    }

    /// Makes the registered targets of route `name` exactly `targets`.
    async fn sync_targets(
        &self,
        namespace: &str,
        name: &str,
        targets: Vec<(String, WireInstanceSpec)>,
    ) -> Result<(), RouteError> {
        let service = targets_service(name);
        let existing = match self.registry.list(namespace, &format!("{service}/")).await {
            Ok(existing) => existing,
            Err(RegistryError::Store(StoreError::NamespaceNotFound { .. })) => Vec::new(),
            Err(e) => return Err(registry_error(e)),
        };
        for (record, _) in existing {
            let instance = split_name(&record.name).1.to_string();
            if !targets.iter().any(|(t, _)| *t == instance) {
                self.registry
                    .deregister(namespace, &service, &instance)
                    .await
                    .map_err(registry_error)?;
            }
        }
        for (instance, spec) in targets {
            self.registry
                .register(namespace, &service, &instance, spec)
                .await
                .map_err(registry_error)?;
        }
        Ok(())
    }

    /// Removes a route (and its registered targets).
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<u64, RouteError> {
        self.sync_targets(namespace, name, Vec::new()).await?;
        match self
            .records
            .delete(RecordDelete {
                namespace: namespace.to_string(),
                kind: ROUTE_KIND.to_string(),
                name: name.to_string(),
                if_version: None,
            })
            .await
        {
            Ok(deleted) => Ok(deleted.revision),
            Err(StoreError::RecordNotFound { .. } | StoreError::NamespaceNotFound { .. }) => {
                Err(not_found(namespace, name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every route of the namespace, by name.
    pub async fn list(&self, namespace: &str) -> Result<Vec<(Record, Route)>, RouteError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .records
                .list(namespace, ROUTE_KIND, "", cursor.as_deref(), LIST_LIMIT)
                .await?;
            for record in page.items {
                let route = decode(&record)?;
                out.push((record, route));
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }
}

/// A static target as a registry instance: one `http` endpoint and the route's check.
fn target_spec(target: &Target, check: WireCheck) -> Result<WireInstanceSpec, RouteError> {
    let (host, port) = target
        .authority
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            RouteError::Invalid(Invalid::new(
                "backend.targets",
                format!("{} has no port", target.url),
            ))
        })?;
    Ok(WireInstanceSpec {
        endpoints: vec![WireEndpoint {
            name: "http".into(),
            protocol: "http".into(),
            address: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        }],
        tags: Vec::new(),
        metadata: Default::default(),
        check: Some(check),
    })
}

/// A registry refusal of a target, as a route error.
fn registry_error(e: RegistryError) -> RouteError {
    match e {
        RegistryError::Store(store) => RouteError::Store(store),
        RegistryError::InvalidInstance(why) => RouteError::Invalid(why),
        other => RouteError::Store(StoreError::Storage(other.to_string())),
    }
}

fn not_found(namespace: &str, name: &str) -> RouteError {
    RouteError::NotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn decode(record: &Record) -> Result<Route, RouteError> {
    serde_json::from_slice(&record.value)
        .ok()
        .and_then(|v| parse_route(&v).ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!("stored route {:?} does not parse", record.name)).into()
        })
}
