//! How the command line prints events and errors.

use std::process::ExitCode;

use base64::Engine;
use cairn_client::{ContentType, Error, RecordedEvent};

use super::{EXIT_FAILURE, EXIT_STREAM_NOT_FOUND, EXIT_USAGE, EXIT_WRONG_EXPECTED_VERSION};

/// An event as one JSON object: JSON data inline, binary data as base64.
pub fn event_json(event: &RecordedEvent) -> serde_json::Value {
    let mut object = serde_json::json!({
        "stream": event.stream,
        "revision": event.revision,
        "position": event.position,
        "id": event.id.to_string(),
        "type": event.event_type,
        "created_unix_ms": event.created_unix_ms,
    });
    let data = match event.content_type {
        ContentType::Json => serde_json::from_slice(&event.data).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&event.data).into_owned())
        }),
        ContentType::Binary => {
            object["data_base64"] = true.into();
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&event.data))
        }
    };
    object["data"] = data;
    object
}

pub fn event_text(event: &RecordedEvent) -> String {
    let data = match event.content_type {
        ContentType::Json => String::from_utf8_lossy(&event.data).into_owned(),
        ContentType::Binary => format!("<{} bytes>", event.data.len()),
    };
    format!(
        "{}@{}  position {}  {}  {}",
        event.stream, event.revision, event.position, event.event_type, data
    )
}

/// Prints a one-line error on stderr and picks the exit status of the contract.
pub fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    let code = match e {
        Error::WrongExpectedVersion { .. } => EXIT_WRONG_EXPECTED_VERSION,
        Error::StreamNotFound { .. } => EXIT_STREAM_NOT_FOUND,
        Error::InvalidArgument(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    };
    ExitCode::from(code)
}

pub fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}
