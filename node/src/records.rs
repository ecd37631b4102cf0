//! [`NamespaceRecords`]: the node's door to a namespace's records (the state roles keep as
//! namespace data: registry instances and subscriptions, proxy routes). Neutral: no role of its
//! own, the roles build on it.
//!
//! A record write is a namespace write like a key write: storage gives it the next revision and
//! a log event in the same durable commit, and this service then announces it on [`Feeds`], so
//! watches, SSE, webhooks and long polls wake for it with no machinery of their own. Writes must
//! be made on the namespace's holder, under its gate (as routed requests are), so a handoff's
//! freeze holds them back like key writes.

use cfgnode_storage::{
    Page, Record, RecordDelete, RecordDeleted, RecordPut, RecordWrite, Store, StoreError,
};

use crate::feeds::Feeds;
use crate::replication::Replicator;

/// Record reads and writes over the node's [`Store`], announcing every committed write.
#[derive(Clone, Debug)]
pub struct NamespaceRecords {
    store: Store,
    /// Moved after every committed write, so waiters on the namespace wake.
    feeds: Feeds,
    /// A write is answered once a quorum of the namespace's replicas has it.
    replicator: Replicator,
}

impl NamespaceRecords {
    /// The service over `store`; every committed write is announced on `feeds` and answered
    /// once `replicator` has it on a quorum.
    pub(crate) fn new(store: Store, feeds: Feeds, replicator: Replicator) -> Self {
        NamespaceRecords {
            store,
            feeds,
            replicator,
        }
    }

    /// Writes a record (see [`Store::put_record`]) and announces it.
    pub async fn put(&self, put: RecordPut) -> Result<Record, StoreError> {
        let ticket = self.replicator.ticket(&put.namespace).await?;
        let record = self.store.put_record(put).await?;
        self.feeds.changed(&record.namespace);
        ticket.replicated(record.revision).await?;
        Ok(record)
    }

    /// Writes a record unless its value is unchanged (see [`Store::put_record_if_changed`]);
    /// announces only a write that happened.
    pub async fn put_if_changed(&self, put: RecordPut) -> Result<RecordWrite, StoreError> {
        let ticket = self.replicator.ticket(&put.namespace).await?;
        let write = self.store.put_record_if_changed(put).await?;
        if write.written {
            self.feeds.changed(&write.record.namespace);
            ticket.replicated(write.record.revision).await?;
        }
        Ok(write)
    }

    /// Deletes a record (see [`Store::delete_record`]) and announces it.
    pub async fn delete(&self, delete: RecordDelete) -> Result<RecordDeleted, StoreError> {
        let ticket = self.replicator.ticket(&delete.namespace).await?;
        let deleted = self.store.delete_record(delete).await?;
        self.feeds.changed(&deleted.namespace);
        ticket.replicated(deleted.revision).await?;
        Ok(deleted)
    }

    /// One record, `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Record>, StoreError> {
        let (ns, kind, name) = (namespace.to_string(), kind.to_string(), name.to_string());
        self.replicator
            .read_visible(namespace, move |s| s.record(&ns, &kind, &name))
            .await
    }

    /// A page of one kind's records whose names start with `prefix`, after `cursor`.
    pub async fn list(
        &self,
        namespace: &str,
        kind: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, StoreError> {
        let (ns, kind, prefix) = (namespace.to_string(), kind.to_string(), prefix.to_string());
        let cursor = cursor.map(str::to_string);
        self.replicator
            .read_visible(namespace, move |s| {
                s.records(&ns, &kind, &prefix, cursor.as_deref(), limit)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfgnode_storage::StoreOptions;

    fn put(name: &str, value: &str) -> RecordPut {
        RecordPut {
            namespace: "reg".into(),
            kind: "instance".into(),
            name: name.into(),
            value: value.as_bytes().to_vec(),
            if_version: None,
        }
    }

    #[tokio::test]
    async fn committed_writes_wake_the_namespace_feed_and_unchanged_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("db"), Some("n1"), StoreOptions::default()).expect("open");
        let feeds = Feeds::new();
        let records =
            NamespaceRecords::new(store.clone(), feeds.clone(), Replicator::new(store, 1));
        let mut feed = feeds.subscribe("reg");

        records.put(put("a", "1")).await.expect("put");
        assert!(feed.has_changed().expect("open"), "a put announces");
        feed.borrow_and_update();

        let same = records.put_if_changed(put("a", "1")).await.expect("put");
        assert!(!same.written);
        assert!(
            !feed.has_changed().expect("open"),
            "nothing written, nothing announced"
        );
        let changed = records.put_if_changed(put("a", "2")).await.expect("put");
        assert!(changed.written);
        assert!(feed.has_changed().expect("open"));
        feed.borrow_and_update();

        // A refused write announces nothing.
        assert!(records.put(put("/bad", "x")).await.is_err());
        assert!(!feed.has_changed().expect("open"));

        let listed = records
            .list("reg", "instance", "", None, 10)
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            records
                .get("reg", "instance", "a")
                .await
                .expect("get")
                .map(|r| r.value),
            Some(b"2".to_vec())
        );
        records
            .delete(RecordDelete {
                namespace: "reg".into(),
                kind: "instance".into(),
                name: "a".into(),
                if_version: Some(2),
            })
            .await
            .expect("delete");
        assert!(feed.has_changed().expect("open"), "a delete announces");
        assert!(
            records
                .get("reg", "instance", "a")
                .await
                .expect("get")
                .is_none()
        );
    }
}
