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
/// `MAX_LOG_BYTES_PER_READ` (4 MiB) plus framing, a snapshot chunk by `SNAPSHOT_CHUNK_BYTES`.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Time allowed to establish a connection to a peer.
pub const CONNECT_TIMEOUT_MS: u64 = 500;

/// Makes gRPC channels to other nodes' `HOST:PORT` addresses.
pub trait Connector: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error>;

    /// The URL scheme of this node's endpoints, as told to clients (member lists, leader
    /// hints): `https` when the node runs TLS.
    fn scheme(&self) -> &'static str {
        "http"
    }
}

/// How often a connection to a peer is pinged when nothing else proves it alive...
pub const PEER_KEEPALIVE_INTERVAL_MS: u64 = 1_000;
/// ...and how long a ping may go unanswered before the connection is dropped and a new one
/// made. Without it a connection whose peer vanished (power loss, a partition that swallowed
/// bytes) stays open and every RPC on it times out, forever.
pub const PEER_KEEPALIVE_TIMEOUT_MS: u64 = 1_000;

/// The endpoint for a peer's `HOST:PORT`: connect timeout and keepalive set.
pub fn peer_endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .http2_keep_alive_interval(Duration::from_millis(PEER_KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(PEER_KEEPALIVE_TIMEOUT_MS))
        .keep_alive_while_idle(true))
}

/// Plain TCP. Channels connect lazily and reconnect by themselves.
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(peer_endpoint(addr)?.tcp_nodelay(true).connect_lazy())
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
