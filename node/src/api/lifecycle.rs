//! Stream lifecycle on the API: metadata get and set, soft delete and tombstone.
//!
//! Changes are Raft commands (`Command::SetStreamMetadata`, `Command::DeleteStream`) proposed
//! by the leader one entry each (they are rare; group commit is for appends), with the same
//! forwarding, proposal gate and deadline as an append. A retry is recognised by the change's
//! id, which the client makes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_client::proto;
use cairn_client::proto::streams_client::StreamsClient;
use cairn_raft_store::lifecycle::validate_metadata;
use cairn_raft_store::limits::validate_stream_name;
use cairn_raft_store::{
    AppendResult, Command, DeleteKind, DeleteStream, EventReader, ExpectedRevision,
    SetStreamMetadata, StreamMetadata, StreamStatus,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use tonic::Status;
use uuid::Uuid;

use super::convert;
use super::deadlines::APPEND_TIMEOUT_MS;
use super::group_commit::GroupError;
use super::status::{self, invalid, invalid_input};
use super::{not_leader, NodeContext, MAX_CLIENT_MESSAGE_BYTES};
use crate::error::NodeError;

/// A lifecycle change, as the leader will propose it.
pub enum Change {
    SetMetadata(proto::SetStreamMetadataRequest),
    Delete(proto::DeleteStreamRequest),
}

impl Change {
    fn stream(&self) -> &str {
        match self {
            Change::SetMetadata(r) => &r.stream,
            Change::Delete(r) => &r.stream,
        }
    }

    fn leader_only(&self) -> bool {
        match self {
            Change::SetMetadata(r) => r.leader_only,
            Change::Delete(r) => r.leader_only,
        }
    }

    /// The command, validated as apply will validate it (bad input never reaches Raft).
    fn command(&self, created_unix_ms: u64) -> Result<(Command, ExpectedRevision), Status> {
        validate_stream_name(self.stream()).map_err(|e| invalid_input(&e))?;
        let id = |text: &str| match Uuid::parse_str(text) {
            Ok(id) if !id.is_nil() => Ok(id),
            Ok(_) => Err(invalid("id", "the nil UUID is not an id")),
            Err(e) => Err(invalid("id", format!("not a UUID ({e})"))),
        };
        Ok(match self {
            Change::SetMetadata(r) => {
                let expected = convert::expected_from_proto(r.expected.as_ref())?;
                let metadata = metadata_from_proto(r.metadata.clone().unwrap_or_default());
                validate_metadata(&metadata).map_err(|e| invalid_input(&e))?;
                let command = Command::SetStreamMetadata(SetStreamMetadata {
                    stream: r.stream.clone(),
                    expected,
                    metadata,
                    id: id(&r.id)?,
                    created_unix_ms,
                });
                (command, expected)
            }
            Change::Delete(r) => {
                let expected = convert::expected_from_proto(r.expected.as_ref())?;
                let command = Command::DeleteStream(DeleteStream {
                    stream: r.stream.clone(),
                    expected,
                    kind: if r.tombstone {
                        DeleteKind::Tombstone
                    } else {
                        DeleteKind::Soft
                    },
                    id: id(&r.id)?,
                    created_unix_ms,
                });
                (command, expected)
            }
        })
    }
}

fn metadata_from_proto(metadata: proto::StreamMetadata) -> StreamMetadata {
    StreamMetadata {
        max_count: metadata.max_count,
        max_age_secs: metadata.max_age_seconds,
        truncate_before: metadata.truncate_before,
        custom: metadata.custom_json,
    }
}

fn metadata_to_proto(metadata: StreamMetadata) -> proto::StreamMetadata {
    proto::StreamMetadata {
        max_count: metadata.max_count,
        max_age_seconds: metadata.max_age_secs,
        truncate_before: metadata.truncate_before,
        custom_json: metadata.custom,
    }
}

/// The stream's metadata from this node's applied state.
pub fn metadata(
    reader: &EventReader,
    stream: &str,
) -> Result<proto::GetStreamMetadataResponse, Status> {
    validate_stream_name(stream).map_err(|e| invalid_input(&e))?;
    let stored = reader
        .stream_lifecycle(stream)
        .map_err(|e| status::status(&e))?;
    let status = reader
        .stream_status(stream)
        .map_err(|e| status::status(&e))?;
    let (state, revision) = match stored {
        Some((state, revision)) => (state, Some(revision)),
        None => (Default::default(), None),
    };
    Ok(proto::GetStreamMetadataResponse {
        metadata: Some(metadata_to_proto(state.metadata())),
        revision,
        deleted: state.deleted_before.is_some() && status == StreamStatus::NotFound,
        tombstoned: status == StreamStatus::Tombstoned,
    })
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A change, on the node that received it: validated here, proposed by the leader.
pub async fn answer(ctx: &NodeContext, change: Change) -> Result<proto::AppendResponse, Status> {
    ctx.refuse_unless_member()?;
    let (command, expected) = change.command(now_unix_ms())?;
    let stream = change.stream().to_owned();
    let leader = ctx.raft.metrics().borrow_watched().current_leader;
    if leader != Some(ctx.id) {
        return if change.leader_only() {
            Err(not_leader(ctx))
        } else {
            forward(ctx, change).await
        };
    }
    match propose(ctx, command).await?.1 {
        cairn_raft_store::Response::Append(result) => answer_of(result, expected, stream),
        _ => Err(status::status(&GroupError::NoResult)),
    }
}

/// Proposes one command on the leader, one entry of its own (lifecycle changes, scavenge
/// steps), through the proposal gate and within the append deadline; its log index and
/// the state machine's response.
pub async fn propose(
    ctx: &NodeContext,
    command: Command,
) -> Result<(u64, cairn_raft_store::Response), Status> {
    let _in_flight = ctx.gate.enter().await?;
    let write = ctx.raft.client_write(command);
    let written = match tokio::time::timeout(Duration::from_millis(APPEND_TIMEOUT_MS), write).await
    {
        Ok(Ok(written)) => written,
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            return Err(not_leader(ctx))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            return Err(status::status(&GroupError::Membership(e)))
        }
        // Proposed, then truncated or purged by a new leader: committed or not, unknown; the
        // caller's retry with the same id settles it (as in group commit).
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
            return Err(status::status(&GroupError::Unanswered))
        }
        // These commands carry no Raft precondition.
        Ok(Err(RaftError::APIError(ClientWriteError::PreconditionFailed(e)))) => {
            return Err(status::status(&GroupError::Unexpected(e.to_string())))
        }
        Ok(Err(RaftError::Fatal(e))) => return Err(status::status(&e)),
        Err(_) => {
            return Err(NodeError::AppendTimedOut {
                timeout_ms: APPEND_TIMEOUT_MS,
            }
            .into())
        }
    };
    Ok((written.log_id.index, written.data))
}

