//! The client subcommands: append, read, read-all, status.

use std::io::Read;
use std::process::ExitCode;

use cairn_client::{Client, EventData, ExpectedRevision, ReadFrom, ReadOptions};
use cairn_raft_store::limits::DEFAULT_MAX_EVENT_BYTES;
use clap::Args;
use tokio_stream::StreamExt;

use super::output::{event_json, event_text, fail, usage};
use super::ClientOptions;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// The stream to append to.
    pub stream: String,
    /// The event's data: a JSON document (or any bytes with --content-type
    /// application/octet-stream); @FILE reads it from a file, - from standard input. At most
    /// 1 MiB per event (type and data together).
    #[arg(long, allow_hyphen_values = true)]
    pub data: String,
    /// The data's content type: application/json (checked to be JSON) or
    /// application/octet-stream (any bytes).
    #[arg(long, default_value = "application/json", value_parser = parse_content_type)]
    pub content_type: cairn_client::ContentType,
    /// The event's type.
    #[arg(long = "type", default_value = "event")]
    pub event_type: String,
    /// The event's id (a UUID); a fresh one if not given. Repeat an append with the same id and
    /// the same event to retry it safely; the same id with another type or data is refused
    /// (exit 1) and writes nothing.
    #[arg(long, value_parser = parse_uuid)]
    pub id: Option<uuid::Uuid>,
    /// any, no-stream, exists, or the stream's current last revision.
    #[arg(long, default_value = "any")]
    pub expected: ExpectedRevision,
    /// A tag on the event (repeatable; at most 16, each 1..=255 bytes): read and subscribe
    /// to the events with a tag as '$tag-<tag>'.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// The stream to read, or an index in $all order: '$ce-<category>' (streams named
    /// '<category>-...'), '$et-<event type>', '$tag-<tag>'.
    pub stream: String,
    /// First revision to read (a position for an index; default: the start, or the end with
    /// --backwards).
    #[arg(long)]
    pub from: Option<u64>,
    /// Most events to print.
    #[arg(long)]
    pub count: Option<u64>,
    /// Newest first: from --from (default: the last event) down to revision 0.
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
    /// Most events to print.
    #[arg(long)]
    pub count: Option<u64>,
    /// Newest first: from --from (default: the last event) down to position 0.
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

/// A UUID, with an error in the user's terms.
pub(super) fn parse_uuid(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text.trim()).map_err(|_| {
        format!("{text:?} is not a UUID (like 0192f0c1-8a5e-7c3b-9d2e-5f6a7b8c9d0e); leave --id out for a fresh one")
    })
}

pub(super) fn parse_content_type(text: &str) -> Result<cairn_client::ContentType, String> {
    match text.trim() {
        "application/json" | "json" => Ok(cairn_client::ContentType::Json),
        "application/octet-stream" | "octet-stream" | "binary" => {
            Ok(cairn_client::ContentType::Binary)
        }
        other => Err(format!(
            "{other:?} is not one of: application/json, application/octet-stream"
        )),
    }
}

/// The bytes of `--data`: inline, `@FILE`, or `-` (standard input). Reads at most one byte
/// more than an event may hold, so a huge file is refused without being read whole.
fn data_bytes(data: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    let limit = max_bytes as u64 + 1;
    let mut bytes = Vec::new();
    if data == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("--data -: cannot read standard input: {e}"))?;
    } else if let Some(path) = data.strip_prefix('@') {
        let file = std::fs::File::open(path).map_err(|e| format!("--data @{path}: {e}"))?;
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("--data @{path}: {e}"))?;
    } else {
        bytes = data.as_bytes().to_vec();
    }
    Ok(bytes)
}

/// The event `append` writes, checked here against the per-event limit so that a too-large
/// event is one clear line, before anything is sent.
fn event_from_args(args: &AppendArgs) -> Result<EventData, String> {
    new_event(
        &args.data,
        args.content_type,
        &args.event_type,
        args.id,
        &args.tags,
    )
}

/// An event from the command line's flags (`--data`, `--content-type`, `--type`, `--id`,
/// `--tag`), checked against the per-event limit before anything is sent.
pub(super) fn new_event(
    data: &str,
    content_type: cairn_client::ContentType,
    event_type: &str,
    id: Option<uuid::Uuid>,
    tags: &[String],
) -> Result<EventData, String> {
    let max = DEFAULT_MAX_EVENT_BYTES;
    let data = data_bytes(data, max)?;
    let size = data.len() + event_type.len();
    if data.len() > max {
        return Err(format!(
            "--data: more than {max} bytes; an event holds at most {max} bytes (1 MiB), type and data together"
        ));
    }
    if size > max {
        return Err(format!(
            "--data: the event is {size} bytes with its type; an event holds at most {max} bytes (1 MiB)"
        ));
    }
    let mut event = match content_type {
        cairn_client::ContentType::Json => {
            let value: serde_json::Value = serde_json::from_slice(&data).map_err(|e| {
                format!("--data is not valid JSON ({e}); for other data pass --content-type application/octet-stream")
            })?;
            EventData::json(event_type.to_owned(), &value).map_err(|e| e.to_string())?
        }
        cairn_client::ContentType::Binary => EventData::binary(event_type.to_owned(), data),
    };
    if let Some(id) = id {
        event = event.with_id(id);
    }
    Ok(event.with_tags(tags.iter().cloned()))
}

async fn connect(options: &ClientOptions) -> Result<Client, ExitCode> {
    super::connect(options).await
}

pub async fn append(args: AppendArgs) -> ExitCode {
    let event = match event_from_args(&args) {
        Ok(event) => event,
        Err(e) => return usage(e),
    };
    let client = match connect(&args.client).await {
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

pub(super) fn read_options(from: Option<u64>, count: Option<u64>, backwards: bool) -> ReadOptions {
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

pub(super) async fn print_events(
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
    let client = match connect(&args.client).await {
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
    let client = match connect(&args.client).await {
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
    let client = match connect(&args.client).await {
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
                if m.reachable {
                    serde_json::json!({
                        "id": m.id,
                        "endpoint": m.endpoint,
                        "role": role_name(m.role),
                        "reachable": true,
                        "term": m.term,
                        "last_applied_index": m.last_applied_index,
                        "applied_position": m.applied_position,
                    })
                } else {
                    // What an unreachable member's figures would be is unknown: null, not 0.
                    serde_json::json!({
                        "id": m.id,
                        "endpoint": m.endpoint,
                        "role": null,
                        "reachable": false,
                        "term": null,
                        "last_applied_index": null,
                        "applied_position": null,
                        "error": "unreachable",
                    })
                }
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
