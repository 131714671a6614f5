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
use cairn_raft_store::limits::validate_stream_name;
use cairn_raft_store::{
    Append, AppendCondition, AppendPosition, ContentType, ExpectedRevision, GroupSettings,
    GroupSettingsChange, GroupStart, GroupStrategy, MultiAppend, MultiPosition, NewEvent, Query,
    QueryItem, RecordedEvent, SourceFilter, StreamAppend, DCB_STREAM,
};
use tonic::Status;
use uuid::Uuid;

use super::status::{invalid, invalid_input};

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
    Ok(Append {
        stream: request.stream,
        expected: expected_from_proto(request.expected.as_ref())?,
        events: events_from_proto(request.events, "events")?,
        created_unix_ms,
    })
}

/// The events of a request; `field` names them in refusals (`events`, `streams[1].events`).
fn events_from_proto(events: Vec<proto::NewEvent>, field: &str) -> Result<Vec<NewEvent>, Status> {
    let mut converted = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let id = Uuid::parse_str(&event.id)
            .map_err(|e| invalid(&format!("{field}[{index}].id"), format!("not a UUID ({e})")))?;
        if id.is_nil() {
            return Err(invalid(
                &format!("{field}[{index}].id"),
                "the nil UUID is not an event id",
            ));
        }
        let content_type =
            cairn_client::ContentType::from_proto(event.content_type).ok_or_else(|| {
                invalid(
                    &format!("{field}[{index}].content_type"),
                    format!("unknown value {}", event.content_type),
                )
            })?;
        converted.push(NewEvent {
            id,
            event_type: event.r#type,
            content_type: content_type_to_store(content_type),
            data: event.data,
            metadata: event.metadata,
            tags: event.tags,
        });
    }
    Ok(converted)
}

/// A DCB query (absent: no items, every event).
pub fn query_from_proto(query: Option<proto::Query>) -> Query {
    Query {
        items: query
            .map(|q| q.items)
            .unwrap_or_default()
            .into_iter()
            .map(|item| QueryItem {
                types: item.types,
                tags: item.tags,
            })
            .collect(),
    }
}

/// Builds a multi-stream command: the streams in order, then the DCB events in
/// [`DCB_STREAM`]. Client stream names are checked here, so `$dcb` (like any `$` name) is
/// refused when named by a client; the rest is checked by `Limits::validate_multi_append`.
pub fn multi_from_proto(
    request: proto::MultiAppendRequest,
    created_unix_ms: u64,
) -> Result<MultiAppend, Status> {
    let mut streams = Vec::with_capacity(request.streams.len() + 1);
    for (n, part) in request.streams.into_iter().enumerate() {
        validate_stream_name(&part.stream).map_err(|e| {
            let status = invalid_input(&e);
            Status::new(status.code(), format!("streams[{n}].{}", status.message()))
        })?;
        streams.push(StreamAppend {
            expected: expected_from_proto(part.expected.as_ref())?,
            events: events_from_proto(part.events, &format!("streams[{n}].events"))?,
            stream: part.stream,
        });
    }
    if !request.dcb_events.is_empty() {
        streams.push(StreamAppend {
            stream: DCB_STREAM.to_owned(),
            expected: ExpectedRevision::Any,
            events: events_from_proto(request.dcb_events, "dcb_events")?,
        });
    }
    Ok(MultiAppend {
        streams,
        condition: request.condition.map(|c| AppendCondition {
            fail_if_events_match: query_from_proto(c.fail_if_events_match),
            after: c.after,
        }),
        created_unix_ms,
    })
}

pub fn multi_success(position: MultiPosition, already_written: bool) -> proto::MultiAppendResponse {
    proto::MultiAppendResponse {
        result: Some(proto::multi_append_response::Result::Success(
            proto::MultiAppendSuccess {
                streams: position
                    .last_revisions
                    .into_iter()
                    .map(|(stream, last_revision)| proto::StreamRevision {
                        stream,
                        last_revision,
                    })
                    .collect(),
                last_position: position.last_position,
                already_written,
            },
        )),
    }
}

