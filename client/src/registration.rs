//! [`Registration`]: an instance that stays registered while its handle lives.
//!
//! [`Client::register_with_keepalive`] registers the instance and, when its check is a `ttl`,
//! starts one tokio task that sends a heartbeat at once (a new TTL instance is `unknown`
//! until its first) and then every TTL / 3, so two heartbeats in a row may be lost before the
//! holder calls it unhealthy. The task survives failures:
//!
//! - a transient error (no node reachable, a timeout) is logged and the heartbeat is tried
//!   again after a jittered backoff capped at the period, instead of waiting a whole period;
//! - `instance_not_found` (an operator deregistered it, or the namespace was reset) registers
//!   the instance again with the same spec, as Nacos and Consul agents do: the handle's
//!   meaning is "registered while I live";
//! - any other error is logged and the schedule carries on.
//!
//! Ending: [`Registration::deregister`] stops the task, waits for a heartbeat in flight (so it
//! cannot land, or re-register, after the removal) and removes the instance. Dropping the
//! handle does the same in a task spawned on the current tokio runtime; see [`Registration`]
//! for exactly what that guarantees.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::{Backoff, unit_random};
use crate::client::{Check, Client, InstanceSpec, RegisteredInstance};
use crate::error::ClientError;

/// Shortest pause after a failed heartbeat before the next try (the node's shortest TTL is
/// 100 ms, whose period is 33 ms).
const RETRY_BASE: Duration = Duration::from_millis(20);

/// What names an instance.
#[derive(Clone, Debug)]
struct InstanceName {
    namespace: String,
    service: String,
    instance: String,
}

/// An instance registered by [`Client::register_with_keepalive`], kept alive by heartbeats
/// while the handle lives (for a `ttl` check) and removed when it goes.
///
/// **What dropping guarantees.** `Drop` cannot await, so it stops the heartbeats and spawns
/// the deregistration on the tokio runtime it runs in:
///
/// - dropped inside a runtime that keeps running for one more call deadline (the usual case:
///   a task ends, a struct holding the handle goes), the deregistration is sent, with the
///   client's failover. It is not resent if its answer is lost, and a failure is only logged;
/// - dropped while the runtime shuts down (at the end of `#[tokio::main]`), or outside any
///   runtime, the deregistration may never be sent. The instance then stays registered; with a
///   `ttl` check it turns `unhealthy` once its TTL passes, with a probe when its probe fails.
///
/// Call [`deregister`](Self::deregister) and await it where the removal must happen (a
/// sidecar's shutdown): it returns only once the node has answered.
#[must_use = "dropping the registration deregisters the instance"]
#[derive(Debug)]
pub struct Registration {
    client: Client,
    name: InstanceName,
    registered: RegisteredInstance,
    /// Tells the heartbeat task to stop (`true`) after the call it is making.
    stop: watch::Sender<bool>,
    /// The heartbeat task; `None` for an instance without a TTL check, and once taken.
    heartbeats: Option<JoinHandle<()>>,
    /// Set once deregistered, so `Drop` has nothing left to do.
    done: bool,
}

impl Client {
    /// Registers `instance` of `service` in `namespace` and keeps it registered while the
    /// returned [`Registration`] lives: with a `ttl` check, a background task sends heartbeats
    /// every TTL / 3 (it needs a tokio runtime); without one, the handle only deregisters the
    /// instance when it goes. The first registration is not retried after the request may
    /// have reached the node (like [`register`](Self::register)).
    pub async fn register_with_keepalive(
        &self,
        namespace: &str,
        service: &str,
        instance: &str,
        spec: InstanceSpec,
    ) -> Result<Registration, ClientError> {
        let registered = self
            .register(namespace, service, instance, spec.clone())
            .await?;
        let name = InstanceName {
            namespace: namespace.to_string(),
            service: service.to_string(),
            instance: instance.to_string(),
        };
        let (stop, stopped) = watch::channel(false);
        let heartbeats = match &spec.check {
            Some(Check::Ttl { ttl_ms }) => {
                let period = Duration::from_millis(*ttl_ms / 3).max(Duration::from_millis(1));
                Some(tokio::spawn(keep_alive(
                    self.clone(),
                    name.clone(),
                    spec,
                    period,
                    stopped,
                )))
            }
            _ => None,
        };
        Ok(Registration {
            client: self.clone(),
            name,
            registered,
            stop,
            heartbeats,
            done: false,
        })
    }
}

