//! `cairn node`: one server process.
//!
//! Every flag is also an environment variable `CAIRN_<FLAG>` (what containers and Kubernetes
//! set). The flags are read as text and checked here, not by clap, so that every mistake gets a
//! one-line error and exit status 2, and `--check-config` checks exactly what a start would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use cairn_node::address::check_host_port;
use cairn_node::http::HttpState;
use cairn_node::network::{Connector, TcpConnector};
use cairn_node::tls::{TlsConnector, TlsFiles, TlsPaths};
use cairn_node::{NodeSetup, SnapshotSettings};
use cairn_raft_store::disk::{Disk, FjallDisk, FjallOptions};
use cairn_raft_store::Limits;
use clap::builder::FalseyValueParser;
use clap::Args;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use super::{EXIT_FAILURE, EXIT_USAGE};

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id, a number (a member of --peers).
    #[arg(long, env = "CAIRN_ID")]
    pub id: Option<String>,
    /// Instead of --id: a StatefulSet pod name; the id is the ordinal after its last '-' plus
    /// one (pod cairn-0 is node 1).
    #[arg(long, env = "CAIRN_ID_FROM_POD_NAME", value_name = "POD_NAME")]
    pub id_from_pod_name: Option<String>,
    /// Address to listen on for clients and peers, HOST:PORT.
    #[arg(long, env = "CAIRN_LISTEN")]
    pub listen: Option<String>,
    /// Every member as ID=HOST:PORT, comma-separated, this node included.
    #[arg(long, env = "CAIRN_PEERS")]
    pub peers: Option<String>,
    /// Directory for this node's data (created if missing).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve /health/live, /health/ready and /metrics over HTTP on HOST:PORT.
    #[arg(long, env = "CAIRN_HTTP")]
    pub http: Option<String>,
    /// Log format on stderr: text, or json (one object per line).
    #[arg(long, env = "CAIRN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// This node's certificate chain (PEM), for clients and peers alike; it must be signed by
    /// --tls-ca, name every address clients and peers reach the node by, and allow both server
    /// and client authentication (nodes are each other's clients). Reloaded when it changes.
    #[arg(long, env = "CAIRN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM). Reloaded when it changes.
    #[arg(long, env = "CAIRN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present a certificate it signed (mutual
    /// TLS); clients present none. Reloaded when it changes.
    #[arg(long, env = "CAIRN_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The admin secret (a file holding one line of 16 to 512 printable characters, e.g. from
    /// `openssl rand -hex 32`): the first admin's token, made when the cluster starts with no
    /// users; every public call is then authenticated and checked against grants. Give every
    /// node the same file.
    #[arg(long, env = "CAIRN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Run without TLS: clients and peers talk plain text and anyone who reaches the port is
    /// trusted. For development and tests only; the node says so loudly at start.
    #[arg(long, env = "CAIRN_INSECURE", value_parser = FalseyValueParser::new())]
    pub insecure: bool,
    /// Check the flags and environment, print a one-line summary and exit (0 when valid, 2
    /// when not) without starting anything or creating the data directory.
    #[arg(long, env = "CAIRN_CHECK_CONFIG", value_parser = FalseyValueParser::new())]
    pub check_config: bool,
    /// Take a snapshot every this many log entries (default: SNAPSHOT_EVERY_LOG_ENTRIES; the
    /// log keeps LOG_ENTRIES_KEPT_AFTER_SNAPSHOT behind it either way, so that a follower
    /// catching up after an install is not sent one snapshot after another). Hidden: for tests
    /// that need snapshots of a small store (corruption repair).
    #[arg(long, env = "CAIRN_SNAPSHOT_EVERY", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A node's configuration, checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub peers: BTreeMap<u64, String>,
    pub listen: String,
    pub http: Option<String>,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// The TLS files; `None` with `--insecure`.
    pub tls: Option<TlsPaths>,
    /// The admin secret's file; `None` with `--insecure`.
    pub admin_token_file: Option<PathBuf>,
}

