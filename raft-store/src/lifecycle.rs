//! Stream lifecycle: metadata, soft delete, tombstone, and which events they hide.
//!
//! A stream's lifecycle state is the last event of its metastream `$$<stream>` (KurrentDB's
//! layout): the state is then ordinary append-only data, so it is versioned like a stream
//! (its revision is the metadata's), replicated, snapshotted and installed with the groups,
//! and a retried command is recognised by its event id like any append. Each event's data is
//! the whole state as JSON, so reading the metastream shows the history of changes.
//!
//! What is hidden is decided only from committed state: the stream's head, its lifecycle
//! state, and for max age the committed log's clock (the created time of the newest event,
//! kept non-decreasing by apply), never a node's own clock; every replica hides the same
//! events.

use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::error::StoreError;
use crate::group_files::GroupFiles;
use crate::limits::validate_stream_name;
use crate::records::last_event;
use crate::types::{InvalidInput, StreamMetadata};

/// Prefix of a metastream's name: `$$orders-1` holds the lifecycle of `orders-1`.
pub const METASTREAM_PREFIX: &str = "$$";
/// Largest custom metadata (the text of its JSON object), in bytes.
pub const MAX_CUSTOM_METADATA_BYTES: usize = 16 * 1024;
/// Largest max count: beyond it a limit is a mistake, not a policy (no stream holds 2^40).
pub const MAX_METADATA_MAX_COUNT: u64 = 1 << 40;
/// Largest max age, in seconds: 100 years.
pub const MAX_METADATA_MAX_AGE_SECS: u64 = 100 * 365 * 24 * 3600;
/// Largest truncate-before revision: i64::MAX, so that it survives JSON and other clients.
pub const MAX_METADATA_TRUNCATE_BEFORE: u64 = i64::MAX as u64;
/// Event type of a metastream event written by a metadata change.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// Event type of a metastream event written by a soft delete.
pub const DELETED_EVENT_TYPE: &str = "$deleted";
/// Event type of a metastream event written by a tombstone.
pub const TOMBSTONE_EVENT_TYPE: &str = "$tombstone";
/// Event type of the metastream event an erase writes (a tombstone that keeps no metadata).
pub const ERASED_EVENT_TYPE: &str = "$erased";

/// The name of `stream`'s metastream.
pub fn metastream(stream: &str) -> String {
    format!("{METASTREAM_PREFIX}{stream}")
}

/// A stream's whole lifecycle state: what its metastream's last event records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(flatten)]
    pub metadata: StoredMetadata,
    /// Set by a soft delete: the revision after the last one deleted. Revisions below it are
    /// hidden for ever; the stream reads as not found until an event at or past it exists.
    #[serde(
        rename = "$deletedBefore",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub deleted_before: Option<u64>,
    #[serde(rename = "$tombstoned", skip_serializing_if = "is_false", default)]
    pub tombstoned: bool,
    /// Set by an erase (with `tombstoned`): this state is the metastream's only event left,
    /// and it holds no metadata of the application's.
    #[serde(rename = "$erased", skip_serializing_if = "is_false", default)]
    pub erased: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `StreamMetadata` as its JSON is stored (KurrentDB's names for the limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMetadata {
    #[serde(rename = "$maxCount", skip_serializing_if = "Option::is_none", default)]
    pub max_count: Option<u64>,
    #[serde(rename = "$maxAge", skip_serializing_if = "Option::is_none", default)]
    pub max_age_secs: Option<u64>,
    #[serde(rename = "$tb", skip_serializing_if = "Option::is_none", default)]
    pub truncate_before: Option<u64>,
    #[serde(rename = "custom", skip_serializing_if = "Option::is_none", default)]
    pub custom: Option<serde_json::Value>,
}

impl Lifecycle {
    /// The metadata as the API shows it.
    pub fn metadata(&self) -> StreamMetadata {
        StreamMetadata {
            max_count: self.metadata.max_count,
            max_age_secs: self.metadata.max_age_secs,
            truncate_before: self.metadata.truncate_before,
            custom: self.metadata.custom.as_ref().map(|c| c.to_string()),
        }
    }

