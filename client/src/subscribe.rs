//! Catch-up subscriptions: history, then live events, kept going across server streams and
//! nodes, with the no-gap, no-duplicate guarantee checked on this side too.
//!
//! Longer than ~600 lines on purpose: the options, the resume point and the loop that judges
//! every message against it (`Follow`) are one piece of reasoning (what was delivered, where to
//! resume, what a gap is); split, each half would have to be read with the other open. The
//! retry rules are not here but in `policy.rs`.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream;
use tonic::codec::Streaming;

use crate::client::{streams, Client};
use crate::endpoints::Node;
use crate::error::{classify, Error, Failure};
use crate::event::RecordedEvent;
pub use crate::filter::SubscriptionFilter;
use crate::policy::Retries;
use crate::proto;
use crate::proto::subscribe_response::Message;
use crate::read::{reads_by_position, NodePreference, ReadConsistency, ReadFrom, ALL_STREAM};

/// Consecutive failed attempts to (re)open a subscription before it ends with
/// `Error::Unavailable`. With the retry backoff ([`crate::RETRY_BACKOFF_INITIAL_MS`] doubling
/// up to [`crate::RETRY_BACKOFF_MAX_MS`]) that is about 8 s of trying: enough to ride out a
/// leader election or a node restart. An attempt fails unless the server confirms it and
/// then delivers at least one message.
pub const MAX_RESUBSCRIBE_ATTEMPTS: u32 = 20;

/// How a subscription starts and how it survives failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscribeOptions {
    /// A revision for a stream, a position for `$all`, included. `End`: only events applied
    /// after the subscription starts.
    pub from: ReadFrom,
    /// `$all` only; a stream subscription with a filter is `InvalidArgument`.
    pub filter: Option<SubscriptionFilter>,
    /// Filtered `$all`: a checkpoint every this many scanned events (`None`: the server's
    /// default).
    pub checkpoint_interval: Option<u64>,
    /// `Linearizable` subscribes at the leader, whatever `node_preference` says.
    pub consistency: ReadConsistency,
    /// The serving node first waits (boundedly) until this `$all` position is applied.
    pub min_position: Option<u64>,
    /// Open a new server stream, on another node if there is one, when the current one fails
    /// or ends; `false` ends the subscription with the error instead.
    pub resubscribe: bool,
    pub node_preference: NodePreference,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            from: ReadFrom::Start,
            filter: None,
            checkpoint_interval: None,
            consistency: ReadConsistency::Local,
            min_position: None,
            resubscribe: true,
            node_preference: NodePreference::Any,
        }
    }
}

impl SubscribeOptions {
    pub fn from(self, from: ReadFrom) -> Self {
        SubscribeOptions { from, ..self }
    }

    pub fn filter(self, filter: SubscriptionFilter) -> Self {
        SubscribeOptions {
            filter: Some(filter),
            ..self
        }
    }

    pub fn checkpoint_interval(self, events: u64) -> Self {
        SubscribeOptions {
            checkpoint_interval: Some(events),
            ..self
        }
    }

    pub fn no_resubscribe(self) -> Self {
        SubscribeOptions {
            resubscribe: false,
            ..self
        }
    }

    pub fn prefer(self, node_preference: NodePreference) -> Self {
        SubscribeOptions {
            node_preference,
            ..self
        }
    }

    pub fn min_position(self, position: u64) -> Self {
        SubscribeOptions {
            min_position: Some(position),
            ..self
        }
    }

    pub fn linearizable(self) -> Self {
        SubscribeOptions {
            consistency: ReadConsistency::Linearizable,
            ..self
        }
    }