/// The state machine's verdict as the API's answer.
pub fn answer_of(
    result: AppendResult,
    expected: ExpectedRevision,
    stream: String,
) -> Result<proto::AppendResponse, Status> {
    match result {
        AppendResult::Written(position) => Ok(convert::success(position, false)),
        AppendResult::AlreadyWritten(position) => Ok(convert::success(position, true)),
        AppendResult::WrongExpectedVersion { actual, .. } => {
            Ok(convert::wrong_expected_version(expected, actual))
        }
        AppendResult::Rejected(rejected) => Err(status::rejection(&rejected)),
        AppendResult::StreamDeleted => Err(NodeError::StreamDeleted { stream }.into()),
        AppendResult::StreamNotFound => Err(NodeError::StreamNotFound { stream }.into()),
    }
}

async fn forward(ctx: &NodeContext, change: Change) -> Result<proto::AppendResponse, Status> {
    let Some((leader, addr)) = ctx.leader() else {
        return Err(NodeError::NoLeaderKnown.into());
    };
    if leader == ctx.id {
        return Err(NodeError::LeadershipChanging.into());
    }
    let mut client = StreamsClient::new(ctx.channel(&addr)?)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
    let call = async {
        match change {
            Change::SetMetadata(mut r) => {
                r.leader_only = true;
                client.set_stream_metadata(r).await
            }
            Change::Delete(mut r) => {
                r.leader_only = true;
                client.delete_stream(r).await
            }
        }
    };
    let reply = tokio::time::timeout(Duration::from_millis(APPEND_TIMEOUT_MS), call)
        .await
        .map_err(|_| NodeError::LeaderTimedOut { leader })??;
    Ok(reply.into_inner())
}
