//! Consumer groups: definitions (create, update, delete, list, info, replay parked) and
//! consumers. Every call goes to the leader, which serves groups; a follower's answer names
//! it and the call follows (the append's retry rules). A consumer whose connection breaks, or
//! whose leader changes, connects again by itself: events it had not acknowledged are
//! delivered again (to it or to another consumer), so handling must be idempotent (at least
//! once).

use std::time::Duration;

use crate::credentials::AuthChannel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status};
use uuid::Uuid;

use super::{CallKind, Client, MAX_MESSAGE_BYTES};
use crate::error::{classify, Error, Failure};
use crate::event::RecordedEvent;
use crate::filter::SubscriptionFilter;
use crate::proto;
use crate::proto::groups_client::GroupsClient;
use crate::read::NodePreference;

/// Acks and nacks queued for the connection before `ack` waits.
pub const CONSUMER_OUTBOUND_MESSAGES: usize = 256;
/// How long `Consumer::close` waits for the server to take the last acks.
pub const CONSUMER_CLOSE_TIMEOUT_MS: u64 = 2_000;
/// Connection attempts of a consumer after its connection broke, before `next` gives up.
pub const CONSUMER_RECONNECT_ATTEMPTS: u32 = 40;

/// How a group hands out its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStrategy {
    /// Any consumer gets any event.
    #[default]
    RoundRobin,
    /// Never two events of one stream in flight at once; each stream's events in order.
    Ordered,
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    #[default]
    Start,
    End,
    /// A revision (stream source) or position (`$all`, an index).
    At(u64),
}

/// A group's settings; `None` (or the defaults) leaves a setting to the server's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSettings {
    /// A stream, `$all`, `$ce-…`, `$et-…` or `$tag-…`.
    pub source: String,
    pub start: GroupStart,
    pub message_timeout_ms: Option<u64>,
    pub max_retries: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub max_consumers: Option<u32>,
    pub checkpoint_interval_ms: Option<u64>,
    pub strategy: GroupStrategy,
    /// `$all` only: the events the group delivers, as a filtered `$all` subscription
    /// would; `$` streams only if `stream_prefix` starts with `$`. Fixed at create.
    pub filter: Option<SubscriptionFilter>,
}

impl GroupSettings {
    /// Defaults on `source`.
    pub fn on(source: &str) -> GroupSettings {
        GroupSettings {
            source: source.to_owned(),
            ..GroupSettings::default()
        }
    }

    fn to_proto(&self) -> proto::GroupSettings {
        proto::GroupSettings {
            source: self.source.clone(),
            start: match self.start {
                GroupStart::Start => None,
                GroupStart::End => Some(proto::group_settings::Start::FromEnd(true)),
                GroupStart::At(key) => Some(proto::group_settings::Start::From(key)),
            },
            message_timeout_ms: self.message_timeout_ms,
            max_retries: self.max_retries,
            max_in_flight: self.max_in_flight,
            max_consumers: self.max_consumers,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            strategy: Some(strategy_to_proto(self.strategy)),
            filter: self.filter.as_ref().map(Into::into),
        }
    }
}

fn strategy_to_proto(strategy: GroupStrategy) -> i32 {
    match strategy {
        GroupStrategy::RoundRobin => proto::GroupStrategy::RoundRobin,
        GroupStrategy::Ordered => proto::GroupStrategy::Ordered,
    }
    .into()
}

/// The settings [`Client::update_group`] changes (`None`: as it is). The leader's running
/// dispatcher takes them at once. The strategy cannot change: one given that is not the
/// group's own is refused (`Error::InvalidArgument`), as the source, filter and start are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupUpdate {
    pub message_timeout_ms: Option<u64>,
    pub max_retries: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub max_consumers: Option<u32>,
    pub checkpoint_interval_ms: Option<u64>,
    pub strategy: Option<GroupStrategy>,
}

impl GroupUpdate {
    fn to_proto(&self) -> proto::GroupSettings {
        proto::GroupSettings {
            source: String::new(),
            start: None,
            message_timeout_ms: self.message_timeout_ms,
            max_retries: self.max_retries,
            max_in_flight: self.max_in_flight,
            max_consumers: self.max_consumers,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            strategy: self.strategy.map(strategy_to_proto),
            filter: None,
        }
    }
}

