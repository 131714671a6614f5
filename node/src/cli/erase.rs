//! `cairn stream erase STREAM`: tombstone a stream and wait until no member's disk holds a
//! byte of its events.
//!
//! Proposes erase steps (`Client::erase_step`) until one says nothing is left, then polls
//! every member's status until each has applied the last step and has no erase left to scrub
//! (`Member.erase_pending_steps`), with progress on stderr. At `ERASE_WAIT_TIMEOUT_MS` it
//! names each member that has not finished and why (its eraser's own words), and exits 1;
//! running it again resumes (an erase step on an erased stream removes nothing and the
//! members scrub again).

use std::process::ExitCode;
use std::time::Duration;

use cairn_client::{proto, Client, Error};
use clap::Args;

use super::output::fail;
use super::ClientOptions;

/// How often the wait asks the members how far they are.
pub const ERASE_POLL_MS: u64 = 250;
/// Longest the wait lasts after the last step; at the limit each unfinished member is named.
pub const ERASE_WAIT_TIMEOUT_MS: u64 = 600_000;
/// Most steps one erase proposes (each removes at most 1,024 groups): a stream of more than
/// about a billion groups is erased by running the command again.
pub const MAX_ERASE_STEPS: u64 = 1_000_000;

#[derive(Args, Debug)]
pub struct EraseArgs {
    /// The stream (not a `$` stream).
    pub stream: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// Why a member has not finished scrubbing the erase at `log_index`, or `None` if it has.
fn unfinished(member: &proto::Member, log_index: u64) -> Option<String> {
    if !member.reachable {
        Some("it does not answer".to_owned())
    } else if member.last_applied_index < log_index {
        Some(format!(
            "it has applied up to log index {}, the erase is at {log_index}",
            member.last_applied_index
        ))
    } else if member.erase_pending_steps > 0 {
        let doing = if member.erase_progress.is_empty() {
            "waiting to start"
        } else {
            member.erase_progress.as_str()
        };
        Some(format!(
            "{} erase step(s) still to scrub from its disk: {doing}",
            member.erase_pending_steps
        ))
    } else {
        None
    }
}

/// The steps, progress on stderr: the totals and the last step's log index.
async fn drive(client: &Client, stream: &str) -> Result<(u64, u64, u64), Error> {
    let (mut groups, mut events) = (0, 0);
    for _ in 0..MAX_ERASE_STEPS {
        let step = client.erase_step(stream).await?;
        groups += step.removed_groups;
        events += step.removed_events;
        eprintln!("erase: {stream}: tombstoned; {events} events in {groups} groups removed so far");
        if !step.more {
            return Ok((groups, events, step.log_index));
        }
    }
    Err(Error::Internal(format!(
        "{stream}: still more to remove after {MAX_ERASE_STEPS} steps; run the command again"
    )))
}

pub async fn run(args: EraseArgs) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let (groups, events, log_index) = match drive(&client, &args.stream).await {
        Ok(done) => done,
        Err(e) => return fail(&e),
    };
    let started = std::time::Instant::now();
    let members = loop {
        let status = match client.status().await {
            Ok(status) => status,
            Err(e) => return fail(&e),
        };
        let waiting: Vec<(u64, String)> = status
            .members
            .iter()
            .filter_map(|m| unfinished(m, log_index).map(|why| (m.id, why)))
            .collect();
        if waiting.is_empty() {
            break status.members;
        }
        if started.elapsed() >= Duration::from_millis(ERASE_WAIT_TIMEOUT_MS) {
            for (id, why) in &waiting {
                eprintln!(
                    "error: node {id} has not finished erasing {}: {why}",
                    args.stream
                );
            }
            return ExitCode::from(super::EXIT_FAILURE);
        }
        for (id, why) in &waiting {
            eprintln!("erase: waiting for node {id}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(ERASE_POLL_MS)).await;
    };
    let nodes: Vec<u64> = members.iter().map(|m| m.id).collect();
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "stream": args.stream,
                "erased": true,
                "removed_events": events,
                "removed_groups": groups,
                "log_index": log_index,
                "nodes": nodes,
            })
        );
    } else {
        println!(
            "erased {}: {events} events removed; no member's disk holds them (nodes {:?})",
            args.stream, nodes
        );
    }
    ExitCode::SUCCESS
}
