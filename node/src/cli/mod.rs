//! The `cairn` command line. The contract (subcommands, flags, `--json`, exit codes) is in
//! DESIGN.md; scripts and tests rely on it.

mod auth;
mod bench;
mod cluster;
mod commands;
mod dcb;
mod dev;
mod erase;
mod group;
mod node;
mod output;
mod profile;
mod scavenge;
mod stream;
mod subscribe;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status for bad usage (clap uses it too) and server-side invalid arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when an expected revision (or a DCB append condition) did not hold.
pub const EXIT_WRONG_EXPECTED_VERSION: u8 = 3;
/// Exit status when the stream does not exist.
pub const EXIT_STREAM_NOT_FOUND: u8 = 4;
/// Exit status when the stream is deleted (tombstoned): it can never be written again.
pub const EXIT_STREAM_DELETED: u8 = 5;
/// Exit status when the node does not accept the client (not authenticated, or not allowed).
pub const EXIT_NOT_ALLOWED: u8 = 6;
/// Exit status for anything else that failed.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a distributed, replicated event store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Node(node::NodeArgs),
    /// Run a local cluster of `cairn node` processes on 127.0.0.1 until Ctrl-C.
    Dev(dev::DevArgs),
    /// Append one event to a stream.
    Append(commands::AppendArgs),
    /// Read a stream.
    Read(commands::ReadArgs),
    /// Read $all, the whole store in commit order.
    ReadAll(commands::ReadAllArgs),
    /// Append events to several streams at once, all or nothing, from JSON lines.
    AppendBatch(dcb::AppendBatchArgs),
    /// Dynamic Consistency Boundaries: read by event types and tags, append with a condition.
    Dcb(dcb::DcbArgs),
    /// Follow a stream or $all: history, then live events.
    Subscribe(subscribe::SubscribeArgs),
    /// Show the cluster: members, leader, term, roles, applied positions.
    Status(commands::StatusArgs),
    /// A stream's metadata and lifecycle: meta, delete, tombstone.
    Stream(stream::StreamArgs),
    /// Remove what retention hides (max count, max age, truncate before, deletes) from every
    /// member and give the space back; prints each member's store size before and after.
    Scavenge(scavenge::ScavengeArgs),
    /// Consumer groups: create, update, list, info, delete, replay-parked.
    Group(group::GroupArgs),
    /// Join a consumer group: print each event and acknowledge it.
    Consume(group::ConsumeArgs),
    /// Change the membership: add-node, remove-node.
    Cluster(cluster::ClusterArgs),
    /// Measure: the peer workload (S1, S2, S3) or leader failover.
    Bench(bench::BenchArgs),
    /// Users (admins only): add, remove, list, passwd.
    User(auth::UserArgs),
    /// API tokens (admins only): create (prints the token alone), revoke, list.
    Token(auth::TokenArgs),
    /// Give USER (or, with --role, a role) the ACTION (read, write, delete, groups, admin) on
    /// names starting with PREFIX.
    Grant(auth::GrantArgs),
    /// Take a grant back.
    Revoke(auth::GrantArgs),
    /// Roles (admins only): add, remove, list, assign, unassign; `cairn grant --role` gives
    /// them grants, which every user assigned the role holds.
    Role(auth::RoleArgs),
}

/// Options every client subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct ClientOptions {
    /// Nodes to talk to, comma-separated URLs (default: the client profile's, else
    /// http://127.0.0.1:2113).
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub endpoints: Vec<String>,
    /// A client profile (TOML, `endpoints = [...]`; `cairn dev` writes one into its data
    /// directory), used when --endpoints is not given. Default:
    /// ./cairn-data/client-profile.toml if it exists.
    #[arg(long, env = "CAIRN_PROFILE", value_name = "FILE")]
    pub profile: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) that signed the nodes' certificates, for a cluster with TLS
    /// (https:// endpoints; endpoints without a scheme become https://). Default: the
    /// profile's `tls_ca`, else the system's trusted roots.
    #[arg(long, env = "CAIRN_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The API token to send (`cairn token create`; for a cluster with users, i.e. not
    /// --insecure). Default: --username/--password if given, else the profile's `token`.
    #[arg(
        long,
        env = "CAIRN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Sign in as this user with --password (CAIRN_PASSWORD) instead of a token.
    #[arg(long, env = "CAIRN_USERNAME", value_name = "NAME")]
    pub username: Option<String>,
    /// The password of --username.
    #[arg(
        long,
        env = "CAIRN_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The credentials a command sends: --token, else --username and --password, else the profile's
/// token, else none.
fn credentials(
    options: &ClientOptions,
    profile_token: Option<String>,
) -> Result<Option<cairn_client::Credentials>, String> {
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    if let Some(token) = given(&options.token) {
        return Ok(Some(cairn_client::Credentials::Token(token)));
    }
    match (given(&options.username), given(&options.password)) {
        (Some(user), Some(password)) => {
            return Ok(Some(cairn_client::Credentials::UserPassword {
                user,
                password,
            }))
        }
        (Some(_), None) => return Err("--username needs --password (CAIRN_PASSWORD)".into()),
        (None, Some(_)) => return Err("--password needs --username (CAIRN_USERNAME)".into()),
        (None, None) => {}
    }
    Ok(profile_token
        .filter(|t| !t.is_empty())
        .map(cairn_client::Credentials::Token))
}

