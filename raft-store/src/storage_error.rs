//! Our errors as the `io::Error`s openraft 0.10's storage traits return (`log_store`,
//! `state_machine`); openraft wraps them into its `StorageError` with the subject it knows.

use std::io;

use crate::error::StoreError;

/// Which openraft operation failed, for the error report.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failed {
    ReadLogs,
    WriteLogs,
    ReadVote,
    WriteVote,
    WriteStateMachine,
    ReadSnapshot,
    WriteSnapshot,
}

impl Failed {
    fn doing(self) -> &'static str {
        match self {
            Failed::ReadLogs => "reading the log",
            Failed::WriteLogs => "writing the log",
            Failed::ReadVote => "reading the vote",
            Failed::WriteVote => "writing the vote",
            Failed::WriteStateMachine => "applying to the state machine",
            Failed::ReadSnapshot => "reading a snapshot",
            Failed::WriteSnapshot => "writing a snapshot",
        }
    }
}

pub(crate) fn to_io_error(failed: Failed, e: impl Into<StoreError>) -> io::Error {
    let e = e.into();
    let kind = match &e {
        StoreError::Io(io) => io.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, format!("{}: {e}", failed.doing()))
}

/// `result.or_storage(Failed::X)?` inside openraft trait methods.
pub(crate) trait OrStorage<T> {
    fn or_storage(self, failed: Failed) -> Result<T, io::Error>;
}

impl<T, E: Into<StoreError>> OrStorage<T> for Result<T, E> {
    fn or_storage(self, failed: Failed) -> Result<T, io::Error> {
        self.map_err(|e| to_io_error(failed, e))
    }
}
