//! The write-ahead log: how a batch becomes durable without a durable redb commit.
//!
//! A durable redb commit is expensive in CPU, not only in waiting: it rewrites and checksums
//! every B-tree page the batch touched, processes the freed pages and `fdatasync`s all of it
//! (about 1.2 ms of CPU per commit on the project VM, see `docs/benchmarks.md`). With three
//! copies of every namespace, each batch pays that on three nodes. So the writer commits most
//! batches with `Durability::None` (visible to readers, not yet on disk) and makes each one
//! durable by appending its mutations here and `fdatasync`ing this file: a few kilobytes
//! written in sequence. Every [`crate::writer`] checkpoint (a batch committed with
//! `Durability::Immediate`, at least every 100 ms under load) makes everything before it
//! durable in redb itself, and the log starts again at offset 0.
//!
//! Recovery (at open, before the writer starts): redb comes back at its last durable commit,
//! whose `META_WAL_APPLIED` row names the last batch it contains (every batch writes that row,
//! so the row and the tables always agree, whichever commit redb comes back at). The batches
//! after it are read from this file and applied again in order, with the clock and the seed
//! they were first applied with (see [`crate::apply`]: given those, applying is deterministic),
//! and committed durably. A batch is acknowledged only after its record is synced, so every
//! acknowledged batch is either in redb or here.
//!
//! # Format
//!
//! The file is zero-filled ahead of the records, [`GROW_BY`] at a time (at most [`CAPACITY`]),
//! so a record's sync writes data blocks only and almost never has to journal a new file size.
//! Records follow each other from offset 0:
//!
//! ```text
//! len: u32 LE | crc32: u32 LE (of the database uid, seq and payload) | seq: u64 LE | payload
//! ```
//!
//! The checksum covers the database's uid (made once with the database, kept in its meta
//! table), so a log left beside a database it does not belong to (the database file deleted or
//! replaced, the log kept) reads as empty and is never replayed into it.
//!
//! Reading stops at the first record that is not valid or not the next in sequence: a torn tail
//! (a crash mid-write: that batch was never acknowledged), zeros, or what is left of an earlier
//! cycle (its sequence numbers are all below the checkpoint that ended it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The most the log holds. A batch that does not fit in what is left is committed as a
/// checkpoint instead (so a big import or copy never goes through the log).
pub(crate) const CAPACITY: u64 = 64 * 1024 * 1024;

/// The file grows (zero-filled and synced) by this much when a record would pass its end, so
/// only one record in this many bytes pays for a change of the file's size.
const GROW_BY: u64 = 4 * 1024 * 1024;

/// Bytes before a record's payload: length, checksum, sequence number.
const HEADER: usize = 16;

/// The log next to a database: `<database>.wal`.
pub(crate) fn path_for(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".wal");
    PathBuf::from(path)
}

/// One batch read back from the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Logged {
    /// The batch's sequence number (the writer numbers batches from 1, across restarts).
    pub seq: u64,
    /// The encoded batch ([`crate::writer`] knows its shape).
    pub payload: Vec<u8>,
}

/// The open log file and where the next record goes.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Where the next record is written.
    offset: u64,
    /// The file's zero-filled length.
    allocated: u64,
    /// One record's bytes, kept to avoid an allocation per batch.
    buffer: Vec<u8>,
    /// The uid of the database this log belongs to (in every checksum).
    database_uid: u64,
}

impl Wal {
    /// Opens the log at `path`, creating it (zero-filled, synced) when it is missing or shorter
    /// than [`GROW_BY`]. The next record goes at offset 0: call [`Wal::read`] first to recover.
    pub(crate) fn open(path: &Path, database_uid: u64) -> Result<Wal, StoreError> {
        let fail = |what: &str, e: std::io::Error| {
            StoreError::Storage(format!(
                "cannot {what} the write-ahead log {}: {e}",
                path.display()
            ))
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| fail("open", e))?;
        let mut allocated = file.metadata().map_err(|e| fail("read", e))?.len();
        if allocated < GROW_BY {
            fill_with_zeros(&mut file, allocated, GROW_BY).map_err(|e| fail("preallocate", e))?;
            allocated = GROW_BY;
        }
        Ok(Wal {
            file,
            path: path.to_path_buf(),
            offset: 0,
            allocated,
            buffer: Vec::new(),
            database_uid,
        })
    }