/// How long a client command waits for a TCP connection to any of its endpoints before it
/// says none is reachable (instead of retrying for the client's whole budget, ~8 s).
pub const REACHABLE_PROBE_TIMEOUT_MS: u64 = 800;

/// `http://HOST:PORT` as a host and port to dial; `None` when it is not such a URL (the
/// client then reports it).
fn host_port(url: &str) -> Option<(String, u16)> {
    let url = url.trim();
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    Some((host.to_owned(), port))
}

/// Whether something accepts TCP connections at `url`, within the probe timeout.
async fn reachable(url: &str) -> Result<(), String> {
    let Some((host, port)) = host_port(url) else {
        // Not a URL we can dial: let the client say what is wrong with it.
        return Ok(());
    };
    let timeout = std::time::Duration::from_millis(REACHABLE_PROBE_TIMEOUT_MS);
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {REACHABLE_PROBE_TIMEOUT_MS} ms")),
    }
}

/// The CA file of `--tls-ca` (the client library's reading, naming the flag).
fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    cairn_client::profile::read_ca(path).map_err(|e| format!("--tls-ca: {e}"))
}

/// The client a command uses: endpoints from the flag, the profile or the default (see
/// `profile`), checked to be reachable first, reachable ones first. When none accepts a
/// connection it fails at once with a hint, rather than after the client's retries.
pub async fn connect(options: &ClientOptions) -> Result<cairn_client::Client, ExitCode> {
    let profile::Resolved {
        urls,
        source,
        tls_ca,
        token,
    } = match profile::resolve(
        &options.endpoints,
        options.profile.as_deref(),
        cairn_client::DEFAULT_ENDPOINT,
    ) {
        Ok(resolved) => resolved,
        Err(e) => return Err(output::usage(e)),
    };
    let tls_ca = match options
        .tls_ca
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .or(tls_ca)
    {
        Some(path) => match read_ca(&path) {
            Ok(pem) => Some(pem),
            Err(e) => return Err(output::usage(e)),
        },
        None => None,
    };
    let credentials = match credentials(options, token) {
        Ok(credentials) => credentials,
        Err(e) => return Err(output::usage(e)),
    };
    // Malformed URLs (and tokens) are the client's to report, before anything is dialled.
    let config = |endpoints: Vec<String>| cairn_client::ClientConfig {
        endpoints,
        tls_ca: tls_ca.clone(),
        credentials: credentials.clone(),
        ..cairn_client::ClientConfig::default()
    };
    if let Err(e) = cairn_client::Client::with_config(config(urls.clone())) {
        return Err(output::fail(&e));
    }
    let probes = futures_util::future::join_all(urls.iter().map(|url| reachable(url))).await;
    if probes.iter().all(Result::is_err) {
        let why: Vec<String> = urls
            .iter()
            .zip(&probes)
            .map(|(url, probe)| format!("{url} ({})", probe.as_ref().err().map_or("", |e| e)))
            .collect();
        let hint = match source {
            profile::Source::Profile(_) => "is that cluster (`cairn dev`) still running?",
            _ => "start a cluster with `cairn dev`, or give --endpoints / CAIRN_ENDPOINTS / CAIRN_PROFILE",
        };
        eprintln!(
            "error: no node reachable at {} ({source}); {hint}",
            why.join(", ")
        );
        return Err(ExitCode::from(EXIT_FAILURE));
    }
    let mut ordered = Vec::with_capacity(urls.len());
    let mut unreachable = Vec::new();
    for (url, probe) in urls.into_iter().zip(&probes) {
        if probe.is_ok() {
            ordered.push(url);
        } else {
            unreachable.push(url);
        }
    }
    ordered.extend(unreachable);
    cairn_client::Client::with_config(config(ordered)).map_err(|e| output::fail(&e))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Append(args) => commands::append(args).await,
            Command::Read(args) => commands::read(args).await,
            Command::ReadAll(args) => commands::read_all(args).await,
            Command::AppendBatch(args) => dcb::append_batch(args).await,
            Command::Dcb(args) => dcb::run(args).await,
            Command::Subscribe(args) => subscribe::run(args).await,
            Command::Status(args) => commands::status(args).await,
            Command::Stream(args) => stream::run(args).await,
            Command::Scavenge(args) => scavenge::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::Group(args) => group::run(args).await,
            Command::Consume(args) => group::consume(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::User(args) => auth::user(args).await,
            Command::Token(args) => auth::token(args).await,
            Command::Grant(args) => auth::grant(args).await,
            Command::Revoke(args) => auth::revoke(args).await,
            Command::Role(args) => auth::role(args).await,
        }
    })
}
