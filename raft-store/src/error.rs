//! Errors of the storage layer, and their mapping onto openraft's `StorageError`.

use std::io;

use openraft::{AnyError, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::StorageError;

/// An error from reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// Stored bytes that do not decode, or an invariant of the stored data that does not hold.
    /// Either is a bug or disk corruption: the store stops rather than guess.
    #[error("corrupt store: {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A snapshot stream that does not follow the format.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// A lazily streamed snapshot whose source state machine was replaced meanwhile.
    #[error("snapshot source changed while it was being read")]
    SnapshotSourceChanged,
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        match e {
            StoreError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::corrupt("encode", e))
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// Which openraft operation failed, for the error report.
#[derive(Clone, Copy)]
pub(crate) enum Failed {
    ReadLogs,
    WriteLogs,
    ReadVote,
    WriteVote,
    WriteStateMachine,
    ReadSnapshot,
    WriteSnapshot,
}

#[allow(clippy::result_large_err)]
pub(crate) fn to_storage_error(failed: Failed, e: impl Into<StoreError>) -> StorageError {
    let source = AnyError::new(&e.into());
    let io = match failed {
        Failed::ReadLogs => StorageIOError::read_logs(source),
        Failed::WriteLogs => StorageIOError::write_logs(source),
        Failed::ReadVote => StorageIOError::read_vote(source),
        Failed::WriteVote => StorageIOError::write_vote(source),
        Failed::WriteStateMachine => StorageIOError::write_state_machine(source),
        Failed::ReadSnapshot => StorageIOError::read_snapshot(None, source),
        Failed::WriteSnapshot => StorageIOError::write_snapshot(None, source),
    };
    io.into()
}

/// `result.or_storage(Failed::X)?` inside openraft trait methods. The error type is openraft's,
/// so its size is not ours to choose.
#[allow(clippy::result_large_err)]
pub(crate) trait OrStorage<T> {
    fn or_storage(self, failed: Failed) -> Result<T, StorageError>;
}

impl<T, E: Into<StoreError>> OrStorage<T> for Result<T, E> {
    fn or_storage(self, failed: Failed) -> Result<T, StorageError> {
        self.map_err(|e| to_storage_error(failed, e))
    }
}