    /// The file's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every valid record from offset 0, in order (see the module doc for where reading stops).
    pub(crate) fn read(&self) -> Result<Vec<Logged>, StoreError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| StoreError::Storage(format!("cannot read {}: {e}", self.path.display())))?
            .len();
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut bytes, 0).map_err(|e| {
            StoreError::Storage(format!("cannot read {}: {e}", self.path.display()))
        })?;
        Ok(parse(&bytes, self.database_uid))
    }

    /// Whether a record of `payload_len` bytes fits in what is left of the log.
    pub(crate) fn fits(&self, payload_len: usize) -> bool {
        self.offset + (HEADER + payload_len) as u64 <= CAPACITY
    }

    /// Bytes written since the last [`Wal::restart`].
    pub(crate) fn written(&self) -> u64 {
        self.offset
    }

    /// Writes batch `seq`'s record and syncs it. The batch may be acknowledged once this
    /// returns `Ok`. On `Err` the log's state on disk is unknown (a failed sync may have lost
    /// pages): the writer stops taking writes.
    pub(crate) fn append(&mut self, seq: u64, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::other("a batch record above 4 GiB"))?;
        self.buffer.clear();
        self.buffer.extend_from_slice(&len.to_le_bytes());
        self.buffer
            .extend_from_slice(&checksum(self.database_uid, seq, payload).to_le_bytes());
        self.buffer.extend_from_slice(&seq.to_le_bytes());
        self.buffer.extend_from_slice(payload);
        let end = self.offset + self.buffer.len() as u64;
        if end > self.allocated {
            let to = end.div_ceil(GROW_BY) * GROW_BY;
            fill_with_zeros(&mut self.file, self.allocated, to)?;
            self.allocated = to;
        }
        self.file.write_all_at(&self.buffer, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.buffer.len() as u64;
        Ok(())
    }

    /// A checkpoint made everything logged durable in redb: the next record goes at offset 0.
    pub(crate) fn restart(&mut self) {
        self.offset = 0;
    }
}

/// The records a log's bytes hold, from offset 0 (see the module doc).
fn parse(bytes: &[u8], database_uid: u64) -> Vec<Logged> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut expected: Option<u64> = None;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        if seq == 0 || expected.is_some_and(|next| seq != next) {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if checksum(database_uid, seq, payload) != crc {
            break;
        }
        records.push(Logged {
            seq,
            payload: payload.to_vec(),
        });
        expected = Some(seq + 1);
        at += HEADER + len;
    }
    records
}

/// CRC-32 (IEEE) of the database's uid, a record's sequence number and its payload.
fn checksum(database_uid: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&database_uid.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Writes zeros over `from..to` and syncs the file (data and size).
fn fill_with_zeros(file: &mut File, from: u64, to: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    const CHUNK: usize = 1024 * 1024;
    let zeros = vec![0u8; CHUNK];
    file.seek(SeekFrom::Start(from))?;
    let mut left = to - from;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &tempfile::TempDir) -> Wal {
        Wal::open(&dir.path().join("db.wal"), 42).expect("open")
    }

    #[test]
    fn a_log_of_another_database_reads_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = log_in(&dir);
        wal.append(1, b"theirs").expect("append");
        let other = Wal::open(&dir.path().join("db.wal"), 43).expect("open");
        assert!(other.read().expect("read").is_empty());
        assert_eq!(log_in(&dir).read().expect("read").len(), 1);
    }

    #[test]
    fn records_read_back_in_order_and_a_new_log_is_preallocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = log_in(&dir);
        assert_eq!(std::fs::metadata(wal.path()).expect("stat").len(), GROW_BY);
        assert!(wal.read().expect("read").is_empty());
        wal.append(1, b"one").expect("append");
        wal.append(2, b"").expect("append");
        wal.append(3, b"three").expect("append");
        let read = log_in(&dir).read().expect("read");
        let seqs: Vec<_> = read.iter().map(|r| (r.seq, r.payload.as_slice())).collect();
        assert_eq!(
            seqs,
            vec![
                (1, b"one".as_slice()),
                (2, b"".as_slice()),
                (3, b"three".as_slice())
            ]
        );
    }

    #[test]
    fn reading_stops_at_a_torn_or_corrupt_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = log_in(&dir);
        wal.append(7, b"kept").expect("append");
        wal.append(8, b"torn").expect("append");
        // Flip one payload byte of the second record, as a torn write would leave it.
        let second = (HEADER + 4 + HEADER) as u64;
        wal.file.write_all_at(b"X", second).expect("corrupt");
        let read = wal.read().expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].seq, 7);
    }

    #[test]
    fn after_a_restart_the_previous_cycle_is_not_read_as_a_continuation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = log_in(&dir);
        // An earlier cycle: 1, 2, 3 with payloads of the same size, so record 3 sits right
        // where the new cycle's second record ends.
        for seq in 1..=3 {
            wal.append(seq, b"aaaa").expect("append");
        }
        // A checkpoint at 3, then batch 4 at offset 0: the old record 2 follows it on disk.
        wal.restart();
        wal.append(4, b"bbbb").expect("append");
        let read = wal.read().expect("read");
        assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn a_record_that_does_not_fit_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = log_in(&dir);
        assert!(wal.fits(1024));
        assert!(!wal.fits(CAPACITY as usize));
    }

    #[test]
    fn the_file_grows_zero_filled_past_its_first_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = log_in(&dir);
        let big = vec![7u8; (GROW_BY as usize) / 3];
        for seq in 1..=4 {
            wal.append(seq, &big).expect("append");
        }
        assert_eq!(
            std::fs::metadata(wal.path()).expect("stat").len(),
            2 * GROW_BY
        );
        assert_eq!(wal.written(), 4 * (HEADER as u64 + big.len() as u64));
        let read = log_in(&dir).read().expect("read");
        assert_eq!(
            read.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(read.iter().all(|r| r.payload == big));
    }
}
