//! Live lag: subscribers on a follower while writers hold a steady rate; how long after its
//! acknowledgement each event reaches them.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::{
    Client, EventData, ExpectedRevision, NodePreference, ReadFrom, SubscribeOptions,
    SubscriptionMessage,
};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::catchup::highest_applied;
use super::{now_unix_ms, BenchArgs, SplitMix64};
use crate::cli::{EXIT_FAILURE, EXIT_USAGE};

/// Lag: concurrent writers, and events per append (the rate is split between writers).
pub const LAG_WRITERS: u64 = 4;
pub const LAG_EVENTS_PER_APPEND: u64 = 50;
/// Lag: longest the subscribers may take to receive the last event once writing stops.
pub const LAG_DRAIN_MS: u64 = 30_000;

/// Lag: most positions a run may cover (acknowledgement times are kept per position).
pub const LAG_MAX_EVENTS: usize = 4_000_000;

pub(super) async fn run_lag(args: &BenchArgs, client: Client) -> ExitCode {
    if args.subscribers == 0 || args.rate == 0 {
        eprintln!("error: --subscribers and --rate must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let expected_events = (args.rate as f64 * (args.seconds + args.warmup) * 2.0) as usize;
    if expected_events > LAG_MAX_EVENTS {
        eprintln!("error: --rate x --seconds asks for more than {LAG_MAX_EVENTS} events");
        return ExitCode::from(EXIT_USAGE);
    }
    let base = match highest_applied(&client).await {
        Ok(position) => position,
        Err(code) => return code,
    };
    // When each event's append was acknowledged (commit + apply on the leader), in
    // nanoseconds since `clock`, plus one (0: not yet).
    let clock = Instant::now();
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..expected_events).map(|_| AtomicU64::new(0)).collect());
    let mut subs = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let options = SubscribeOptions::default()
            .from(ReadFrom::End)
            .prefer(NodePreference::Follower)
            .no_resubscribe();
        match client.subscribe_all(options).await {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.seconds);
    let last_position = Arc::new(AtomicU64::new(0));
    let new_histogram =
        || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let collectors: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            let last_position = last_position.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                // Commit (acknowledgement) to delivery, and proposal to delivery, in µs.
                let (mut from_commit, mut from_proposal) = (new_histogram(), new_histogram());
                let deadline = stop_at + Duration::from_millis(LAG_DRAIN_MS);
                while Instant::now() < deadline {
                    let message = match tokio::time::timeout_at(deadline.into(), sub.next()).await {
                        Ok(Some(Ok(message))) => message,
                        _ => break,
                    };
                    if let SubscriptionMessage::Event(event) = message {
                        let received = clock.elapsed().as_nanos() as u64 + 1;
                        if Instant::now() >= measure_from {
                            let slot = event
                                .position
                                .checked_sub(base)
                                .and_then(|i| acked.get(i as usize));
                            let ack = slot.map_or(0, |a| a.load(Ordering::Acquire));
                            // Delivered before the writer heard its acknowledgement: no lag.
                            let lag_us = if ack == 0 {
                                0
                            } else {
                                received.saturating_sub(ack) / 1000
                            };
                            let _ = from_commit.record(lag_us.clamp(1, 600_000_000));
                            let proposal_us =
                                now_unix_ms().saturating_sub(event.created_unix_ms) * 1000;
                            let _ = from_proposal.record(proposal_us.clamp(1, 600_000_000));
                        }
                        let done = last_position.load(Ordering::Acquire);
                        if done > 0 && event.position >= done {
                            break;
                        }
                    }
                }
                (from_commit, from_proposal)
            })
        })
        .collect();
    let per_writer_interval = Duration::from_secs_f64(
        LAG_WRITERS as f64 * LAG_EVENTS_PER_APPEND as f64 / args.rate as f64,
    );
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..LAG_WRITERS)
        .map(|w| {
            let client = client.clone();
            let written = written.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let stream = format!("cb{}-lag-{w}", std::process::id());
                let mut rng = SplitMix64(w);
                let mut tick = tokio::time::interval(per_writer_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last = 0;
                while Instant::now() < stop_at {
                    tick.tick().await;
                    let events = (0..LAG_EVENTS_PER_APPEND)
                        .map(|_| EventData::binary("Live", rng.payload()))
                        .collect();
                    if let Ok(result) = client.append(&stream, ExpectedRevision::Any, events).await
                    {
                        let at = clock.elapsed().as_nanos() as u64 + 1;
                        let first = result.last_position + 1 - LAG_EVENTS_PER_APPEND;
                        for position in first..=result.last_position {
                            if let Some(slot) = position
                                .checked_sub(base)
                                .and_then(|i| acked.get(i as usize))
                            {
                                slot.store(at, Ordering::Release);
                            }
                        }
                        last = last.max(result.last_position);
                        written.fetch_add(LAG_EVENTS_PER_APPEND, Ordering::Relaxed);
                    }
                }
                last
            })
        })
        .collect();
    let started = Instant::now();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.unwrap_or(0));
    }
    let elapsed = started.elapsed().as_secs_f64();
    last_position.store(last.max(1), Ordering::Release);
    let (mut from_commit, mut from_proposal) = (new_histogram(), new_histogram());
    for collector in collectors {
        if let Ok((c, p)) = collector.await {
            let _ = from_commit.add(&c);
            let _ = from_proposal.add(&p);
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0);
    println!(
        "{{\"target\":{},\"scenario\":\"lag\",\"subscribers\":{},\"events_per_s\":{:.1},\"events_per_append\":{LAG_EVENTS_PER_APPEND},\"deliveries\":{},\
         \"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"from_proposal_p50_ms\":{},\"from_proposal_p99_ms\":{}}}",
        serde_json::Value::String(args.label.clone()),
        args.subscribers,
        written.load(Ordering::Relaxed) as f64 / elapsed,
        from_commit.len(),
        ms(&from_commit, 0.5),
        ms(&from_commit, 0.99),
        ms(&from_commit, 0.999),
        ms(&from_commit, 1.0),
        ms(&from_proposal, 0.5),
        ms(&from_proposal, 0.99),
    );
    ExitCode::SUCCESS
}
