//! `cairn.v1.Groups`: consumer-group definitions (Raft commands proposed by the leader) and
//! consumers (served by the leader's dispatchers, `crate::groups`). Every call is leader
//! only: another node answers FAILED_PRECONDITION with the leader's address, which the
//! clients follow (consumers need the leader's delivery state; definitions are rare).
//!
//! Who may: `groups` on the group's source (a stream name, `$all` or an index name, as grants
//! name them), for a new group its new source, for a change both; consuming needs `read` on
//! it too (it delivers the source's events). A call naming a group that does not exist is
//! answered NOT_FOUND whoever asks. The list shows the groups the caller may manage.

use std::pin::Pin;
use std::sync::Arc;

use cairn_client::proto;
use cairn_client::proto::consume_request::Message as In;
use cairn_client::proto::groups_server::Groups as GroupsApi;
use cairn_raft_store::consumer_group::{
    parked_stream, validate_filter, validate_name, validate_settings, GroupState, Source,
};
use cairn_raft_store::filter::normalized;
use cairn_raft_store::{Command, GroupCommand, GroupResult, SourceFilter};
use openraft::async_runtime::WatchReceiver;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::convert::{
    group_change_from_proto, group_settings_from_proto, group_settings_to_proto, source_filter,
};
use super::lifecycle::now_unix_ms;
use super::status::{self, invalid, invalid_input};
use super::{not_leader, NodeContext};
use crate::auth::{self, Action};
use crate::error::NodeError;
use crate::groups::{propose_group, Control, GroupStats, Groups};

/// Groups listed by one `ListGroups` call, at most: every group there may be.
pub const MAX_LISTED_GROUPS: usize = cairn_raft_store::consumer_group::MAX_GROUPS;

pub struct GroupsService {
    ctx: Arc<NodeContext>,
    groups: Arc<Groups>,
}

impl GroupsService {
    pub fn new(ctx: Arc<NodeContext>, groups: Arc<Groups>) -> Self {
        GroupsService { ctx, groups }
    }

    fn leader_only(&self) -> Result<(), Status> {
        self.ctx.refuse_unless_member()?;
        if self.ctx.raft.metrics().borrow_watched().current_leader != Some(self.ctx.id) {
            return Err(not_leader(&self.ctx));
        }
        Ok(())
    }

    /// Proposes a group change; NOT_FOUND, ALREADY_EXISTS or INVALID_ARGUMENT when refused.
    async fn change(&self, command: GroupCommand) -> Result<proto::GroupChangeResponse, Status> {
        self.leader_only()?;
        let group = command.group().to_owned();
        match propose_group(&self.ctx, Command::ConsumerGroup(command)).await? {
            GroupResult::Written { revision } => Ok(proto::GroupChangeResponse {
                revision,
                already_written: false,
            }),
            GroupResult::AlreadyWritten { revision } => Ok(proto::GroupChangeResponse {
                revision,
                already_written: true,
            }),
            GroupResult::AlreadyExists => Err(NodeError::GroupExists { group }.into()),
            GroupResult::NotFound => Err(NodeError::GroupNotFound { group }.into()),
            GroupResult::Rejected(invalid) => Err(invalid_input(&invalid)),
            GroupResult::Stale { why } => Err(NodeError::GroupClosed { group, reason: why }.into()),
        }
    }

    /// The caller holds each of `actions` on `source` (`auth::check`).
    fn may(
        &self,
        extensions: &tonic::Extensions,
        actions: &[Action],
        source: &str,
    ) -> Result<(), Status> {
        for &action in actions {
            auth::check(self.ctx.auth.as_deref(), extensions, action, [source])?;
        }
        Ok(())
    }

