//! [`ServiceWatch`]: a service's matching instances (by default its healthy set), yielded
//! whenever they change.
//!
//! Built on the `Service` long-poll: the watch holds the ETag of the last view and asks the
//! node to answer once the ETag differs. That ETag is the namespace's, so the node also
//! answers for changes that leave this view alone (a config key written in the namespace,
//! another service's instance, a probe that keeps an instance healthy); the watch compares
//! the instances with the last set it yielded and stays quiet unless they differ
//! ([`same_instances`]: names, registrations and statuses; not check outcomes or versions).
//!
//! Failures: a transient error (no node, a timeout) is logged and the poll is tried again
//! after a jittered backoff; a namespace that does not exist (yet) is an empty set, read again
//! every [`MISSING_NAMESPACE_POLL`]; any other error (bad name, bad token) is returned.

use std::time::Duration;

use crate::backoff::{Backoff, unit_random};
use crate::client::{Client, Instance, InstanceFilter, InstanceStatus};
use crate::error::ClientError;

/// How long each long-poll asks the node to wait, unless [`ServiceWatch::wait`] says.
pub const DEFAULT_SERVICE_WAIT: Duration = Duration::from_secs(30);

/// How often a namespace that does not exist is read again (no ETag to wait on yet).
pub const MISSING_NAMESPACE_POLL: Duration = Duration::from_millis(500);

/// Retry delays after a transient failure.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A service's instances that pass a filter, yielded by [`next`](Self::next) first as they
/// are and then each time they differ from the last set yielded. Made by
/// [`Client::watch_healthy`] or [`Client::watch_service`].
#[derive(Debug)]
pub struct ServiceWatch {
    client: Client,
    namespace: String,
    service: String,
    filter: InstanceFilter,
    /// How long each long-poll may wait on the node.
    wait: Duration,
    /// The ETag of the last view read; `None` before the first (or for a missing namespace).
    etag: Option<String>,
    /// The last set yielded; `None` before the first.
    last: Option<Vec<Instance>>,
    backoff: Backoff,
}

impl Client {
    /// Watches the healthy instances of `service` in `namespace`: the first
    /// [`next`](ServiceWatch::next) yields them as they are, each later one when the set
    /// changes (an instance joins, leaves, changes its registration, or turns healthy or not).
    pub fn watch_healthy(&self, namespace: &str, service: &str) -> ServiceWatch {
        let filter = InstanceFilter {
            status: Some(InstanceStatus::Healthy),
            ..InstanceFilter::default()
        };
        self.watch_service(namespace, service, filter)
    }

    /// Watches the instances of `service` that pass `filter` (see [`Client::watch_healthy`]).
    pub fn watch_service(
        &self,
        namespace: &str,
        service: &str,
        filter: InstanceFilter,
    ) -> ServiceWatch {
        ServiceWatch {
            client: self.clone(),
            namespace: namespace.to_string(),
            service: service.to_string(),
            filter,
            wait: DEFAULT_SERVICE_WAIT,
            etag: None,
            last: None,
            backoff: Backoff::new(RETRY_BASE, RETRY_MAX),
        }
    }
}

impl ServiceWatch {
    /// How long each long-poll waits on the node before asking again (default
    /// [`DEFAULT_SERVICE_WAIT`], at most 60 s). Shorter waits cost more requests, never
    /// latency: the node answers as soon as something changes.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The last set [`next`](Self::next) yielded, if any.
    pub fn current(&self) -> Option<&[Instance]> {
        self.last.as_deref()
    }

    /// The matching instances (by name): now on the first call, then once they differ from
    /// the last set yielded. Cancel-safe: dropping the future loses nothing, the next call
    /// picks up from the last view read.
    pub async fn next(&mut self) -> Result<Vec<Instance>, ClientError> {
        loop {
            let read = match &self.etag {
                None => {
                    self.client
                        .service(&self.namespace, &self.service, self.filter.clone())
                        .await
                }
                Some(etag) => {
                    self.client
                        .service_changed(
                            &self.namespace,
                            &self.service,
                            self.filter.clone(),
                            etag,
                            self.wait,
                        )
                        .await
                }
            };
            let (etag, instances) = match read {
                Ok(view) => (Some(view.etag), view.instances),
                Err(ClientError::NotFound { code, .. }) if code == "namespace_not_found" => {
                    if self.last.as_ref().is_some_and(Vec::is_empty) {
                        tokio::time::sleep(MISSING_NAMESPACE_POLL).await;
                    }
                    (None, Vec::new())
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(
                        namespace = %self.namespace,
                        service = %self.service,
                        %error,
                        "service watch: reading the service failed; trying again"
                    );
                    tokio::time::sleep(self.backoff.next_delay(unit_random())).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            self.backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
            self.etag = etag;
            let changed = self
                .last
                .as_ref()
                .is_none_or(|last| !same_instances(last, &instances));
            if changed {
                self.last = Some(instances.clone());
                return Ok(instances);
            }
        }
    }
}

/// Whether two views hold the same instances in the sense a watcher cares about: the same
/// names, registrations and statuses, in order. Check outcomes, status times, versions and
/// revisions are left out: they move without the set changing (a re-registration with the
/// same spec, a probe that passes again).
pub fn same_instances(a: &[Instance], b: &[Instance]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.service == y.service
                && x.instance == y.instance
                && x.status == y.status
                && x.spec == y.spec
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{InstanceEndpoint, InstanceSpec};
    use cfgnode_transport::registry::WireCheckResult;

    fn instance(name: &str, port: u16) -> Instance {
        Instance {
            service: "web".into(),
            instance: name.into(),
            spec: InstanceSpec {
                endpoints: vec![InstanceEndpoint {
                    name: "http".into(),
                    protocol: "http".into(),
                    address: "10.0.0.5".into(),
                    port,
                }],
                ..InstanceSpec::default()
            },
            status: InstanceStatus::Healthy,
            status_since: 1,
            last_check: None,
            version: 1,
            revision: 1,
        }
    }

    #[test]
    fn only_names_registrations_and_statuses_count() {
        let a = vec![instance("w1", 80), instance("w2", 80)];
        let mut noise = a.clone();
        noise[0].version = 7;
        noise[0].revision = 9;
        noise[1].status_since = 5;
        noise[1].last_check = Some(WireCheckResult {
            at: 3,
            ok: true,
            output: "HTTP 200".into(),
        });
        assert!(same_instances(&a, &noise), "bookkeeping is not a change");

        assert!(!same_instances(&a, &a[..1]), "one left");
        assert!(!same_instances(
            &a,
            &[instance("w1", 80), instance("w3", 80)]
        ));
        assert!(!same_instances(
            &a,
            &[instance("w1", 80), instance("w2", 81)]
        ));
        let mut sick = a.clone();
        sick[1].status = InstanceStatus::Unhealthy;
        assert!(!same_instances(&a, &sick), "a status change is one");
        assert!(same_instances(&[], &[]));
    }
}
