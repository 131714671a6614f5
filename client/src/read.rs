//! Read options, and the stream of events a read yields.

use std::pin::Pin;
use std::time::Duration;

use futures_util::stream;
use tonic::codec::Streaming;

use crate::error::{status_to_error, Error};
use crate::event::RecordedEvent;
use crate::proto;

/// The name that reads the global log instead of one stream.
pub const ALL_STREAM: &str = "$all";

/// Whether `name` is read and followed by `$all` position rather than by a stream's
/// revision: `$all` and the indexes (`$ce-<category>`, `$et-<event type>`, `$tag-<tag>`),
/// whose events come in `$all` order from many streams. No stream's name starts with `$`.
pub fn reads_by_position(name: &str) -> bool {
    name.starts_with('$')
}

/// Events as a read yields them. After the first error the stream ends.
pub type EventStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<RecordedEvent, Error>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    Forwards,
    Backwards,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadFrom {
    #[default]
    Start,
    /// A revision when reading a stream, a position when reading `$all`; included.
    At(u64),
    /// The last event (meaningful backwards).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadConsistency {
    /// Any node, from its applied state; may lag the leader unless `min_position` is set.
    #[default]
    Local,
    /// Through the leader, after it confirms it still leads.
    Linearizable,
}

/// Which node a read or a subscription goes to. Spreads load; it never changes what a read
/// returns (a linearizable read goes to the leader whatever the preference says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodePreference {
    /// The known leader (asked of the cluster with a status call if none is known): the
    /// freshest data, at the cost of loading the node that also does every append.
    Leader,
    /// A node that is not the known leader, to keep read load off it. Falls back to any node
    /// when every endpoint is the leader or unreachable.
    Follower,
    /// The first endpoint, or the one after the last that failed: the caller orders the list.
    #[default]
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadOptions {
    pub direction: Direction,
    pub from: ReadFrom,
    /// Most events to return; `None` is no limit.
    pub max_count: Option<u64>,
    pub consistency: ReadConsistency,
    /// A local read first waits (boundedly, on the server) until this `$all` position is
    /// applied: pass [`crate::Client::last_position`] to read your own writes on a follower.
    pub min_position: Option<u64>,
    /// Where a `Local` read starts; ignored by a `Linearizable` one.
    pub node_preference: NodePreference,
}

impl ReadOptions {
    /// From the start, forwards.
    pub fn forwards() -> Self {
        ReadOptions::default()
    }

    /// From the end, backwards.
    pub fn backwards() -> Self {
        ReadOptions {
            direction: Direction::Backwards,
            from: ReadFrom::End,
            ..ReadOptions::default()
        }
    }

    pub fn from(self, from: ReadFrom) -> Self {
        ReadOptions { from, ..self }
    }

    pub fn max_count(self, max_count: u64) -> Self {
        ReadOptions {
            max_count: Some(max_count),
            ..self
        }
    }

    pub fn linearizable(self) -> Self {
        ReadOptions {
            consistency: ReadConsistency::Linearizable,
            ..self
        }
    }

    pub fn min_position(self, position: u64) -> Self {
        ReadOptions {
            min_position: Some(position),
            ..self
        }
    }

    pub fn prefer(self, node_preference: NodePreference) -> Self {
        ReadOptions {
            node_preference,
            ..self
        }
    }

    /// The wire request for `stream` (a stream name or [`ALL_STREAM`]).
    pub fn to_request(&self, stream: &str) -> proto::ReadRequest {
        let (from, from_end) = match self.from {
            ReadFrom::Start => (0, false),
            ReadFrom::At(at) => (at, false),
            ReadFrom::End => (0, true),
        };
        proto::ReadRequest {
            stream: stream.to_owned(),
            direction: proto::Direction::from(self.direction).into(),
            from,
            from_end,
            count: self.max_count.unwrap_or(0),
            consistency: proto::ReadConsistency::from(self.consistency).into(),
            min_position: self.min_position,
        }
    }
}

impl From<Direction> for proto::Direction {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Forwards => proto::Direction::Forwards,
            Direction::Backwards => proto::Direction::Backwards,
        }
    }
}

