//! Consumer-group consumers in the workload: two hosts share one ordered group on `$all`,
//! acknowledge what they get, park some of it, and now and then crash mid-event (drop their
//! connection without answering); with `group_update` one of them updates the group's
//! settings once, mid-run; with `group_filter` the group delivers only the hot streams.
//! What they receive and answer goes into the history, for the checker's group rules
//! (`checker/groups.rs`).

use std::time::Duration;

use cairn_client::{
    ConsumerMessage, Error, GroupSettings, GroupStrategy, GroupUpdate, NackAction,
    SubscriptionFilter,
};

use crate::history::Record;
use crate::rng::SimRng;
use crate::workload::{client_for, event_ref, now_ms, record, Recorder};

/// The group the consumers share.
pub const GROUP: &str = "sim";
/// Consumer hosts.
pub const GROUP_CONSUMERS: u32 = 2;
/// Each consumer's window; the group's message timeout and checkpoint interval.
pub const GROUP_WINDOW: u32 = 4;
pub const GROUP_MESSAGE_TIMEOUT_MS: u64 = 1_000;
pub const GROUP_CHECKPOINT_INTERVAL_MS: u64 = 100;
/// Retries before the server parks an event on its own: high, so that in a run every
/// event the group finishes is one a consumer answered (which the order rule relies on).
pub const GROUP_MAX_RETRIES: u32 = 1_000;
/// Share of events a consumer parks, and of events it crashes on.
pub const PARK_PERCENT: u64 = 5;
pub const CRASH_PERCENT: u64 = 3;
/// After this many deliveries, consumer 1 updates the group's checkpoint interval (once,
/// with `SimConfig::group_update`): an update applied mid-run, which must keep the checkpoint.
pub const UPDATE_AFTER_DELIVERIES: u64 = 20;
pub const UPDATED_CHECKPOINT_INTERVAL_MS: u64 = 150;
/// The stream prefix of the group's filter, with `SimConfig::group_filter`: the workload's
/// hot streams pass, its cold ones do not.
pub const GROUP_FILTER_STREAM_PREFIX: &str = "hot-";
/// How long a consumer waits for the next message before looking at the clock again.
const NEXT_WAIT_MS: u64 = 500;
/// Pause before a consumer connects again.
const RECONNECT_PAUSE_MS: u64 = 100;

/// One consumer host: creates the group if nobody has, then consumes until `until_ms`.
pub async fn run_group_consumer(
    consumer: u32,
    endpoints: Vec<String>,
    mut rng: SimRng,
    until_ms: u64,
    update: bool,
    filter: bool,
    recorder: Recorder,
) -> turmoil::Result {
    let client = client_for(endpoints)?;
    let stream_prefix = filter.then(|| GROUP_FILTER_STREAM_PREFIX.to_owned());
    let settings = GroupSettings {
        max_in_flight: Some(GROUP_WINDOW),
        message_timeout_ms: Some(GROUP_MESSAGE_TIMEOUT_MS),
        checkpoint_interval_ms: Some(GROUP_CHECKPOINT_INTERVAL_MS),
        max_retries: Some(GROUP_MAX_RETRIES),
        strategy: GroupStrategy::Ordered,
        filter: stream_prefix
            .clone()
            .map(|prefix| SubscriptionFilter::default().stream_prefix(prefix)),
        ..GroupSettings::on("$all")
    };
    record(
        &recorder,
        Record::GroupCreate {
            consumer,
            group: GROUP.into(),
            stream_prefix,
        },
    );
    let id = rng.uuid();
    let mut deliveries = 0u64;
    while now_ms() < until_ms {
        match client.create_group_with_id(GROUP, &settings, id).await {
            Ok(_) | Err(Error::GroupExists { .. }) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(RECONNECT_PAUSE_MS)).await,
        }
    }
    'connect: while now_ms() < until_ms {
        let mut member = match client.consume(GROUP).await {
            Ok(member) => member,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(RECONNECT_PAUSE_MS)).await;
                continue;
            }
        };
        while now_ms() < until_ms {
            let next =
                tokio::time::timeout(Duration::from_millis(NEXT_WAIT_MS), member.next()).await;
            let delivery = match next {
                Ok(Ok(ConsumerMessage::Event(delivery))) => delivery,
                Ok(Ok(ConsumerMessage::Rejected { .. })) | Err(_) => continue,
                Ok(Err(_)) => {
                    tokio::time::sleep(Duration::from_millis(RECONNECT_PAUSE_MS)).await;
                    continue 'connect;
                }
            };
            let event = delivery.event;
            deliveries += 1;
            if update && consumer == 1 && deliveries == UPDATE_AFTER_DELIVERIES {
                // Its outcome does not matter to the rules (a fault may refuse it); the state
                // it writes, if any, is judged with the checkpoints.
                let update = GroupUpdate {
                    checkpoint_interval_ms: Some(UPDATED_CHECKPOINT_INTERVAL_MS),
                    ..GroupUpdate::default()
                };
                let _ = client.update_group(GROUP, &update).await;
            }
            record(
                &recorder,
                Record::GroupDelivery {
                    consumer,
                    at_ms: now_ms(),
                    group: GROUP.into(),
                    event: event_ref(&event),
                    retry_count: delivery.retry_count,
                },
            );
            if rng.percent(CRASH_PERCENT) {
                record(
                    &recorder,
                    Record::GroupCrash {
                        consumer,
                        at_ms: now_ms(),
                        group: GROUP.into(),
                    },
                );
                drop(member);
                continue 'connect;
            }
            let park = rng.percent(PARK_PERCENT);
            // Recorded before it is sent: the server moves on only after it arrives.
            record(
                &recorder,
                Record::GroupAck {
                    consumer,
                    at_ms: now_ms(),
                    group: GROUP.into(),
                    id: event.id,
                    stream: event.stream.clone(),
                    revision: event.revision,
                    position: event.position,
                    action: if park { "park" } else { "ack" }.into(),
                },
            );
            let sent = if park {
                member
                    .nack(&[event.id], NackAction::Park, "simulated")
                    .await
            } else {
                member.ack(&[event.id]).await
            };
            if sent.is_err() {
                continue 'connect;
            }
        }
    }
    Ok(())
}
