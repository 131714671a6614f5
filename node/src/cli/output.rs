//! How the command line prints events and errors.

use std::process::ExitCode;

use base64::Engine;
use cairn_client::{ContentType, Error, RecordedEvent};

use super::{
    EXIT_FAILURE, EXIT_NOT_ALLOWED, EXIT_STREAM_DELETED, EXIT_STREAM_NOT_FOUND, EXIT_USAGE,
    EXIT_WRONG_EXPECTED_VERSION,
};

/// An event as one JSON object: JSON data inline, binary data as base64, `tags` when it has
/// some.
pub fn event_json(event: &RecordedEvent) -> serde_json::Value {
    let mut object = serde_json::json!({
        "stream": event.stream,
        "revision": event.revision,
        "position": event.position,
        "id": event.id.to_string(),
        "type": event.event_type,
        "created_unix_ms": event.created_unix_ms,
    });
    // Only when there are some, as in the text form: untagged events print as they always did.
    if !event.tags.is_empty() {
        object["tags"] = event.tags.clone().into();
    }
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
    let tags = if event.tags.is_empty() {
        String::new()
    } else {
        format!("tags {}  ", event.tags.join(","))
    };
    format!(
        "{}@{}  position {}  {}  {tags}{}",
        event.stream, event.revision, event.position, event.event_type, data
    )
}

/// Prints a one-line error on stderr and picks the exit status of the contract.
pub fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {}", user_terms(e));
    let code = match e {
        Error::WrongExpectedVersion { .. } | Error::ConditionFailed { .. } => {
            EXIT_WRONG_EXPECTED_VERSION
        }
        Error::StreamNotFound { .. } | Error::GroupNotFound { .. } => EXIT_STREAM_NOT_FOUND,
        // Like appending with `--expected no-stream` to a stream that exists.
        Error::GroupExists { .. } => EXIT_WRONG_EXPECTED_VERSION,
        Error::StreamDeleted { .. } => EXIT_STREAM_DELETED,
        Error::InvalidArgument(_) => EXIT_USAGE,
        Error::Unauthenticated(_) | Error::PermissionDenied(_) => EXIT_NOT_ALLOWED,
        _ => EXIT_FAILURE,
    };
    ExitCode::from(code)
}

pub fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {}", one_line(&message.to_string()));
    ExitCode::from(EXIT_USAGE)
}

/// Text on one line: line breaks (a server's regex error draws a caret diagram) become "; ".
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error as a user would put it: one line, and an endpoint that answered HTTP but not
/// gRPC (a node's --http port, or another server) said as such.
fn user_terms(e: &Error) -> String {
    if let Error::Internal(cause) = e {
        if cause.starts_with("Unimplemented") && cause.contains("grpc-status header missing") {
            return "an endpoint answered, but not as a Cairn node (no gRPC there): is it a node's \
                    HTTP port (health, metrics)? Give the gRPC port, the node's --listen"
                .to_owned();
        }
    }
    one_line(&e.to_string())
}
