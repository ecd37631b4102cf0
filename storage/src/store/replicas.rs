//! Replica state: a namespace's promise, position and replica set on this node
//! (see `crate::replica` for the rules). Reads are synchronous, writes go through the
//! group-commit writer like every mutation and resolve after the durable commit.

use redb::ReadableTable;

use crate::error::StoreError;
use crate::feed::FeedRows;
use crate::model::validate_namespace;
use crate::mutation::{Applied, Mutation};
use crate::records::REPLICAS;
use crate::replica::{
    LogPos, ReplicaAppend, ReplicaState, check_append_shape, check_replica_set, current_position,
    decode_record,
};
use crate::types::Revision;

use super::Store;
use super::reads::read_namespace;
use super::writes::unexpected;
use crate::visibility::Scope;

impl Store {
    /// Starts keeping each batch's changes of `namespace` in memory ([`crate::feed`]), for
    /// [`Store::feed_rows`], and lets its writes be acknowledged before their transaction
    /// commits (their reads wait for it, as for a follower's appends). Called by the holder
    /// while it replicates the namespace; idempotent.
    pub fn follow_changes(&self, namespace: &str) {
        self.inner.feed.watch(namespace);
    }

    /// Stops what [`Store::follow_changes`] started.
    pub fn unfollow_changes(&self, namespace: &str) {
        self.inner.feed.unwatch(namespace);
    }

    /// The rows that bring a copy of `namespace` at revision `from` up to the newest batch the
    /// feed has (at most `max_bytes` of them, whole batches), encoded as a `Vec<TransferOp>`;
    /// `None` when the feed does not reach back to `from` or has nothing after it. No read
    /// transaction: the rows of batches still in the writer's open transaction are there too.
    pub fn feed_rows(&self, namespace: &str, from: Revision, max_bytes: usize) -> Option<FeedRows> {
        self.inner.feed.since(namespace, from, max_bytes)
    }

