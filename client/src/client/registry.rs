//! The typed registry operations: register, deregister and heartbeat instances, read services
//! and their instances (once, or as a long-poll), and manage subscriptions; with the registry
//! types of the answers (the wire types, under the client's names). The keep-alive handle and
//! the healthy-set watch built on these live in `crate::registration` and `crate::healthy`.

use std::time::Duration;

use cfgnode_transport::registry::{
    RegistryRequest, RegistryResponse, WireCheck, WireEndpoint, WireInstance, WireInstanceFilter,
    WireInstanceSpec, WireProbe, WireProbeTarget, WireServiceSummary, WireServiceView,
    WireServices, WireStatus, WireSubscription, WireSubscriptionSpec, WireWait,
};
use cfgnode_transport::{Request, Response};

use crate::error::ClientError;

use super::Client;

/// An instance as the registry has it: its registration, status and latest check.
pub type Instance = WireInstance;
/// What a registration says: endpoints, tags, metadata, check.
pub type InstanceSpec = WireInstanceSpec;
/// One place an instance listens (`name`, `protocol`, `address`, `port`).
pub type InstanceEndpoint = WireEndpoint;
/// A health check: a probe the holder runs, or a TTL the instance renews.
pub type Check = WireCheck;
/// A probe with its interval, timeout and flap damping.
pub type Probe = WireProbe;
/// What a probe connects to (an HTTP URL or a TCP address).
pub type ProbeTarget = WireProbeTarget;
/// `healthy`, `unhealthy` or `unknown`.
pub type InstanceStatus = WireStatus;
/// Which instances a service read returns (every set field must match).
pub type InstanceFilter = WireInstanceFilter;
/// One service's matching instances, with the revision and ETag they were read at.
pub type ServiceView = WireServiceView;
/// The services of a namespace with their instance counts.
pub type Services = WireServices;
/// One service and its instance counts by status.
pub type ServiceSummary = WireServiceSummary;
/// What a subscription asks for: a URL, services, an optional signing secret.
pub type SubscriptionSpec = WireSubscriptionSpec;
/// A subscription as stored (its secret is never returned).
pub type Subscription = WireSubscription;

/// The longest long-poll the node honours (docs/registry.md); longer waits are cut to this.
pub const MAX_SERVICE_WAIT: Duration = Duration::from_secs(60);

/// The answer to [`Client::register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredInstance {
    /// False when an existing instance was replaced (it keeps its status if its check is
    /// unchanged, so a restarted registrant does not flap).
    pub created: bool,
    /// The instance as the registry now has it.
    pub instance: Instance,
}

