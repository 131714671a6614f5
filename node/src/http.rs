//! The node's HTTP endpoint (`cairn node --http HOST:PORT`), for probes and Prometheus:
//!
//! - `GET /health/live`: 200 while the process runs.
//! - `GET /health/ready`: 200 when the node is ready ([`RaftStatus::readiness`]), else 503;
//!   the body is one line saying why.
//! - `GET /metrics`: the Prometheus text format ([`crate::metrics`]).
//!
//! Plain HTTP even when the gRPC port runs TLS: probes (the kubelet) and scrapers come without
//! client certificates from inside the cluster network, and this port serves verdicts and
//! counters only, never events, and accepts no writes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_raft_store::disk::Disk;
use cairn_raft_store::{EventReader, Raft};

use crate::health::RaftStatus;
use crate::metrics::{NodeMetrics, StoreFigures, CONTENT_TYPE};
use crate::standing::Standing;
use crate::tls::TlsFiles;
use crate::Node;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    raft: Raft,
    reader: EventReader,
    disk: Arc<dyn Disk>,
    metrics: Arc<NodeMetrics>,
    standing: tokio::sync::watch::Receiver<Standing>,
    /// The node's TLS layer, whose failed handshakes `/metrics` reports (none when insecure).
    tls: Option<Arc<TlsFiles>>,
}

impl HttpState {
    /// For a started node; `disk` is the one it was started on (for its size).
    pub fn new(node: &Node, disk: Arc<dyn Disk>) -> HttpState {
        HttpState {
            raft: node.raft.clone(),
            reader: node.reader.clone(),
            disk,
            metrics: node.metrics.clone(),
            standing: node.standing(),
            tls: None,
        }
    }

    /// Reports `tls`'s failed handshakes in `/metrics`.
    pub fn with_tls(mut self, tls: Option<Arc<TlsFiles>>) -> HttpState {
        self.tls = tls;
        self
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until the process ends (or the listener fails).
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(state): State<HttpState>) -> (StatusCode, String) {
    match RaftStatus::read(&state.raft, &state.standing)
        .await
        .readiness()
    {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let raft = RaftStatus::read(&state.raft, &state.standing).await;
    let events = match state.reader.next_position() {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the event count");
            None
        }
    };
    // Walks the data directory: off the async threads.
    let disk = state.disk.clone();
    let bytes = match tokio::task::spawn_blocking(move || disk.size_on_disk()).await {
        Ok(Ok(bytes)) => Some(bytes),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot measure the store");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the store measurement failed");
            None
        }
    };
    if let Some(tls) = &state.tls {
        state
            .metrics
            .record_tls_handshake_failures(tls.handshake_failures());
    }
    let body = state.metrics.render(&raft, StoreFigures { events, bytes });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}
