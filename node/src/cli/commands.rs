//! The client subcommands: append, read, read-all, status.

use std::process::ExitCode;

use cairn_client::{Client, ClientConfig, EventData, ExpectedRevision, ReadFrom, ReadOptions};
use clap::Args;
use tokio_stream::StreamExt;

use super::output::{event_json, event_text, fail, usage};
use super::ClientOptions;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// The stream to append to.
    pub stream: String,
    /// The event's data: a JSON document.
    #[arg(long)]
    pub data: String,
    /// The event's type.
    #[arg(long = "type", default_value = "event")]
    pub event_type: String,
    /// The event's id (a UUID); a fresh one if not given. Repeat an append with the same id and
    /// the same event to retry it safely; the same id with another type or data is refused
    /// (exit 1) and writes nothing.
    #[arg(long)]
    pub id: Option<uuid::Uuid>,
    /// any, no-stream, exists, or the stream's current last revision.
    #[arg(long, default_value = "any")]
    pub expected: ExpectedRevision,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    pub stream: String,
    /// First revision to read (default: the start, or the end with --backwards).
    #[arg(long)]
    pub from: Option<u64>,
    /// Most events to print.
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long)]
    pub backwards: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct ReadAllArgs {
    /// First position to read (default: the start, or the end with --backwards).
    #[arg(long)]
    pub from: Option<u64>,
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long)]
    pub backwards: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientOptions,
}

fn connect(options: &ClientOptions) -> Result<Client, ExitCode> {
    let config = ClientConfig {
        endpoints: options.nodes.endpoints.clone(),
        ..ClientConfig::default()
    };
    Client::with_config(config).map_err(|e| fail(&e))
}

pub async fn append(args: AppendArgs) -> ExitCode {
    let data: serde_json::Value = match serde_json::from_str(&args.data) {
        Ok(data) => data,
        Err(e) => return usage(format!("--data is not valid JSON: {e}")),
    };
    let mut event = match EventData::json(args.event_type.clone(), &data) {
        Ok(event) => event,
        Err(e) => return fail(&e),
    };
    if let Some(id) = args.id {
        event = event.with_id(id);
    }
    let client = match connect(&args.client) {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client
        .append(&args.stream, args.expected, vec![event])
        .await
    {
        Ok(result) => {
            if args.client.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "stream": args.stream,
                        "revision": result.last_revision,
                        "position": result.last_position,
                        "already_written": result.already_written,
                    })
                );
            } else {
                let note = if result.already_written {
                    " (already written: a retry)"
                } else {
                    ""
                };
                println!(
                    "appended to {}: revision {}, position {}{note}",
                    args.stream, result.last_revision, result.last_position
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn read_options(from: Option<u64>, count: Option<u64>, backwards: bool) -> ReadOptions {
    let mut options = if backwards {
        ReadOptions::backwards()
    } else {
        ReadOptions::forwards()
    };
    if let Some(from) = from {
        options = options.from(ReadFrom::At(from));
    }
    if let Some(count) = count {
        options = options.max_count(count);
    }
    options
}

async fn print_events(
    result: Result<cairn_client::EventStream, cairn_client::Error>,
    json: bool,
) -> ExitCode {
    let mut events = match result {
        Ok(events) => events,
        Err(e) => return fail(&e),
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(event) if json => println!("{}", event_json(&event)),
            Ok(event) => println!("{}", event_text(&event)),
            Err(e) => return fail(&e),
        }
    }
    ExitCode::SUCCESS
}

pub async fn read(args: ReadArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let options = read_options(args.from, args.count, args.backwards);
    print_events(
        client.read_stream(&args.stream, options).await,
        args.client.json,
    )
    .await
}

pub async fn read_all(args: ReadAllArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let options = read_options(args.from, args.count, args.backwards);
    print_events(client.read_all(options).await, args.client.json).await
}

fn role_name(role: i32) -> &'static str {
    use cairn_client::proto::Role;
    match Role::try_from(role) {
        Ok(Role::Leader) => "leader",
        Ok(Role::Follower) => "follower",
        Ok(Role::Candidate) => "candidate",
        Ok(Role::Learner) => "learner",
        Ok(Role::Removed) => "removed",
        _ => "unknown",
    }
}

pub async fn status(args: StatusArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let status = match client.status().await {
        Ok(status) => status,
        Err(e) => return fail(&e),
    };
    if args.client.json {
        let members: Vec<_> = status
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "endpoint": m.endpoint,
                    "role": role_name(m.role),
                    "reachable": m.reachable,
                    "term": m.term,
                    "last_applied_index": m.last_applied_index,
                    "applied_position": m.applied_position,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "node_id": status.node_id,
                "leader_id": status.leader_id,
                "leader_endpoint": status.leader_endpoint,
                "term": status.term,
                "members": members,
            })
        );
    } else {
        match status.leader_id {
            Some(leader) => println!(
                "leader: node {leader} at {} (term {})",
                status.leader_endpoint, status.term
            ),
            None => println!("leader: none known (term {})", status.term),
        }
        for m in &status.members {
            if m.reachable {
                println!(
                    "  node {}  {}  {:<9}  term {}  applied index {}  events {}",
                    m.id,
                    m.endpoint,
                    role_name(m.role),
                    m.term,
                    m.last_applied_index,
                    m.applied_position
                );
            } else {
                println!("  node {}  {}  unreachable", m.id, m.endpoint);
            }
        }
    }
    ExitCode::SUCCESS
}
