//! The `cairn` command line. The contract (subcommands, flags, `--json`, exit codes) is in
//! DESIGN.md; scripts and tests rely on it.

mod bench;
mod cluster;
mod commands;
mod dev;
mod node;
mod output;
mod subscribe;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status for bad usage (clap uses it too) and server-side invalid arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the expected revision did not hold.
pub const EXIT_WRONG_EXPECTED_VERSION: u8 = 3;
/// Exit status when the stream does not exist.
pub const EXIT_STREAM_NOT_FOUND: u8 = 4;
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
    /// Follow a stream or $all: history, then live events.
    Subscribe(subscribe::SubscribeArgs),
    /// Show the cluster: members, leader, term, roles, applied positions.
    Status(commands::StatusArgs),
    /// Change the membership: add-node, remove-node.
    Cluster(cluster::ClusterArgs),
    /// Measure: the peer workload (S1, S2, S3) or leader failover.
    Bench(bench::BenchArgs),
}

/// The nodes a command talks to (the contract's `--endpoints`, env `CAIRN_ENDPOINTS`).
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Nodes to talk to, comma-separated.
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2113"
    )]
    pub endpoints: Vec<String>,
}

/// Options every client subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct ClientOptions {
    #[command(flatten)]
    pub nodes: Endpoints,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
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
            Command::Subscribe(args) => subscribe::run(args).await,
            Command::Status(args) => commands::status(args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}
