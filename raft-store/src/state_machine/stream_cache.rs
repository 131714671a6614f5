//! What apply knows of streams' heads and lifecycle states, kept across `apply` calls.
//!
//! Every append needs its stream's head (a reverse scan of the stream index) and lifecycle
//! state (a read of its metastream). Read from sled each time, the two were a sixth of a
//! follower's CPU under many small appends (BENCHMARKS.md). This map holds what apply last read
//! or wrote for a stream, so the disk is asked once per stream:
//! - Within a call it is also the overlay of what is not flushed yet (later entries of the
//!   call must see it; the disk does not until the flush).
//! - After a flush it equals the disk, because apply is the only writer of stream keys and
//!   metastreams, and every such write goes through it. The forgetting steps (scavenge, erase)
//!   delete stream keys behind it; they keep each head's key (`scavenge::forget_group`) and an
//!   erase writes its state through the map, but their flush clears the map anyway, so the copy
//!   does not depend on that.
//! - A snapshot install, and a failed `apply` call, clear it too.
//!
//! The engine test `stream_cache` compares every verdict with a state machine reopened (so
//! with an empty map) before each call.
//!
//! It is only a copy: a verdict is the same with the map empty, so every replica still reaches
//! the same one whatever each has cached.

use std::collections::HashMap;

use crate::lifecycle::Lifecycle;

/// Streams remembered (each map) after a flush; past it the map is cleared and filled again,
/// costing reads, never correctness. Stream names are at most 255 bytes, so this bounds each
/// map to a few MiB.
pub const MAX_CACHED_STREAMS: usize = 16_384;

#[derive(Default)]
pub(crate) struct StreamCache {
    /// The stored head (last revision, `None`: no events stored) by stream.
    heads: HashMap<String, Option<u64>>,
    lifecycles: HashMap<String, Lifecycle>,
    /// A forgetting step wrote (or will write, at the next flush) deletions below the map.
    forgot: bool,
}

impl StreamCache {
    pub fn head(&self, stream: &str) -> Option<Option<u64>> {
        self.heads.get(stream).copied()
    }

    pub fn set_head(&mut self, stream: &str, head: Option<u64>) {
        match self.heads.get_mut(stream) {
            Some(cached) => *cached = head,
            None => {
                self.heads.insert(stream.to_owned(), head);
            }
        }
    }

    pub fn lifecycle(&self, stream: &str) -> Option<&Lifecycle> {
        self.lifecycles.get(stream)
    }

    pub fn set_lifecycle(&mut self, stream: &str, state: Lifecycle) {
        match self.lifecycles.get_mut(stream) {
            Some(cached) => *cached = state,
            None => {
                self.lifecycles.insert(stream.to_owned(), state);
            }
        }
    }

    /// A forgetting step is under way: the next flush clears the map.
    pub fn forgetting(&mut self) {
        self.forgot = true;
    }

    /// After a flush: the map now equals the disk, unless a forgetting step wrote below it.
    pub fn flushed(&mut self) {
        if self.forgot
            || self.heads.len() > MAX_CACHED_STREAMS
            || self.lifecycles.len() > MAX_CACHED_STREAMS
        {
            self.clear();
        }
    }

    pub fn clear(&mut self) {
        self.heads.clear();
        self.lifecycles.clear();
        self.forgot = false;
    }
}
