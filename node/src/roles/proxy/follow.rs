//! Following the proxied namespaces: every node with `--proxy` keeps the routes and registry
//! instances of its `--proxy-namespaces` in memory and rebuilds its [`Table`] on every change,
//! so a route or an instance change applies within milliseconds everywhere (hot reload).
//!
//! Per namespace: load the `route` and `instance` records (a routed `Records` read, served by
//! the holder wherever it is), then watch from the revision read before the load, through the
//! node's hub (one upstream per namespace per node, shared with every other watcher). Events
//! carry whole values, so a change is applied without another read; a watch that falls behind
//! the retained log (`Reset`) loads again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cfgnode_transport::registry::WireStatus;
use cfgnode_transport::{
    PushRequest, PushResponse, Request, Response, WireError, WireEventKind, WireRecord,
    WireWatchItem, WireWatchRequest, codes,
};
use tokio::sync::watch;

use super::limiter::Limiter;
use super::route::{Backend, ROUTE_KIND, Route, parse_route};
use super::service::{target_instance, targets_service};
use super::table::{Entry, Pool, Table};
use crate::auth::Principal;
use crate::cluster::{Cluster, serve_routed};
use crate::roles::config::ConfigService;
use crate::roles::push::Hub;
use crate::roles::push::watch::{WatchSpec, open};
use crate::roles::registry::json::{InstanceRecord, decode_record};
use crate::roles::registry::service::INSTANCE_KIND;
use crate::shutdown::until_stopped;

/// Pause before loading again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// What the proxy knows of one namespace.
#[derive(Debug, Default)]
struct Known {
    routes: BTreeMap<String, Route>,
    /// `service/instance` -> its record.
    instances: BTreeMap<String, InstanceRecord>,
}

/// The proxy's view of every followed namespace, and the table built from it.
#[derive(Debug, Default)]
pub struct ProxyState {
    table: RwLock<Arc<Table>>,
    known: Mutex<HashMap<String, Known>>,
    limiters: Mutex<HashMap<(String, String), Arc<Limiter>>>,
}

impl ProxyState {
    /// The table requests are routed with now.
    pub fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces what is known of `namespace` and rebuilds the table.
    fn replace(&self, namespace: &str, known: Known) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_string(), known);
        self.rebuild();
    }

    /// Applies one change to `namespace`; true when it concerned the proxy.
    fn apply(&self, namespace: &str, kind: &WireEventKind) -> bool {
        let mut all = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let known = all.entry(namespace.to_string()).or_default();
        match kind {
            WireEventKind::RecordSet {
                kind, name, value, ..
            } if kind == ROUTE_KIND => {
                match serde_json::from_slice(value)
                    .ok()
                    .and_then(|v| parse_route(&v).ok())
                {
                    Some(route) => known.routes.insert(name.clone(), route),
                    None => known.routes.remove(name),
                };
            }
            WireEventKind::RecordDelete { kind, name, .. } if kind == ROUTE_KIND => {
                known.routes.remove(name);
            }
            WireEventKind::RecordSet {
                kind, name, value, ..
            } if kind == INSTANCE_KIND => {
                match decode_record(value) {
                    Ok(record) => known.instances.insert(name.clone(), record),
                    Err(_) => known.instances.remove(name),
                };
            }
            WireEventKind::RecordDelete { kind, name, .. } if kind == INSTANCE_KIND => {
                known.instances.remove(name);
            }
            _ => return false,
        }
        drop(all);
        true
    }

    /// Builds the table from everything known (limiters kept while their limit is unchanged).
    fn rebuild(&self) {
        let all = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = HashMap::new();
        let mut entries = Vec::new();
        for (namespace, known) in all.iter() {
            for (name, route) in &known.routes {
                let key = (namespace.clone(), name.clone());
                let limiter = route.rate_limit.map(|limit| {
                    let limiter = match limiters.get(&key) {
                        Some(l) if l.limit() == limit => Arc::clone(l),
                        _ => Arc::new(Limiter::new(limit)),
                    };
                    kept.insert(key.clone(), Arc::clone(&limiter));
                    limiter
                });
                entries.push(Entry {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    pool: Pool::new(backends(name, route, known)),
                    route: route.clone(),
                    limiter,
                });
            }
        }
        *limiters = kept;
        let table = Arc::new(Table::new(entries));
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }
}

