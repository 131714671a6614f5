//! gRPC over turmoil's simulated TCP: the node's [`Connector`], the client library's channel
//! factory, and the listener stream a node serves on.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_node::network::Connector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};
use turmoil::net::{TcpListener, TcpStream};

/// The port every simulated node serves gRPC on.
pub const NODE_PORT: u16 = 2113;
/// Bound on opening a simulated connection (a partition swallows the handshake).
pub const CONNECT_TIMEOUT_MS: u64 = 500;

async fn connect(uri: Uri) -> std::io::Result<TokioIo<TcpStream>> {
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(NODE_PORT);
    let stream = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        TcpStream::connect(format!("{host}:{port}")),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(TokioIo::new(stream))
}

/// A lazily connecting channel over the simulated network.
pub fn channel(endpoint: &Endpoint) -> Channel {
    endpoint
        .clone()
        .connect_with_connector_lazy(tower::service_fn(connect))
}

/// Node-to-node channels over the simulated network.
pub struct SimConnector;

impl Connector for SimConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(channel(&cairn_node::network::peer_endpoint(addr)?))
    }
}

/// A simulated connection a node accepted.
pub struct Accepted(TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections a node accepts on [`NODE_PORT`].
pub async fn incoming() -> std::io::Result<impl Stream<Item = std::io::Result<Accepted>>> {
    let listener = TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
    Ok(async_stream::stream! {
        loop {
            yield listener.accept().await.map(|(stream, _)| Accepted(stream));
        }
    })
}
