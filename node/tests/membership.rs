//! SWIM membership between real in-process nodes over QUIC datagrams: nodes join through a
//! seed and converge; a node that leaves is seen down; a node started before its seed joins
//! once the seed comes up.

use std::time::Duration;

use cfgnode_node::{MemberState, MemberView};
use cfgnode_node::{Node, NodeConfig};

async fn start(dir: &std::path::Path, id: &str, join: &[std::net::SocketAddr]) -> Node {
    let mut config = NodeConfig::new(dir.join(id));
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.quic_addr = "127.0.0.1:0".parse().expect("addr");
    config.node_id = Some(id.to_string());
    config.join = join.to_vec();
    // Every node of a cluster holds the same cluster key.
    let key = dir.join("cluster.key");
    if !key.exists() {
        std::fs::write(&key, "ab".repeat(32)).expect("cluster key");
    }
    config.cluster_key_file = Some(key);
    Node::start(config).await.expect("node starts")
}

fn states(members: &[MemberView]) -> Vec<(String, MemberState)> {
    members
        .iter()
        .map(|m| (m.peer.id.clone(), m.state))
        .collect()
}

async fn wait_until(node: &Node, what: &str, f: impl FnMut(&Vec<MemberView>) -> bool) {
    let mut membership = node.membership().clone();
    let waited = tokio::time::timeout(Duration::from_secs(15), membership.wait_for(f)).await;
    assert!(
        waited.is_ok(),
        "{what}: {:?}",
        states(&node.membership().members())
    );
}

fn all_alive(ids: &'static [&'static str]) -> impl FnMut(&Vec<MemberView>) -> bool {
    move |members| {
        ids.iter().all(|id| {
            members
                .iter()
                .any(|m| m.peer.id == *id && m.state == MemberState::Alive)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_and_see_a_leaver_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = start(dir.path(), "n1", &[]).await;
    let n2 = start(dir.path(), "n2", &[n1.quic_addr()]).await;
    let n3 = start(dir.path(), "n3", &[n1.quic_addr()]).await;
    for node in [&n1, &n2, &n3] {
        wait_until(node, "all three alive", all_alive(&["n1", "n2", "n3"])).await;
    }
    let view = n2.membership().members();
    let n3_view = view.iter().find(|m| m.peer.id == "n3").expect("n3 known");
    assert_eq!(n3_view.peer.quic, n3.quic_addr());
    assert_eq!(n3_view.peer.http, n3.http_addr());

    n3.shutdown().await.expect("shutdown");
    for node in [&n1, &n2] {
        wait_until(node, "n3 down", |members| {
            members
                .iter()
                .any(|m| m.peer.id == "n3" && m.state == MemberState::Down)
        })
        .await;
    }
    n1.shutdown().await.expect("shutdown");
    n2.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_seed_joins_when_the_seed_comes_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reserve a UDP port for the seed, then start the joiner pointing at it.
    let seed_addr = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        socket.local_addr().expect("addr")
    };
    let early = start(dir.path(), "early", &[seed_addr]).await;
    let mut seed_config = NodeConfig::new(dir.path().join("seed"));
    seed_config.http_addr = "127.0.0.1:0".parse().expect("addr");
    seed_config.quic_addr = seed_addr;
    seed_config.node_id = Some("seed".to_string());
    seed_config.cluster_key_file = Some(dir.path().join("cluster.key"));
    let seed = Node::start(seed_config).await.expect("seed starts");
    for node in [&early, &seed] {
        wait_until(node, "both alive", all_alive(&["early", "seed"])).await;
    }
    early.shutdown().await.expect("shutdown");
    seed.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_from_its_saved_members_without_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = start(dir.path(), "n1", &[]).await;
    let n2 = start(dir.path(), "n2", &[n1.quic_addr()]).await;
    for node in [&n1, &n2] {
        wait_until(node, "both alive", all_alive(&["n1", "n2"])).await;
    }
    n2.shutdown().await.expect("shutdown");
    wait_until(&n1, "n2 down", |members| {
        members
            .iter()
            .any(|m| m.peer.id == "n2" && m.state == MemberState::Down)
    })
    .await;
    // No --join this time: n2 finds n1 through the members it saved.
    let n2 = start(dir.path(), "n2", &[]).await;
    for node in [&n1, &n2] {
        wait_until(node, "both alive again", all_alive(&["n1", "n2"])).await;
    }
    n1.shutdown().await.expect("shutdown");
    n2.shutdown().await.expect("shutdown");
}
