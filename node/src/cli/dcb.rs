//! `cairn append-batch` (several streams, all or nothing) and `cairn dcb read|append`
//! (Dynamic Consistency Boundaries: events found by type and tag, appends with a condition).

use std::io::Read;
use std::process::ExitCode;

use cairn_client::{
    AppendCondition, EventData, ExpectedRevision, MultiAppendResult, Query, QueryItem, StreamAppend,
};
use cairn_raft_store::limits::DEFAULT_MAX_APPEND_BYTES;
use clap::{Args, Subcommand};

use super::commands::{new_event, parse_content_type, parse_uuid, print_events, read_options};
use super::output::{fail, usage};
use super::ClientOptions;

/// Most bytes `append-batch` reads from its file: the largest append, with room for the JSON
/// around the data. A bigger file is refused before anything is sent.
pub const MAX_BATCH_FILE_BYTES: usize = 2 * DEFAULT_MAX_APPEND_BYTES;

#[derive(Args, Debug)]
pub struct AppendBatchArgs {
    /// JSON lines, one event each: {"stream", "expected" (optional, on a stream's first
    /// event: any, no-stream, exists or a revision), "type", "data", "tags", "id"}; a stream's
    /// events on consecutive lines. `-` reads standard input.
    pub file: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct DcbArgs {
    #[command(subcommand)]
    command: DcbCommand,
}

#[derive(Subcommand, Debug)]
enum DcbCommand {
    /// Read the events of any of the types that carry every tag given, in $all order (no
    /// type and no tag: every event).
    Read(DcbReadArgs),
    /// Append an event (no stream name) if no event matching the condition exists after
    /// --after (or at all). Exit 3 when one does, naming the first matching position.
    Append(DcbAppendArgs),
}

#[derive(Args, Debug)]
struct DcbReadArgs {
    /// An event type (repeatable: any of them).
    #[arg(long = "type")]
    types: Vec<String>,
    /// A tag (repeatable: every one of them).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// First position to read (default: the start, or the end with --backwards).
    #[arg(long)]
    from: Option<u64>,
    /// Most events to print.
    #[arg(long)]
    count: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backwards: bool,
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(Args, Debug)]
struct DcbAppendArgs {
    /// The event's type.
    #[arg(long = "type")]
    event_type: String,
    /// The event's data (JSON; @FILE, - for standard input).
    #[arg(long, allow_hyphen_values = true)]
    data: String,
    #[arg(long, default_value = "application/json", value_parser = parse_content_type)]
    content_type: cairn_client::ContentType,
    /// A tag on the event (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// The event's id; a fresh one if not given. The same id retries safely.
    #[arg(long, value_parser = parse_uuid)]
    id: Option<uuid::Uuid>,
    /// Fail if an event of this type exists (repeatable: any of them; with --fail-if-tag,
    /// one query item).
    #[arg(long = "fail-if-type")]
    fail_if_types: Vec<String>,
    /// Fail if an event with this tag exists (repeatable: all of them together).
    #[arg(long = "fail-if-tag")]
    fail_if_tags: Vec<String>,
    /// Another query item, 'types=A,B;tags=x,y' (repeatable; items are OR'd).
    #[arg(long = "fail-if", value_parser = parse_item)]
    fail_if: Vec<QueryItem>,
    /// Only events after this position fail the condition (the position your decision read
    /// up to).
    #[arg(long)]
    after: Option<u64>,
    #[command(flatten)]
    client: ClientOptions,
}

/// A query item as `types=A,B;tags=x,y` (either part may be left out, not both).
fn parse_item(text: &str) -> Result<QueryItem, String> {
    let mut item = QueryItem::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, values) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected types=A,B or tags=x,y"))?;
        let values: Vec<String> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        match key.trim() {
            "types" => item.types.extend(values),
            "tags" => item.tags.extend(values),
            other => return Err(format!("{other:?}: expected types or tags")),
        }
    }
    if item.types.is_empty() && item.tags.is_empty() {
        return Err(format!(
            "{text:?} names no type and no tag; write types=A,B;tags=x,y"
        ));
    }
    Ok(item)
}

pub async fn run(args: DcbArgs) -> ExitCode {
    match args.command {
        DcbCommand::Read(args) => read(args).await,
        DcbCommand::Append(args) => append(args).await,
    }
}

async fn read(args: DcbReadArgs) -> ExitCode {
    let query = if args.types.is_empty() && args.tags.is_empty() {
        Query::all()
    } else {
        Query::of(vec![QueryItem::types(args.types).with_tags(args.tags)])
    };
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let options = read_options(args.from, args.count, args.backwards);
    print_events(client.read_query(&query, options).await, args.client.json).await
}

async fn append(args: DcbAppendArgs) -> ExitCode {
    let event = match new_event(
        &args.data,
        args.content_type,
        &args.event_type,
        args.id,
        &args.tags,
    ) {
        Ok(event) => event,
        Err(e) => return usage(e),
    };
    let mut items = Vec::new();
    if !args.fail_if_types.is_empty() || !args.fail_if_tags.is_empty() {
        items.push(QueryItem::types(args.fail_if_types).with_tags(args.fail_if_tags));
    }
    items.extend(args.fail_if);
    let condition = (!items.is_empty() || args.after.is_some()).then(|| AppendCondition {
        fail_if_events_match: Query::of(items),
        after: args.after,
    });
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.dcb_append(vec![event], condition).await {
        Ok(result) => print_result(&result, args.client.json),
        Err(e) => fail(&e),
    }
}

