//! Installing a snapshot: replace the state machine with the streamed prefix of another.
//!
//! An install marker is made durable before the old state is cleared; if the process dies
//! midway, opening the store finds the marker and clears the half-installed state, so the node
//! comes back empty (and Raft sends it the snapshot again) rather than inconsistent.

use std::io::SeekFrom;
use std::sync::atomic::AtomicBool;

use tokio::io::{AsyncReadExt, AsyncSeekExt, BufReader};

use crate::disk::{delete_range, Disk, WriteBatch};
use crate::error::StoreError;
use crate::frame;
use crate::group_files::GroupFiles;
use crate::id_index::IdIndexBatch;
use crate::keys;
use crate::limits::{Limits, MAX_TAGS_PER_EVENT};
use crate::records::{write_group, StoredGroup};
use crate::segment_file::MAX_FRAME_PAYLOAD_BYTES;
use crate::snapshot::{
    trailer_crc, KeptHead, SnapshotData, KEPT_HEAD_MARK, MAGIC, MAGIC_V2, MAX_KEPT_HEAD_BYTES,
};

/// Keys deleted per batch while clearing the state machine.
pub const CLEAR_PAGE_KEYS: usize = 4096;
/// Bytes of install writes per batch.
pub const INSTALL_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Read buffer for an incoming snapshot.
const INSTALL_READ_BUFFER_BYTES: usize = 256 * 1024;

/// Largest encoded append group a valid snapshot can hold under `limits`: the payload (tags
/// included) plus a generous per-event allowance for ids, type lengths, tag lengths and varints.
pub fn max_group_bytes(limits: &Limits) -> usize {
    limits.max_append_bytes + limits.max_events_per_append * (64 + 2 * MAX_TAGS_PER_EVENT) + 1024
}

/// Deletes every key of the state machine's tables, page by page, and every group file.
pub fn clear_state_machine(disk: &dyn Disk, groups: &GroupFiles) -> Result<(), StoreError> {
    for table in keys::STATE_MACHINE_TABLES {
        delete_range(disk, &keys::table_range(table), CLEAR_PAGE_KEYS)?;
    }
    groups.truncate(0)
}

fn invalid(detail: impl Into<String>) -> StoreError {
    StoreError::InvalidSnapshot(detail.into())
}

/// Reads a snapshot stream into the (cleared) state machine. Returns the `$all` position it
/// ends before. The groups' frames are written before the batches that point at them; the
/// caller syncs the files before recording the install.
pub async fn load_snapshot(
    disk: &dyn Disk,
    groups: &GroupFiles,
    limits: &Limits,
    own_id_keys: &AtomicBool,
    data: &mut SnapshotData,
) -> Result<u64, StoreError> {
    let mut batch = WriteBatch::default();
    let mut ids = IdIndexBatch::new(disk, own_id_keys);
    let mut frames = groups.writer();
    let end = read_snapshot(data, max_group_bytes(limits), |piece| {
        match piece {
            Piece::Group {
                position,
                encoded,
                group,
            } => {
                let location = frames.push_encoded(position, encoded)?;
                write_group(&mut batch, &mut ids, position, group, location)?;
            }
            Piece::KeptHead(head) => batch.put(head.key, head.run.encode()),
        }
        if batch.bytes + ids.pending_bytes() + frames.pending_bytes() >= INSTALL_BATCH_BYTES {
            groups.write(&mut frames)?;
            ids.write_into(&mut batch);
            disk.write(std::mem::take(&mut batch))?;
        }
        Ok(())
    })
    .await?;
    groups.write(&mut frames)?;
    ids.write_into(&mut batch);
    if !batch.is_empty() {
        disk.write(batch)?;
    }
    Ok(end)
}

/// Reads a whole snapshot stream and checks it (format, checksums, positions, trailer)
/// without installing it, then rewinds it: a node checks what it spooled before handing it to
/// Raft, so a stream damaged in transit or in the spool is refused (and sent again) rather than
/// failing the install.
pub async fn verify_snapshot(data: &mut SnapshotData) -> Result<u64, StoreError> {
    let end = read_snapshot(data, MAX_FRAME_PAYLOAD_BYTES as usize, |_| Ok(())).await?;
    data.seek(SeekFrom::Start(0)).await?;
    Ok(end)
}

/// One piece of a snapshot stream, checked.
enum Piece<'a> {
    Group {
        position: u64,
        encoded: &'a [u8],
        group: &'a StoredGroup,
    },
    KeptHead(KeptHead),
}