impl NodeConfig {
    /// Checks everything that can be checked without touching the network or the disk.
    pub fn from_args(args: &NodeArgs) -> Result<NodeConfig, String> {
        let id =
            match (&args.id, &args.id_from_pod_name) {
                (Some(_), Some(_)) => return Err(
                    "give --id (CAIRN_ID) or --id-from-pod-name (CAIRN_ID_FROM_POD_NAME), not both"
                        .into(),
                ),
                (None, None) => return Err(
                    "--id (CAIRN_ID) or --id-from-pod-name (CAIRN_ID_FROM_POD_NAME) is required"
                        .into(),
                ),
                (Some(id), None) => id
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("--id: {id:?} is not a node id (a number)"))?,
                (None, Some(pod)) => id_from_pod_name(pod)?,
            };
        let listen = required(&args.listen, "--listen (CAIRN_LISTEN)")?;
        check_host_port("--listen", &listen)?;
        let peers = parse_peers(&required(&args.peers, "--peers (CAIRN_PEERS)")?)?;
        if !peers.contains_key(&id) {
            let ids: Vec<String> = peers.keys().map(u64::to_string).collect();
            return Err(format!(
                "node id {id} is not among --peers (ids {})",
                ids.join(",")
            ));
        }
        let data_dir = match &args.data_dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
            _ => return Err("--data-dir (CAIRN_DATA_DIR) is required".into()),
        };
        let http = match args.http.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(http) => {
                check_host_port("--http", http)?;
                if http == listen {
                    return Err(format!("--http {http} is the same address as --listen"));
                }
                Some(http.to_owned())
            }
        };
        let log_format = match args.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(format!("--log-format: {other:?} is not one of: text, json")),
        };
        Ok(NodeConfig {
            id,
            peers,
            listen,
            http,
            data_dir,
            log_format,
            tls: tls_paths(args)?,
            admin_token_file: admin_token_file(args)?,
        })
    }

    /// One line for `--check-config`.
    fn summary(&self, data_dir_state: &str) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect();
        format!(
            "config ok: node {} of {} (peers {}), listen {}, http {}, data dir {} ({data_dir_state}), log format {}, {}, {}",
            self.id,
            self.peers.len(),
            peers.join(","),
            self.listen,
            self.http.as_deref().unwrap_or("off"),
            self.data_dir.display(),
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            match &self.tls {
                None => "INSECURE (no TLS)".to_owned(),
                Some(tls) => format!(
                    "tls cert {} key {} ca {}",
                    tls.cert.display(),
                    tls.key.display(),
                    tls.ca.display()
                ),
            },
            match &self.admin_token_file {
                None => "no users (nothing checked)".to_owned(),
                Some(file) => format!("admin token file {}", file.display()),
            }
        )
    }
}

/// TLS unless `--insecure`: all three files, or none of them with `--insecure`.
fn tls_paths(args: &NodeArgs) -> Result<Option<TlsPaths>, String> {
    let given =
        |path: &Option<PathBuf>| path.as_ref().filter(|p| !p.as_os_str().is_empty()).cloned();
    let files = [
        ("--tls-cert (CAIRN_TLS_CERT)", given(&args.tls_cert)),
        ("--tls-key (CAIRN_TLS_KEY)", given(&args.tls_key)),
        ("--tls-ca (CAIRN_TLS_CA)", given(&args.tls_ca)),
    ];
    if args.insecure {
        if let Some((flag, _)) = files.iter().find(|(_, path)| path.is_some()) {
            return Err(format!(
                "--insecure (CAIRN_INSECURE) and {flag} together: run with TLS or without, not both"
            ));
        }
        return Ok(None);
    }
    if files.iter().all(|(_, path)| path.is_none()) {
        return Err("TLS is required: give --tls-cert, --tls-key and --tls-ca (CAIRN_TLS_CERT, CAIRN_TLS_KEY, CAIRN_TLS_CA), or --insecure (CAIRN_INSECURE) to run without TLS, for development only".into());
    }
    let mut paths = Vec::new();
    for (flag, path) in files {
        paths.push(path.ok_or_else(|| format!("{flag} is required with the other TLS flags"))?);
    }
    let [cert, key, ca] =
        <[PathBuf; 3]>::try_from(paths).map_err(|_| "three TLS files".to_owned())?;
    Ok(Some(TlsPaths { cert, key, ca }))
}

