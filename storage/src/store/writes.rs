//! Writes: each mutation is checked on the caller's task (names, sizes, codecs), then queued
//! to the group-commit writer; its future resolves only after the durable commit.

use crate::error::StoreError;
use crate::model::{validate_key, validate_namespace, validate_record_kind};
use crate::mutation::{
    AliasPut, Applied, DeleteRequest, Deleted, Mutation, PutRequest, RecordDelete, RecordDeleted,
    RecordPut, RecordWrite,
};
use crate::transfer::{TransferOp, check_ops};
use crate::types::{Alias, Entry, Record};

use super::Store;

impl Store {
    /// Writes a key. Validates names, size and codec on the caller's task, then waits for the
    /// durable commit.
    pub async fn put(&self, request: PutRequest) -> Result<Entry, StoreError> {
        validate_namespace(&request.namespace)?;
        validate_key(&request.key)?;
        if request.value.len() > self.inner.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                size: request.value.len(),
                limit: self.inner.max_value_bytes,
            });
        }
        request.codec.validate(&request.value)?;
        match self.inner.writer.submit(Mutation::Put(request)).await? {
            Applied::Put(entry) => Ok(entry),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a key, optionally only if it is at `if_version`.
    pub async fn delete(&self, request: DeleteRequest) -> Result<Deleted, StoreError> {
        validate_namespace(&request.namespace)?;
        validate_key(&request.key)?;
        match self.inner.writer.submit(Mutation::Delete(request)).await? {
            Applied::Deleted(deleted) => Ok(deleted),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates an alias. Re-creating the same alias with the same target succeeds without a
    /// new revision, so retries are safe.
    pub async fn put_alias(
        &self,
        namespace: &str,
        alias: &str,
        target: &str,
    ) -> Result<AliasPut, StoreError> {
        validate_namespace(namespace)?;
        validate_key(alias)?;
        validate_key(target)?;
        if alias == target {
            return Err(StoreError::Invalid(format!(
                "alias {alias:?} may not point at itself"
            )));
        }
        let mutation = Mutation::PutAlias {
            namespace: namespace.to_string(),
            alias: alias.to_string(),
            target: target.to_string(),
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::AliasPut(put) => Ok(put),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, namespace: &str, alias: &str) -> Result<Alias, StoreError> {
        validate_namespace(namespace)?;
        validate_key(alias)?;
        let mutation = Mutation::DeleteAlias {
            namespace: namespace.to_string(),
            alias: alias.to_string(),
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::AliasDeleted(alias) => Ok(alias),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes a record (see [`Record`]): takes the next namespace revision and logs a
    /// `RecordSet` event in the same durable commit. A namespace with no data yet is created.
    /// A byte-identical value is still written (a new version and revision); use
    /// [`Store::put_record_if_changed`] to skip those.
    ///
    /// Errors: `InvalidNamespace`, `InvalidRecordKind`, `InvalidKey` (the name),
    /// `ValueTooLarge`, `RecordVersionMismatch` (the `if_version` check); each changed nothing.
    pub async fn put_record(&self, put: RecordPut) -> Result<Record, StoreError> {
        self.submit_record_put(put, false)
            .await
            .map(|write| write.record)
    }

    /// Like [`Store::put_record`], but a value byte-identical to the stored one writes nothing
    /// (no version, revision or event; `written: false`), so a role can rewrite its state on
    /// every check without flooding the log and its watchers. The `if_version` check still
    /// applies.
    pub async fn put_record_if_changed(&self, put: RecordPut) -> Result<RecordWrite, StoreError> {
        self.submit_record_put(put, true).await
    }

    async fn submit_record_put(
        &self,
        put: RecordPut,
        skip_unchanged: bool,
    ) -> Result<RecordWrite, StoreError> {
        validate_namespace(&put.namespace)?;
        validate_record_kind(&put.kind)?;
        validate_key(&put.name)?;
        if put.value.len() > self.inner.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                size: put.value.len(),
                limit: self.inner.max_value_bytes,
            });
        }
        let mutation = Mutation::PutRecord {
            put,
            skip_unchanged,
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::RecordPut(write) => Ok(write),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a record, optionally only if it is at `if_version`: takes the next namespace
    /// revision and logs a `RecordDelete` event in the same durable commit.
    ///
    /// Errors: `RecordNotFound` when it does not exist, `RecordVersionMismatch`, and the name
    /// errors of [`Store::put_record`]; each changed nothing.
    pub async fn delete_record(&self, delete: RecordDelete) -> Result<RecordDeleted, StoreError> {
        validate_namespace(&delete.namespace)?;
        validate_record_kind(&delete.kind)?;
        validate_key(&delete.name)?;
        match self
            .inner
            .writer
            .submit(Mutation::DeleteRecord(delete))
            .await?
        {
            Applied::RecordDeleted(deleted) => Ok(deleted),
            other => Err(unexpected(&other)),
        }
    }

    /// Stores the node's last known cluster members (opaque bytes, serialized by the node), so
    /// a restarted node can rejoin without seeds.
    pub async fn save_cluster_members(&self, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self
            .inner
            .writer
            .submit(Mutation::PutClusterMembers(bytes))
            .await?
        {
            Applied::ClusterMembers => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Upserts cluster facts (directory records, pins, claims), opaque to storage, in one
    /// durable commit.
    pub async fn save_cluster_records(
        &self,
        records: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        match self
            .inner
            .writer
            .submit(Mutation::PutClusterRecords(records))
            .await?
        {
            Applied::ClusterRecords => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Applies transfer ops to `namespace` in one durable commit (all checked first: a
    /// malformed op refuses the whole import and writes nothing). This node's replica record
    /// is left alone (see [`Store::append`] for rows that move a replica's position).
    pub async fn import(&self, namespace: &str, ops: Vec<TransferOp>) -> Result<(), StoreError> {
        check_ops(namespace, &ops)?;
        let mutation = Mutation::Import {
            namespace: namespace.to_string(),
            ops,
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::Imported => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets (`Some`) or removes (`None`) the attachment `name` of `namespace`: bytes owned by
    /// the node (webhooks and their cursors) that move with the namespace but are not part of
    /// its data (no revision, no log). Durable when this returns; the namespace must exist.
    pub async fn put_attachment(
        &self,
        namespace: &str,
        name: &str,
        bytes: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        validate_namespace(namespace)?;
        crate::model::validate_key(name)?;
        if let Some(b) = &bytes
            && b.len() > crate::transfer::MAX_ATTACHMENT_BYTES
        {
            return Err(StoreError::Invalid(format!(
                "attachment {name:?} is {} bytes, over the limit of {}",
                b.len(),
                crate::transfer::MAX_ATTACHMENT_BYTES
            )));
        }
        let mutation = Mutation::PutAttachment {
            namespace: namespace.to_string(),
            name: name.to_string(),
            bytes,
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::Attachment => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes every row of `namespace`: state, entries, history, aliases, records, log,
    /// attachments and this node's replica record (after it moved to another node), in one
    /// durable commit.
    ///
    /// Dropping the replica record forgets this node's promise: drop a namespace only once
    /// this node is in no replica set of it whose epoch could still count its vote.
    pub async fn drop_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        validate_namespace(namespace)?;
        let mutation = Mutation::DropNamespace {
            namespace: namespace.to_string(),
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::Dropped => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

pub(super) fn unexpected(applied: &Applied) -> StoreError {
    StoreError::Storage(format!(
        "writer answered with the wrong kind of result: {applied:?}"
    ))
}