/// The `host:port` backends of a route: its static targets, or the healthy instances of its
/// service that have the named endpoint, by instance name.
fn backends(name: &str, route: &Route, known: &Known) -> Vec<String> {
    match &route.backend {
        // A target whose check failed is left out; one not checked yet is tried (the proxy's
        // own down marks catch a dead one at its first refused connection).
        Backend::Targets(targets) => targets
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let instance = format!("{}/{}", targets_service(name), target_instance(*i));
                known
                    .instances
                    .get(&instance)
                    .is_none_or(|record| record.status != WireStatus::Unhealthy)
            })
            .map(|(_, t)| t.authority.clone())
            .collect(),
        Backend::Service { service, endpoint } => {
            let prefix = format!("{service}/");
            known
                .instances
                .range(prefix.clone()..)
                .take_while(|(name, _)| name.starts_with(&prefix))
                .filter(|(_, record)| record.status == WireStatus::Healthy)
                .filter_map(|(_, record)| {
                    let e = record.spec.endpoints.iter().find(|e| &e.name == endpoint)?;
                    Some(if e.address.contains(':') {
                        format!("[{}]:{}", e.address, e.port)
                    } else {
                        format!("{}:{}", e.address, e.port)
                    })
                })
                .collect()
        }
    }
}

/// Follows `namespace` until the node stops.
pub async fn follow(
    state: Arc<ProxyState>,
    cluster: Cluster,
    config: ConfigService,
    hub: Hub,
    namespace: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match load(&cluster, &config, &namespace).await {
            Ok((revision, known)) => {
                state.replace(&namespace, known);
                tracing::debug!(%namespace, revision, "proxy: loaded");
                if follow_from(&state, &hub, &namespace, revision, &mut stop).await {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%namespace, error = %e, "proxy: cannot load the namespace yet");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = until_stopped(&mut stop) => return,
        }
    }
}

/// Applies the watch's events until it resets (false: load again) or the node stops (true).
async fn follow_from(
    state: &ProxyState,
    hub: &Hub,
    namespace: &str,
    revision: u64,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let request = WireWatchRequest {
        namespaces: vec![(namespace.to_string(), Some(revision))],
        prefixes: Vec::new(),
        progress_ms: 0,
    };
    let spec = match WatchSpec::check(request, &Principal::Admin) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::warn!(%namespace, error = %e.message, "proxy: cannot watch");
            return false;
        }
    };
    let mut watch = open(hub, spec, "proxy");
    loop {
        let batch = tokio::select! {
            batch = watch.items.recv() => batch,
            _ = until_stopped(stop) => return true,
        };
        let Some(batch) = batch else {
            return *stop.borrow();
        };
        let mut changed = false;
        for item in batch {
            match item {
                WireWatchItem::Event(event) => changed |= state.apply(namespace, &event.kind),
                WireWatchItem::Reset { .. } => return false,
                WireWatchItem::Progress { .. } => {}
            }
        }
        if changed {
            state.rebuild();
        }
    }
}

/// Every route and instance of `namespace`, and the revision read before them.
async fn load(
    cluster: &Cluster,
    config: &ConfigService,
    namespace: &str,
) -> Result<(u64, Known), WireError> {
    let mut known = Known::default();
    let (revision, routes) = records(cluster, config, namespace, ROUTE_KIND).await?;
    for record in routes {
        if let Some(route) = serde_json::from_slice(&record.value)
            .ok()
            .and_then(|v| parse_route(&v).ok())
        {
            known.routes.insert(record.name, route);
        }
    }
    let (_, instances) = records(cluster, config, namespace, INSTANCE_KIND).await?;
    for record in instances {
        if let Ok(decoded) = decode_record(&record.value) {
            known.instances.insert(record.name, decoded);
        }
    }
    Ok((revision, known))
}

/// All records of one kind, wherever the namespace is held, with the revision read before the
/// first page.
async fn records(
    cluster: &Cluster,
    config: &ConfigService,
    namespace: &str,
    kind: &str,
) -> Result<(u64, Vec<WireRecord>), WireError> {
    let mut all = Vec::new();
    let mut cursor = None;
    let mut first_revision = None;
    loop {
        let request = Request::Push(PushRequest::Records {
            namespace: namespace.to_string(),
            kind: kind.to_string(),
            prefix: String::new(),
            cursor: cursor.clone(),
            limit: 1000,
        });
        let answer = serve_routed(
            cluster,
            &Principal::Admin,
            false,
            namespace,
            request,
            async |request| match request {
                Request::Push(request) => {
                    crate::roles::push::quic::handle_routed(config, request).await
                }
                other => Err(WireError::new(
                    codes::INTERNAL,
                    format!("the proxy asked for {}", other.name()),
                )),
            },
        )
        .await?;
        let Response::Push(PushResponse::Records {
            revision,
            records,
            next_cursor,
        }) = answer
        else {
            return Err(WireError::new(
                codes::UNEXPECTED_RESPONSE,
                "not a records page",
            ));
        };
        first_revision.get_or_insert(revision);
        all.extend(records);
        match next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((first_revision.unwrap_or(revision), all)),
        }
    }
}