/// The admin secret's file: required with TLS, never with `--insecure` (a node without TLS
/// checks no one).
fn admin_token_file(args: &NodeArgs) -> Result<Option<PathBuf>, String> {
    let file = args
        .admin_token_file
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
        .cloned();
    if args.insecure && file.is_some() {
        return Err("--insecure (CAIRN_INSECURE) and --admin-token-file (CAIRN_ADMIN_TOKEN_FILE) together: a node without TLS checks no one".into());
    }
    if !args.insecure && file.is_none() {
        return Err("an admin secret is required: give --admin-token-file FILE (CAIRN_ADMIN_TOKEN_FILE), a file holding one line such as `openssl rand -hex 32` makes, the same on every node; or --insecure (CAIRN_INSECURE), for development only".into());
    }
    Ok(file)
}

fn required(value: &Option<String>, what: &str) -> Result<String, String> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(format!("{what} is required")),
    }
}

/// `cairn-2` is node 3: StatefulSet ordinals start at 0, node ids here at 1.
fn id_from_pod_name(pod: &str) -> Result<u64, String> {
    let ordinal = pod
        .trim()
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<u64>().ok())
        .ok_or_else(|| {
            format!("--id-from-pod-name: {pod:?} does not end in -ORDINAL (like cairn-0)")
        })?;
    ordinal
        .checked_add(1)
        .ok_or_else(|| format!("--id-from-pod-name: ordinal {ordinal} is too large"))
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(peers: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut parsed = BTreeMap::new();
    for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--peers: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("--peers: {id:?} is not a node id"))?;
        let addr = addr.trim();
        check_host_port("--peers", addr)?;
        if parsed.insert(id, addr.to_owned()).is_some() {
            return Err(format!("--peers: node {id} appears twice"));
        }
    }
    if parsed.is_empty() {
        return Err("--peers: no members".into());
    }
    Ok(parsed)
}

/// The data directory exists and is a writable directory, or the nearest existing ancestor is
/// a writable directory (so it can be created). Creates nothing.
fn check_data_dir(dir: &Path) -> Result<&'static str, String> {
    let writable = |path: &Path| -> Result<(), String> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("--data-dir: {} contains a NUL byte", dir.display()))?;
        // SAFETY: a valid NUL-terminated path; access(2) only reads it.
        if unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "--data-dir: {} is not writable: {}",
                path.display(),
                std::io::Error::last_os_error()
            ))
        }
    };
    // Below a file is missing too: the walk up then names the file.
    let missing = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        )
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => writable(dir).map(|()| "exists"),
        Ok(_) => Err(format!("--data-dir: {} is not a directory", dir.display())),
        Err(e) if missing(&e) => {
            let absolute = std::path::absolute(dir)
                .map_err(|e| format!("--data-dir: {}: {e}", dir.display()))?;
            let mut ancestor = absolute.parent();
            while let Some(path) = ancestor {
                match std::fs::metadata(path) {
                    Ok(meta) if meta.is_dir() => {
                        return writable(path).map(|()| "will be created");
                    }
                    Ok(_) => {
                        return Err(format!(
                            "--data-dir: {} cannot be created: {} is not a directory",
                            dir.display(),
                            path.display()
                        ))
                    }
                    Err(e) if missing(&e) => {
                        ancestor = path.parent();
                    }
                    Err(e) => return Err(format!("--data-dir: {}: {e}", path.display())),
                }
            }
            Err(format!("--data-dir: {} cannot be created", dir.display()))
        }
        Err(e) => Err(format!("--data-dir: {}: {e}", dir.display())),
    }
}

