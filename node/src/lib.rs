//! # cairn-node
//!
//! The Cairn server: openraft over tonic between nodes (`network`), the public gRPC services
//! (`api`), the wiring that runs a node (`app`), leadership handoff (`leadership`), repair of
//! a damaged store from the others (`repair`); readiness
//! (`health`), metrics (`metrics`) and the HTTP endpoint that serves them (`http`); TLS and
//! mutual TLS between nodes (`tls`), users, tokens and grants checked on every call (`auth`),
//! throwaway certificates for `cairn dev` and tests (`certs`). The
//! `cairn` binary (server and command line) lives in `main.rs` and `cli/`.

pub mod address;
pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod error;
pub mod feed;
pub mod groups;
pub mod health;
#[cfg(test)]
mod hostile_input;
pub mod http;
pub mod leadership;
pub mod local;
pub mod metrics;
pub mod network;
pub mod repair;
pub mod standing;
pub mod timing;
pub mod tls;

pub use app::{start, Node, NodeSetup, SnapshotSettings};