    /// The wire request of the first attempt on `stream` (a name or [`ALL_STREAM`]).
    pub fn to_request(&self, stream: &str) -> proto::SubscribeRequest {
        Resume::new(stream, self).request(stream, self)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionMessage {
    Event(RecordedEvent),
    /// History is delivered; live events follow. `next` is the next revision (stream) or
    /// position (`$all`). Comes again after every resubscription and every `FellBehind`.
    CaughtUp {
        next: u64,
    },
    /// Live delivery could not keep up; history is read again from `next` until `CaughtUp`.
    FellBehind {
        next: u64,
    },
    /// Filtered `$all`: every event below `next_position` has been scanned. Store it to
    /// resume from there rather than from the last matching event.
    Checkpoint {
        next_position: u64,
    },
}

type Items = Pin<Box<dyn futures_core::Stream<Item = Result<SubscriptionMessage, Error>> + Send>>;

/// A running subscription: a stream of [`SubscriptionMessage`]s. After an error it ends.
/// Holds at most one message beyond tonic's flow-control window: the server waits for a
/// slow consumer (or tells it `FellBehind`).
pub struct Subscription {
    items: Items,
    served_by: Arc<Mutex<Option<u64>>>,
}

impl Subscription {
    /// The id of the node that confirmed the current (or last) server stream.
    pub fn served_by(&self) -> Option<u64> {
        *self
            .served_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("served_by", &self.served_by())
            .finish_non_exhaustive()
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<SubscriptionMessage, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().items.as_mut().poll_next(cx)
    }
}

impl Client {
    /// Follows one stream: its events from `options.from`, then `CaughtUp`, then new events as
    /// they are written. A stream with no events yet is not an error; the subscription waits.
    ///
    /// Returns once a node has confirmed the subscription (opening is retried like a read's,
    /// up to [`MAX_RESUBSCRIBE_ATTEMPTS`]); final errors such as a bad stream name come back
    /// here. Later failures resubscribe where delivery stopped unless `no_resubscribe` is set.
    #[tracing::instrument(level = "debug", skip(self, options))]
    pub async fn subscribe(
        &self,
        stream: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        if stream != ALL_STREAM && options.filter.is_some() {
            return Err(Error::InvalidArgument(format!(
                "filter: only a $all subscription can be filtered, not {stream:?}"
            )));
        }
        let mut follow = Follow::new(self.clone(), stream, options);
        follow.open().await?;
        let served_by = Arc::clone(&follow.served_by);
        let items = stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await?;
            Some((item, follow))
        });
        Ok(Subscription {
            items: Box::pin(items),
            served_by,
        })
    }

    /// Follows `$all`, optionally filtered on the server: [`Client::subscribe`] on
    /// [`ALL_STREAM`]; `options.from` takes a position.
    pub async fn subscribe_all(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        self.subscribe(ALL_STREAM, options).await
    }
}

/// Where delivery stands: what a new server stream must start from.
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// The next revision (stream) or position (`$all`) owed to the consumer; `None` while a
    /// subscription from the end has not learnt where the end is.
    next: Option<u64>,
    /// The highest `$all` position some serving node is known to have applied: a new node
    /// must have applied it too (`min_position`), so the consumer never sees time go back.
    applied: Option<u64>,
    /// A stream subscription or unfiltered `$all`: every revision or position is delivered,
    /// so one beyond `next` is a gap. A filtered `$all` or an index skips positions on purpose.
    dense: bool,
}

impl Resume {
    fn new(stream: &str, options: &SubscribeOptions) -> Resume {
        Resume {
            next: match options.from {
                ReadFrom::Start => Some(0),
                ReadFrom::At(at) => Some(at),
                ReadFrom::End => None,
            },
            applied: None,
            // An index skips the positions of `$all` it does not hold.
            dense: !reads_by_position(stream) || (stream == ALL_STREAM && options.filter.is_none()),
        }
    }

    fn request(&self, stream: &str, options: &SubscribeOptions) -> proto::SubscribeRequest {
        let (from, from_end) = match self.next {
            Some(next) => (next, false),
            None => (0, true),
        };
        proto::SubscribeRequest {
            stream: stream.to_owned(),
            from,
            from_end,
            filter: options.filter.as_ref().map(Into::into),
            checkpoint_interval: options.checkpoint_interval.unwrap_or(0),
            consistency: proto::ReadConsistency::from(options.consistency).into(),
            min_position: options.min_position.max(self.applied),
        }
    }

