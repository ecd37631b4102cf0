//! The agents registry: who runs `cfgnode agent`, on what, and how far it got.
//!
//! Soft state on purpose: an agent heartbeats (every 10 s) to whichever node its client talks
//! to, and that node keeps the heartbeat in memory. A durable record per heartbeat would write
//! the log every few seconds per agent for data that is stale in a minute anyway; a node that
//! restarts relearns its agents within one heartbeat interval. The cluster-wide list asks every
//! alive member for its agents and keeps the newest heartbeat per id (an agent that moved to
//! another node shows once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cfgnode_storage::{validate_key, validate_namespace};
use cfgnode_transport::{
    PeerRequest, PushRequest, PushResponse, Response, WireAgent, WireAgentSeen, WireError, codes,
};

use crate::cluster::Cluster;
use crate::membership::MemberState;

/// Most agents one node remembers; heartbeats of new agents beyond it are refused.
pub const MAX_AGENTS: usize = 100_000;
/// An agent not heard from for this long is listed as `stale`.
pub const STALE_AFTER_MS: u64 = 30_000;
/// An agent not heard from for this long is forgotten.
pub const FORGET_AFTER_MS: u64 = 10 * 60_000;
/// Longest text field of a heartbeat (ids, outputs, errors), in bytes.
const MAX_FIELD: usize = 1024;
/// Most prefixes and outputs a heartbeat lists.
const MAX_ITEMS: usize = 64;

/// The agents that heartbeat to this node. Cheap to clone; clones share the map.
#[derive(Clone, Debug, Default)]
pub struct Agents {
    inner: Arc<Mutex<HashMap<String, (WireAgent, u64)>>>,
}

impl Agents {
    /// An empty registry.
    pub fn new() -> Self {
        Agents::default()
    }

    /// Records a heartbeat received at `now` (ms). Refuses a malformed one, changing nothing.
    pub fn heartbeat(&self, agent: WireAgent, now: u64) -> Result<(), WireError> {
        check(&agent)?;
        let mut map = self.lock();
        map.retain(|_, (_, seen)| now.saturating_sub(*seen) < FORGET_AFTER_MS);
        if map.len() >= MAX_AGENTS && !map.contains_key(&agent.id) {
            return Err(WireError::new(
                codes::UNAVAILABLE,
                format!(
                    "this node already tracks {MAX_AGENTS} agents; point the agent at another node"
                ),
            ));
        }
        map.insert(agent.id.clone(), (agent, now));
        Ok(())
    }

