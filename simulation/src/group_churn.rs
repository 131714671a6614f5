//! A client that creates and deletes consumer groups (`churn-1`..`churn-4`) while the faults
//! run, on a cluster whose limit of live groups is `SIM_MAX_GROUPS`: creates past the limit
//! must be refused. The checker's `group-limit` rule replays each node's `$all` (its
//! `$group-` events) and requires that no committed point holds more live groups than the
//! limit (`checker/groups.rs`).

use std::time::Duration;

use cairn_client::{Error, GroupSettings};

use crate::history::Record;
use crate::rng::SimRng;
use crate::workload::{client_for, now_ms, record, Recorder};

/// The live groups the simulated cluster allows with `SimConfig::group_limit`: half the
/// churned names, so creates meet the limit often (the consumers' group, with `groups`, takes
/// one of them).
pub const SIM_MAX_GROUPS: usize = 2;
/// Names the client creates and deletes.
pub const CHURN_GROUPS: u64 = 4;
/// Share of its changes that are creates (the rest delete).
pub const CREATE_PERCENT: u64 = 70;
/// Pause between changes, in simulated ms (a range).
const PAUSE_MS: (u64, u64) = (50, 250);

/// Runs the client until `until_ms`; records each change and how it ended.
pub async fn run_group_churn(
    endpoints: Vec<String>,
    mut rng: SimRng,
    until_ms: u64,
    recorder: Recorder,
) -> turmoil::Result {
    let client = client_for(endpoints)?;
    record(
        &recorder,
        Record::GroupLimit {
            max: SIM_MAX_GROUPS as u64,
        },
    );
    while now_ms() < until_ms {
        let group = format!("churn-{}", 1 + rng.below(CHURN_GROUPS));
        let create = rng.percent(CREATE_PERCENT);
        let outcome = if create {
            client
                .create_group_with_id(&group, &GroupSettings::on("$all"), rng.uuid())
                .await
                .map(|_| ())
        } else {
            client.delete_group(&group).await.map(|_| ())
        };
        let outcome = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(Error::GroupFull(_)) => "full".to_owned(),
            Err(Error::GroupExists { .. }) => "exists".to_owned(),
            Err(Error::GroupNotFound { .. }) => "not-found".to_owned(),
            Err(e) => format!("unknown: {e}"),
        };
        record(
            &recorder,
            Record::GroupChurn {
                at_ms: now_ms(),
                group,
                create,
                outcome,
            },
        );
        tokio::time::sleep(Duration::from_millis(rng.between(PAUSE_MS.0, PAUSE_MS.1))).await;
    }
    Ok(())
}
