//! `cairn dev`: a local cluster of `cairn node` child processes on 127.0.0.1.
//!
//! It prints each node's command line, so a node killed with `kill -9` can be started again
//! by hand with the same flags and rejoin; it reports children that exit and keeps the rest
//! running until Ctrl-C, then stops them with SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_node::local::LocalCluster;
use clap::Args;

use super::{EXIT_FAILURE, EXIT_USAGE};

/// Most nodes `cairn dev` starts.
pub const MAX_DEV_NODES: u64 = 9;
/// How long stopping the nodes may take before they are killed.
pub const STOP_GRACE_MS: u64 = 5_000;
/// How long to wait for the cluster to elect a leader before saying so.
pub const READY_WAIT_MS: u64 = 15_000;
/// How often exited children are looked for.
const REAP_INTERVAL_MS: u64 = 500;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Directory holding one data directory (and log file) per node.
    #[arg(long, default_value = "./cairn-data")]
    pub data_dir: PathBuf,
    /// Port of node 1; node N listens on PORT + N - 1. Their HTTP endpoints (health,
    /// metrics) take the next free ports after those.
    #[arg(long, default_value_t = 2113)]
    pub port: u16,
}

/// The first `count` ports from `first` on that are free on 127.0.0.1 now.
fn free_ports_from(first: u16, count: u64) -> Option<Vec<u16>> {
    let mut ports = Vec::new();
    for port in first..=u16::MAX {
        if ports.len() as u64 == count {
            break;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    (ports.len() as u64 == count).then_some(ports)
}

pub async fn run(args: DevArgs) -> ExitCode {
    if args.nodes == 0 || args.nodes > MAX_DEV_NODES {
        eprintln!("error: --nodes must be 1..={MAX_DEV_NODES}");
        return ExitCode::from(EXIT_USAGE);
    }
    if u64::from(args.port) + args.nodes > u64::from(u16::MAX) {
        eprintln!("error: --port leaves no room for {} nodes", args.nodes);
        return ExitCode::from(EXIT_USAGE);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find the cairn executable: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let addrs = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", u64::from(args.port) + i))
        .collect();
    // Checked above: PORT + nodes fits in a u16.
    let http_from = (u64::from(args.port) + args.nodes) as u16;
    let Some(http_ports) = free_ports_from(http_from, args.nodes) else {
        eprintln!(
            "error: no {} free ports from {http_from} on for the HTTP endpoints",
            args.nodes
        );
        return ExitCode::from(EXIT_FAILURE);
    };
    let http_addrs = http_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut cluster = LocalCluster::new(exe, &args.data_dir, addrs).with_http(http_addrs);
    for id in 1..=cluster.size() {
        if let Err(e) = cluster.start_node(id) {
            eprintln!("error: cannot start node {id}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        println!(
            "node {id}: pid {}  {}  log {}",
            cluster.pid(id).unwrap_or(0),
            cluster.endpoint(id),
            cluster.log_path(id).display()
        );
        println!("  restart with: {}", cluster.command_line(id));
        if let Some(http) = cluster.http_endpoint(id) {
            println!("  http: {http}  (/health/live, /health/ready, /metrics)");
        }
    }
    println!("endpoints: {}", cluster.endpoints().join(","));
    match cluster
        .wait_for_leader(Duration::from_millis(READY_WAIT_MS))
        .await
    {
        Some(leader) => println!("cluster ready: leader is node {leader}"),
        None => println!("no leader after {READY_WAIT_MS} ms yet; see the node logs"),
    }
    println!("try, in another terminal: cairn append orders-1 --data '{{\"total\": 10}}' --expected no-stream");
    println!("Ctrl-C stops the cluster.");

    let mut tick = tokio::time::interval(Duration::from_millis(REAP_INTERVAL_MS));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                for (id, status) in cluster.reap_exited() {
                    println!("node {id} exited ({status}); start it again with the command above to rejoin");
                }
            }
        }
    }
    println!("stopping...");
    cluster.stop_all(Duration::from_millis(STOP_GRACE_MS));
    ExitCode::SUCCESS
}
