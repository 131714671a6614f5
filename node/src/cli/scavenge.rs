//! `cairn scavenge [--wait]`: remove what retention hides and give the space back.
//!
//! Drives the scavenge steps (`Client::scavenge_step`) from position 0 to the end of `$all`,
//! pausing `SCAVENGE_STEP_PAUSE_MS` between them, with progress on stderr. Prints each
//! member's store size before and after; with `--wait`, "after" is measured once every member
//! has applied the last step and given every scavenged byte back.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use cairn_client::{proto, Client, Error};
use clap::Args;

use super::output::fail;
use super::ClientOptions;

/// Pause between scavenge steps: each step holds the leader's apply for a bounded stretch
/// (`scavenge::SCAVENGE_GROUPS_PER_COMMAND` groups, or `SCAVENGE_EVENT_BYTES_PER_COMMAND` of
/// their events), and the pause lets appends through.
pub const SCAVENGE_STEP_PAUSE_MS: u64 = 20;
/// How often `--wait` asks the members how far they are.
pub const WAIT_POLL_MS: u64 = 250;
/// Longest `--wait` waits for the members after the last step; at the limit it says which
/// member has not finished and why it thinks so, and exits 1.
pub const WAIT_TIMEOUT_MS: u64 = 600_000;

#[derive(Args, Debug)]
pub struct ScavengeArgs {
    /// Wait until every member has given the scavenged bytes back before measuring "after".
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// Each member's figures, by id.
pub async fn space(client: &Client) -> Result<BTreeMap<u64, proto::Member>, Error> {
    let status = client.status_with_space().await?;
    Ok(status.members.into_iter().map(|m| (m.id, m)).collect())
}

/// Why a member has not finished, or `None` if it has.
fn unfinished(member: &proto::Member, last_log_index: u64) -> Option<String> {
    if !member.reachable {
        Some("it does not answer".to_owned())
    } else if member.last_applied_index < last_log_index {
        Some(format!(
            "it has applied up to log index {}, the last scavenge step is {last_log_index}",
            member.last_applied_index
        ))
    } else if member.reclaim_pending_groups > 0 {
        Some(format!(
            "{} bytes of {} scavenged groups are still to be given back",
            member.reclaim_pending_bytes, member.reclaim_pending_groups
        ))
    } else {
        None
    }
}

/// Drives the scavenge steps from position 0 to the end of `$all`, progress on stderr;
/// the totals, with the last step's log index.
pub async fn drive(client: &Client) -> Result<proto::ScavengeResponse, Error> {
    let mut from = Some(0);
    let mut totals = proto::ScavengeResponse::default();
    while let Some(from_position) = from {
        let step = client.scavenge_step(from_position).await?;
        totals.examined_groups += step.examined_groups;
        totals.removed_groups += step.removed_groups;
        totals.removed_events += step.removed_events;
        totals.removed_bytes += step.removed_bytes;
        totals.log_index = step.log_index;
        totals.end_position = step.end_position;
        eprintln!(
            "scavenge: position {} of {}: {} groups examined, {} removed ({} events, {} bytes)",
            step.next_position.unwrap_or(step.end_position),
            step.end_position,
            totals.examined_groups,
            totals.removed_groups,
            totals.removed_events,
            totals.removed_bytes,
        );
        from = step.next_position;
        if from.is_some() {
            tokio::time::sleep(Duration::from_millis(SCAVENGE_STEP_PAUSE_MS)).await;
        }
    }
    Ok(totals)
}

/// Why `wait_finished` gave up.
pub enum WaitFailed {
    Client(Error),
    /// At `WAIT_TIMEOUT_MS`: each member not finished, and why.
    Unfinished(Vec<(u64, String)>),
}

/// Waits until every member has applied the step at `last_log_index` and given every
/// scavenged byte back (progress on stderr); each member's figures then.
pub async fn wait_finished(
    client: &Client,
    last_log_index: u64,
) -> Result<BTreeMap<u64, proto::Member>, WaitFailed> {
    let started = std::time::Instant::now();
    loop {
        let members = space(client).await.map_err(WaitFailed::Client)?;
        let waiting: Vec<(u64, String)> = members
            .values()
            .filter_map(|m| unfinished(m, last_log_index).map(|why| (m.id, why)))
            .collect();
        if waiting.is_empty() {
            return Ok(members);
        }
        if started.elapsed() >= Duration::from_millis(WAIT_TIMEOUT_MS) {
            return Err(WaitFailed::Unfinished(waiting));
        }
        for (id, why) in &waiting {
            eprintln!("scavenge: waiting for node {id}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(WAIT_POLL_MS)).await;
    }
}

pub async fn run(args: ScavengeArgs) -> ExitCode {
    let client = match super::connect(&args.client).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let before = match space(&client).await {
        Ok(before) => before,
        Err(e) => return fail(&e),
    };
    let totals = match drive(&client).await {
        Ok(totals) => totals,
        Err(e) => return fail(&e),
    };
    let after = if args.wait {
        match wait_finished(&client, totals.log_index).await {
            Ok(after) => after,
            Err(WaitFailed::Client(e)) => return fail(&e),
            Err(WaitFailed::Unfinished(waiting)) => {
                for (id, why) in &waiting {
                    eprintln!("error: node {id} has not finished scavenging: {why}");
                }
                return ExitCode::from(super::EXIT_FAILURE);
            }
        }
    } else {
        match space(&client).await {
            Ok(after) => after,
            Err(e) => return fail(&e),
        }
    };
    for (id, member) in &after {
        let was = before.get(id).map_or(0, |m| m.store_bytes);
        if args.client.json {
            println!(
                "{}",
                serde_json::json!({
                    "node": id,
                    "bytes_before": was,
                    "bytes_after": member.store_bytes,
                    "dead_bytes_left": member.reclaim_pending_bytes,
                    "removed_events": totals.removed_events,
                    "removed_bytes": totals.removed_bytes,
                })
            );
        } else {
            println!(
                "node {id}: {was} bytes before, {} after ({} scavenged bytes still to give back)",
                member.store_bytes, member.reclaim_pending_bytes
            );
        }
    }
    ExitCode::SUCCESS
}
