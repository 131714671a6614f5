//! `cairn dev`: a local cluster of `cairn node` child processes on 127.0.0.1.
//!
//! Before starting anything it takes the data directory's lock (`dev.lock`: one `cairn dev`
//! per data directory), and checks that the nodes' ports are free and no other process holds
//! a node's store; each refusal is one line. It makes a throwaway CA (`ca.pem`) and a node
//! certificate for 127.0.0.1 and localhost (`tls/`), starts the nodes with TLS, and writes a
//! client profile (`client-profile.toml`, with the CA) there, so the `cairn` commands find the
//! whole cluster without flags and still reach it after its leader died.
//!
//! However `cairn dev` ends, its nodes end: SIGINT, SIGTERM and SIGHUP stop them gracefully
//! (SIGTERM, then SIGKILL after [`STOP_GRACE_MS`]); if it is killed outright, each node gets
//! SIGKILL from the kernel (`PR_SET_PDEATHSIG`, [`LocalCluster::die_with_parent`]).
//!
//! `cairn dev restart N`, from another terminal, asks the running `cairn dev` (over a Unix
//! socket in the data directory, `dev.sock`) to start node N again, stopping it first if it
//! still runs: a node killed with `kill -9` comes back as the dev process's child, stopped by
//! Ctrl-C like the others. The full command line of each node is printed too, with absolute
//! paths, for starting it by hand.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use cairn_node::local::LocalCluster;
use clap::{Args, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::profile::{Profile, PROFILE_FILE_NAME};
use super::{EXIT_FAILURE, EXIT_USAGE};

/// Most nodes `cairn dev` starts.
pub const MAX_DEV_NODES: u64 = 9;
/// How long stopping the nodes may take before they are killed.
pub const STOP_GRACE_MS: u64 = 5_000;
/// How long to wait for the cluster to elect a leader before saying so.
pub const READY_WAIT_MS: u64 = 15_000;
/// How often exited children are looked for.
const REAP_INTERVAL_MS: u64 = 500;
/// The lock file in the data directory: held by the running `cairn dev`, holding its pid.
pub const LOCK_FILE_NAME: &str = "dev.lock";
/// The control socket in the data directory (`cairn dev restart N`).
pub const CONTROL_SOCKET_NAME: &str = "dev.sock";
/// Longest control request, in bytes (`restart N`).
const MAX_CONTROL_REQUEST_BYTES: u64 = 256;
/// How long the dev process waits for a control request's line.
const CONTROL_READ_TIMEOUT_MS: u64 = 1_000;
/// How long `cairn dev restart` waits for the answer: a running node is stopped first.
const CONTROL_ANSWER_TIMEOUT_MS: u64 = STOP_GRACE_MS + 5_000;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevArgs {
    #[command(subcommand)]
    pub command: Option<DevCommand>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Directory holding one data directory (and log file) per node, and the client profile.
    #[arg(long, default_value = "./cairn-data")]
    pub data_dir: PathBuf,
    /// Port of node 1; node N listens on PORT + N - 1. Their HTTP endpoints (health,
    /// metrics) take the next free ports after those.
    #[arg(long, default_value_t = 2113)]
    pub port: u16,
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Start node ID of the running `cairn dev` again (stopped first if it runs); it rejoins
    /// and catches up, and Ctrl-C on `cairn dev` stops it like the others.
    Restart(RestartArgs),
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// The node to start again.
    pub id: u64,
    /// The running `cairn dev`'s data directory (default: the directory of CAIRN_PROFILE if
    /// set, else ./cairn-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
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

/// `flock(LOCK_EX | LOCK_NB)`; `Ok(false)` when another process holds it.
fn try_flock(file: &std::fs::File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor this function borrows.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes the data directory's `dev.lock` for the life of the process (released when the
/// returned file closes, also on SIGKILL) and writes this process's pid into it.
fn lock_data_root(root: &Path) -> Result<std::fs::File, String> {
    let path = root.join(LOCK_FILE_NAME);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match try_flock(&file) {
        Ok(true) => {}
        Ok(false) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            let by = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Err(format!(
                "another cairn dev{by} is running with the data directory {}; stop it first, or give another --data-dir",
                root.display()
            ));
        }
        Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(file)
}

/// Whether another process holds node `dir`'s store (the disk's `flock` on `store/lock`).
fn store_in_use(dir: &Path) -> bool {
    let lock = dir
        .join("store")
        .join(cairn_raft_store::disk::STORE_LOCK_FILE);
    match std::fs::File::open(lock) {
        // Taken and released at once (closing the file releases it).
        Ok(file) => matches!(try_flock(&file), Ok(false)),
        Err(_) => false,
    }
}

/// Everything that would make a node fail to start, checked before any starts: one line.
fn preflight(cluster: &LocalCluster) -> Result<(), String> {
    for id in 1..=cluster.size() {
        let addr = cluster.addr(id);
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(format!(
                "cannot use {addr} for node {id}: {e} (another cairn dev or cairn node running?); stop it, or give another --port"
            ));
        }
        if store_in_use(&cluster.data_dir(id)) {
            return Err(format!(
                "node {id}'s data directory {} is in use by another process (a node started by hand?); stop it first",
                cluster.data_dir(id).display()
            ));
        }
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP: each ends `cairn dev` and its nodes.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The name of the next signal.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

pub async fn run(args: DevArgs) -> ExitCode {
    if let Some(DevCommand::Restart(restart)) = args.command {
        return request_restart(restart).await;
    }
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
    // Absolute, so the printed commands and the profile work from any directory.
    let data_root = match std::path::absolute(&args.data_dir) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("error: --data-dir {}: {e}", args.data_dir.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&data_root) {
        eprintln!("error: cannot create {}: {e}", data_root.display());
        return ExitCode::from(EXIT_FAILURE);
    }
    let _lock = match lock_data_root(&data_root) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
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
    // Nodes are started from this (the main) thread only: the kernel's parent-death signal
    // follows the thread that started a child.
    // A new throwaway CA and node certificate on every start (the last run's CA key is gone
    // with it); the nodes' data does not depend on them.
    let mut cluster = match LocalCluster::new(exe.clone(), &data_root, addrs)
        .with_http(http_addrs)
        .die_with_parent()
        .with_tls()
    {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!(
                "error: cannot write the TLS certificates into {}: {e}",
                data_root.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(e) = preflight(&cluster) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let socket_path = data_root.join(CONTROL_SOCKET_NAME);
    // A socket left by a dev process that was killed: ours now (we hold the lock).
    let _ = std::fs::remove_file(&socket_path);
    let control = match UnixListener::bind(&socket_path) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", socket_path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
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
        if let Some(http) = cluster.http_endpoint(id) {
            println!("  http: {http}  (/health/live, /health/ready, /metrics)");
        }
        println!("  restart: {} dev restart {id}", exe.display());
        println!(
            "  by hand (then not stopped by Ctrl-C here): {}",
            cluster.command_line(id)
        );
    }
    println!("endpoints: {}", cluster.endpoints().join(","));
    let profile_path = data_root.join(PROFILE_FILE_NAME);
    let tls_ca = cluster.tls().map(|tls| tls.ca_path().to_path_buf());
    if let Some(ca) = &tls_ca {
        println!(
            "TLS: nodes use a throwaway CA, {} (clients: --tls-ca or the profile)",
            ca.display()
        );
    }
    let profile = Profile {
        endpoints: cluster.endpoints(),
        tls_ca,
        // The admin's token: the command line signs in without flags (the file is private).
        token: cluster.tls().map(|tls| tls.admin_token().to_owned()),
    };
    match profile.write(&profile_path) {
        Ok(()) => {
            println!(
                "client profile: {} (cairn commands run from {} find it; from elsewhere:)",
                profile_path.display(),
                data_root.parent().unwrap_or(&data_root).display()
            );
            println!("export CAIRN_PROFILE={}", profile_path.display());
        }
        Err(e) => eprintln!(
            "warning: cannot write the client profile {}: {e}; give the endpoints with --endpoints",
            profile_path.display()
        ),
    }
    let ready = tokio::select! {
        leader = cluster.wait_for_leader(Duration::from_millis(READY_WAIT_MS)) => Ok(leader),
        name = signals.recv() => Err(name),
    };
    match ready {
        Ok(Some(leader)) => println!("cluster ready: leader is node {leader}"),
        Ok(None) => println!("no leader after {READY_WAIT_MS} ms yet; see the node logs"),
        Err(name) => return stop(&mut cluster, &socket_path, name),
    }
    println!("try, in another terminal: cairn append orders-1 --data '{{\"total\": 10}}' --expected no-stream");
    println!("Ctrl-C stops the cluster.");

    let mut tick = tokio::time::interval(Duration::from_millis(REAP_INTERVAL_MS));
    loop {
        tokio::select! {
            name = signals.recv() => return stop(&mut cluster, &socket_path, name),
            _ = tick.tick() => {
                for (id, status) in cluster.reap_exited() {
                    println!("node {id} exited ({status}); `cairn dev restart {id}` starts it again");
                }
            }
            accepted = control.accept() => match accepted {
                Ok((stream, _)) => serve_control(&mut cluster, stream).await,
                Err(e) => eprintln!("warning: control socket: {e}"),
            },
        }
    }
}

fn stop(cluster: &mut LocalCluster, socket_path: &Path, signal: &str) -> ExitCode {
    println!("{signal}: stopping the nodes...");
    cluster.stop_all(Duration::from_millis(STOP_GRACE_MS));
    let _ = std::fs::remove_file(socket_path);
    ExitCode::SUCCESS
}

/// One control request: `restart N`. Answers one line, `ok ...` or `error ...`.
async fn serve_control(cluster: &mut LocalCluster, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_CONTROL_REQUEST_BYTES));
    let timeout = Duration::from_millis(CONTROL_READ_TIMEOUT_MS);
    let answer = match tokio::time::timeout(timeout, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => control_request(cluster, line.trim()).await,
        Ok(Err(e)) => format!("error reading the request: {e}"),
        Err(_) => "error no request within the timeout".to_owned(),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

async fn control_request(cluster: &mut LocalCluster, request: &str) -> String {
    let Some(id) = request.strip_prefix("restart ") else {
        return format!("error unknown request {request:?}");
    };
    let id = match id.trim().parse::<u64>() {
        Ok(id) if (1..=cluster.size()).contains(&id) => id,
        _ => {
            return format!(
                "error no node {id:?} in this cluster (nodes 1..={})",
                cluster.size()
            )
        }
    };
    if cluster.pid(id).is_some() {
        cluster.terminate(id);
        if cluster
            .wait_exit(id, Duration::from_millis(STOP_GRACE_MS))
            .await
            .is_none()
        {
            cluster.kill(id);
        }
    }
    match cluster.start_node(id) {
        Ok(()) => {
            let pid = cluster.pid(id).unwrap_or(0);
            println!("node {id} restarted: pid {pid}");
            format!("ok restarted node {id}: pid {pid}")
        }
        Err(e) => format!("error cannot start node {id}: {e}"),
    }
}

/// `cairn dev restart N`: asks the running `cairn dev` to start node N again.
async fn request_restart(args: RestartArgs) -> ExitCode {
    let data_dir = args.data_dir.unwrap_or_else(|| {
        std::env::var_os("CAIRN_PROFILE")
            .map(PathBuf::from)
            .and_then(|profile| profile.parent().map(Path::to_path_buf))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("./cairn-data"))
    });
    let socket_path = data_dir.join(CONTROL_SOCKET_NAME);
    let stream = match UnixStream::connect(&socket_path).await {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!(
                "error: no cairn dev is running with the data directory {} ({}: {e}); give its --data-dir",
                data_dir.display(),
                socket_path.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (read, mut write) = stream.into_split();
    if let Err(e) = write
        .write_all(format!("restart {}\n", args.id).as_bytes())
        .await
    {
        eprintln!("error: cannot ask cairn dev: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut answer = String::new();
    let mut reader = BufReader::new(read.take(MAX_CONTROL_REQUEST_BYTES * 4));
    let timeout = Duration::from_millis(CONTROL_ANSWER_TIMEOUT_MS);
    match tokio::time::timeout(timeout, reader.read_line(&mut answer)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            eprintln!("error: no answer from cairn dev: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(_) => {
            eprintln!("error: no answer from cairn dev within {CONTROL_ANSWER_TIMEOUT_MS} ms");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    match answer.trim().split_once(' ') {
        Some(("ok", text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Some(("error", text)) => {
            eprintln!("error: {text}");
            ExitCode::from(EXIT_FAILURE)
        }
        _ => {
            eprintln!("error: cairn dev answered {:?}", answer.trim());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