impl Client {
    /// Registers (creates or replaces) `instance` of `service` in `namespace`. Not resent
    /// after the request may have reached the node: on a lost answer, read before registering
    /// again. For a process that stays registered while it lives, see
    /// [`register_with_keepalive`](Self::register_with_keepalive).
    pub async fn register(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
        spec: InstanceSpec,
    ) -> Result<RegisteredInstance, ClientError> {
        let request = Request::Registry(RegistryRequest::Register {
            namespace: namespace.into(),
            service: service.into(),
            instance: instance.into(),
            spec,
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::Registered { created, instance }) => {
                Ok(RegisteredInstance { created, instance })
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// Removes an instance (and its check); returns the namespace revision of the removal.
    /// [`ClientError::NotFound`] (`instance_not_found`) when there is no such instance.
    pub async fn deregister(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
    ) -> Result<u64, ClientError> {
        let request = Request::Registry(RegistryRequest::Deregister {
            namespace: namespace.into(),
            service: service.into(),
            instance: instance.into(),
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::Deregistered { revision }) => Ok(revision),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Renews an instance's `ttl` check; returns its status after it (healthy). Retried like a
    /// read: a second heartbeat only moves the TTL clock again. [`ClientError::Invalid`]
    /// (`no_ttl_check`) for an instance whose check is not a TTL.
    pub async fn heartbeat(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
    ) -> Result<InstanceStatus, ClientError> {
        let request = Request::Registry(RegistryRequest::Heartbeat {
            namespace: namespace.into(),
            service: service.into(),
            instance: instance.into(),
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::HeartbeatAccepted { status }) => Ok(status),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every service of `namespace` with its instance counts by status.
    pub async fn services(&self, namespace: &str) -> Result<Services, ClientError> {
        let request = Request::Registry(RegistryRequest::Services {
            namespace: namespace.into(),
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::Services(services)) => Ok(services),
            other => Err(Self::unexpected(other)),
        }
    }

    /// One service's instances that pass `filter`, by name, with the view's ETag.
    pub async fn service(
        &self,
        namespace: &str,
        service: &str,
        filter: InstanceFilter,
    ) -> Result<ServiceView, ClientError> {
        self.service_request(namespace, service, filter, None, self.inner.timeout)
            .await
    }

    /// A long-poll of [`service`](Self::service): answers once the view's ETag differs from
    /// `etag`, or with the unchanged view after `wait` (at most [`MAX_SERVICE_WAIT`]). The
    /// ETag is the namespace's, so an answer may also come for a change elsewhere in the
    /// namespace; compare the instances when that matters (as [`Client::watch_healthy`] does).
    pub async fn service_changed(
        &self,
        namespace: &str,
        service: &str,
        filter: InstanceFilter,
        etag: &str,
        wait: Duration,
    ) -> Result<ServiceView, ClientError> {
        let wait = wait.min(MAX_SERVICE_WAIT);
        let long_poll = WireWait {
            etag: etag.to_string(),
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        };
        // The node holds the answer for up to `wait`: the call's deadline is on top of that.
        let deadline = wait + self.inner.timeout;
        self.service_request(namespace, service, filter, Some(long_poll), deadline)
            .await
    }

    /// The healthy instances of a service, by name.
    pub async fn healthy_instances(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<Vec<Instance>, ClientError> {
        let filter = InstanceFilter {
            status: Some(InstanceStatus::Healthy),
            ..InstanceFilter::default()
        };
        Ok(self.service(namespace, service, filter).await?.instances)
    }

    async fn service_request(
        &self,
        namespace: &str,
        service: &str,
        filter: InstanceFilter,
        wait: Option<WireWait>,
        deadline: Duration,
    ) -> Result<ServiceView, ClientError> {
        let request = Request::Registry(RegistryRequest::Service {
            namespace: namespace.into(),
            service: service.into(),
            filter,
            wait,
        });
        match self.call_within(request, deadline).await? {
            Response::Registry(RegistryResponse::Service(view)) => Ok(view),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Creates or replaces a subscription; `Ok((subscription, created))`. Not resent after
    /// the request may have reached the node.
    pub async fn put_subscription(
        &self,
        namespace: &str,
        name: &str,
        spec: SubscriptionSpec,
    ) -> Result<(Subscription, bool), ClientError> {
        let request = Request::Registry(RegistryRequest::PutSubscription {
            namespace: namespace.into(),
            name: name.into(),
            spec,
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::SubscriptionPut {
                created,
                subscription,
            }) => Ok((subscription, created)),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Removes a subscription ([`ClientError::NotFound`] when there is none of that name).
    pub async fn delete_subscription(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(), ClientError> {
        let request = Request::Registry(RegistryRequest::DeleteSubscription {
            namespace: namespace.into(),
            name: name.into(),
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::SubscriptionDeleted) => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// The subscriptions of `namespace` (without their secrets).
    pub async fn subscriptions(&self, namespace: &str) -> Result<Vec<Subscription>, ClientError> {
        let request = Request::Registry(RegistryRequest::Subscriptions {
            namespace: namespace.into(),
        });
        match self.call(request).await? {
            Response::Registry(RegistryResponse::Subscriptions(list)) => Ok(list),
            other => Err(Self::unexpected(other)),
        }
    }
}
