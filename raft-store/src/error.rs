//! Errors of the storage layer (ground floor: no imports from the crate). Their mapping onto
//! openraft's `StorageError` is `storage_error`'s.

use std::io;

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
    /// A lazily streamed snapshot whose source state machine was replaced, or changed below
    /// its end by a scavenge or erase, meanwhile; the newer snapshot is to be sent instead.
    #[error("snapshot source changed while it was being read")]
    SnapshotSourceChanged,
    /// A data dir written by a newer build, in a format this build does not know. Nothing was
    /// changed.
    #[error(
        "the data dir has store format version {found}, newer than this build's {supported}; \
         run a build that knows format {found}"
    )]
    FormatTooNew { found: u32, supported: u32 },
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
