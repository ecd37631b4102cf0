//! The registry role over the QUIC protocol: a [`RegistryRequest`] becomes a
//! [`RegistryService`] call and its result a [`RegistryResponse`]. Pure translation; the
//! long-poll of `Service` waits like the snapshot's (holding no permit, see push::longpoll).

use cfgnode_transport::registry::{RegistryRequest, RegistryResponse};
use cfgnode_transport::{Response, WireError};

use super::service::{RegistryError, RegistryService};

/// Serves one registry request on the namespace's holder.
pub async fn handle(
    registry: &RegistryService,
    request: RegistryRequest,
) -> Result<Response, WireError> {
    serve(registry, request)
        .await
        .map(Response::Registry)
        .map_err(|e| match e {
            RegistryError::Store(store) => crate::error::to_wire_error(store),
            other => other.to_wire(),
        })
}

async fn serve(
    registry: &RegistryService,
    request: RegistryRequest,
) -> Result<RegistryResponse, RegistryError> {
    Ok(match request {
        RegistryRequest::Register {
            namespace,
            service,
            instance,
            spec,
        } => {
            let (created, instance) = registry
                .register(&namespace, &service, &instance, spec)
                .await?;
            RegistryResponse::Registered { created, instance }
        }
        RegistryRequest::Deregister {
            namespace,
            service,
            instance,
        } => RegistryResponse::Deregistered {
            revision: registry.deregister(&namespace, &service, &instance).await?,
        },
        RegistryRequest::Heartbeat {
            namespace,
            service,
            instance,
        } => RegistryResponse::HeartbeatAccepted {
            status: registry.heartbeat(&namespace, &service, &instance).await?,
        },
        RegistryRequest::Services { namespace } => {
            RegistryResponse::Services(registry.services(&namespace).await?)
        }
        RegistryRequest::Service {
            namespace,
            service,
            filter,
            wait: _,
        } => RegistryResponse::Service(registry.service(&namespace, &service, &filter).await?),
        RegistryRequest::PutSubscription {
            namespace,
            name,
            spec,
        } => {
            let (created, subscription) =
                registry.put_subscription(&namespace, &name, spec).await?;
            RegistryResponse::SubscriptionPut {
                created,
                subscription,
            }
        }
        RegistryRequest::DeleteSubscription { namespace, name } => {
            registry.delete_subscription(&namespace, &name).await?;
            RegistryResponse::SubscriptionDeleted
        }
        RegistryRequest::Subscriptions { namespace } => {
            RegistryResponse::Subscriptions(registry.subscriptions(&namespace).await?)
        }
    })
}
