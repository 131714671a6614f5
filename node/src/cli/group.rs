//! `cairn group create|update|list|info|delete|replay-parked` and `cairn consume GROUP`.
//!
//! Exit status as for streams: an unknown group is 4 (not found), creating a group that
//! exists is 3 (like appending with `--expected no-stream` to a stream that exists), bad
//! settings 2.

use std::io::Write;
use std::process::ExitCode;

use cairn_client::{
    proto, ConsumerMessage, GroupSettings, GroupStart, GroupStrategy, GroupUpdate, NackAction,
};
use clap::{Args, Subcommand, ValueEnum};

use super::output::{event_json, event_text, fail, usage};
use super::subscribe::FilterArgs;
use super::ClientOptions;

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a consumer group on a stream, '$all' or an index ('$ce-…', '$et-…', '$tag-…').
    Create(CreateArgs),
    /// Change a group's settings (message timeout, max retries, max in flight, max
    /// consumers, checkpoint interval); its running consumers take them at once.
    Update(UpdateArgs),
    /// Every group with its checkpoint, lag, in flight, parked and consumers.
    List(ListArgs),
    /// One group's settings and figures.
    Info(NameArgs),
    /// Delete a group; its consumers stop.
    Delete(NameArgs),
    /// Deliver every event parked so far (in `$parked-GROUP`) once more.
    ReplayParked(NameArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Strategy {
    /// Any consumer gets any event.
    RoundRobin,
    /// One event of a stream in flight at a time, each stream's events in order.
    Ordered,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub group: String,
    /// The source: a stream, '$all' (events of '$' streams left out), or an index.
    #[arg(long = "stream", value_name = "STREAM")]
    pub source: String,
    /// '$all' only: which events the group delivers (fixed at create).
    #[command(flatten)]
    pub filter: FilterArgs,
    /// start, end (events written after the group), or a revision (stream) / position.
    #[arg(long, default_value = "start", value_parser = parse_start)]
    pub from: GroupStart,
    #[arg(long, value_enum, default_value = "round-robin")]
    pub strategy: Strategy,
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// The settings `create` sets and `update` changes (absent: the default, or as it is).
#[derive(Args, Debug)]
pub struct SettingsArgs {
    /// Redeliver an event not acknowledged within this (default 30,000).
    #[arg(long, value_name = "MS")]
    pub message_timeout_ms: Option<u64>,
    /// Retries before an event is parked (default 10).
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Events in flight per consumer (default 10).
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Consumers at once (default 16).
    #[arg(long, value_name = "N")]
    pub max_consumers: Option<u32>,
    /// How often progress is checkpointed through Raft (default 1,000).
    #[arg(long, value_name = "MS")]
    pub checkpoint_interval_ms: Option<u64>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub group: String,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Cannot change (an ordered group's order could not be kept across it): given and not
    /// the group's own, the update is refused.
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    #[command(flatten)]
    pub client: ClientOptions,
}

fn strategy(strategy: Strategy) -> GroupStrategy {
    match strategy {
        Strategy::RoundRobin => GroupStrategy::RoundRobin,
        Strategy::Ordered => GroupStrategy::Ordered,
    }
}

fn parse_start(text: &str) -> Result<GroupStart, String> {
    match text {
        "start" => Ok(GroupStart::Start),
        "end" => Ok(GroupStart::End),
        n => n
            .parse()
            .map(GroupStart::At)
            .map_err(|_| format!("{n:?}: expected start, end or a number")),
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    pub group: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NackArg {
    /// Park every event instead of acknowledging it.
    Park,
    /// Ask for every event again (it is parked after the group's max retries).
    Retry,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub group: String,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Nack each event instead of acknowledging it.
    #[arg(long, value_enum)]
    pub nack: Option<NackArg>,
    #[command(flatten)]
    pub client: ClientOptions,
}

pub async fn run(args: GroupArgs) -> ExitCode {
    match args.command {
        GroupCommand::Create(args) => create(args).await,
        GroupCommand::Update(args) => update(args).await,
        GroupCommand::List(args) => list(args).await,
        GroupCommand::Info(args) => info(args).await,
        GroupCommand::Delete(args) => change(args, "deleted").await,
        GroupCommand::ReplayParked(args) => change(args, "replay of parked events requested").await,
    }
}

async fn create(args: CreateArgs) -> ExitCode {
    if let Err(code) = args.filter.check() {
        return code;
    }
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let settings = GroupSettings {
        source: args.source,
        start: args.from,
        message_timeout_ms: args.settings.message_timeout_ms,
        max_retries: args.settings.max_retries,
        max_in_flight: args.settings.max_in_flight,
        max_consumers: args.settings.max_consumers,
        checkpoint_interval_ms: args.settings.checkpoint_interval_ms,
        strategy: strategy(args.strategy),
        filter: args.filter.filter(),
    };
    match client.create_group(&args.group, &settings).await {
        Ok(_) if args.client.json => {
            println!(
                "{}",
                serde_json::json!({ "group": args.group, "created": true })
            );
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("group {} created", args.group);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn update(args: UpdateArgs) -> ExitCode {
    let s = &args.settings;
    let change = GroupUpdate {
        message_timeout_ms: s.message_timeout_ms,
        max_retries: s.max_retries,
        max_in_flight: s.max_in_flight,
        max_consumers: s.max_consumers,
        checkpoint_interval_ms: s.checkpoint_interval_ms,
        strategy: args.strategy.map(strategy),
    };
    if change == GroupUpdate::default() {
        return usage(
            "nothing to change: give --message-timeout-ms, --max-retries, --max-in-flight, \
             --max-consumers or --checkpoint-interval-ms",
        );
    }
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.update_group(&args.group, &change).await {
        Ok(_) if args.client.json => {
            println!(
                "{}",
                serde_json::json!({ "group": args.group, "updated": true })
            );
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("group {} updated", args.group);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn change(args: NameArgs, what: &str) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let done = if what == "deleted" {
        client.delete_group(&args.group).await
    } else {
        client.replay_parked(&args.group).await
    };
    match done {
        Ok(_) if args.client.json => {
            println!("{}", serde_json::json!({ "group": args.group, "ok": true }));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("group {}: {what}", args.group);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn info_json(info: &proto::GroupInfoResponse) -> serde_json::Value {
    let settings = info.settings.clone().unwrap_or_default();
    let strategy = if settings.strategy == Some(proto::GroupStrategy::Ordered as i32) {
        "ordered"
    } else {
        "round-robin"
    };
    serde_json::json!({
        "group": info.group,
        "stream": settings.source,
        "filter": settings.filter.as_ref().map(filter_json),
        "strategy": strategy,
        "message_timeout_ms": settings.message_timeout_ms,
        "max_retries": settings.max_retries,
        "max_in_flight": settings.max_in_flight,
        "max_consumers": settings.max_consumers,
        "checkpoint_interval_ms": settings.checkpoint_interval_ms,
        "checkpoint": info.checkpoint,
        "lag": info.lag,
        "in_flight": info.in_flight,
        "parked": info.parked,
        "replay_pending": info.replay_pending,
        "redeliveries": info.redeliveries,
        "active": info.active,
        "consumers": info.consumers.iter().map(|c| serde_json::json!({
            "id": c.id, "peer": c.peer, "in_flight": c.in_flight, "acked": c.acked,
        })).collect::<Vec<_>>(),
    })
}

/// A filter's parts given, by their flag's name (`null` for none).
fn filter_json(filter: &proto::SubscriptionFilter) -> serde_json::Value {
    let part = |s: &String| (!s.is_empty()).then(|| s.clone());
    serde_json::json!({
        "stream_prefix": part(&filter.stream_prefix),
        "type_prefix": part(&filter.event_type_prefix),
        "type_regex": part(&filter.event_type_regex),
    })
}

fn info_text(info: &proto::GroupInfoResponse) -> String {
    let json = info_json(info);
    let filter = match &json["filter"] {
        serde_json::Value::Object(parts) => parts
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| format!(" {k} {v}")))
            .collect::<String>(),
        _ => String::new(),
    };
    format!(
        "{}  stream {}{filter}  {}  checkpoint {}  lag {}  in flight {}  parked {}  consumers {}",
        info.group,
        json["stream"].as_str().unwrap_or(""),
        json["strategy"].as_str().unwrap_or(""),
        info.checkpoint,
        info.lag,
        info.in_flight,
        info.parked,
        info.consumers.len()
    )
}

async fn list(args: ListArgs) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.list_groups().await {
        Ok(groups) => {
            for info in &groups {
                if args.client.json {
                    println!("{}", info_json(info));
                } else {
                    println!("{}", info_text(info));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn info(args: NameArgs) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.group_info(&args.group).await {
        Ok(info) if args.client.json => {
            println!("{}", info_json(&info));
            ExitCode::SUCCESS
        }
        Ok(info) => {
            println!("{}", info_text(&info));
            println!(
                "  redeliveries {}  replay pending {}  active {}",
                info.redeliveries, info.replay_pending, info.active
            );
            for c in &info.consumers {
                println!(
                    "  consumer {}  {}  in flight {}  acked {}",
                    c.id, c.peer, c.in_flight, c.acked
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// When an event arrived, on the machine's monotonic clock (CLOCK_MONOTONIC, shared by every
/// process of the machine): the lines of several consumers on one machine can be put in the
/// order they were received, and delivery latency measured.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// `cairn consume GROUP`: prints each event (a line; with `--json` an object with
/// `retry_count`), then acknowledges it (or nacks it, with `--nack`); stops after `--count`.
pub async fn consume(args: ConsumeArgs) -> ExitCode {
    if args.count == Some(0) {
        return usage("--count: must be at least 1");
    }
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let mut consumer = match client.consume(&args.group).await {
        Ok(consumer) => consumer,
        Err(e) => return fail(&e),
    };
    let mut handled = 0u64;
    let mut stdout = std::io::stdout();
    while args.count.is_none_or(|count| handled < count) {
        let delivery = match consumer.next().await {
            Ok(ConsumerMessage::Event(delivery)) => delivery,
            Ok(ConsumerMessage::Rejected { id, reason }) => {
                eprintln!("warning: {id}: {reason}");
                continue;
            }
            Err(e) => return fail(&e),
        };
        let line = if args.client.json {
            let mut object = event_json(&delivery.event);
            object["retry_count"] = delivery.retry_count.into();
            object["monotonic_ns"] = monotonic_ns().into();
            object.to_string()
        } else if delivery.retry_count > 0 {
            format!(
                "{}  (retry {})",
                event_text(&delivery.event),
                delivery.retry_count
            )
        } else {
            event_text(&delivery.event)
        };
        // Printed (and flushed) before it is acknowledged: an event acknowledged is one the
        // reader of this output has.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::from(super::EXIT_FAILURE);
        }
        let id = [delivery.event.id];
        let sent = match args.nack {
            None => consumer.ack(&id).await,
            Some(NackArg::Park) => {
                consumer
                    .nack(&id, NackAction::Park, "cairn consume --nack park")
                    .await
            }
            Some(NackArg::Retry) => {
                consumer
                    .nack(&id, NackAction::Retry, "cairn consume --nack retry")
                    .await
            }
        };
        if let Err(e) = sent {
            // The connection broke: the event will be delivered again.
            tracing::debug!(%e, "ack not sent");
        }
        handled += 1;
    }
    consumer.close().await;
    ExitCode::SUCCESS
}
