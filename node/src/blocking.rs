//! Storage reads off the async workers: redb reads block (page cache misses, large scans), so
//! every role runs them on tokio's blocking pool through [`read`], with one way of reporting a
//! read task that died.

use cfgnode_storage::{Store, StoreError};

/// Runs `f` against `store` on the blocking pool and returns its answer; a task that died
/// (a panic in the read) is a `StoreError::Storage`.
pub(crate) async fn read<T, F>(store: &Store, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Storage(format!("storage read task failed: {e}")))?
}