    /// Forgets an agent (it exited cleanly).
    pub fn leave(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The agents heard from in the last [`FORGET_AFTER_MS`], as seen at `now`.
    pub fn list(&self, me: &str, now: u64) -> Vec<WireAgentSeen> {
        self.lock()
            .values()
            .filter(|(_, seen)| now.saturating_sub(*seen) < FORGET_AFTER_MS)
            .map(|(agent, seen)| WireAgentSeen {
                agent: agent.clone(),
                last_seen: *seen,
                node: me.to_string(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (WireAgent, u64)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks a heartbeat: id with key syntax (at most 128 bytes), a valid namespace, bounded
/// fields.
pub fn check(agent: &WireAgent) -> Result<(), WireError> {
    let invalid = |why: String| WireError::new(cfgnode_transport::codes::INVALID_AGENT, why);
    if agent.id.len() > 128 {
        return Err(invalid("the agent id is longer than 128 bytes".to_string()));
    }
    validate_key(&agent.id).map_err(|e| invalid(format!("agent id: {e}")))?;
    validate_namespace(&agent.namespace).map_err(|e| invalid(e.to_string()))?;
    if agent.prefixes.len() > MAX_ITEMS || agent.outputs.len() > MAX_ITEMS {
        return Err(invalid(format!("at most {MAX_ITEMS} prefixes and outputs")));
    }
    let fields = agent
        .prefixes
        .iter()
        .chain(&agent.outputs)
        .chain([&agent.mode, &agent.hostname])
        .chain(agent.last_error.as_ref());
    for field in fields {
        if field.len() > MAX_FIELD {
            return Err(invalid(format!("a field is longer than {MAX_FIELD} bytes")));
        }
    }
    Ok(())
}

/// Answers the agent requests.
pub async fn serve(
    cluster: &Cluster,
    agents: &Agents,
    request: PushRequest,
) -> Result<Response, WireError> {
    let now = crate::time::now_millis();
    match request {
        PushRequest::AgentHeartbeat(agent) => agents.heartbeat(agent, now).map(|()| Response::Ack),
        PushRequest::AgentLeave { id } => {
            agents.leave(&id);
            Ok(Response::Ack)
        }
        PushRequest::Agents { local_only: true } => Ok(Response::Push(PushResponse::Agents {
            agents: agents.list(cluster.me(), now),
            missing: Vec::new(),
        })),
        PushRequest::Agents { local_only: false } => {
            let (agents, missing) = cluster_wide(cluster, agents, now).await;
            Ok(Response::Push(PushResponse::Agents { agents, missing }))
        }
        other => Err(WireError::new(
            codes::MALFORMED,
            format!("{} is not an agent request", other.name()),
        )),
    }
}

/// Keeps the newest heartbeat per agent id.
pub fn merge(lists: impl IntoIterator<Item = WireAgentSeen>) -> Vec<WireAgentSeen> {
    let mut newest: HashMap<String, WireAgentSeen> = HashMap::new();
    for seen in lists {
        match newest.get(&seen.agent.id) {
            Some(have) if have.last_seen >= seen.last_seen => {}
            _ => {
                newest.insert(seen.agent.id.clone(), seen);
            }
        }
    }
    let mut agents: Vec<WireAgentSeen> = newest.into_values().collect();
    agents
        .sort_by(|a, b| (&a.agent.namespace, &a.agent.id).cmp(&(&b.agent.namespace, &b.agent.id)));
    agents
}

/// Every agent of the cluster: this node's and every alive member's. Members that do not
/// answer are named in the second half (their agents may be missing), not a failure.
pub async fn cluster_wide(
    cluster: &Cluster,
    agents: &Agents,
    now: u64,
) -> (Vec<WireAgentSeen>, Vec<String>) {
    let mut all = agents.list(cluster.me(), now);
    let mut asks = tokio::task::JoinSet::new();
    for member in cluster.membership().members() {
        if member.state == MemberState::Down || member.peer.id == cluster.me() {
            continue;
        }
        let cluster = cluster.clone();
        asks.spawn(async move {
            let answer = cluster
                .peers()
                .call(
                    member.peer.quic,
                    PeerRequest::LocalAgents,
                    std::time::Duration::from_secs(3),
                )
                .await;
            (member.peer.id, answer)
        });
    }
    let mut missing = Vec::new();
    while let Some(joined) = asks.join_next().await {
        match joined {
            Ok((_, Ok(Response::Push(PushResponse::Agents { agents, .. })))) => all.extend(agents),
            Ok((id, answer)) => {
                tracing::debug!(node = %id, answer = ?answer.err(), "agents listing: member did not answer");
                missing.push(id);
            }
            Err(e) => tracing::warn!(error = %e, "agents listing task failed"),
        }
    }
    missing.sort();
    (merge(all), missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> WireAgent {
        WireAgent {
            id: id.to_string(),
            namespace: "shop".to_string(),
            prefixes: vec![],
            applied_revision: 3,
            outputs: vec!["out:/etc/app.json".to_string()],
            mode: "watch".to_string(),
            hostname: "h".to_string(),
            pid: 1,
            started_at: 0,
            last_error: None,
        }
    }

    #[test]
    fn heartbeats_expire_and_garbage_is_refused() {
        let agents = Agents::new();
        agents.heartbeat(agent("a"), 1_000).expect("valid");
        agents.heartbeat(agent("b"), 2_000).expect("valid");
        assert_eq!(agents.list("n1", 3_000).len(), 2);
        assert_eq!(
            agents.list("n1", 1_000 + FORGET_AFTER_MS).len(),
            1,
            "a is forgotten"
        );
        agents.leave("b");
        assert!(agents.list("n1", 3_000).iter().all(|s| s.agent.id != "b"));
        let mut bad = agent("c");
        bad.namespace = "Bad".to_string();
        assert!(agents.heartbeat(bad, 3_000).is_err());
        assert!(agents.heartbeat(agent("/x"), 3_000).is_err());
        let mut long = agent("d");
        long.last_error = Some("e".repeat(MAX_FIELD + 1));
        assert!(agents.heartbeat(long, 3_000).is_err());
        assert_eq!(
            agents.list("n1", 3_000).len(),
            1,
            "nothing refused was kept"
        );
    }

    #[test]
    fn the_newest_heartbeat_wins() {
        let seen = |id: &str, at: u64, node: &str| WireAgentSeen {
            agent: agent(id),
            last_seen: at,
            node: node.to_string(),
        };
        let merged = merge([seen("a", 5, "n1"), seen("a", 9, "n2"), seen("b", 1, "n1")]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].node, "n2");
    }
}
