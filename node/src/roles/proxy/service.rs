//! [`ProxyService`]: the routes' operations, independent of HTTP (records of kind `route`,
//! written on the namespace's holder under its gate, like any namespace write).

use cfgnode_storage::{Record, RecordDelete, RecordPut, StoreError};
use serde_json::Value;

use super::route::{ROUTE_KIND, Route, parse_route, route_json};
use crate::records::NamespaceRecords;
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

/// The routes of the namespaces this node holds.
#[derive(Clone, Debug)]
pub struct ProxyService {
    records: NamespaceRecords,
}

impl ProxyService {
    /// The service over the node's records.
    pub fn new(records: NamespaceRecords) -> ProxyService {
        ProxyService { records }
    }

    /// Creates or replaces a route; `(created, route as stored)`.
    pub async fn put(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Result<(bool, Route), RouteError> {
        check_name("name", name).map_err(RouteError::Invalid)?;
        let route = parse_route(body).map_err(RouteError::Invalid)?;
        let existed = self
            .records
            .get(namespace, ROUTE_KIND, name)
            .await?
            .is_some();
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

    /// Removes a route.
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<u64, RouteError> {
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
