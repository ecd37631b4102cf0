//! The node's stop signal, as every long-running task sees it: a `watch` flag that turns true
//! once, when the node starts shutting down.

/// Resolves once `stop` turns true (or its sender is gone). Holds no borrow of the channel
/// when it returns, so it can sit in a `select!` next to branches that await.
pub async fn until_stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
