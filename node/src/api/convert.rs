//! Between the public protobuf messages and the store's types. Every refusal names the field.

use cairn_client::proto;
use cairn_raft_store::{
    Append, AppendPosition, ContentType, ExpectedRevision, InvalidInput, NewEvent, RecordedEvent,
};
use tonic::Status;
use uuid::Uuid;

pub fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// The field an `InvalidInput` is about, for the error message.
pub fn invalid_input(e: &InvalidInput) -> Status {
    let field = match e {
        InvalidInput::EmptyStreamName
        | InvalidInput::StreamNameTooLong { .. }
        | InvalidInput::StreamNameHasNul
        | InvalidInput::BlankStreamName
        | InvalidInput::ReservedStreamName { .. } => "stream".to_owned(),
        InvalidInput::NoEvents
        | InvalidInput::TooManyEvents { .. }
        | InvalidInput::AppendTooLarge { .. } => "events".to_owned(),
        InvalidInput::EmptyEventType { index } | InvalidInput::EventTypeTooLong { index, .. } => {
            format!("events[{index}].type")
        }
        InvalidInput::EventTooLarge { index, .. } => format!("events[{index}]"),
        InvalidInput::DuplicateEventIdInAppend { index, .. } => format!("events[{index}].id"),
    };
    invalid(&field, e)
}

pub fn expected_from_proto(
    expected: Option<&proto::ExpectedRevision>,
) -> Result<ExpectedRevision, Status> {
    let Some(expected) = expected else {
        return Ok(ExpectedRevision::Any);
    };
    use proto::expected_revision::Kind;
    match Kind::try_from(expected.kind) {
        Ok(Kind::Any) => Ok(ExpectedRevision::Any),
        Ok(Kind::NoStream) => Ok(ExpectedRevision::NoStream),
        Ok(Kind::StreamExists) => Ok(ExpectedRevision::StreamExists),
        Ok(Kind::Exact) => Ok(ExpectedRevision::Exact(expected.revision)),
        Err(_) => Err(invalid(
            "expected.kind",
            format!("unknown value {}", expected.kind),
        )),
    }
}

pub fn expected_to_proto(expected: ExpectedRevision) -> proto::ExpectedRevision {
    use proto::expected_revision::Kind;
    let (kind, revision) = match expected {
        ExpectedRevision::Any => (Kind::Any, 0),
        ExpectedRevision::NoStream => (Kind::NoStream, 0),
        ExpectedRevision::StreamExists => (Kind::StreamExists, 0),
        ExpectedRevision::Exact(r) => (Kind::Exact, r),
    };
    proto::ExpectedRevision {
        kind: kind as i32,
        revision,
    }
}

fn content_type_from_proto(field: &str, value: i32) -> Result<ContentType, Status> {
    match proto::ContentType::try_from(value) {
        Ok(proto::ContentType::Json) => Ok(ContentType::Json),
        Ok(proto::ContentType::Binary) => Ok(ContentType::Binary),
        Err(_) => Err(invalid(field, format!("unknown value {value}"))),
    }
}

fn content_type_to_proto(value: ContentType) -> i32 {
    match value {
        ContentType::Json => proto::ContentType::Json as i32,
        ContentType::Binary => proto::ContentType::Binary as i32,
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
            content_type_from_proto(&format!("events[{index}].content_type"), event.content_type)?;
        events.push(NewEvent {
            id,
            event_type: event.r#type,
            content_type,
            data: event.data,
            metadata: event.metadata,
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
                expected: Some(expected_to_proto(expected)),
                actual_revision: actual,
            },
        )),
    }
}

pub fn recorded_to_proto(event: RecordedEvent) -> proto::RecordedEvent {
    proto::RecordedEvent {
        stream: event.stream,
        revision: event.revision,
        position: event.position,
        id: event.id.hyphenated().to_string(),
        r#type: event.event_type,
        content_type: content_type_to_proto(event.content_type),
        data: event.data,
        metadata: event.metadata,
        created_unix_ms: event.created_unix_ms,
    }
}