impl Registration {
    /// The instance as the registry had it when it was registered.
    pub fn registered(&self) -> &RegisteredInstance {
        &self.registered
    }

    /// Whether heartbeats are being sent (the instance has a `ttl` check).
    pub fn sends_heartbeats(&self) -> bool {
        self.heartbeats.is_some()
    }

    /// Stops the heartbeats, waits for one in flight, and removes the instance; returns the
    /// namespace revision of the removal. `NotFound` when it was already gone.
    pub async fn deregister(mut self) -> Result<u64, ClientError> {
        self.done = true;
        stop_heartbeats(&self.stop, self.heartbeats.take()).await;
        let InstanceName {
            namespace,
            service,
            instance,
        } = &self.name;
        self.client.deregister(namespace, service, instance).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let _ = self.stop.send(true);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                namespace = %self.name.namespace,
                service = %self.name.service,
                instance = %self.name.instance,
                "registration dropped outside a tokio runtime: the instance stays registered"
            );
            return;
        };
        let client = self.client.clone();
        let name = self.name.clone();
        let heartbeats = self.heartbeats.take();
        let stop = self.stop.clone();
        runtime.spawn(async move {
            stop_heartbeats(&stop, heartbeats).await;
            match client
                .deregister(&name.namespace, &name.service, &name.instance)
                .await
            {
                Ok(_) | Err(ClientError::NotFound { .. }) => {}
                Err(error) => tracing::warn!(
                    namespace = %name.namespace,
                    service = %name.service,
                    instance = %name.instance,
                    %error,
                    "could not deregister a dropped registration"
                ),
            }
        });
    }
}

/// Tells the task to stop and waits until it has (it finishes the call it is making).
async fn stop_heartbeats(stop: &watch::Sender<bool>, task: Option<JoinHandle<()>>) {
    let _ = stop.send(true);
    if let Some(task) = task {
        let _ = task.await;
    }
}

/// The heartbeat loop: one heartbeat now, then one per `period`; sooner after a failure.
async fn keep_alive(
    client: Client,
    name: InstanceName,
    spec: InstanceSpec,
    period: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(RETRY_BASE, period);
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if *stopped.borrow() {
            return;
        }
        let started = Instant::now();
        let sent = client
            .heartbeat(&name.namespace, &name.service, &name.instance)
            .await;
        let outcome = match sent {
            Ok(_) => Beat::Sent,
            Err(ClientError::NotFound { code, .. })
                if code == "instance_not_found" || code == "namespace_not_found" =>
            {
                tracing::warn!(
                    namespace = %name.namespace,
                    service = %name.service,
                    instance = %name.instance,
                    "the registry no longer has the instance: registering it again"
                );
                if register_again(&client, &name, &spec, &stopped).await {
                    Beat::Reregistered
                } else {
                    Beat::Failed
                }
            }
            Err(error) => {
                tracing::warn!(
                    namespace = %name.namespace,
                    service = %name.service,
                    instance = %name.instance,
                    %error,
                    "heartbeat failed; trying again"
                );
                Beat::Failed
            }
        };
        next = match outcome {
            Beat::Sent => {
                backoff = Backoff::new(RETRY_BASE, period);
                // From the start of the call, so a slow answer does not stretch the period.
                started + period
            }
            // Registered again, so `unknown` until its next heartbeat: send it now.
            Beat::Reregistered => Instant::now(),
            Beat::Failed => Instant::now() + backoff.next_delay(unit_random()).max(RETRY_BASE),
        };
    }
}

/// How one round of the heartbeat loop went.
enum Beat {
    /// The heartbeat was accepted.
    Sent,
    /// The instance was gone and has been registered again.
    Reregistered,
    /// Something failed: try again soon.
    Failed,
}

/// Registers the instance again (it was removed under the handle), unless the handle is
/// stopping meanwhile. True when it is registered again.
async fn register_again(
    client: &Client,
    name: &InstanceName,
    spec: &InstanceSpec,
    stopped: &watch::Receiver<bool>,
) -> bool {
    if *stopped.borrow() {
        return false;
    }
    match client
        .register(&name.namespace, &name.service, &name.instance, spec.clone())
        .await
    {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(
                namespace = %name.namespace,
                service = %name.service,
                instance = %name.instance,
                %error,
                "registering the instance again failed; trying again"
            );
            false
        }
    }
}
