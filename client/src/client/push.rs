//! The typed push operations that are single calls: log reads and agent heartbeats (watches,
//! which are streams, live in `crate::watch`).

use cfgnode_transport::{PushRequest, PushResponse, Request, Response};

use crate::error::ClientError;

use super::Client;

/// An agent's heartbeat.
pub type Agent = cfgnode_transport::WireAgent;
/// An agent with when and where it was last heard from.
pub type AgentSeen = cfgnode_transport::WireAgentSeen;

/// The answer to [`Client::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsRead {
    /// The events, in order with no gap, and the namespace's revision when they were read.
    Events {
        /// The namespace's revision.
        revision: u64,
        /// The events.
        events: Vec<cfgnode_transport::WireEvent>,
    },
    /// The events asked for are no longer in the log: read a snapshot instead.
    Compacted {
        /// The oldest revision the log holds.
        oldest_retained: u64,
        /// The namespace's revision.
        current: u64,
    },
}

impl Client {
    /// Up to `limit` log events of `namespace` after revision `after` (the log a watch reads),
    /// or [`EventsRead::Compacted`] when the log no longer reaches back that far.
    pub async fn events(
        &self,
        namespace: &str,
        after: u64,
        limit: u32,
    ) -> Result<EventsRead, ClientError> {
        let request = Request::Push(PushRequest::Events {
            namespace: namespace.into(),
            after: Some(after),
            limit,
            wait_ms: 0,
        });
        match self.call(request).await? {
            Response::Push(PushResponse::Events {
                revision, events, ..
            }) => Ok(EventsRead::Events { revision, events }),
            Response::Push(PushResponse::Compacted {
                oldest_retained,
                current,
                ..
            }) => Ok(EventsRead::Compacted {
                oldest_retained,
                current,
            }),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Tells the node this agent is alive and what it has applied (`cfgnode agent` does it
    /// every few seconds).
    pub async fn agent_heartbeat(&self, agent: Agent) -> Result<(), ClientError> {
        match self
            .call(Request::Push(PushRequest::AgentHeartbeat(agent)))
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Tells the node this agent stops (it disappears from the list at once).
    pub async fn agent_leave(&self, id: &str) -> Result<(), ClientError> {
        match self
            .call(Request::Push(PushRequest::AgentLeave { id: id.into() }))
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every agent of the cluster, and the members that could not be asked.
    pub async fn agents(&self) -> Result<(Vec<AgentSeen>, Vec<String>), ClientError> {
        match self
            .call(Request::Push(PushRequest::Agents { local_only: false }))
            .await?
        {
            Response::Push(PushResponse::Agents { agents, missing }) => Ok((agents, missing)),
            other => Err(Self::unexpected(other)),
        }
    }
}
