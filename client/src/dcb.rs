//! Multi-stream appends and Dynamic Consistency Boundaries (dcb.events): queries of event
//! types and tags, append conditions, and the calls that use them.

use crate::client::Client;
use crate::error::Error;
use crate::event::{EventData, ExpectedRevision};
use crate::proto;
use crate::read::{EventStream, ReadOptions};

/// What errors and the order check call a query read.
const QUERY_READ_LABEL: &str = "$query";

/// One alternative of a [`Query`]: an event matches if its type is one of `types` (or
/// `types` is empty) and it carries every tag of `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryItem {
    pub types: Vec<String>,
    pub tags: Vec<String>,
}

impl QueryItem {
    /// An item of these types (OR'd) and no tag constraint.
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(types: I) -> Self {
        QueryItem {
            types: types.into_iter().map(Into::into).collect(),
            tags: Vec::new(),
        }
    }

    /// Also requires every one of these tags.
    pub fn with_tags<I: IntoIterator<Item = S>, S: Into<String>>(self, tags: I) -> Self {
        QueryItem {
            tags: tags.into_iter().map(Into::into).collect(),
            ..self
        }
    }
}

/// A DCB query: its items OR'd. No items matches every event ([`Query::all`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub items: Vec<QueryItem>,
}

impl Query {
    pub fn all() -> Self {
        Query::default()
    }

    pub fn of(items: Vec<QueryItem>) -> Self {
        Query { items }
    }
}

impl From<&Query> for proto::Query {
    fn from(query: &Query) -> Self {
        proto::Query {
            items: query
                .items
                .iter()
                .map(|item| proto::QueryItem {
                    types: item.types.clone(),
                    tags: item.tags.clone(),
                })
                .collect(),
        }
    }
}

/// Fail the append if an event matching the query is stored after `after` (the position
/// the decision's read ended at), or at all when `after` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCondition {
    pub fail_if_events_match: Query,
    pub after: Option<u64>,
}

/// One stream's part of a multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<EventData>,
}

/// The outcome of a successful multi-stream or DCB append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAppendResult {
    /// Each stream's last revision, in the request's order (`$dcb` for DCB events).
    pub last_revisions: Vec<(String, u64)>,
    /// `$all` position of the last event written: the `after` of the next decision.
    pub last_position: u64,
    /// This was a retry of an append that had already landed; nothing new was written.
    pub already_written: bool,
}

impl Client {
    /// Appends to several streams, and DCB events (`dcb_events`, which name no stream), all
    /// or nothing: every stream's expected revision and the condition must hold. Retried
    /// like [`Client::append`] (the same event ids, so safely). A violated expectation is
    /// [`Error::WrongExpectedVersion`] naming the stream; a failed condition
    /// [`Error::ConditionFailed`] naming the first matching position.
    pub async fn append_multi(
        &self,
        streams: Vec<StreamAppend>,
        dcb_events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<MultiAppendResult, Error> {
        let request = proto::MultiAppendRequest {
            streams: streams
                .into_iter()
                .map(|part| proto::StreamAppend {
                    stream: part.stream,
                    expected: Some(part.expected.into()),
                    events: part.events.into_iter().map(Into::into).collect(),
                })
                .collect(),
            dcb_events: dcb_events.into_iter().map(Into::into).collect(),
            condition: condition.map(|c| proto::AppendCondition {
                fail_if_events_match: Some((&c.fail_if_events_match).into()),
                after: c.after,
            }),
            leader_only: self.leader_only(),
        };
        let response = self
            .send_append("a multi-stream append", request, |mut s, r| async move {
                s.append_multi(r).await
            })
            .await?;
        use proto::multi_append_response::Result as R;
        match response.result {
            Some(R::Success(success)) => {
                self.record_position(success.last_position);
                Ok(MultiAppendResult {
                    last_revisions: success
                        .streams
                        .into_iter()
                        .map(|s| (s.stream, s.last_revision))
                        .collect(),
                    last_position: success.last_position,
                    already_written: success.already_written,
                })
            }
            Some(R::WrongExpectedVersion(wrong)) => Err(Error::WrongExpectedVersion {
                expected: wrong
                    .expected
                    .as_ref()
                    .and_then(ExpectedRevision::from_proto)
                    .unwrap_or(ExpectedRevision::Any),
                stream: wrong.stream,
                actual: wrong.actual_revision,
            }),
            Some(R::ConditionFailed(failed)) => Err(Error::ConditionFailed {
                position: failed.position,
            }),
            None => Err(Error::Internal(
                "multi-stream append: answered without a result".to_owned(),
            )),
        }
    }

    /// A DCB append: `events` (no stream names) if `condition` holds.
    pub async fn dcb_append(
        &self,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<MultiAppendResult, Error> {
        self.append_multi(Vec::new(), events, condition).await
    }

    /// Reads the events matching `query` in `$all` order; `ReadFrom::At` takes a position.
    pub async fn read_query(
        &self,
        query: &Query,
        options: ReadOptions,
    ) -> Result<EventStream, Error> {
        // The same options as any read, on the query's request.
        let read = options.to_request(QUERY_READ_LABEL);
        let request = proto::QueryReadRequest {
            query: Some(query.into()),
            direction: read.direction,
            from: read.from,
            from_end: read.from_end,
            count: read.count,
            consistency: read.consistency,
            min_position: read.min_position,
        };
        self.open_read(QUERY_READ_LABEL, &options, move |mut streams| {
            let request = request.clone();
            async move { streams.read_query(request).await }
        })
        .await
    }
}
