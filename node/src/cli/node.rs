//! `cairn node`: one server process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_node::network::TcpConnector;
use cairn_node::NodeSetup;
use cairn_raft_store::disk::{SledDisk, SledOptions};
use cairn_raft_store::Limits;
use clap::Args;
use tokio_stream::wrappers::TcpListenerStream;

use super::{EXIT_FAILURE, EXIT_USAGE};

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id (a member of --peers).
    #[arg(long, env = "CAIRN_ID")]
    pub id: u64,
    /// Address to listen on for clients and peers, HOST:PORT.
    #[arg(long, env = "CAIRN_LISTEN")]
    pub listen: String,
    /// Every member as ID=HOST:PORT, comma-separated, this node included.
    #[arg(long, env = "CAIRN_PEERS")]
    pub peers: String,
    /// Directory for this node's data.
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(peers: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut parsed = BTreeMap::new();
    for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--peers: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("--peers: {id:?} is not a node id"))?;
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!("--peers: {addr:?} is not HOST:PORT"));
        }
        if parsed.insert(id, addr.to_owned()).is_some() {
            return Err(format!("--peers: node {id} appears twice"));
        }
    }
    if parsed.is_empty() {
        return Err("--peers: no members".into());
    }
    Ok(parsed)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

pub async fn run(args: NodeArgs) -> ExitCode {
    init_tracing();
    let peers = match parse_peers(&args.peers) {
        Ok(peers) => peers,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !peers.contains_key(&args.id) {
        eprintln!("error: --id {} is not among --peers", args.id);
        return ExitCode::from(EXIT_USAGE);
    }
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let disk = match SledDisk::open(args.data_dir.join("store"), SledOptions::default()) {
        Ok(disk) => disk,
        Err(e) => {
            eprintln!(
                "error: cannot open the store in {}: {e}",
                args.data_dir.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let setup = NodeSetup {
        id: args.id,
        peers,
        limits: Limits::default(),
    };
    let incoming = TcpListenerStream::new(listener);
    match cairn_node::run(
        setup,
        disk,
        incoming,
        Arc::new(TcpConnector),
        shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: node {} failed: {e:#}", args.id);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
