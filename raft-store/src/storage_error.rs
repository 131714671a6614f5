//! Our errors as openraft's `StorageError`, for the openraft trait impls (`log_store`,
//! `state_machine`).

use openraft::{AnyError, StorageIOError};

use crate::error::StoreError;
use crate::raft_types::StorageError;

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