    fn saw_applied(&mut self, position: u64) {
        self.applied = self.applied.max(Some(position));
    }
}

/// What to do with one message of the server stream.
enum Verdict {
    Deliver(SubscriptionMessage),
    /// Already delivered, or carries nothing for the consumer.
    Skip,
    /// The server stream broke the contract in a way another stream can repair.
    Gap(String),
    Fatal(Error),
}

/// Why a server stream stopped being useful, when another may do better.
struct Loss {
    cause: String,
    /// The leader's endpoint, when a follower named it.
    leader: Option<String>,
    /// What the consumer gets when resubscribing is off.
    error: Error,
}

/// The state of a subscription between messages.
struct Follow {
    client: Client,
    stream: String,
    options: SubscribeOptions,
    resume: Resume,
    /// The open server stream; `None` between a failure and the next attempt.
    messages: Option<Streaming<proto::SubscribeResponse>>,
    /// Events of a batch message not yet judged, one message each (at most one batch: the
    /// server's `MAX_EVENTS_PER_MESSAGE`). Dropped with the stream: the resume point still
    /// covers them.
    unbatched: std::collections::VecDeque<proto::SubscribeResponse>,
    /// The node of the open (or last) server stream.
    node: Option<Arc<Node>>,
    /// The call policy (`policy.rs`): consecutive attempts that delivered nothing, the
    /// backoff, the hinted leader, the nodes avoided since the last delivery, the last cause.
    retries: Retries,
    /// The current server stream has delivered a message after its confirmation.
    delivered: bool,
    served_by: Arc<Mutex<Option<u64>>>,
    done: bool,
}

impl Follow {
    fn new(client: Client, stream: &str, options: SubscribeOptions) -> Follow {
        Follow {
            client,
            stream: stream.to_owned(),
            resume: Resume::new(stream, &options),
            options,
            messages: None,
            unbatched: std::collections::VecDeque::new(),
            node: None,
            retries: Retries::new(MAX_RESUBSCRIBE_ATTEMPTS),
            delivered: false,
            served_by: Arc::new(Mutex::new(None)),
            done: false,
        }
    }

    fn single(&self) -> bool {
        !reads_by_position(&self.stream)
    }

    /// Linearizable subscriptions need the leader; the others go where the caller prefers.
    fn preference(&self) -> NodePreference {
        match self.options.consistency {
            ReadConsistency::Linearizable => NodePreference::Leader,
            ReadConsistency::Local => self.options.node_preference,
        }
    }

