//! Stream lifecycle: metadata, soft delete and tombstone, with the append's retry rules (a
//! change carries an id the client makes, so a retry is recognised and writes nothing new).

use uuid::Uuid;

use super::{streams, AppendResult, CallKind, Client};
use crate::error::Error;
use crate::event::ExpectedRevision;
use crate::proto;
use crate::read::{NodePreference, ReadConsistency};

/// A stream's retention limits and the application's own metadata (`None`: no limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMetadata {
    /// Keep only the last this many events.
    pub max_count: Option<u64>,
    /// Hide events older than this many seconds (on the cluster's committed clock).
    pub max_age_seconds: Option<u64>,
    /// Hide revisions below this one.
    pub truncate_before: Option<u64>,
    /// The application's own metadata: must be a JSON object.
    pub custom: Option<serde_json::Value>,
}

/// A stream's metadata as stored, and where the stream stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMetadataState {
    pub metadata: StreamMetadata,
    /// The metadata's revision: the expected revision of the next change (`None`: never set).
    pub revision: Option<u64>,
    /// Soft-deleted and not written since.
    pub deleted: bool,
    /// Tombstoned: never to be written again.
    pub tombstoned: bool,
}

impl Client {
    /// The stream's metadata, from the leader (linearizable).
    pub async fn stream_metadata(&self, stream: &str) -> Result<StreamMetadataState, Error> {
        let request = proto::GetStreamMetadataRequest {
            stream: stream.to_owned(),
            consistency: proto::ReadConsistency::from(ReadConsistency::Linearizable).into(),
            min_position: None,
        };
        let start = self.inner.endpoints.leader_or_first();
        let (response, _) = self
            .with_retries(
                "stream metadata",
                stream,
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| {
                    let request = request.clone();
                    async move {
                        Ok(streams(channel)
                            .get_stream_metadata(request)
                            .await?
                            .into_inner())
                    }
                },
            )
            .await?;
        let metadata = response.metadata.unwrap_or_default();
        let custom = match metadata.custom_json {
            Some(text) => Some(serde_json::from_str(&text)?),
            None => None,
        };
        Ok(StreamMetadataState {
            metadata: StreamMetadata {
                max_count: metadata.max_count,
                max_age_seconds: metadata.max_age_seconds,
                truncate_before: metadata.truncate_before,
                custom,
            },
            revision: response.revision,
            deleted: response.deleted,
            tombstoned: response.tombstoned,
        })
    }

    /// Replaces the stream's metadata if `expected` holds for the metadata's revision; the
    /// result's `last_revision` is the metadata's new revision.
    pub async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult, Error> {
        self.set_stream_metadata_with_id(stream, expected, metadata, Uuid::now_v7())
            .await
    }

    /// [`Client::set_stream_metadata`] with the change's id chosen by the caller: sending
    /// the same change again with the same id after an unknown outcome is recognised as a
    /// retry (the original answer, nothing written twice). The simulation draws it from its
    /// seed.
    pub async fn set_stream_metadata_with_id(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
        id: Uuid,
    ) -> Result<AppendResult, Error> {
        let request = proto::SetStreamMetadataRequest {
            stream: stream.to_owned(),
            expected: Some(expected.into()),
            metadata: Some(proto::StreamMetadata {
                max_count: metadata.max_count,
                max_age_seconds: metadata.max_age_seconds,
                truncate_before: metadata.truncate_before,
                custom_json: metadata.custom.map(|c| c.to_string()),
            }),
            id: id.to_string(),
            leader_only: self.inner.leader_only,
        };
        let response = self
            .send_append(stream, request, |mut streams, request| async move {
                streams.set_stream_metadata(request).await
            })
            .await?;
        self.append_answer(response, stream, expected)
    }

    /// Soft-deletes the stream if `expected` holds for its last revision: it reads as not
    /// found; appending with no-stream or any recreates it, revisions continuing after the old.
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, Error> {
        self.delete(stream, expected, false, Uuid::now_v7()).await
    }

    /// Tombstones the stream if `expected` holds: it can never be written again, and reads
    /// and appends get [`Error::StreamDeleted`].
    pub async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<AppendResult, Error> {
        self.delete(stream, expected, true, Uuid::now_v7()).await
    }

    /// [`Client::delete_stream`] (`tombstone` false) or [`Client::tombstone_stream`] with the
    /// change's id chosen by the caller, so that a re-send after an unknown outcome is
    /// recognised as a retry.
    pub async fn delete_stream_with_id(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        tombstone: bool,
        id: Uuid,
    ) -> Result<AppendResult, Error> {
        self.delete(stream, expected, tombstone, id).await
    }

    async fn delete(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        tombstone: bool,
        id: Uuid,
    ) -> Result<AppendResult, Error> {
        let request = proto::DeleteStreamRequest {
            stream: stream.to_owned(),
            expected: Some(expected.into()),
            tombstone,
            id: id.to_string(),
            leader_only: self.inner.leader_only,
        };
        let response = self
            .send_append(stream, request, |mut streams, request| async move {
                streams.delete_stream(request).await
            })
            .await?;
        self.append_answer(response, stream, expected)
    }
}