    /// This state with `metadata` in place of its own (validated first).
    pub fn with_metadata(&self, metadata: &StreamMetadata) -> Result<Lifecycle, InvalidInput> {
        let custom = validate_metadata(metadata)?;
        Ok(Lifecycle {
            metadata: StoredMetadata {
                max_count: metadata.max_count,
                max_age_secs: metadata.max_age_secs,
                truncate_before: metadata.truncate_before,
                custom,
            },
            ..self.clone()
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::corrupt("stream lifecycle", e))
    }

    fn decode(bytes: &[u8]) -> Result<Lifecycle, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("stream lifecycle", e))
    }

    /// The stream's last revision as appends and reads see it: `None` while soft-deleted and
    /// not yet written again.
    pub fn effective_head(&self, head: Option<u64>) -> Option<u64> {
        match (head, self.deleted_before) {
            (Some(h), Some(deleted)) if h < deleted => None,
            _ => head,
        }
    }

    /// Which of the stream's events are shown, given its last revision and, when max age is
    /// set, the committed log's clock (asked only then).
    pub fn visibility(
        &self,
        head: Option<u64>,
        clock_ms: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<Visibility, StoreError> {
        let mut first_visible = self
            .metadata
            .truncate_before
            .unwrap_or(0)
            .max(self.deleted_before.unwrap_or(0));
        if let (Some(max_count), Some(head)) = (self.metadata.max_count, head) {
            first_visible = first_visible.max((head + 1).saturating_sub(max_count));
        }
        let min_created_ms = match self.metadata.max_age_secs {
            Some(secs) => clock_ms()?.saturating_sub(secs.saturating_mul(1000)),
            None => 0,
        };
        Ok(Visibility {
            first_visible,
            min_created_ms,
            tombstoned: self.tombstoned,
        })
    }
}

/// Which events of one stream are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Visibility {
    /// Revisions below this are hidden (truncate-before, soft delete, max count).
    pub first_visible: u64,
    /// Events created before this (ms since the epoch, on the log's clock) are hidden.
    pub min_created_ms: u64,
    /// Every event is hidden.
    pub tombstoned: bool,
}

impl Visibility {
    /// Everything shown: a stream without lifecycle state.
    pub const ALL: Visibility = Visibility {
        first_visible: 0,
        min_created_ms: 0,
        tombstoned: false,
    };

    pub fn shows(&self, revision: u64, created_unix_ms: u64) -> bool {
        !self.tombstoned && revision >= self.first_visible && created_unix_ms >= self.min_created_ms
    }
}

/// Checks metadata against its limits; the custom metadata parsed.
pub fn validate_metadata(
    metadata: &StreamMetadata,
) -> Result<Option<serde_json::Value>, InvalidInput> {
    let range = |field: &str, value: Option<u64>, min: u64, max: u64| match value {
        Some(v) if v < min || v > max => Err(InvalidInput::MetadataOutOfRange {
            field: field.to_owned(),
            value: v,
            min,
            max,
        }),
        _ => Ok(()),
    };
    range("max count", metadata.max_count, 1, MAX_METADATA_MAX_COUNT)?;
    range(
        "max age (seconds)",
        metadata.max_age_secs,
        1,
        MAX_METADATA_MAX_AGE_SECS,
    )?;
    range(
        "truncate before",
        metadata.truncate_before,
        0,
        MAX_METADATA_TRUNCATE_BEFORE,
    )?;
    let Some(custom) = &metadata.custom else {
        return Ok(None);
    };
    if custom.len() > MAX_CUSTOM_METADATA_BYTES {
        return Err(InvalidInput::CustomMetadataTooLarge {
            bytes: custom.len(),
            max: MAX_CUSTOM_METADATA_BYTES,
        });
    }
    match serde_json::from_str::<serde_json::Value>(custom) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(Some(value)),
        Ok(other) => Err(InvalidInput::CustomMetadataNotAnObject {
            why: format!("found {}", json_kind(&other)),
        }),
        Err(e) => Err(InvalidInput::CustomMetadataNotAnObject { why: e.to_string() }),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Checks a stream name that a lifecycle command names (a client stream: no `$`).
pub fn validate_target(stream: &str) -> Result<(), InvalidInput> {
    validate_stream_name(stream)
}

/// The stored lifecycle of `stream` and its metastream's last revision (the metadata's
/// revision); `None` if it never had any.
pub fn load(
    disk: &dyn Disk,
    groups: &GroupFiles,
    stream: &str,
) -> Result<Option<(Lifecycle, u64)>, StoreError> {
    if stream.starts_with(crate::limits::RESERVED_STREAM_PREFIX) {
        return Ok(None);
    }
    Ok(match last_event(disk, groups, &metastream(stream))? {
        Some((event, revision)) => Some((Lifecycle::decode(&event.data)?, revision)),
        None => None,
    })
}