/// Reads a kept head record after its mark: bounded before anything is allocated, checked.
async fn read_kept_head(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<KeptHead, StoreError> {
    let len = reader.read_u32_le().await? as usize;
    if len > MAX_KEPT_HEAD_BYTES {
        return Err(invalid(format!(
            "kept head of {len} bytes exceeds {MAX_KEPT_HEAD_BYTES}"
        )));
    }
    let crc = reader.read_u32_le().await?;
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).await?;
    if crc32fast::hash(&bytes) != crc {
        return Err(invalid(
            "a kept head fails its checksum (damaged in transit or in the spool)",
        ));
    }
    KeptHead::decode(&bytes)
}

/// Reads a snapshot stream from its start, checking it, and hands each group (its first
/// position, its encoding, the group) and each kept head to `on_piece`. Returns the `$all`
/// position it ends before.
async fn read_snapshot(
    data: &mut SnapshotData,
    max_frame: usize,
    mut on_piece: impl FnMut(Piece<'_>) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    data.seek(SeekFrom::Start(0)).await?;
    let mut reader = BufReader::with_capacity(INSTALL_READ_BUFFER_BYTES, data);
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).await?;
    let with_heads = match &magic {
        m if m == MAGIC => true,
        m if m == MAGIC_V2 => false,
        _ => return Err(invalid("bad magic")),
    };
    let mut expected_position = 0u64;
    let mut groups_read = 0u64;
    let mut heads_read = 0u64;
    // Kept heads stand below the end, which only the trailer says.
    let mut highest_head_position = None;
    loop {
        let len = reader.read_u32_le().await?;
        if with_heads && len == KEPT_HEAD_MARK {
            let head = read_kept_head(&mut reader).await?;
            highest_head_position = highest_head_position.max(Some(head.run.first_position));
            heads_read += 1;
            on_piece(Piece::KeptHead(head))?;
            continue;
        }
        let len = len as usize;
        if len == 0 {
            let end_position = reader.read_u64_le().await?;
            let group_count = reader.read_u64_le().await?;
            let head_count = if with_heads {
                Some(reader.read_u64_le().await?)
            } else {
                None
            };
            if reader.read_u32_le().await? != trailer_crc(end_position, group_count, head_count) {
                return Err(invalid("the trailer fails its checksum"));
            }
            if end_position < expected_position
                || group_count != groups_read
                || head_count.unwrap_or(0) != heads_read
                || highest_head_position.is_some_and(|p| p >= end_position)
            {
                return Err(invalid(format!(
                    "trailer says {group_count} groups and {} kept heads ending at \
                     {end_position}; stream held {groups_read} and {heads_read} ending at \
                     {expected_position} (kept heads up to {highest_head_position:?})",
                    head_count.unwrap_or(0)
                )));
            }
            // The last groups below the end may have been scavenged.
            expected_position = end_position;
            break;
        }
        if heads_read > 0 {
            return Err(invalid("a group after the kept heads"));
        }
        if len > max_frame {
            return Err(invalid(format!("frame of {len} bytes exceeds {max_frame}")));
        }
        let position = reader.read_u64_le().await?;
        let crc = reader.read_u32_le().await?;
        // Positions increase; a scavenge leaves gaps between groups.
        if position < expected_position {
            return Err(invalid(format!(
                "group at position {position}, expected {expected_position} or later"
            )));
        }
        // Grown as the bytes arrive, never sized by the length field alone: a damaged or
        // hostile length must not allocate what the stream does not hold.
        let mut encoded = Vec::new();
        (&mut reader)
            .take(len as u64)
            .read_to_end(&mut encoded)
            .await?;
        if encoded.len() != len {
            return Err(invalid(format!(
                "group at position {position} claims {len} bytes; the stream ends after {}",
                encoded.len()
            )));
        }
        if frame::crc(position, &encoded) != crc {
            return Err(invalid(format!(
                "group at position {position} fails its checksum (damaged in transit or in the spool)"
            )));
        }
        let group = StoredGroup::decode("snapshot group", &encoded)?;
        if group.events.is_empty() {
            return Err(invalid(format!("empty group at position {position}")));
        }
        expected_position = position + group.events.len() as u64;
        groups_read += 1;
        on_piece(Piece::Group {
            position,
            encoded: &encoded,
            group: &group,
        })?;
    }
    Ok(expected_position)
}