/// One line of an `append-batch` file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    stream: String,
    expected: Option<serde_json::Value>,
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
    #[serde(default)]
    tags: Vec<String>,
    id: Option<uuid::Uuid>,
}

fn expected_from_json(value: &serde_json::Value) -> Result<ExpectedRevision, String> {
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(ExpectedRevision::Exact)
            .ok_or_else(|| format!("{n} is not a revision")),
        serde_json::Value::String(s) => s.parse().map_err(|e| format!("{e}")),
        other => Err(format!(
            "{other} is not any, no-stream, exists or a revision"
        )),
    }
}

/// The streams of a batch file, in the order they first appear.
fn parse_batch(text: &str) -> Result<Vec<StreamAppend>, String> {
    let mut streams: Vec<StreamAppend> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let line: BatchLine = serde_json::from_str(line).map_err(|e| format!("line {at}: {e}"))?;
        let mut event = EventData::json(line.event_type, &line.data)
            .map_err(|e| format!("line {at}: {e}"))?
            .with_tags(line.tags);
        if let Some(id) = line.id {
            event = event.with_id(id);
        }
        let expected = match &line.expected {
            Some(value) => {
                Some(expected_from_json(value).map_err(|e| format!("line {at}: expected: {e}"))?)
            }
            None => None,
        };
        match streams.last_mut() {
            Some(part) if part.stream == line.stream => {
                if expected.is_some() {
                    return Err(format!(
                        "line {at}: \"expected\" goes on the first event of stream {:?} only",
                        line.stream
                    ));
                }
                part.events.push(event);
            }
            _ => {
                if streams.iter().any(|p| p.stream == line.stream) {
                    return Err(format!(
                        "line {at}: stream {:?} appeared on earlier lines; put a stream's events on consecutive lines",
                        line.stream
                    ));
                }
                streams.push(StreamAppend {
                    stream: line.stream,
                    expected: expected.unwrap_or(ExpectedRevision::Any),
                    events: vec![event],
                });
            }
        }
    }
    if streams.is_empty() {
        return Err("the batch has no events".to_owned());
    }
    Ok(streams)
}

fn read_batch_file(file: &str) -> Result<String, String> {
    let limit = MAX_BATCH_FILE_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("{file}: {e}"))?;
    if bytes.len() > MAX_BATCH_FILE_BYTES {
        return Err(format!(
            "{file}: more than {MAX_BATCH_FILE_BYTES} bytes; one append holds at most {DEFAULT_MAX_APPEND_BYTES}"
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8 text"))
}

pub async fn append_batch(args: AppendBatchArgs) -> ExitCode {
    let streams = match read_batch_file(&args.file).and_then(|text| parse_batch(&text)) {
        Ok(streams) => streams,
        Err(e) => return usage(e),
    };
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.append_multi(streams, Vec::new(), None).await {
        Ok(result) => print_result(&result, args.client.json),
        Err(e) => fail(&e),
    }
}

/// Each stream's last revision and the last position.
fn print_result(result: &MultiAppendResult, json: bool) -> ExitCode {
    if json {
        let streams: Vec<_> = result
            .last_revisions
            .iter()
            .map(|(stream, revision)| serde_json::json!({"stream": stream, "revision": revision}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "streams": streams,
                "position": result.last_position,
                "already_written": result.already_written,
            })
        );
    } else {
        for (stream, revision) in &result.last_revisions {
            println!("{stream}: revision {revision}");
        }
        let note = if result.already_written {
            " (already written: a retry)"
        } else {
            ""
        };
        println!("position {}{note}", result.last_position);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_groups_consecutive_lines_by_stream_and_refuses_what_it_cannot_place() {
        let text = r#"{"stream":"a","expected":"no-stream","type":"T","data":{"x":1},"tags":["k"]}
{"stream":"a","type":"T","data":2}

{"stream":"b","expected":4,"type":"U","data":null}"#;
        let streams = parse_batch(text).unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].expected, ExpectedRevision::NoStream);
        assert_eq!(streams[0].events.len(), 2);
        assert_eq!(streams[0].events[0].tags, vec!["k".to_owned()]);
        assert_eq!(streams[1].expected, ExpectedRevision::Exact(4));
        let late = "{\"stream\":\"a\",\"type\":\"T\",\"data\":1}\n{\"stream\":\"a\",\"expected\":1,\"type\":\"T\",\"data\":1}";
        assert!(parse_batch(late).unwrap_err().contains("line 2"));
        let split = "{\"stream\":\"a\",\"type\":\"T\",\"data\":1}\n{\"stream\":\"b\",\"type\":\"T\",\"data\":1}\n{\"stream\":\"a\",\"type\":\"T\",\"data\":1}";
        assert!(parse_batch(split).unwrap_err().contains("consecutive"));
        assert!(parse_batch("{\"stream\":\"a\"}")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_batch("\n").is_err());
    }

    #[test]
    fn a_query_item_flag_reads_types_and_tags_and_refuses_an_empty_one() {
        let item = parse_item("types=A,B;tags=x,y").unwrap();
        assert_eq!(item.types, ["A", "B"]);
        assert_eq!(item.tags, ["x", "y"]);
        assert_eq!(parse_item("tags=x").unwrap().types.len(), 0);
        assert!(parse_item("").is_err());
        assert!(parse_item("kinds=A").is_err());
        assert!(parse_item("types=").is_err());
    }
}
