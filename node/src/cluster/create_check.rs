//! The create check: before a node creates a namespace nobody holds, it asks every other alive
//! member whether it knows a holder, has merged the map, is creating it too, and agrees on the
//! owner (docs/cluster.md, Creation). The asking side ([`Cluster::check_creation`]) and the
//! answering side ([`Cluster::answer_create_check`]).

use std::time::Duration;

use cfgnode_ring::{HolderRecord, Update};
use cfgnode_storage::validate_namespace;

use super::route::RouteError;
use super::view::View;
use super::{Cluster, ClusterError, sync};

/// How long a member may take to answer a create check.
const CREATE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Marks a namespace as being created here while it lives (create checks of other members
/// see it).
pub(super) struct CreatingMark<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl<'a> CreatingMark<'a> {
    pub(super) fn new(cluster: &'a Cluster, namespace: &str) -> Self {
        cluster.inner.creating.insert(namespace);
        CreatingMark {
            cluster,
            namespace: namespace.to_string(),
        }
    }
}

impl Drop for CreatingMark<'_> {
    fn drop(&mut self) {
        self.cluster.inner.creating.remove(&self.namespace);
    }
}

/// What one round of create checks found (see [`Cluster::check_creation`]).
#[derive(Debug, Default)]
struct CreateCheckRound {
    /// A member knew a holder (merged here now).
    known: bool,
    /// Why the namespace cannot be created now, if a member objected.
    problem: Option<String>,
    /// Members that see another desired owner (maybe only a fact behind).
    disagreeing: Vec<String>,
}

impl Cluster {
    /// Before creating `namespace`, asks every other alive member whether it knows a holder,
    /// has merged the map, is creating it too, and agrees that this node is its desired owner.
    /// `Ok(false)`: a member knew a holder, or a fact that makes another node the owner (now
    /// merged here; route again). `Ok(true)`: every
    /// member agrees, create. An error: they do not agree yet (views differ for a moment while
    /// membership changes), so nobody creates now and the caller retries.
    ///
    /// With this, a new namespace is created by the one node every member sees as its owner,
    /// never by two nodes whose records would then be settled by a tie-break that hides one
    /// side's acknowledged writes (docs/cluster.md, Creation).
    pub(super) async fn check_creation(
        &self,
        namespace: &str,
        view: &View,
    ) -> Result<bool, RouteError> {
        // A member that sees another owner usually just lacks a fact this node has (a pin or
        // claim authored a moment ago, still being gossiped): exchange maps with it (push-pull)
        // and ask again, once, before telling the caller to retry.
        let mut round = self.ask_create_check(namespace, view).await;
        if !round.known && !round.disagreeing.is_empty() {
            for id in std::mem::take(&mut round.disagreeing) {
                sync::sync_with(self, &id).await;
            }
            // This node may have been the one a fact behind: then it is not the owner, and
            // routing again sends the request to the one that is.
            let still_mine = self.inner.state.read(|map| {
                view.desired(namespace, map)
                    .is_some_and(|placement| placement.owner == self.inner.me)
            });
            if !still_mine {
                return Ok(false);
            }
            round = self.ask_create_check(namespace, view).await;
        }
        if round.known {
            return Ok(false);
        }
        match round.problem {
            Some(why) => Err(RouteError::NotReady {
                namespace: namespace.to_string(),
                why: format!("cannot create it yet: {why}"),
            }),
            None => Ok(true),
        }
    }

    /// One round of create checks: every other alive member asked at once.
    async fn ask_create_check(&self, namespace: &str, view: &View) -> CreateCheckRound {
        let me = self.inner.me.clone();
        let mut asks = tokio::task::JoinSet::new();
        for id in view.alive.iter().filter(|id| **id != me) {
            let Some(addr) = view.addr_of(id) else {
                continue;
            };
            let cluster = self.clone();
            let id = id.clone();
            let request = cfgnode_transport::PeerRequest::CreateCheck {
                namespace: namespace.to_string(),
            };
            asks.spawn(async move {
                let answer = cluster
                    .peers()
                    .call(addr, request, CREATE_CHECK_TIMEOUT)
                    .await;
                (id, answer)
            });
        }
        let mut round = CreateCheckRound::default();
        let (known, problem, disagreeing) =
            (&mut round.known, &mut round.problem, &mut round.disagreeing);
        while let Some(joined) = asks.join_next().await {
            let Ok((id, answer)) = joined else {
                *problem = Some("a create check task failed".to_string());
                continue;
            };
            match answer {
                Ok(cfgnode_transport::Response::Peer(
                    cfgnode_transport::PeerResponse::CreateCheck(check),
                )) => {
                    if let Some((holder, epoch)) = check.holder {
                        let update = Update::Holder {
                            namespace: namespace.to_string(),
                            record: HolderRecord { holder, epoch },
                        };
                        *known |= self.inner.state.apply_from_peer(update, &id).is_ok();
                    } else if !check.synced {
                        *problem = Some(format!("member {id} has not merged the cluster map yet"));
                    } else if check.creating {
                        *problem = Some(format!("member {id} is creating it at the same time"));
                    } else if check.desired_owner.as_deref() != Some(me.as_str()) {
                        disagreeing.push(id.clone());
                        *problem = Some(format!(
                            "member {id} sees {:?} as its owner, not {me} (membership is changing)",
                            check.desired_owner
                        ));
                    }
                }
                Ok(other) => {
                    *problem = Some(format!(
                        "member {id} answered a create check with {other:?}"
                    ))
                }
                Err(e) => {
                    *problem = Some(format!(
                        "member {id} could not confirm it is new ({})",
                        e.into_wire().message
                    ))
                }
            }
        }
        round
    }

    /// Answers another member's create check for `namespace` (see [`Cluster::check_creation`]).
    pub fn answer_create_check(
        &self,
        namespace: &str,
    ) -> Result<cfgnode_transport::WireCreateCheck, ClusterError> {
        validate_namespace(namespace)?;
        let view = self.view();
        let (holder, desired_owner) = self.inner.state.read(|map| {
            (
                map.holder(namespace).map(|r| (r.holder.clone(), r.epoch)),
                view.desired(namespace, map).map(|p| p.owner),
            )
        });
        let creating = self.inner.creating.contains(namespace);
        Ok(cfgnode_transport::WireCreateCheck {
            holder,
            desired_owner,
            synced: self.is_synced(),
            creating,
        })
    }
}
