//! Listing namespaces across the cluster: every alive node lists the namespaces it holds, and
//! the node asked merges the pages by name (a k-way merge: each node's page covers every name
//! up to its last one, so the first `limit` merged names are complete).

use cfgnode_ring::NodeId;
use cfgnode_transport::{
    ConfigResponse, PeerRequest, Response, WireError, WireNamespace, WirePage, codes,
};

use crate::cluster::{Cluster, FORWARD_TIMEOUT};
use crate::error::to_wire_error;
use crate::membership::MemberState;
use crate::roles::config::ConfigService;
use crate::roles::config::quic::wire_namespace;
use crate::roles::config::{DEFAULT_PAGE, MAX_PAGE, encode_cursor};

/// The namespaces held by this node, one page.
pub async fn held_here(
    cluster: &Cluster,
    service: &ConfigService,
    prefix: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<WirePage<WireNamespace>, WireError> {
    let limit = (limit as usize).clamp(1, MAX_PAGE);
    let held = |ns: &str| cluster.holder(ns).is_some_and(|r| r.holder == cluster.me());
    // Local rows may include copies this node does not hold (an interrupted handoff): skip
    // them, reading on until the page is full, so a page with more after it is always full.
    let mut items = Vec::new();
    let mut cursor = cursor.map(str::to_string);
    loop {
        let page = service
            .namespaces(prefix, cursor.as_deref(), Some(limit))
            .await
            .map_err(to_wire_error)?;
        for state in page.items {
            if items.len() == limit {
                let last: &WireNamespace = items.last().expect("a full page");
                return Ok(WirePage {
                    next_cursor: Some(encode_cursor(&last.name)),
                    items,
                });
            }
            if held(&state.name) {
                items.push(wire_namespace(state));
            }
        }
        match page.next_cursor {
            Some(next) if items.len() < limit => cursor = Some(next),
            Some(_) => {
                let last = items.last().map(|n| encode_cursor(&n.name));
                return Ok(WirePage {
                    items,
                    next_cursor: last,
                });
            }
            None => {
                return Ok(WirePage {
                    items,
                    next_cursor: None,
                });
            }
        }
    }
}

/// One page of the namespaces of the whole cluster, in name order. Nodes that are down are
/// left out (their namespaces are unavailable until they return); an alive node that does not
/// answer fails the listing rather than silently shortening it.
pub async fn namespaces(
    cluster: &Cluster,
    service: &ConfigService,
    prefix: &str,
    cursor: Option<String>,
    limit: u32,
) -> Result<WirePage<WireNamespace>, WireError> {
    let limit = if limit == 0 {
        DEFAULT_PAGE as u32
    } else {
        limit
    };
    if limit as usize > MAX_PAGE {
        return Err(WireError::new(
            cfgnode_transport::codes::INVALID_REQUEST,
            format!("limit {limit} is over the maximum page size {MAX_PAGE}"),
        ));
    }
    let mut pages = vec![held_here(cluster, service, prefix, cursor.as_deref(), limit).await?];
    let peers: Vec<(NodeId, std::net::SocketAddr)> = cluster
        .membership()
        .members()
        .into_iter()
        .filter(|m| m.state != MemberState::Down && m.peer.id != cluster.me())
        .map(|m| (m.peer.id, m.peer.quic))
        .collect();
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in peers {
        let request = PeerRequest::HeldNamespaces {
            prefix: prefix.to_string(),
            cursor: cursor.clone(),
            limit,
        };
        let cluster = cluster.clone();
        asks.spawn(async move {
            let answer = cluster.peers().call(addr, request, FORWARD_TIMEOUT).await;
            (id, answer)
        });
    }
    while let Some(joined) = asks.join_next().await {
        let (id, answer) = joined
            .map_err(|e| WireError::new(codes::INTERNAL, format!("listing task failed: {e}")))?;
        match answer {
            Ok(Response::Config(ConfigResponse::Namespaces(page))) => pages.push(page),
            Ok(other) => {
                return Err(WireError::new(
                    codes::INTERNAL,
                    format!("node {id} answered a listing with {other:?}"),
                ));
            }
            Err(e) => {
                let e = e.into_wire();
                return Err(WireError::new(
                    codes::UNAVAILABLE,
                    format!(
                        "node {id} could not list its namespaces ({}); retry",
                        e.message
                    ),
                ));
            }
        }
    }
    Ok(merge(pages, limit as usize))
}

/// Merges per-node pages into one page of at most `limit` names. A node whose page has more
/// after it covers only names up to its page's last one, so nothing past the smallest such
/// last name is returned yet (the next page starts there).
fn merge(pages: Vec<WirePage<WireNamespace>>, limit: usize) -> WirePage<WireNamespace> {
    let cutoff: Option<String> = pages
        .iter()
        .filter(|p| p.next_cursor.is_some())
        .filter_map(|p| p.items.last().map(|n| n.name.clone()))
        .min();
    let mut items: Vec<WireNamespace> = pages.into_iter().flat_map(|p| p.items).collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    items.dedup_by(|a, b| a.name == b.name);
    let before = items.len();
    if let Some(cutoff) = &cutoff {
        items.retain(|n| &n.name <= cutoff);
    }
    let more = cutoff.is_some() || before > limit || items.len() < before;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|n| encode_cursor(&n.name))
    } else {
        None
    };
    WirePage { items, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> WireNamespace {
        WireNamespace {
            name: name.into(),
            key_count: 1,
            alias_count: 0,
            revision: 1,
            etag: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn page(names: &[&str], more: bool) -> WirePage<WireNamespace> {
        WirePage {
            items: names.iter().map(|n| ns(n)).collect(),
            next_cursor: more.then(|| "x".to_string()),
        }
    }

    #[test]
    fn merged_pages_are_complete_up_to_their_last_name() {
        let merged = merge(vec![page(&["a", "d"], true), page(&["b", "c"], false)], 3);
        let names: Vec<_> = merged.items.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(merged.next_cursor, Some(encode_cursor("c")));
        // A node with more after "d" may hold "e": nothing past "d" is returned yet.
        let merged = merge(
            vec![page(&["a", "d"], true), page(&["b", "f", "g"], false)],
            6,
        );
        let names: Vec<_> = merged.items.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert_eq!(merged.next_cursor, Some(encode_cursor("d")));
        let all = merge(vec![page(&["a"], false), page(&["b"], false)], 5);
        assert_eq!(all.items.len(), 2);
        assert_eq!(all.next_cursor, None);
    }
}