/// What to do with an event a consumer could not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver it again (past the group's max retries it is parked).
    Retry,
    /// Record it in the group's parked stream (`$parked-<group>`) now.
    Park,
    /// Count it as done.
    Skip,
}

/// An event delivered to a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    pub event: RecordedEvent,
    /// Deliveries before this one (0: the first).
    pub retry_count: u32,
}

/// What a consumer receives.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsumerMessage {
    Event(GroupEvent),
    /// An ack or nack of an event not in flight to this consumer (unknown, already
    /// acknowledged, or timed out); nothing changed.
    Rejected {
        id: String,
        reason: String,
    },
}

fn groups(channel: AuthChannel) -> GroupsClient<AuthChannel> {
    GroupsClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A group call's final answers, in the group's terms.
fn group_error(status: &Status, group: &str) -> Option<Error> {
    match status.code() {
        Code::NotFound => Some(Error::GroupNotFound {
            group: group.to_owned(),
        }),
        Code::AlreadyExists => Some(Error::GroupExists {
            group: group.to_owned(),
        }),
        Code::ResourceExhausted => Some(Error::GroupFull(status.message().to_owned())),
        _ => None,
    }
}

impl Client {
    /// Runs one leader-only group call with the append's retry rules.
    async fn group_call<T, F, Fut>(&self, what: &str, group: &str, call: F) -> Result<T, Error>
    where
        F: Fn(GroupsClient<AuthChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = self.inner.endpoints.leader_or_first();
        let (answer, node) = self
            .with_retries(
                what,
                group,
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| {
                    let sent = call(groups(channel));
                    async move {
                        match sent.await {
                            Ok(response) => Ok(Ok(response.into_inner())),
                            Err(status) => match group_error(&status, group) {
                                Some(error) => Ok(Err(error)),
                                None => Err(status),
                            },
                        }
                    }
                },
            )
            .await?;
        self.inner.endpoints.set_leader(&node);
        answer
    }

    /// Creates a consumer group. `Error::GroupExists` if it exists; bad settings are
    /// `Error::InvalidArgument`. Safe to retry (the request carries an id).
    pub async fn create_group(
        &self,
        group: &str,
        settings: &GroupSettings,
    ) -> Result<proto::GroupChangeResponse, Error> {
        self.create_group_with_id(group, settings, Uuid::now_v7())
            .await
    }

    /// [`Client::create_group`] with the request's id chosen by the caller: the same id again
    /// is a retry of the same create (answered `already_written`).
    pub async fn create_group_with_id(
        &self,
        group: &str,
        settings: &GroupSettings,
        id: Uuid,
    ) -> Result<proto::GroupChangeResponse, Error> {
        let request = proto::CreateGroupRequest {
            group: group.to_owned(),
            settings: Some(settings.to_proto()),
            id: id.to_string(),
        };
        self.group_call("create group", group, |mut c| {
            let request = request.clone();
            async move { c.create_group(request).await }
        })
        .await
    }

    /// Changes the settings `update` gives, through Raft; the leader's dispatcher takes them
    /// at once and its consumers stay connected. Nothing to change, a bad value or a setting
    /// that cannot change is `Error::InvalidArgument` (nothing changed).
    pub async fn update_group(
        &self,
        group: &str,
        update: &GroupUpdate,
    ) -> Result<proto::GroupChangeResponse, Error> {
        let request = proto::UpdateGroupRequest {
            group: group.to_owned(),
            settings: Some(update.to_proto()),
            id: Uuid::now_v7().to_string(),
        };
        self.group_call("update group", group, |mut c| {
            let request = request.clone();
            async move { c.update_group(request).await }
        })
        .await
    }

    /// Deletes a group; its consumers' calls end with `Error::GroupNotFound`.
    pub async fn delete_group(&self, group: &str) -> Result<proto::GroupChangeResponse, Error> {
        let request = proto::DeleteGroupRequest {
            group: group.to_owned(),
            id: Uuid::now_v7().to_string(),
        };
        self.group_call("delete group", group, |mut c| {
            let request = request.clone();
            async move { c.delete_group(request).await }
        })
        .await
    }

    /// Delivers every event parked so far once more.
    pub async fn replay_parked(&self, group: &str) -> Result<proto::GroupChangeResponse, Error> {
        let request = proto::ReplayParkedRequest {
            group: group.to_owned(),
            id: Uuid::now_v7().to_string(),
        };
        self.group_call("replay parked", group, |mut c| {
            let request = request.clone();
            async move { c.replay_parked(request).await }
        })
        .await
    }

    /// Every group, with its figures.
    pub async fn list_groups(&self) -> Result<Vec<proto::GroupInfoResponse>, Error> {
        let response = self
            .group_call("list groups", "", |mut c| async move {
                c.list_groups(proto::ListGroupsRequest {}).await
            })
            .await?;
        Ok(response.groups)
    }

    /// One group's settings, checkpoint, lag, in flight, parked and consumers.
    pub async fn group_info(&self, group: &str) -> Result<proto::GroupInfoResponse, Error> {
        let request = proto::GroupInfoRequest {
            group: group.to_owned(),
        };
        self.group_call("group info", group, |mut c| {
            let request = request.clone();
            async move { c.group_info(request).await }
        })
        .await
    }

    /// Joins `group` as a consumer (at the leader).
    pub async fn consume(&self, group: &str) -> Result<Consumer, Error> {
        let connection = self.open_consumer(group).await?;
        Ok(Consumer {
            client: self.clone(),
            group: group.to_owned(),
            connection: Some(connection),
        })
    }

    async fn open_consumer(&self, group: &str) -> Result<Connection, Error> {
        let start = self.inner.endpoints.leader_or_first();
        let (opened, node) = self
            .with_retries(
                "consume",
                group,
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| async move {
                    let (tx, rx) = mpsc::channel(CONSUMER_OUTBOUND_MESSAGES);
                    let begin = proto::ConsumeRequest {
                        message: Some(proto::consume_request::Message::Start(
                            proto::ConsumeStart {
                                group: group.to_owned(),
                            },
                        )),
                    };
                    // The channel is new and holds nothing: this cannot fail.
                    let _ = tx.try_send(begin);
                    let mut client = groups(channel);
                    let call = client.consume(Request::new(ReceiverStream::new(rx)));
                    let mut inbound = match call.await {
                        Ok(response) => response.into_inner(),
                        Err(status) => {
                            return match group_error(&status, group) {
                                Some(error) => Ok(Err(error)),
                                None => Err(status),
                            }
                        }
                    };
                    match inbound.message().await {
                        Ok(Some(proto::ConsumeResponse {
                            message: Some(proto::consume_response::Message::Started(started)),
                        })) => Ok(Ok(Connection {
                            outbound: tx,
                            inbound,
                            consumer_id: started.consumer_id,
                            max_in_flight: started.max_in_flight,
                        })),
                        Ok(_) => Ok(Err(Error::Internal(
                            "consume: the server's first message was not `started`".into(),
                        ))),
                        Err(status) => match group_error(&status, group) {
                            Some(error) => Ok(Err(error)),
                            None => Err(status),
                        },
                    }
                },
            )
            .await?;
        self.inner.endpoints.set_leader(&node);
        opened
    }
}

struct Connection {
    outbound: mpsc::Sender<proto::ConsumeRequest>,
    inbound: tonic::Streaming<proto::ConsumeResponse>,
    consumer_id: u64,
    max_in_flight: u32,
}

/// One consumer of a group. Acknowledge each event (or nack it) once handled.
pub struct Consumer {
    client: Client,
    group: String,
    connection: Option<Connection>,
}

impl Consumer {
    /// The server's id for this consumer's current connection.
    pub fn consumer_id(&self) -> Option<u64> {
        self.connection.as_ref().map(|c| c.consumer_id)
    }

    /// The group's window: events in flight to this consumer at most.
    pub fn max_in_flight(&self) -> Option<u32> {
        self.connection.as_ref().map(|c| c.max_in_flight)
    }

    /// The next delivery or rejection. A broken connection (a node gone, a leader change)
    /// is opened again, at the leader, up to `CONSUMER_RECONNECT_ATTEMPTS` times; the group
    /// deleted is `Error::GroupNotFound`.
    pub async fn next(&mut self) -> Result<ConsumerMessage, Error> {
        let mut attempts = 0;
        loop {
            let Some(connection) = self.connection.as_mut() else {
                attempts += 1;
                match self.client.open_consumer(&self.group).await {
                    Ok(connection) => self.connection = Some(connection),
                    Err(Error::Unavailable(cause)) if attempts < CONSUMER_RECONNECT_ATTEMPTS => {
                        tracing::debug!(group = %self.group, %cause, "consumer: reconnecting");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => return Err(error),
                }
                continue;
            };
            let failure = match connection.inbound.message().await {
                Ok(Some(message)) => match message.message {
                    Some(proto::consume_response::Message::Event(delivery)) => {
                        let event = delivery
                            .event
                            .ok_or_else(|| Error::Internal("delivery without an event".into()))?;
                        return Ok(ConsumerMessage::Event(GroupEvent {
                            event: RecordedEvent::try_from(event)?,
                            retry_count: delivery.retry_count,
                        }));
                    }
                    Some(proto::consume_response::Message::Rejected(rejected)) => {
                        return Ok(ConsumerMessage::Rejected {
                            id: rejected.id,
                            reason: rejected.reason,
                        });
                    }
                    Some(proto::consume_response::Message::Started(_)) | None => continue,
                },
                Ok(None) => Status::unavailable("the server ended the call"),
                Err(status) => status,
            };
            self.connection = None;
            if let Some(error) = group_error(&failure, &self.group) {
                return Err(error);
            }
            match classify(&failure, &self.group) {
                Failure::Fatal(error) => return Err(error),
                Failure::Retry { leader, cause } => {
                    tracing::debug!(group = %self.group, %cause, "consumer: connection lost");
                    if let Some(leader) = leader {
                        self.client.inner.endpoints.follow_hint(&leader);
                    }
                }
            }
        }
    }

    /// Acknowledges events by id. Ids of a connection that broke since are not sent: those
    /// events will be delivered again.
    pub async fn ack(&self, ids: &[uuid::Uuid]) -> Result<(), Error> {
        self.send(proto::consume_request::Message::Ack(proto::Acks {
            ids: ids.iter().map(|id| id.to_string()).collect(),
        }))
        .await
    }

    /// Nacks events by id: retry, park or skip.
    pub async fn nack(
        &self,
        ids: &[uuid::Uuid],
        action: NackAction,
        reason: &str,
    ) -> Result<(), Error> {
        self.send(proto::consume_request::Message::Nack(proto::Nacks {
            ids: ids.iter().map(|id| id.to_string()).collect(),
            action: match action {
                NackAction::Retry => proto::NackAction::Retry,
                NackAction::Park => proto::NackAction::Park,
                NackAction::Skip => proto::NackAction::Skip,
            }
            .into(),
            reason: reason.to_owned(),
        }))
        .await
    }

    /// Ends the consumer: the acks sent so far reach the server first (it ends the call
    /// once it has read them all, within `CONSUMER_CLOSE_TIMEOUT_MS`); events still in flight
    /// go to other consumers.
    pub async fn close(mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        drop(connection.outbound);
        let drain = async { while let Ok(Some(_)) = connection.inbound.message().await {} };
        let _ = tokio::time::timeout(Duration::from_millis(CONSUMER_CLOSE_TIMEOUT_MS), drain).await;
    }

    async fn send(&self, message: proto::consume_request::Message) -> Result<(), Error> {
        let Some(connection) = self.connection.as_ref() else {
            return Err(Error::Unavailable(
                "the consumer's connection broke: the events will be delivered again".into(),
            ));
        };
        connection
            .outbound
            .send(proto::ConsumeRequest {
                message: Some(message),
            })
            .await
            .map_err(|_| {
                Error::Unavailable(
                    "the consumer's connection broke: the events will be delivered again".into(),
                )
            })
    }
}
