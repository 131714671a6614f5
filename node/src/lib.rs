//! # cairn-node
//!
//! The Cairn server (gRPC API, Raft network, cluster) and the `cairn` binary. Not built yet:
//! this crate exists so the workspace has the layout of the design; the server arrives with
//! the issue "The cairn server".
