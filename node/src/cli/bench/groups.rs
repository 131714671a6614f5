//! Consumer groups: writers keep 100 streams busy while 4 consumers share one group on
//! `$ce-<category>`; events delivered and acknowledged per second in the measured window, and
//! delivery latency (from the event's commit time, set by the leader, to its arrival at a
//! consumer; one machine, one clock).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{
    Client, ConsumerMessage, EventData, ExpectedRevision, GroupSettings, GroupStrategy,
};
use hdrhistogram::Histogram;

use super::{now_unix_ms, BenchArgs, SplitMix64};
use crate::cli::EXIT_FAILURE;

/// Consumers of the group.
pub const GROUPS_CONSUMERS: usize = 4;
/// Streams the writers spread their events over.
pub const GROUPS_STREAMS: u64 = 100;
/// Concurrent writers, and events per append.
pub const GROUPS_WRITERS: u64 = 8;
pub const GROUPS_EVENTS_PER_APPEND: usize = 100;
/// Each consumer's window, and how many acknowledgements it gathers before sending them (it
/// sends what it has whenever no event is waiting).
pub const GROUPS_WINDOW: u32 = 256;
pub const GROUPS_ACK_BATCH: usize = 64;
/// Unacknowledged events the writers let the group fall behind by before they wait: the
/// benchmark measures the group, not how far ahead writers can run.
pub const GROUPS_MAX_BACKLOG: u64 = 50_000;

pub(super) async fn run_groups(args: &BenchArgs, client: Client) -> ExitCode {
    let run = now_unix_ms();
    let category = format!("benchgroup{run}");
    let group = format!("bench-{run}");
    let settings = GroupSettings {
        max_in_flight: Some(GROUPS_WINDOW),
        strategy: GroupStrategy::RoundRobin,
        ..GroupSettings::on(&format!("$ce-{category}"))
    };
    if let Err(e) = client.create_group(&group, &settings).await {
        eprintln!("error: create group: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.seconds);
    let mut writers = Vec::new();
    for w in 0..GROUPS_WRITERS {
        let (client, stop, written, acked, category) = (
            client.clone(),
            stop.clone(),
            written.clone(),
            acked.clone(),
            category.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut rng = SplitMix64(w + 1);
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                let backlog = written
                    .load(Ordering::Relaxed)
                    .saturating_sub(acked.load(Ordering::Relaxed));
                if backlog > GROUPS_MAX_BACKLOG {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let stream = format!("{category}-{}", n % GROUPS_STREAMS);
                n += GROUPS_WRITERS;
                let events = (0..GROUPS_EVENTS_PER_APPEND)
                    .map(|_| EventData::binary("Bench", rng.payload()))
                    .collect();
                if client
                    .append(&stream, ExpectedRevision::Any, events)
                    .await
                    .is_ok()
                {
                    written.fetch_add(GROUPS_EVENTS_PER_APPEND as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("valid histogram bounds"),
    ));
    let counted = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for _ in 0..GROUPS_CONSUMERS {
        let mut consumer = match client.consume(&group).await {
            Ok(consumer) => consumer,
            Err(e) => {
                eprintln!("error: consume: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let (stop, acked, counted, latency) = (
            stop.clone(),
            acked.clone(),
            counted.clone(),
            latency.clone(),
        );
        consumers.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(GROUPS_ACK_BATCH);
            let mut local = Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("bounds");
            while !stop.load(Ordering::Relaxed) {
                let wait = if pending.is_empty() { 100 } else { 1 };
                let next = tokio::time::timeout(Duration::from_millis(wait), consumer.next()).await;
                match next {
                    Ok(Ok(ConsumerMessage::Event(delivery))) => {
                        let now = Instant::now();
                        if now >= measure_from && now < stop_at {
                            let delay =
                                now_unix_ms().saturating_sub(delivery.event.created_unix_ms);
                            let _ = local.record(delay.max(1));
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        pending.push(delivery.event.id);
                        if pending.len() < GROUPS_ACK_BATCH {
                            continue;
                        }
                    }
                    Ok(Ok(ConsumerMessage::Rejected { .. })) => continue,
                    Ok(Err(e)) => {
                        eprintln!("consumer: {e}");
                        break;
                    }
                    Err(_elapsed) => {}
                }
                if !pending.is_empty() {
                    let _ = consumer.ack(&pending).await;
                    acked.fetch_add(pending.len() as u64, Ordering::Relaxed);
                    pending.clear();
                }
            }
            if let Ok(mut all) = latency.lock() {
                let _ = all.add(&local);
            }
            consumer.close().await;
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    stop.store(true, Ordering::Relaxed);
    for task in writers.into_iter().chain(consumers) {
        let _ = task.await;
    }
    let events = counted.load(Ordering::Relaxed);
    let latency = latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    println!(
        "{}",
        serde_json::json!({
            "scenario": "groups",
            "target": args.label,
            "consumers": GROUPS_CONSUMERS,
            "window": GROUPS_WINDOW,
            "strategy": "round-robin",
            "seconds": args.seconds,
            "events_acked": events,
            "events_per_sec": (events as f64 / args.seconds).round(),
            "delivery_latency_ms": {
                "p50": ms_from_ms(&latency, 0.5),
                "p99": ms_from_ms(&latency, 0.99),
                "max": ms_from_ms(&latency, 1.0),
            },
            "written": written.load(Ordering::Relaxed),
        })
    );
    let _ = client.delete_group(&group).await;
    ExitCode::SUCCESS
}

/// A quantile of a histogram recorded in milliseconds.
fn ms_from_ms(histogram: &Histogram<u64>, quantile: f64) -> serde_json::Value {
    if histogram.is_empty() {
        serde_json::Value::Null
    } else {
        histogram.value_at_quantile(quantile).into()
    }
}