    /// This node's replica record of `namespace`, as stored, or `None` when it has none (it
    /// promised nothing and took no append). A holder's `position` is not its position: read
    /// that with [`Store::position`] or [`Store::holder_position`].
    pub fn replica(&self, namespace: &str) -> Result<Option<ReplicaState>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read(Scope::Namespace(namespace))?;
        let table = txn.open_table(REPLICAS)?;
        let found = table.get(namespace)?;
        found.map(|v| decode_record(v.value())).transpose()
    }

    /// Every replica record on this node, by namespace: the namespaces it follows (or held,
    /// or promised something for). What a follower looks through for holders to replace.
    pub fn replicas(&self) -> Result<Vec<(String, ReplicaState)>, StoreError> {
        let txn = self.read(Scope::AllNamespaces)?;
        let table = txn.open_table(REPLICAS)?;
        let mut all = Vec::new();
        for row in table.iter()? {
            let (namespace, value) = row?;
            all.push((namespace.value().to_string(), decode_record(value.value())?));
        }
        Ok(all)
    }

    /// The position of this node's copy of `namespace`, whatever its role: a follower's stored
    /// position, a holder's derived one (see [`Store::holder_position`]),
    /// `(NamespaceState::epoch, revision)` for a namespace without a replica record, or
    /// [`LogPos::ZERO`] for no namespace at all. What an append's `base` is compared with, and
    /// what a replica answers a candidate.
    pub fn position(&self, namespace: &str) -> Result<LogPos, StoreError> {
        let (record, state) = self.replica_and_namespace(namespace)?;
        Ok(current_position(record.as_ref(), state.as_ref()))
    }

    /// The position of a namespace this node holds (its record has `epoch_start`), `None`
    /// otherwise.
    ///
    /// A holder's own writes are at its epoch, so its position is `(its epoch, revision)` once
    /// the namespace's revision passed `epoch_start.revision`, and `epoch_start` until then
    /// (no row of its epoch yet). Derived, not stored: storing the position on every local
    /// write would cost a row per batch on the write path.
    pub fn holder_position(&self, namespace: &str) -> Result<Option<LogPos>, StoreError> {
        let (record, state) = self.replica_and_namespace(namespace)?;
        Ok(record
            .as_ref()
            .filter(|r| r.epoch_start.is_some())
            .map(|r| current_position(Some(r), state.as_ref())))
    }

    /// Promises durably that this replica takes nothing from an epoch below `epoch` (a
    /// candidate's `Promise`). Creates the record at the copy's current position when there is
    /// none. Refused with [`StoreError::AlreadyPromised`] when `epoch` is not above the
    /// current promise; a refusal changes nothing.
    pub async fn promise(&self, namespace: &str, epoch: u64) -> Result<ReplicaState, StoreError> {
        validate_namespace(namespace)?;
        let mutation = Mutation::Promise {
            namespace: namespace.to_string(),
            epoch,
        };
        self.submit_replica(mutation).await
    }

    /// Applies a holder's append in one durable transaction (group-committed with other
    /// mutations): the rows exactly as [`Store::import`] applies them, and the record's new
    /// position `to`, promise `max(promised, epoch)`, holder and set, with no `epoch_start`
    /// (a node taking appends is not the holder).
    ///
    /// Refused, writing nothing: [`StoreError::Fenced`] when `epoch` is below the promise;
    /// [`StoreError::NotMyPosition`] when `base` is not [`Store::position`];
    /// [`StoreError::InvalidAppend`] when `to.epoch != epoch`, a full copy (`base: None`)
    /// does not start with `ClearNamespace`, `to` is behind `base`, or the rows do not lead to
    /// revision `to.revision` (a heartbeat without rows keeps the revision); `Invalid` /
    /// `InvalidKey` for malformed rows.
    pub async fn append(&self, append: ReplicaAppend) -> Result<ReplicaState, StoreError> {
        check_append_shape(&append)?;
        let set_version = append.set_version;
        self.submit_replica(Mutation::AppendInSet {
            append,
            set_version,
        })
        .await
    }

    /// Records that `namespace`'s rows are a handoff's whole copy of the log of `giver`, its
    /// holder at `epoch`: the copy's position becomes `(epoch, revision)`, so the epoch this
    /// node begins next starts from the giver's label, and followers the giver fed get only
    /// the rows they lack. Called by a handoff's receiver before it takes the namespace.
    pub async fn label_copy(
        &self,
        namespace: &str,
        epoch: u64,
        giver: &str,
    ) -> Result<ReplicaState, StoreError> {
        validate_namespace(namespace)?;
        let mutation = Mutation::LabelCopy {
            namespace: namespace.to_string(),
            epoch,
            giver: giver.to_string(),
        };
        self.submit_replica(mutation).await
    }

    /// Drops this node's copy of `namespace` (every row: state, entries, history, log,
    /// aliases, records, attachments) because its holder's replica set no longer has this
    /// node, keeping the replica record, and so the promise, at no position. `expected` is
    /// the record as it was when the holder was asked: if an append changed it since, nothing
    /// is removed (`StoreError::NotReleased`); the same when the namespace's revision is no
    /// longer `revision` (rows arrived since, a handoff's copy for one). See
    /// `replica::released` for why the record stays.
    pub async fn release_copy(
        &self,
        namespace: &str,
        expected: ReplicaState,
        revision: u64,
    ) -> Result<ReplicaState, StoreError> {
        validate_namespace(namespace)?;
        let mutation = Mutation::Release {
            namespace: namespace.to_string(),
            expected,
            revision,
        };
        self.submit_replica(mutation).await
    }

    /// Makes this node the holder of `namespace` at `epoch` (after winning an election, at
    /// creation, or when a handoff commits), replicating to `replicas` (holder first), the set
    /// of version `set_version` (see [`ReplicaState::set_version`]): the promise becomes
    /// `epoch`, `epoch_start` this copy's current position, `holder` this node's id.
    ///
    /// Refused with [`StoreError::AlreadyPromised`] when `epoch` is below the promise (equal
    /// is fine: a candidate promises itself first), or when this copy already took appends of
    /// `epoch` from another holder. Beginning the epoch it holds again keeps the start.
    ///
    /// [`crate::NamespaceState::epoch`] (part of the ETag) is left alone: the namespace's
    /// state row is the holder's data and travels to followers as it is.
    pub async fn begin_epoch(
        &self,
        namespace: &str,
        epoch: u64,
        replicas: Vec<String>,
        set_version: LogPos,
    ) -> Result<ReplicaState, StoreError> {
        validate_namespace(namespace)?;
        check_replica_set(&replicas)?;
        let mutation = Mutation::BeginEpochInSet {
            namespace: namespace.to_string(),
            epoch,
            holder: self.node_id().to_string(),
            replicas,
            set_version,
        };
        self.submit_replica(mutation).await
    }

    async fn submit_replica(&self, mutation: Mutation) -> Result<ReplicaState, StoreError> {
        match self.inner.writer.submit(mutation).await? {
            Applied::Replica(state) => Ok(state),
            other => Err(unexpected(&other)),
        }
    }

    /// The replica record and namespace state, read in one transaction.
    fn replica_and_namespace(
        &self,
        namespace: &str,
    ) -> Result<(Option<ReplicaState>, Option<crate::NamespaceState>), StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read(Scope::Namespace(namespace))?;
        let table = txn.open_table(REPLICAS)?;
        let record = table
            .get(namespace)?
            .map(|v| decode_record(v.value()))
            .transpose()?;
        Ok((record, read_namespace(&txn, namespace)?))
    }
}
