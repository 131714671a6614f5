//! `cairn stream meta|delete|tombstone STREAM`: a stream's metadata and its deletion
//! (`erase` lives in `erase.rs`).

use std::process::ExitCode;

use cairn_client::{AppendResult, ExpectedRevision, StreamMetadata, StreamMetadataState};
use clap::{Args, Subcommand};

use super::output::{fail, usage};
use super::ClientOptions;

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(subcommand)]
    pub command: StreamCommand,
}

#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Print a stream's metadata as JSON, or change it: the flags given replace those
    /// settings, the others are kept.
    Meta(MetaArgs),
    /// Soft-delete a stream: it reads as not found; appending with no-stream or any recreates
    /// it, revisions continuing after the old ones.
    Delete(DeleteArgs),
    /// Tombstone a stream: it can never be written again (reads and appends exit 5).
    Tombstone(DeleteArgs),
    /// Tombstone a stream and remove every byte of its events and of its metadata's history
    /// from every member's disk (the Raft log and the indexes included); returns once every
    /// member reports its disk clean, or says which has not and why (exit 1).
    Erase(super::erase::EraseArgs),
}

#[derive(Args, Debug)]
pub struct MetaArgs {
    /// The stream.
    pub stream: String,
    /// Keep only the last N events (1..=2^40).
    #[arg(long, value_name = "N")]
    pub max_count: Option<u64>,
    /// Hide events older than this, in seconds, judged against the newest committed event's
    /// time (1..=100 years).
    #[arg(long, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Hide revisions below REV.
    #[arg(long, value_name = "REV")]
    pub truncate_before: Option<u64>,
    /// The application's own metadata: a JSON object (at most 16 KiB).
    #[arg(long, value_name = "JSON")]
    pub custom: Option<String>,
    /// Remove a setting (repeatable): max-count, max-age, truncate-before or custom. Events
    /// it hid are shown again, unless a scavenge removed them since.
    #[arg(long, value_name = "SETTING")]
    pub clear: Vec<MetaSetting>,
    /// The metadata's current revision (as `stream meta` prints it), or any / no-stream.
    /// Default: the revision just read, so a concurrent change is not overwritten.
    #[arg(long)]
    pub expected: Option<ExpectedRevision>,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// A metadata setting `--clear` removes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaSetting {
    MaxCount,
    MaxAge,
    TruncateBefore,
    Custom,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The stream.
    pub stream: String,
    /// any, exists, or the stream's current last revision.
    #[arg(long, default_value = "any")]
    pub expected: ExpectedRevision,
    #[command(flatten)]
    pub client: ClientOptions,
}

pub async fn run(args: StreamArgs) -> ExitCode {
    match args.command {
        StreamCommand::Meta(args) => meta(args).await,
        StreamCommand::Delete(args) => delete(args, false).await,
        StreamCommand::Tombstone(args) => delete(args, true).await,
        StreamCommand::Erase(args) => super::erase::run(args).await,
    }
}

fn state_json(stream: &str, state: &StreamMetadataState) -> serde_json::Value {
    serde_json::json!({
        "stream": stream,
        "revision": state.revision,
        "max_count": state.metadata.max_count,
        "max_age_seconds": state.metadata.max_age_seconds,
        "truncate_before": state.metadata.truncate_before,
        "custom": state.metadata.custom,
        "deleted": state.deleted,
        "tombstoned": state.tombstoned,
    })
}

async fn meta(args: MetaArgs) -> ExitCode {
    let custom = match args.custom.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(value @ serde_json::Value::Object(_))) => Some(value),
        Some(Ok(_)) => {
            return usage("--custom: must be a JSON object, like {\"owner\":\"billing\"}")
        }
        Some(Err(e)) => return usage(format!("--custom: not JSON ({e})")),
    };
    let clears = |setting| args.clear.contains(&setting);
    for (setting, given, flag) in [
        (
            MetaSetting::MaxCount,
            args.max_count.is_some(),
            "--max-count",
        ),
        (MetaSetting::MaxAge, args.max_age.is_some(), "--max-age"),
        (
            MetaSetting::TruncateBefore,
            args.truncate_before.is_some(),
            "--truncate-before",
        ),
        (MetaSetting::Custom, custom.is_some(), "--custom"),
    ] {
        if given && clears(setting) {
            return usage(format!("{flag} and --clear of the same setting: give one"));
        }
    }
    let changing = args.max_count.is_some()
        || args.max_age.is_some()
        || args.truncate_before.is_some()
        || custom.is_some()
        || !args.clear.is_empty();
    if !changing && args.expected.is_some() {
        return usage(
            "--expected goes with a change (--max-count, --max-age, --truncate-before, --custom or --clear)",
        );
    }
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let current = match client.stream_metadata(&args.stream).await {
        Ok(current) => current,
        Err(e) => return fail(&e),
    };
    if !changing {
        println!("{}", state_json(&args.stream, &current));
        return ExitCode::SUCCESS;
    }
    let kept = |setting, value: Option<u64>| value.filter(|_| !clears(setting));
    let metadata = StreamMetadata {
        max_count: args
            .max_count
            .or(kept(MetaSetting::MaxCount, current.metadata.max_count)),
        max_age_seconds: args
            .max_age
            .or(kept(MetaSetting::MaxAge, current.metadata.max_age_seconds)),
        truncate_before: args.truncate_before.or(kept(
            MetaSetting::TruncateBefore,
            current.metadata.truncate_before,
        )),
        custom: custom.or(current
            .metadata
            .custom
            .filter(|_| !clears(MetaSetting::Custom))),
    };
    let expected = args.expected.unwrap_or(match current.revision {
        Some(revision) => ExpectedRevision::Exact(revision),
        None => ExpectedRevision::NoStream,
    });
    match client
        .set_stream_metadata(&args.stream, expected, metadata)
        .await
    {
        Ok(result) => match client.stream_metadata(&args.stream).await {
            Ok(state) => {
                println!("{}", state_json(&args.stream, &state));
                report(args.client.json, "metadata of", &args.stream, &result);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Err(e) => fail(&e),
    }
}

async fn delete(args: DeleteArgs, tombstone: bool) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let result = if tombstone {
        client.tombstone_stream(&args.stream, args.expected).await
    } else {
        client.delete_stream(&args.stream, args.expected).await
    };
    match result {
        Ok(result) => {
            let what = if tombstone { "tombstoned" } else { "deleted" };
            if args.client.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "stream": args.stream,
                        what: true,
                        "position": result.last_position,
                        "already_written": result.already_written,
                    })
                );
            } else {
                println!("{what} {} (position {})", args.stream, result.last_position);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// A line on stderr saying what the change did (stdout holds the JSON).
fn report(json: bool, what: &str, stream: &str, result: &AppendResult) {
    if !json {
        eprintln!(
            "changed the {what} {stream}: metadata revision {}, position {}{}",
            result.last_revision,
            result.last_position,
            if result.already_written {
                " (already written: a retry)"
            } else {
                ""
            }
        );
    }
}
