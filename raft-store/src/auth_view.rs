//! The security state as applied on this node (`auth`), read from the last event of
//! `AUTH_STREAM` and cached until apply or a snapshot install says it changed.
//!
//! A node checks every request against it, so the check must cost nothing when nothing
//! changed: one atomic load compares the cached generation with the state machine's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::{AuthState, AUTH_STREAM};
use crate::disk::{Disk, Order};
use crate::error::StoreError;
use crate::group_files::GroupFiles;
use crate::keys;
use crate::records::read_group;
use crate::stream_run::StreamRun;

/// The stored security state and its revision in `AUTH_STREAM`; `None` before the first
/// change.
pub(crate) fn auth_state(
    disk: &dyn Disk,
    groups: &GroupFiles,
) -> Result<Option<(AuthState, u64)>, StoreError> {
    let last = disk.scan(
        &keys::stream_range(AUTH_STREAM, 0, None),
        Order::Descending,
        1,
    )?;
    let Some((key, value)) = last.first() else {
        return Ok(None);
    };
    let first_revision = keys::stream_key_revision(key)
        .ok_or_else(|| StoreError::corrupt("stream key", "short key"))?;
    let run = StreamRun::decode(value)?;
    let location = disk
        .get(&keys::event_key(run.first_position))?
        .ok_or_else(|| StoreError::corrupt("security state", "$auth points at nothing"))?;
    let group = read_group(groups, run.first_position, &location)?;
    let Some(event) = group.events.last() else {
        return Ok(None);
    };
    let state =
        AuthState::decode(&event.data).map_err(|e| StoreError::corrupt("security state", e))?;
    Ok(Some((state, first_revision + u64::from(run.count) - 1)))
}

/// The state as last read, and the generation it was read at.
type Cached = Option<(u64, Arc<AuthState>)>;

/// A node's cached view of the applied security state. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct AuthView {
    disk: Arc<dyn Disk>,
    groups: Arc<GroupFiles>,
    generation: Arc<AtomicU64>,
    cached: Arc<RwLock<Cached>>,
}

impl AuthView {
    pub(crate) fn new(
        disk: Arc<dyn Disk>,
        groups: Arc<GroupFiles>,
        generation: Arc<AtomicU64>,
    ) -> Self {
        AuthView {
            disk,
            groups,
            generation,
            cached: Arc::new(RwLock::new(None)),
        }
    }

    /// The state as applied now (empty before the first change). Read from the store only
    /// when it changed since the last call.
    pub fn current(&self) -> Result<Arc<AuthState>, StoreError> {
        // Read before the state: a change applied meanwhile bumps it again, and the next call
        // reads once more.
        let generation = self.generation.load(Ordering::Acquire);
        {
            let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
            if let Some((seen, state)) = cached.as_ref() {
                if *seen == generation {
                    return Ok(state.clone());
                }
            }
        }
        let state = Arc::new(
            auth_state(self.disk.as_ref(), &self.groups)?
                .map(|(state, _)| state)
                .unwrap_or_default(),
        );
        let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
        *cached = Some((generation, state.clone()));
        Ok(state)
    }

    /// A number that changes whenever the state may have changed (for caches built on it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
