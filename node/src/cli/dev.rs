//! `cairn dev`: a local cluster of `cairn node` child processes on 127.0.0.1.
//!
//! It prints each node's command line, so a node killed with `kill -9` can be started again
//! by hand with the same flags and rejoin; it reports children that exit and keeps the rest
//! running until Ctrl-C, then stops them with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use cairn_client::Client;
use clap::Args;
use tokio::process::{Child, Command};

use super::{EXIT_FAILURE, EXIT_USAGE};

/// Most nodes `cairn dev` starts.
pub const MAX_DEV_NODES: u64 = 9;
/// How long stopping children may take before they are killed.
pub const STOP_GRACE_MS: u64 = 5_000;
/// How long to wait for the cluster to elect a leader before saying so.
pub const READY_WAIT_MS: u64 = 15_000;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Directory holding one data directory (and log file) per node.
    #[arg(long, default_value = "./cairn-data")]
    pub data_dir: PathBuf,
    /// Port of node 1; node N listens on PORT + N - 1.
    #[arg(long, default_value_t = 2113)]
    pub port: u16,
}

struct DevNode {
    id: u64,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

fn spawn(exe: &Path, node: &DevNode) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    Command::new(exe)
        .args(&node.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
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
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        eprintln!("error: cannot create {}: {e}", args.data_dir.display());
        return ExitCode::from(EXIT_FAILURE);
    }
    let addr = |id: u64| format!("127.0.0.1:{}", u64::from(args.port) + id - 1);
    let peers = (1..=args.nodes)
        .map(|id| format!("{id}={}", addr(id)))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<DevNode> = (1..=args.nodes)
        .map(|id| DevNode {
            id,
            args: vec![
                "node".into(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                addr(id),
                "--peers".into(),
                peers.clone(),
                "--data-dir".into(),
                args.data_dir
                    .join(format!("node-{id}"))
                    .display()
                    .to_string(),
            ],
            log: args.data_dir.join(format!("node-{id}.log")),
            child: None,
        })
        .collect();
    for node in &mut nodes {
        match spawn(&exe, node) {
            Ok(child) => node.child = Some(child),
            Err(e) => {
                eprintln!("error: cannot start node {}: {e}", node.id);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
        println!(
            "node {}: pid {}  http://{}  log {}",
            node.id,
            node.child.as_ref().and_then(|c| c.id()).unwrap_or(0),
            addr(node.id),
            node.log.display()
        );
        println!("  restart with: {} {}", exe.display(), node.args.join(" "));
    }
    let endpoints: Vec<String> = (1..=args.nodes)
        .map(|id| format!("http://{}", addr(id)))
        .collect();
    println!("endpoints: {}", endpoints.join(","));
    println!("try: cairn append orders-1 --data '{{\"total\": 10}}' --expected no-stream");
    wait_for_leader(&endpoints).await;
    println!("Ctrl-C stops the cluster.");

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                for node in &mut nodes {
                    if let Some(child) = node.child.as_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            println!("node {} exited ({status}); start it again with the command above to rejoin", node.id);
                            node.child = None;
                        }
                    }
                }
            }
        }
    }
    println!("stopping...");
    for node in &nodes {
        if let Some(child) = &node.child {
            terminate(child);
        }
    }
    for node in &mut nodes {
        if let Some(child) = node.child.as_mut() {
            if tokio::time::timeout(Duration::from_millis(STOP_GRACE_MS), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
    ExitCode::SUCCESS
}

async fn wait_for_leader(endpoints: &[String]) {
    let Ok(client) = Client::connect(endpoints.iter().cloned()) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(READY_WAIT_MS);
    while tokio::time::Instant::now() < deadline {
        if let Ok(status) = client.status().await {
            if let Some(leader) = status.leader_id {
                println!(
                    "cluster ready: leader is node {leader} (term {})",
                    status.term
                );
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("no leader after {READY_WAIT_MS} ms yet; check the node logs");
}
