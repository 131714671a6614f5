//! Between the public protobuf messages and the store's types. Every refusal names the field.
//!
//! The wire side of the contract's types (expected revision, content type, recorded event) is
//! decoded and encoded in one place, the client crate that owns the contract
//! (`cairn_client::ExpectedRevision::from_proto`, `ContentType::from_proto`, and the `From`
//! impls into `proto`). This file only steps between the client's domain types and the store's:
//! the store cannot depend on the client (its types are the Raft log's serde format, the
//! client's a library's API), and neither crate may know the other's, so the step lives at the
//! edge that knows both.

use cairn_client::proto;
use cairn_raft_store::{
    Append, AppendPosition, ContentType, ExpectedRevision, NewEvent, RecordedEvent,
};
use tonic::Status;
use uuid::Uuid;

use super::status::invalid;

/// The request's expected revision (absent: any).
pub fn expected_from_proto(
    expected: Option<&proto::ExpectedRevision>,
) -> Result<ExpectedRevision, Status> {
    let Some(expected) = expected else {
        return Ok(ExpectedRevision::Any);
    };
    match cairn_client::ExpectedRevision::from_proto(expected) {
        Some(expected) => Ok(expected_to_store(expected)),
        None => Err(invalid(
            "expected.kind",
            format!("unknown value {}", expected.kind),
        )),
    }
}

fn expected_to_store(expected: cairn_client::ExpectedRevision) -> ExpectedRevision {
    match expected {
        cairn_client::ExpectedRevision::Any => ExpectedRevision::Any,
        cairn_client::ExpectedRevision::NoStream => ExpectedRevision::NoStream,
        cairn_client::ExpectedRevision::StreamExists => ExpectedRevision::StreamExists,
        cairn_client::ExpectedRevision::Exact(revision) => ExpectedRevision::Exact(revision),
    }
}

fn expected_from_store(expected: ExpectedRevision) -> cairn_client::ExpectedRevision {
    match expected {
        ExpectedRevision::Any => cairn_client::ExpectedRevision::Any,
        ExpectedRevision::NoStream => cairn_client::ExpectedRevision::NoStream,
        ExpectedRevision::StreamExists => cairn_client::ExpectedRevision::StreamExists,
        ExpectedRevision::Exact(revision) => cairn_client::ExpectedRevision::Exact(revision),
    }
}

fn content_type_to_store(content_type: cairn_client::ContentType) -> ContentType {
    match content_type {
        cairn_client::ContentType::Json => ContentType::Json,
        cairn_client::ContentType::Binary => ContentType::Binary,
    }
}

fn content_type_from_store(content_type: ContentType) -> cairn_client::ContentType {
    match content_type {
        ContentType::Json => cairn_client::ContentType::Json,
        ContentType::Binary => cairn_client::ContentType::Binary,
    }
}

/// Builds the command. `created_unix_ms` is the proposing leader's clock, read once.
pub fn append_from_proto(
    request: proto::AppendRequest,
    created_unix_ms: u64,
) -> Result<Append, Status> {
    let expected = expected_from_proto(request.expected.as_ref())?;
    let mut events = Vec::with_capacity(request.events.len());
    for (index, event) in request.events.into_iter().enumerate() {
        let id = Uuid::parse_str(&event.id)
            .map_err(|e| invalid(&format!("events[{index}].id"), format!("not a UUID ({e})")))?;
        if id.is_nil() {
            return Err(invalid(
                &format!("events[{index}].id"),
                "the nil UUID is not an event id",
            ));
        }
        let content_type =
            cairn_client::ContentType::from_proto(event.content_type).ok_or_else(|| {
                invalid(
                    &format!("events[{index}].content_type"),
                    format!("unknown value {}", event.content_type),
                )
            })?;
        events.push(NewEvent {
            id,
            event_type: event.r#type,
            content_type: content_type_to_store(content_type),
            data: event.data,
            metadata: event.metadata,
            tags: event.tags,
        });
    }
    Ok(Append {
        stream: request.stream,
        expected,
        events,
        created_unix_ms,
    })
}

pub fn success(position: AppendPosition, already_written: bool) -> proto::AppendResponse {
    proto::AppendResponse {
        result: Some(proto::append_response::Result::Success(
            proto::AppendSuccess {
                last_revision: position.last_revision,
                last_position: position.last_position,
                already_written,
            },
        )),
    }
}

pub fn wrong_expected_version(
    expected: ExpectedRevision,
    actual: Option<u64>,
) -> proto::AppendResponse {
    proto::AppendResponse {
        result: Some(proto::append_response::Result::WrongExpectedVersion(
            proto::WrongExpectedVersion {
                expected: Some(expected_from_store(expected).into()),
                actual_revision: actual,
            },
        )),
    }
}

/// The wire form of a stored event (only moves: no byte is copied but the id's text).
pub fn recorded_to_proto(event: RecordedEvent) -> proto::RecordedEvent {
    cairn_client::RecordedEvent {
        stream: event.stream,
        revision: event.revision,
        position: event.position,
        id: event.id,
        event_type: event.event_type,
        content_type: content_type_from_store(event.content_type),
        data: event.data,
        metadata: event.metadata,
        created_unix_ms: event.created_unix_ms,
        tags: event.tags,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every expected revision and content type survives the trip through the wire form both
    /// ways, so the step between client and store types loses nothing.
    #[test]
    fn store_types_round_trip_through_the_wire_form() {
        for expected in [
            ExpectedRevision::Any,
            ExpectedRevision::NoStream,
            ExpectedRevision::StreamExists,
            ExpectedRevision::Exact(7),
        ] {
            let wire: proto::ExpectedRevision = expected_from_store(expected).into();
            assert_eq!(expected_from_proto(Some(&wire)).ok(), Some(expected));
        }
        for content_type in [ContentType::Json, ContentType::Binary] {
            let event = RecordedEvent {
                stream: "s".into(),
                revision: 0,
                position: 0,
                id: Uuid::now_v7(),
                event_type: "t".into(),
                content_type,
                data: vec![1],
                metadata: vec![],
                created_unix_ms: 1,
                tags: vec!["t:1".into()],
            };
            let wire = recorded_to_proto(event);
            let back =
                cairn_client::ContentType::from_proto(wire.content_type).map(content_type_to_store);
            assert_eq!(back, Some(content_type));
        }
    }
}