impl From<proto::Direction> for Direction {
    fn from(direction: proto::Direction) -> Self {
        match direction {
            proto::Direction::Forwards => Direction::Forwards,
            proto::Direction::Backwards => Direction::Backwards,
        }
    }
}

impl From<ReadConsistency> for proto::ReadConsistency {
    fn from(consistency: ReadConsistency) -> Self {
        match consistency {
            ReadConsistency::Local => proto::ReadConsistency::Local,
            ReadConsistency::Linearizable => proto::ReadConsistency::Linearizable,
        }
    }
}

impl From<proto::ReadConsistency> for ReadConsistency {
    fn from(consistency: proto::ReadConsistency) -> Self {
        match consistency {
            proto::ReadConsistency::Local => ReadConsistency::Local,
            proto::ReadConsistency::Linearizable => ReadConsistency::Linearizable,
        }
    }
}

/// What a read has yielded so far, to check the server's answer as it arrives.
struct Order {
    stream: String,
    direction: Direction,
    last: Option<(u64, u64)>,
}

impl Order {
    /// Positions move strictly in the read's direction, and a single stream's revisions are
    /// gapless; anything else is a server bug, reported rather than passed on.
    fn check(&mut self, event: &RecordedEvent) -> Result<(), Error> {
        let single = !reads_by_position(&self.stream);
        if single && event.stream != self.stream {
            return Err(Error::Internal(format!(
                "read of {:?} returned an event of {:?}",
                self.stream, event.stream
            )));
        }
        if let Some((revision, position)) = self.last {
            let (position_ok, revision_ok) = match self.direction {
                Direction::Forwards => (
                    event.position > position,
                    revision.checked_add(1) == Some(event.revision),
                ),
                Direction::Backwards => (
                    event.position < position,
                    revision.checked_sub(1) == Some(event.revision),
                ),
            };
            if !position_ok || (single && !revision_ok) {
                return Err(Error::Internal(format!(
                    "read of {:?} out of order: revision {revision} position {position} then \
                     revision {} position {}",
                    self.stream, event.revision, event.position
                )));
            }
        }
        self.last = Some((event.revision, event.position));
        Ok(())
    }
}

struct ReadState {
    /// `None` once the stream has ended or failed.
    messages: Option<Streaming<proto::ReadResponse>>,
    /// The first response, fetched while the call could still be retried.
    first: Option<proto::ReadResponse>,
    order: Order,
    idle_timeout: Duration,
}

/// Turns an opened read into an [`EventStream`]. `first` is the response already received
/// (`None` if the server ended the stream without events).
pub(crate) fn event_stream(
    messages: Streaming<proto::ReadResponse>,
    first: Option<proto::ReadResponse>,
    stream_name: &str,
    direction: Direction,
    idle_timeout: Duration,
) -> EventStream {
    let state = ReadState {
        messages: first.is_some().then_some(messages),
        first,
        order: Order {
            stream: stream_name.to_owned(),
            direction,
            last: None,
        },
        idle_timeout,
    };
    Box::pin(stream::unfold(state, |mut state| async move {
        let messages = state.messages.as_mut()?;
        let next = match state.first.take() {
            Some(response) => Ok(Ok(Some(response))),
            // A server that stops sending mid-read would otherwise hang the caller forever.
            None => tokio::time::timeout(state.idle_timeout, messages.message()).await,
        };
        let item = match next {
            Ok(Ok(Some(response))) => to_event(response, &mut state.order),
            Ok(Ok(None)) => return None,
            Ok(Err(status)) => Err(status_to_error(&status, &state.order.stream)),
            Err(_elapsed) => Err(Error::Unavailable(format!(
                "read of {:?}: no message within {} ms",
                state.order.stream,
                state.idle_timeout.as_millis()
            ))),
        };
        if item.is_err() {
            state.messages = None;
        }
        Some((item, state))
    }))
}

fn to_event(response: proto::ReadResponse, order: &mut Order) -> Result<RecordedEvent, Error> {
    let event = response
        .event
        .ok_or_else(|| Error::Internal("read response without an event".to_owned()))?;
    let event = RecordedEvent::try_from(event)?;
    order.check(&event)?;
    Ok(event)
}
