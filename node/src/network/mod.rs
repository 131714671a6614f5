//! Raft between nodes over gRPC. The node takes its channel factory ([`Connector`]) as a
//! parameter, so the very same code runs on real TCP and inside the simulation.

// openraft's RPC error types are large and its traits return them by value; boxing them here would
// only add a copy.
#![allow(clippy::result_large_err)]

mod raft_client;
mod raft_server;

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

pub use raft_client::NetworkFactory;
pub use raft_server::RaftService;

/// Generated from `proto/raft.proto`.
pub mod proto {
    tonic::include_proto!("cairn.raft.v1");
}

/// Largest gRPC message between nodes: a batch of log entries is bounded by
/// `MAX_LOG_BYTES_PER_READ` (16 MiB) plus framing, a snapshot chunk by `SNAPSHOT_CHUNK_BYTES`.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Time allowed to establish a connection to a peer.
pub const CONNECT_TIMEOUT_MS: u64 = 500;

/// Makes gRPC channels to other nodes' `HOST:PORT` addresses.
pub trait Connector: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error>;
}

/// Plain TCP. Channels connect lazily and reconnect by themselves.
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect_lazy())
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