    /// `may` on the source of `group` as applied here; nothing to check if there is no such
    /// group (the call then answers NOT_FOUND).
    fn may_on_group(
        &self,
        extensions: &tonic::Extensions,
        actions: &[Action],
        group: &str,
    ) -> Result<(), Status> {
        if self.ctx.auth.is_none() {
            return Ok(());
        }
        match self.ctx.reader.consumer_group(group) {
            Ok(Some((state, _))) if !state.deleted => {
                self.may(extensions, actions, &state.settings.source)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(status::status(&e)),
        }
    }

    fn info_of(
        &self,
        group: &str,
        state: &GroupState,
        stats: Option<GroupStats>,
    ) -> Result<proto::GroupInfoResponse, Status> {
        let reader = &self.ctx.reader;
        let source_end = match Source::parse(&state.settings.source) {
            Ok(Source::Stream(stream)) => {
                reader.stream_head(&stream).map(|h| h.map_or(0, |r| r + 1))
            }
            _ => reader.next_position(),
        }
        .map_err(|e| status::status(&e))?;
        let checkpoint = stats
            .as_ref()
            .map_or(&state.checkpoint, |s| &s.checkpoint)
            .clone();
        let done_above: u64 = checkpoint.source.done.iter().map(|(f, t)| t - f).sum();
        let lag = source_end
            .saturating_sub(checkpoint.source.next)
            .saturating_sub(done_above);
        let parked = reader
            .stream_head(&parked_stream(group))
            .map_err(|e| status::status(&e))?
            .map_or(0, |h| h + 1);
        let replay_pending = state.replay_to.saturating_sub(checkpoint.parked.next);
        let consumers = stats
            .as_ref()
            .map(|s| {
                s.consumers
                    .iter()
                    .map(|(id, peer, in_flight, acked)| proto::GroupConsumer {
                        id: *id,
                        peer: peer.clone(),
                        in_flight: *in_flight,
                        acked: *acked,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(proto::GroupInfoResponse {
            group: group.to_owned(),
            settings: Some(group_settings_to_proto(
                &state.settings,
                state.filter.as_ref(),
            )),
            checkpoint: checkpoint.source.next,
            lag,
            in_flight: stats.as_ref().map_or(0, |s| s.in_flight),
            parked,
            replay_pending,
            consumers,
            redeliveries: stats.as_ref().map_or(0, |s| s.redeliveries),
            active: stats.is_some(),
        })
    }
}

fn command_id(id: &str) -> Result<Uuid, Status> {
    if id.is_empty() {
        return Ok(Uuid::now_v7());
    }
    match Uuid::parse_str(id) {
        Ok(id) if !id.is_nil() => Ok(id),
        Ok(_) => Err(invalid("id", "the nil UUID is not an id")),
        Err(e) => Err(invalid("id", format!("not a UUID ({e})"))),
    }
}

/// The filter a request's settings carry, in the store's terms (empty parts absent).
fn wire_filter(settings: &Option<proto::GroupSettings>) -> Option<SourceFilter> {
    settings
        .as_ref()
        .and_then(|s| s.filter.as_ref())
        .map(source_filter)
        .and_then(|f| normalized(&f))
}

fn checked_name(group: &str) -> Result<(), Status> {
    validate_name(group).map_err(|e| invalid_input(&e))
}

type ConsumeStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ConsumeResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl GroupsApi for GroupsService {
    async fn create_group(
        &self,
        request: Request<proto::CreateGroupRequest>,
    ) -> Result<Response<proto::GroupChangeResponse>, Status> {
        let extensions = request.extensions().clone();
        let request = request.into_inner();
        checked_name(&request.group)?;
        let filter = wire_filter(&request.settings);
        let settings = group_settings_from_proto(request.settings)?;
        validate_settings(&settings)
            .and_then(|()| validate_filter(&settings.source, filter.as_ref()))
            .map_err(|e| invalid_input(&e))?;
        // A group is a way to read its source: creating one needs read on it too.
        self.may(
            &extensions,
            &[Action::Groups, Action::Read],
            &settings.source,
        )?;
        let command = GroupCommand::Create {
            group: request.group,
            settings,
            filter,
            id: command_id(&request.id)?,
            created_unix_ms: now_unix_ms(),
        };
        Ok(Response::new(self.change(command).await?))
    }

    async fn update_group(
        &self,
        request: Request<proto::UpdateGroupRequest>,
    ) -> Result<Response<proto::GroupChangeResponse>, Status> {
        self.leader_only()?;
        let extensions = request.extensions().clone();
        let request = request.into_inner();
        checked_name(&request.group)?;
        let current = match self.ctx.reader.consumer_group(&request.group) {
            Ok(Some((state, _))) if !state.deleted => state,
            Ok(_) => {
                return Err(NodeError::GroupNotFound {
                    group: request.group,
                }
                .into())
            }
            Err(e) => return Err(status::status(&e)),
        };
        // An update cannot move a group to another source: `groups` on this one suffices.
        self.may(&extensions, &[Action::Groups], &current.settings.source)?;
        let change =
            group_change_from_proto(request.settings, &current.settings, current.filter.as_ref())?;
        validate_settings(&change.applied_to(&current.settings)).map_err(|e| invalid_input(&e))?;
        let group = request.group.clone();
        let command = GroupCommand::Update {
            group: request.group,
            change,
            id: command_id(&request.id)?,
            created_unix_ms: now_unix_ms(),
        };
        let answer = self.change(command).await?;
        // The running dispatcher takes the committed settings; its consumers stay.
        self.groups.tell(&group, Control::Reload).await;
        Ok(Response::new(answer))
    }

    async fn delete_group(
        &self,
        request: Request<proto::DeleteGroupRequest>,
    ) -> Result<Response<proto::GroupChangeResponse>, Status> {
        let extensions = request.extensions().clone();
        let request = request.into_inner();
        checked_name(&request.group)?;
        self.may_on_group(&extensions, &[Action::Groups], &request.group)?;
        let group = request.group.clone();
        let command = GroupCommand::Delete {
            group: request.group,
            id: command_id(&request.id)?,
            created_unix_ms: now_unix_ms(),
        };
        let answer = self.change(command).await?;
        let gone = NodeError::GroupNotFound {
            group: group.clone(),
        };
        self.groups.tell(&group, Control::Stop(gone.into())).await;
        Ok(Response::new(answer))
    }

    async fn replay_parked(
        &self,
        request: Request<proto::ReplayParkedRequest>,
    ) -> Result<Response<proto::GroupChangeResponse>, Status> {
        let extensions = request.extensions().clone();
        let request = request.into_inner();
        checked_name(&request.group)?;
        self.may_on_group(&extensions, &[Action::Groups], &request.group)?;
        let group = request.group.clone();
        let command = GroupCommand::ReplayParked {
            group: request.group,
            id: command_id(&request.id)?,
            created_unix_ms: now_unix_ms(),
        };
        let answer = self.change(command).await?;
        if let Ok(Some((state, _))) = self.ctx.reader.consumer_group(&group) {
            self.groups
                .tell(&group, Control::ReplayTo(state.replay_to))
                .await;
        }
        Ok(Response::new(answer))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        self.leader_only()?;
        let listed = self
            .ctx
            .reader
            .consumer_groups(MAX_LISTED_GROUPS)
            .map_err(|e| status::status(&e))?;
        let mut groups = Vec::with_capacity(listed.len());
        let shown = listed.into_iter().filter(|(_, state)| {
            auth::permits(
                self.ctx.auth.as_deref(),
                request.extensions(),
                Action::Groups,
                &state.settings.source,
            )
        });
        for (name, state) in shown {
            let stats = self.groups.stats(&name).await;
            groups.push(self.info_of(&name, &state, stats)?);
        }
        Ok(Response::new(proto::ListGroupsResponse { groups }))
    }

    async fn group_info(
        &self,
        request: Request<proto::GroupInfoRequest>,
    ) -> Result<Response<proto::GroupInfoResponse>, Status> {
        self.leader_only()?;
        let extensions = request.extensions().clone();
        let group = request.into_inner().group;
        checked_name(&group)?;
        self.may_on_group(&extensions, &[Action::Groups], &group)?;
        let state = match self.ctx.reader.consumer_group(&group) {
            Ok(Some((state, _))) if !state.deleted => state,
            Ok(_) => return Err(NodeError::GroupNotFound { group }.into()),
            Err(e) => return Err(status::status(&e)),
        };
        let stats = self.groups.stats(&group).await;
        Ok(Response::new(self.info_of(&group, &state, stats)?))
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<Streaming<proto::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        self.leader_only()?;
        let peer = request
            .remote_addr()
            .map_or_else(String::new, |a| a.to_string());
        let extensions = request.extensions().clone();
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| invalid("start", "the call ended before its first message"))?;
        let Some(In::Start(start)) = first.message else {
            return Err(invalid("start", "the first message must be `start`"));
        };
        checked_name(&start.group)?;
        self.may_on_group(&extensions, &[Action::Groups, Action::Read], &start.group)?;
        let joined = self.groups.join(&start.group, peer).await?;
        let consumer = joined.consumer;
        let control = joined.control;
        tokio::spawn(async move {
            // The consumer's acks and nacks, until its call ends (or the connection drops:
            // a killed consumer's events go back at once, not after their timeout).
            while let Ok(Some(message)) = inbound.message().await {
                let control_message = match message.message {
                    Some(In::Ack(acks)) => Control::Ack {
                        consumer,
                        ids: acks.ids,
                    },
                    Some(In::Nack(nacks)) => match proto::NackAction::try_from(nacks.action) {
                        Ok(action) => Control::Nack {
                            consumer,
                            ids: nacks.ids,
                            action,
                            reason: nacks.reason,
                        },
                        // Bad input changes nothing: each event stays in flight.
                        Err(_) => Control::Reject {
                            consumer,
                            ids: nacks.ids,
                            reason: format!(
                                "nack action {} is unknown (retry, park or skip); nothing changed",
                                nacks.action
                            ),
                        },
                    },
                    Some(In::Start(_)) | None => continue,
                };
                if control.send(control_message).await.is_err() {
                    return;
                }
            }
            let _ = control.send(Control::Leave { consumer }).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(joined.out))))
    }
}
