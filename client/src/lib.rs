//! # cairn-client
//!
//! The public gRPC contract (`client/proto`) and the Rust client library. Not built yet: it
//! arrives with the issue "The cairn server".
