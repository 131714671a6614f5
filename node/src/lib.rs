//! # cairn-node
//!
//! The Cairn server: openraft over tonic between nodes (`network`), the public gRPC services
//! (`api`), and the wiring that runs a node (`app`). The `cairn` binary (server and command
//! line) lives in `main.rs` and `cli/`.

pub mod api;
pub mod app;
pub mod local;
pub mod network;

pub use app::{run, start, Node, NodeSetup};
