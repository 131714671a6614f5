//! `cairn bench --scenario scavenge`: issue 18's measurement. Load `--load-mib` across
//! `--streams` streams, soft-delete half of them and set max count on the rest (keeping the
//! last append), then scavenge to the end and wait until every member gave the bytes back,
//! while one client appends one event at a time and times each append. Prints one JSON line:
//! each member's store bytes before and after, the append latency during the scavenge.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn_client::{Client, Error, EventData, ExpectedRevision, StreamMetadata};
use hdrhistogram::Histogram;

use super::{BenchArgs, SplitMix64};
use crate::cli::scavenge::{drive, space, wait_finished, WaitFailed};
use crate::cli::EXIT_FAILURE;

/// Events per loading append, and bytes per event: an append's frame spans several 4 KiB
/// blocks, as an application's batch would.
pub const LOAD_EVENTS_PER_APPEND: usize = 16;
pub const LOAD_EVENT_BYTES: usize = 1024;
/// Concurrent loading (and deleting) clients.
pub const LOAD_WRITERS: u64 = 16;
/// Pause between the probe's appends.
const PROBE_PAUSE: Duration = Duration::from_millis(5);

fn fail_with(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {what}: {e}");
    ExitCode::from(EXIT_FAILURE)
}

/// Loads and then deletes or limits every stream; each writer takes every LOAD_WRITERS-th.
async fn prepare(client: &Client, prefix: &str, streams: u64, bytes: u64) -> Result<(), Error> {
    let append_bytes = (LOAD_EVENTS_PER_APPEND * LOAD_EVENT_BYTES) as u64;
    let appends = bytes.div_ceil(append_bytes);
    let writers: Vec<_> = (0..LOAD_WRITERS)
        .map(|w| {
            let client = client.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut rng = SplitMix64(w);
                let mut payload = || {
                    let mut bytes = Vec::with_capacity(LOAD_EVENT_BYTES);
                    while bytes.len() < LOAD_EVENT_BYTES {
                        bytes.extend(rng.payload());
                    }
                    bytes.truncate(LOAD_EVENT_BYTES);
                    bytes
                };
                let mut n = w;
                while n < appends {
                    let events = (0..LOAD_EVENTS_PER_APPEND)
                        .map(|_| EventData::binary("Loaded", payload()))
                        .collect();
                    let stream = format!("{prefix}-{}", n % streams);
                    client
                        .append(&stream, ExpectedRevision::Any, events)
                        .await?;
                    n += LOAD_WRITERS;
                }
                let mut s = w;
                while s < streams {
                    let stream = format!("{prefix}-{s}");
                    if s % 2 == 0 {
                        client.delete_stream(&stream, ExpectedRevision::Any).await?;
                    } else {
                        let last_append = StreamMetadata {
                            max_count: Some(LOAD_EVENTS_PER_APPEND as u64),
                            ..Default::default()
                        };
                        client
                            .set_stream_metadata(&stream, ExpectedRevision::Any, last_append)
                            .await?;
                    }
                    s += LOAD_WRITERS;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await.map_err(|e| Error::Internal(e.to_string()))??;
    }
    Ok(())
}

pub async fn run_scavenge(args: &BenchArgs, client: Client) -> ExitCode {
    let prefix = format!("cb{}-scavenge", std::process::id());
    let loading = Instant::now();
    eprintln!(
        "scavenge: loading {} MiB across {} streams",
        args.load_mib, args.streams
    );
    if let Err(e) = prepare(&client, &prefix, args.streams.max(1), args.load_mib << 20).await {
        return fail_with("loading", e);
    }
    eprintln!(
        "scavenge: loaded, half deleted, max count on the rest in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let before = match space(&client).await {
        Ok(before) => before,
        Err(e) => return fail_with("measuring", e),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probe = {
        let client = client.clone();
        let stream = format!("{prefix}-probe");
        tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("a valid histogram");
            let mut failed = 0u64;
            while !*stopped.borrow() {
                let started = Instant::now();
                let event = EventData::binary("Probe", vec![0; 256]);
                match client
                    .append(&stream, ExpectedRevision::Any, vec![event])
                    .await
                {
                    Ok(_) => {
                        let _ = latencies.record(started.elapsed().as_micros() as u64);
                    }
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(PROBE_PAUSE).await;
            }
            (latencies, failed)
        })
    };
    let scavenging = Instant::now();
    let totals = match drive(&client).await {
        Ok(totals) => totals,
        Err(e) => return fail_with("scavenging", e),
    };
    let forgotten_ms = scavenging.elapsed().as_secs_f64() * 1000.0;
    let after = match wait_finished(&client, totals.log_index).await {
        Ok(after) => after,
        Err(WaitFailed::Client(e)) => return fail_with("waiting", e),
        Err(WaitFailed::Unfinished(waiting)) => {
            return fail_with("waiting", format!("{waiting:?}"))
        }
    };
    let reclaimed_ms = scavenging.elapsed().as_secs_f64() * 1000.0;
    let _ = stop.send(true);
    let (latencies, failed) = match probe.await {
        Ok(result) => result,
        Err(e) => return fail_with("the probe", e),
    };
    let nodes: Vec<serde_json::Value> = after
        .values()
        .map(|m| {
            let was = before.get(&m.id).map_or(0, |b| b.store_bytes);
            serde_json::json!({
                "node": m.id,
                "bytes_before": was,
                "bytes_after": m.store_bytes,
                "shrunk_percent": if was == 0 { 0.0 } else {
                    100.0 * (was.saturating_sub(m.store_bytes)) as f64 / was as f64
                },
            })
        })
        .collect();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "target": args.label,
            "scenario": "scavenge",
            "load_mib": args.load_mib,
            "streams": args.streams,
            "removed_events": totals.removed_events,
            "removed_bytes": totals.removed_bytes,
            "forgotten_ms": forgotten_ms,
            "reclaimed_ms": reclaimed_ms,
            "probe_appends": latencies.len(),
            "probe_failed": failed,
            "append_p50_ms": ms(0.5),
            "append_p99_ms": ms(0.99),
            "append_max_ms": latencies.max() as f64 / 1000.0,
            "nodes": nodes,
        })
    );
    ExitCode::SUCCESS
}
