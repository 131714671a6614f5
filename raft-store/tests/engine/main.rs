//! Engine tests: one test binary (link time is the slow part of a build here), one module per
//! concern.

mod auth;
mod common;
mod consumer_groups;
mod corruption;
mod crash;
mod erase;
mod format;
mod index;
mod lifecycle;
mod limits;
mod multi;
mod reads;
mod scavenge;
mod semantics;
mod snapshot;
mod stream_cache;
mod suite;