pub fn multi_wrong_expected_version(
    stream: String,
    expected: ExpectedRevision,
    actual: Option<u64>,
) -> proto::MultiAppendResponse {
    proto::MultiAppendResponse {
        result: Some(proto::multi_append_response::Result::WrongExpectedVersion(
            proto::StreamWrongExpectedVersion {
                stream,
                expected: Some(expected_from_store(expected).into()),
                actual_revision: actual,
            },
        )),
    }
}

pub fn condition_failed(position: u64) -> proto::MultiAppendResponse {
    proto::MultiAppendResponse {
        result: Some(proto::multi_append_response::Result::ConditionFailed(
            proto::ConditionFailed { position },
        )),
    }
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

/// The wire form of a stored event (only moves: no byte is copied but the id's text; the
/// data stays in the buffer its group was read into until the encoder copies it out).
pub fn recorded_to_proto(event: RecordedEvent) -> proto::RecordedEvent {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    proto::RecordedEvent {
        stream: event.stream,
        revision: event.revision,
        position: event.position,
        id: event.id.hyphenated().encode_lower(&mut id).to_owned(),
        r#type: event.event_type,
        content_type: proto::ContentType::from(content_type_from_store(event.content_type)).into(),
        data: event.data,
        metadata: event.metadata,
        created_unix_ms: event.created_unix_ms,
        tags: event.tags,
    }
}

/// `RecordedEvent::detach` for an event in its wire form: its bytes in buffers of their own
/// rather than slices of the group it was read with, for an event held long (a consumer
/// group's window).
pub fn detach(event: &mut proto::RecordedEvent) {
    event.data = prost::bytes::Bytes::copy_from_slice(&event.data);
    event.metadata = prost::bytes::Bytes::copy_from_slice(&event.metadata);
}

/// A group's settings from the wire: absent ones are the defaults
/// (`consumer_group::DEFAULT_*`), an unknown strategy is refused. The bounds are checked by
/// `validate_settings`.
pub fn group_settings_from_proto(
    settings: Option<proto::GroupSettings>,
) -> Result<GroupSettings, Status> {
    let settings = settings.ok_or_else(|| invalid("settings", "missing"))?;
    let defaults = GroupSettings::default();
    let strategy = strategy_from_proto(settings.strategy.unwrap_or_default())?;
    Ok(GroupSettings {
        source: settings.source,
        start: match settings.start {
            None => GroupStart::Start,
            Some(proto::group_settings::Start::FromEnd(true)) => GroupStart::End,
            Some(proto::group_settings::Start::FromEnd(false)) => GroupStart::Start,
            Some(proto::group_settings::Start::From(key)) => GroupStart::At(key),
        },
        message_timeout_ms: settings
            .message_timeout_ms
            .unwrap_or(defaults.message_timeout_ms),
        max_retries: settings.max_retries.unwrap_or(defaults.max_retries),
        max_in_flight: settings.max_in_flight.unwrap_or(defaults.max_in_flight),
        max_consumers: settings.max_consumers.unwrap_or(defaults.max_consumers),
        checkpoint_interval_ms: settings
            .checkpoint_interval_ms
            .unwrap_or(defaults.checkpoint_interval_ms),
        strategy,
    })
}

/// A `$all` filter in the store's terms (empty parts are absent).
pub fn source_filter(filter: &proto::SubscriptionFilter) -> SourceFilter {
    let part = |s: &String| (!s.is_empty()).then(|| s.clone());
    SourceFilter {
        stream_prefix: part(&filter.stream_prefix),
        event_type_prefix: part(&filter.event_type_prefix),
        event_type_regex: part(&filter.event_type_regex),
    }
}

/// A group strategy from the wire; an unknown value is INVALID_ARGUMENT.
pub fn strategy_from_proto(strategy: i32) -> Result<GroupStrategy, Status> {
    match proto::GroupStrategy::try_from(strategy) {
        Ok(proto::GroupStrategy::RoundRobin) => Ok(GroupStrategy::RoundRobin),
        Ok(proto::GroupStrategy::Ordered) => Ok(GroupStrategy::Ordered),
        Err(_) => Err(invalid(
            "settings.strategy",
            format!("unknown value {strategy}"),
        )),
    }
}

/// An update's settings: the change they make to `current` (the leader's committed state,
/// read only to refuse what cannot change; the change is merged at apply). Each setting
/// given that cannot change and differs is INVALID_ARGUMENT naming it.
pub fn group_change_from_proto(
    settings: Option<proto::GroupSettings>,
    current: &GroupSettings,
    current_filter: Option<&SourceFilter>,
) -> Result<GroupSettingsChange, Status> {
    let settings = settings.ok_or_else(|| invalid("settings", "missing"))?;
    let fixed = |field: &str, why: &str| {
        invalid(
            &format!("settings.{field}"),
            format!("{why} cannot change (delete the group and create it again)"),
        )
    };
    if !settings.source.is_empty() && settings.source != current.source {
        return Err(fixed(
            "source",
            &format!("the group reads {:?}; its source", current.source),
        ));
    }
    if settings.start.is_some() {
        return Err(fixed("start", "a group's place in its source"));
    }
    if let Some(filter) = &settings.filter {
        let given = source_filter(filter);
        if cairn_raft_store::filter::normalized(&given).as_ref() != current_filter {
            return Err(fixed("filter", "a group's filter"));
        }
    }
    if let Some(strategy) = settings.strategy {
        if strategy_from_proto(strategy)? != current.strategy {
            return Err(fixed(
                "strategy",
                "the strategy (events in flight were handed out by the old one, so an \
                 ordered group's order could not be kept across the change)",
            ));
        }
    }
    let change = GroupSettingsChange {
        message_timeout_ms: settings.message_timeout_ms,
        max_retries: settings.max_retries,
        max_in_flight: settings.max_in_flight,
        max_consumers: settings.max_consumers,
        checkpoint_interval_ms: settings.checkpoint_interval_ms,
    };
    if change.is_empty() {
        return Err(invalid(
            "settings",
            "no setting to change (message timeout, max retries, max in flight, max \
             consumers, checkpoint interval)",
        ));
    }
    Ok(change)
}

/// A group's settings and filter on the wire (a stored group's start is always a key).
pub fn group_settings_to_proto(
    settings: &GroupSettings,
    filter: Option<&SourceFilter>,
) -> proto::GroupSettings {
    let part = |p: &Option<String>| p.clone().unwrap_or_default();
    proto::GroupSettings {
        source: settings.source.clone(),
        start: Some(match settings.start {
            GroupStart::At(key) => proto::group_settings::Start::From(key),
            GroupStart::Start => proto::group_settings::Start::From(0),
            GroupStart::End => proto::group_settings::Start::FromEnd(true),
        }),
        message_timeout_ms: Some(settings.message_timeout_ms),
        max_retries: Some(settings.max_retries),
        max_in_flight: Some(settings.max_in_flight),
        max_consumers: Some(settings.max_consumers),
        checkpoint_interval_ms: Some(settings.checkpoint_interval_ms),
        strategy: Some(
            match settings.strategy {
                GroupStrategy::RoundRobin => proto::GroupStrategy::RoundRobin,
                GroupStrategy::Ordered => proto::GroupStrategy::Ordered,
            }
            .into(),
        ),
        filter: filter.map(|f| proto::SubscriptionFilter {
            stream_prefix: part(&f.stream_prefix),
            event_type_prefix: part(&f.event_type_prefix),
            event_type_regex: part(&f.event_type_regex),
        }),
    }
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
                data: vec![1].into(),
                metadata: Default::default(),
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