/// Whether opening the store failed because another process holds its lock (the disk takes an
/// exclusive `flock` on `store/lock`; taken, it fails with `WouldBlock`).
fn store_is_locked(e: &std::io::Error) -> bool {
    let text = format!("{e} {e:?}");
    e.kind() == std::io::ErrorKind::WouldBlock
        || text.contains("WouldBlock")
        || text.contains("Resource temporarily unavailable")
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files (`cairn dev` writes one per node) and pipes
        // get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // Fields beside the message at the top level: what log shippers index.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `--insecure` is said loudly, in the log (stderr, text or JSON) where an operator looks.
fn warn_insecure(id: u64) {
    tracing::warn!(
        node = id,
        "INSECURE: node {id} runs without TLS and without users (--insecure): plain text to clients and peers, no credentials asked, anyone who can reach its port may read, write and change the cluster; for development and tests only"
    );
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
    let config = match NodeConfig::from_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The TLS files are checked before anything starts: readable, key and certificate a pair,
    // in date, signed by the CA.
    let tls = match config.tls.clone().map(TlsFiles::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let admin_secret = match config
        .admin_token_file
        .as_deref()
        .map(cairn_node::auth::secrets::read_admin_secret)
        .transpose()
    {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.check_config {
        return match check_data_dir(&config.data_dir) {
            Ok(state) => {
                println!("{}", config.summary(state));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    init_tracing(config.log_format);
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let http_listener = match &config.http {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                eprintln!("error: cannot listen on {addr} (--http): {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        },
    };
    let opening = std::time::Instant::now();
    let disk: Arc<dyn Disk> = match FjallDisk::open(
        config.data_dir.join("store"),
        FjallOptions::default(),
    ) {
        Ok(disk) => {
            tracing::info!(
                ms = opening.elapsed().as_millis() as u64,
                "disk opened (the keyspace replays its journal since its last table file)"
            );
            disk
        }
        Err(e) if store_is_locked(&e) => {
            eprintln!(
                    "error: the data directory {} is in use by another process (a cairn node already running with it?); stop that node first, or give another --data-dir",
                    config.data_dir.display()
                );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            eprintln!(
                "error: cannot open the store in {}: {e}",
                config.data_dir.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let setup = NodeSetup {
        id: config.id,
        peers: config.peers,
        limits: Limits::default(),
        snapshots: match args.snapshot_every {
            Some(every_log_entries) => SnapshotSettings {
                every_log_entries,
                ..SnapshotSettings::default()
            },
            None => SnapshotSettings::default(),
        },
        peers_need_certificates: tls.is_some(),
        admin_secret,
    };
    let connector: Arc<dyn Connector> = match &tls {
        Some(tls) => Arc::new(TlsConnector { tls: tls.clone() }),
        None => Arc::new(TcpConnector),
    };
    let node = match cairn_node::start(setup, disk.clone(), connector).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("error: node {} failed to start: {e:#}", config.id);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Some(listener) = http_listener {
        let state = HttpState::new(&node, disk).with_tls(tls.clone());
        let id = config.id;
        tokio::spawn(async move {
            if let Err(e) = cairn_node::http::serve(listener, state).await {
                tracing::error!(node = id, error = %e, "the HTTP endpoint stopped");
            }
        });
    }
    if tls.is_none() {
        warn_insecure(config.id);
    }
    let served = match tls {
        Some(tls) => {
            tracing::info!(node = config.id, listen = %config.listen, "serving with TLS");
            node.serve(cairn_node::tls::accept(listener, tls), shutdown_signal())
                .await
        }
        None => {
            node.serve(plain_incoming(listener), shutdown_signal())
                .await
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: node {} failed: {e:#}", config.id);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Accepted TCP connections as they come, for `--insecure`.
fn plain_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    // Nagle's algorithm off on accepted connections too (tonic sets it only on sockets it binds
    // itself): with it, the server's small HTTP/2 frames on a fresh connection waited for the
    // peer's delayed ACK, ~40 ms (seen as every handoff's TimeoutNow taking 44 ms).
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
            }
        }
        accepted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ordinals_become_one_based_ids() {
        assert_eq!(id_from_pod_name("cairn-0"), Ok(1));
        assert_eq!(id_from_pod_name("my-cairn-12"), Ok(13));
        assert!(id_from_pod_name("cairn").is_err());
        assert!(id_from_pod_name("cairn-x").is_err());
        assert!(id_from_pod_name(&format!("cairn-{}", u64::MAX)).is_err());
    }

    #[test]
    fn host_port_accepts_names_ipv4_and_bracketed_ipv6_only() {
        for good in [
            "0.0.0.0:2113",
            "cairn-0.cairn-peers:2113",
            "[::]:2114",
            "localhost:1",
        ] {
            assert_eq!(check_host_port("--listen", good), Ok(()), "{good}");
        }
        for bad in [
            "2113",
            ":2113",
            "host:",
            "host:65536",
            "::1:2113",
            "[nope]:1",
            "a b:1",
            "http://h:1",
        ] {
            assert!(check_host_port("--listen", bad).is_err(), "{bad}");
        }
    }
}