    /// Opens a server stream from the resume point, trying nodes until one confirms.
    async fn open(&mut self) -> Result<(), Error> {
        let mut first = self.node.is_none();
        loop {
            if self.retries.exhausted() {
                return Err(self
                    .retries
                    .give_up(&format!("subscription to {:?}", self.stream)));
            }
            if !first {
                self.retries.pause().await;
            }
            first = false;
            let node = match self.retries.take_hinted() {
                Some(node) => node,
                None => {
                    let preference = self.preference();
                    self.client.choose(preference, self.retries.tried()).await
                }
            };
            self.node = Some(Arc::clone(&node));
            let request = self.resume.request(&self.stream, &self.options);
            tracing::debug!(
                stream = %self.stream,
                endpoint = %node.url,
                from = request.from,
                from_end = request.from_end,
                "subscribing"
            );
            match self.attempt(&node, request).await {
                Ok((messages, node_id)) => {
                    *self
                        .served_by
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(node_id);
                    if self.options.consistency == ReadConsistency::Linearizable {
                        // Only the leader serves a linearizable subscription.
                        self.client.endpoints().set_leader(&node);
                    }
                    self.messages = Some(messages);
                    self.unbatched.clear();
                    self.delivered = false;
                    return Ok(());
                }
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Retry { leader, cause }) => self.failed(&node, cause, leader),
            }
        }
    }

    /// One call, bounded by the request timeout up to and including the confirmation.
    async fn attempt(
        &self,
        node: &Arc<Node>,
        request: proto::SubscribeRequest,
    ) -> Result<(Streaming<proto::SubscribeResponse>, u64), Failure> {
        let channel = self.client.endpoints().channel(node);
        // No `grpc-timeout` on the request: it would end the subscription on the server.
        let call = async move {
            let mut messages = streams(channel).subscribe(request).await?.into_inner();
            let first = messages.message().await?;
            Ok::<_, tonic::Status>((messages, first))
        };
        match tokio::time::timeout(self.client.request_timeout(), call).await {
            Err(_elapsed) => Err(Failure::Retry {
                leader: None,
                cause: format!(
                    "no confirmation within {} ms",
                    self.client.request_timeout().as_millis()
                ),
            }),
            Ok(Err(status)) => Err(classify(&status, &self.stream)),
            Ok(Ok((_, None))) => Err(Failure::Retry {
                leader: None,
                cause: "the server ended the subscription before confirming it".to_owned(),
            }),
            Ok(Ok((messages, Some(response)))) => match response.message {
                Some(Message::Confirmation(confirmation)) => Ok((messages, confirmation.node_id)),
                other => Err(Failure::Fatal(Error::Internal(format!(
                    "subscription to {:?}: {} sent {other:?} before a confirmation",
                    self.stream, node.url
                )))),
            },
        }
    }

    /// Bookkeeping after `node` failed: count the attempt if it delivered nothing, and pick
    /// the hinted leader next, or avoid `node` when choosing the next one.
    fn failed(&mut self, node: &Arc<Node>, cause: String, leader: Option<String>) {
        let counts = !self.delivered;
        self.delivered = false;
        self.retries
            .failed(self.client.endpoints(), node, cause, leader, counts);
        tracing::debug!(
            stream = %self.stream,
            cause = %self.retries.last_cause(),
            "subscription attempt failed"
        );
    }

    /// The next item for the consumer: reads the server stream, resubscribing as needed.
    async fn next(&mut self) -> Option<Result<SubscriptionMessage, Error>> {
        loop {
            if self.done {
                return None;
            }
            let Some(messages) = self.messages.as_mut() else {
                if let Err(err) = self.open().await {
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            };
            let received = match self.unbatched.pop_front() {
                Some(response) => Ok(Some(response)),
                None => messages.message().await,
            };
            let loss = match received {
                Ok(Some(proto::SubscribeResponse {
                    message: Some(Message::Events(batch)),
                })) => {
                    self.unbatched.extend(batch.events.into_iter().map(|event| {
                        proto::SubscribeResponse {
                            message: Some(Message::Event(event)),
                        }
                    }));
                    continue;
                }
                Ok(Some(response)) => match self.judge(response) {
                    Verdict::Deliver(message) => {
                        self.delivered = true;
                        self.retries.succeeded();
                        return Some(Ok(message));
                    }
                    Verdict::Skip => continue,
                    Verdict::Gap(cause) => Loss {
                        error: Error::Internal(format!(
                            "subscription to {:?}: {cause}",
                            self.stream
                        )),
                        cause,
                        leader: None,
                    },
                    Verdict::Fatal(err) => return self.end(err),
                },
                Ok(None) => {
                    let cause = "the server ended the subscription".to_owned();
                    Loss {
                        error: Error::Unavailable(cause.clone()),
                        cause,
                        leader: None,
                    }
                }
                Err(status) => match classify(&status, &self.stream) {
                    Failure::Fatal(err) => return self.end(err),
                    Failure::Retry { leader, cause } => Loss {
                        error: Error::Unavailable(cause.clone()),
                        cause,
                        leader,
                    },
                },
            };
            self.messages = None;
            self.unbatched.clear();
            if !self.options.resubscribe {
                return self.end(loss.error);
            }
            let Some(node) = self.node.clone() else {
                // A stream is open only after `open` set its node.
                return self.end(Error::Internal(
                    "subscription lost a stream it never opened".to_owned(),
                ));
            };
            tracing::info!(
                stream = %self.stream,
                endpoint = %node.url,
                cause = %loss.cause,
                next = ?self.resume.next,
                "subscription lost; resubscribing"
            );
            self.failed(&node, loss.cause, loss.leader);
        }
    }

    fn end(&mut self, err: Error) -> Option<Result<SubscriptionMessage, Error>> {
        self.done = true;
        self.messages = None;
        self.unbatched.clear();
        Some(Err(err))
    }

    /// Checks one message against the resume point and moves the point forward.
    fn judge(&mut self, response: proto::SubscribeResponse) -> Verdict {
        let single = self.single();
        let resume = &mut self.resume;
        match response.message {
            Some(Message::Event(event)) => {
                let event = match RecordedEvent::try_from(event) {
                    Ok(event) => event,
                    Err(err) => return Verdict::Fatal(err),
                };
                if single && event.stream != self.stream {
                    return Verdict::Fatal(Error::Internal(format!(
                        "subscription to {:?} delivered an event of {:?}",
                        self.stream, event.stream
                    )));
                }
                let key = if single {
                    event.revision
                } else {
                    event.position
                };
                if let Some(next) = resume.next {
                    if key < next {
                        tracing::debug!(stream = %self.stream, key, next, "duplicate dropped");
                        return Verdict::Skip;
                    }
                    if key > next && resume.dense {
                        tracing::warn!(
                            stream = %self.stream,
                            expected = next,
                            got = key,
                            "gap in a subscription; resubscribing from the expected point"
                        );
                        return Verdict::Gap(format!("expected {next}, got {key}"));
                    }
                }
                resume.next = Some(key.saturating_add(1));
                resume.saw_applied(event.position);
                Verdict::Deliver(SubscriptionMessage::Event(event))
            }
            Some(Message::CaughtUp(caught_up)) => {
                let next = caught_up.next;
                if resume.next.is_none() || !resume.dense {
                    // The end a from-end subscription starts at, or a filtered $all that has
                    // scanned past events it did not deliver.
                    resume.next = resume.next.max(Some(next));
                }
                if !single {
                    if let Some(last) = next.checked_sub(1) {
                        resume.saw_applied(last);
                    }
                }
                Verdict::Deliver(SubscriptionMessage::CaughtUp { next })
            }
            Some(Message::FellBehind(fell_behind)) => {
                let next = fell_behind.next;
                if resume.next.is_none() {
                    resume.next = Some(next);
                }
                Verdict::Deliver(SubscriptionMessage::FellBehind { next })
            }
            // Batches are split into single events before they are judged.
            Some(Message::Events(_)) => Verdict::Fatal(Error::Internal(
                "an event batch reached the judge unsplit".to_owned(),
            )),
            Some(Message::Checkpoint(checkpoint)) => {
                let next_position = checkpoint.next_position;
                if single || resume.next.is_some_and(|next| next_position < next) {
                    // Meaningless on a stream; stale after a resubscription.
                    return Verdict::Skip;
                }
                if !resume.dense {
                    resume.next = resume.next.max(Some(next_position));
                }
                if let Some(last) = next_position.checked_sub(1) {
                    resume.saw_applied(last);
                }
                Verdict::Deliver(SubscriptionMessage::Checkpoint { next_position })
            }
            Some(Message::Skipped(skipped)) => {
                // Hidden by retention on purpose: the next event may come after `next`
                // without a gap alarm. A stale marker (after a resubscription) changes nothing.
                if resume.next.is_none_or(|next| skipped.next > next) {
                    resume.next = Some(skipped.next);
                }
                Verdict::Skip
            }
            Some(Message::Confirmation(confirmation)) => {
                tracing::debug!(
                    node_id = confirmation.node_id,
                    "repeated confirmation ignored"
                );
                Verdict::Skip
            }
            // A kind of message newer than this client: nothing it can act on.
            None => Verdict::Skip,
        }
    }
}
