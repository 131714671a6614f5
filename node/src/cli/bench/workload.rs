//! S1, S2, S3: C clients, each appending N pseudo-random 256-byte events at a time to its own
//! stream with the expected revision it last wrote; warmup, then a measured window; only
//! attempts started inside the window count. `dcb`: the same, each append a DCB append of
//! events tagged with the client's own tag, on the condition that no event with that tag
//! exists after the last position the client wrote. `multi-stream`: each append goes to two
//! streams of the client's own at once, each with its expected revision.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::{
    AppendCondition, Client, Error, EventData, ExpectedRevision, Query, QueryItem, ReadOptions,
    StreamAppend,
};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::{ms, BenchArgs, Scenario, SplitMix64};
use crate::cli::{EXIT_FAILURE, EXIT_USAGE};

/// An append or re-read with no answer in this long counts as an error (BENCHMARKS.md, "The workload").
pub const OPERATION_TIMEOUT_MS: u64 = 10_000;
/// Pause after an error before re-reading the stream (BENCHMARKS.md, "The workload").
pub const ERROR_PAUSE_MS: u64 = 50;
/// Extra time after the window before the scenario is stopped whatever happens.
pub const HARD_STOP_EXTRA_S: u64 = 120;

struct Window {
    start: Instant,
    end: Instant,
    hard_stop: Instant,
}

struct ClientStats {
    histogram: Histogram<u64>,
    appends: u64,
    errors: u64,
    conflicts: u64,
    last_completion: Option<Instant>,
    consistent: bool,
}

async fn stream_head(client: &Client, stream: &str) -> Result<ExpectedRevision, Error> {
    let read = client.read_stream(stream, ReadOptions::backwards().max_count(1).linearizable());
    let head = match tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), read).await {
        Err(_) => return Err(Error::Unavailable("re-read timed out".into())),
        Ok(Err(Error::StreamNotFound { .. })) => return Ok(ExpectedRevision::NoStream),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(mut events)) => events.next().await,
    };
    match head {
        Some(Ok(event)) => Ok(ExpectedRevision::Exact(event.revision)),
        Some(Err(e)) => Err(e),
        None => Ok(ExpectedRevision::NoStream),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    mode: Mode,
    client: Client,
    stream: String,
    seed: u64,
    events_per_append: usize,
    max_appends: u64,
    window: Arc<Window>,
    progress: Arc<AtomicU64>,
) -> ClientStats {
    let mut stats = ClientStats {
        histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
        appends: 0,
        errors: 0,
        conflicts: 0,
        last_completion: None,
        consistent: false,
    };
    let mut rng = SplitMix64(seed);
    // What the client last wrote: its streams' revisions (the second for multi-stream) and,
    // for DCB, the position its condition starts after.
    let mut expected = ExpectedRevision::NoStream;
    let mut second = ExpectedRevision::NoStream;
    let mut after: Option<u64> = None;
    let tag = format!("{stream}-tag");
    let second_stream = format!("{stream}-b");
    loop {
        let now = Instant::now();
        if now >= window.end || now >= window.hard_stop || stats.appends >= max_appends {
            break;
        }
        let mut events = || -> Vec<EventData> {
            (0..events_per_append)
                .map(|_| EventData::binary("BenchEvent", rng.payload()))
                .collect()
        };
        let counted = Instant::now() >= window.start;
        let started = Instant::now();
        let outcome = match mode {
            Mode::Stream => {
                let append = client.append(&stream, expected, events());
                match tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), append)
                    .await
                {
                    Ok(Ok(result)) => {
                        expected = ExpectedRevision::Exact(result.last_revision);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(None),
                }
            }
            Mode::Dcb => {
                let events: Vec<EventData> = events()
                    .into_iter()
                    .map(|e| e.with_tags([tag.clone()]))
                    .collect();
                let condition = AppendCondition {
                    fail_if_events_match: Query::of(vec![
                        QueryItem::types(["BenchEvent"]).with_tags([tag.clone()])
                    ]),
                    after,
                };
                let append = client.dcb_append(events, Some(condition));
                match tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), append)
                    .await
                {
                    Ok(Ok(result)) => {
                        after = Some(result.last_position);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(None),
                }
            }
            Mode::MultiStream => {
                let parts = vec![
                    StreamAppend {
                        stream: stream.clone(),
                        expected,
                        events: events(),
                    },
                    StreamAppend {
                        stream: second_stream.clone(),
                        expected: second,
                        events: events(),
                    },
                ];
                let append = client.append_multi(parts, Vec::new(), None);
                match tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), append)
                    .await
                {
                    Ok(Ok(result)) => {
                        expected = ExpectedRevision::Exact(result.last_revisions[0].1);
                        second = ExpectedRevision::Exact(result.last_revisions[1].1);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(None),
                }
            }
        };
        let finished = Instant::now();
        match outcome {
            Ok(()) => {
                if counted {
                    let micros = finished.duration_since(started).as_micros().max(1) as u64;
                    let _ = stats.histogram.record(micros.min(600_000_000));
                    stats.appends += 1;
                    stats.last_completion = Some(finished);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(Some(Error::WrongExpectedVersion {
                stream: named,
                actual,
                ..
            })) => {
                if counted {
                    stats.conflicts += 1;
                    stats.last_completion = Some(finished);
                }
                let actual = actual.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
                if named == second_stream {
                    second = actual;
                } else {
                    expected = actual;
                }
            }
            Err(Some(Error::ConditionFailed { position })) => {
                if counted {
                    stats.conflicts += 1;
                    stats.last_completion = Some(finished);
                }
                after = Some(position);
            }
            Err(_) => {
                if counted {
                    stats.errors += 1;
                    stats.last_completion = Some(finished);
                }
                tokio::time::sleep(Duration::from_millis(ERROR_PAUSE_MS)).await;
                if let Ok(head) = stream_head(&client, &stream).await {
                    expected = head;
                }
                if mode == Mode::MultiStream {
                    if let Ok(head) = stream_head(&client, &second_stream).await {
                        second = head;
                    }
                }
            }
        }
    }
    stats.consistent = match mode {
        Mode::Stream => matches!(stream_head(&client, &stream).await, Ok(head) if head == expected),
        Mode::MultiStream => {
            matches!(stream_head(&client, &stream).await, Ok(head) if head == expected)
                && matches!(stream_head(&client, &second_stream).await, Ok(head) if head == second)
        }
        // The client's own tag: its last event is where it last wrote.
        Mode::Dcb => {
            let query = Query::of(vec![QueryItem::types(["BenchEvent"]).with_tags([tag])]);
            let read =
                client.read_query(&query, ReadOptions::backwards().max_count(1).linearizable());
            match read.await {
                Ok(mut events) => {
                    matches!(events.next().await, Some(Ok(e)) if Some(e.position) == after)
                }
                Err(_) => false,
            }
        }
    };
    stats
}

/// What each append of a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Dcb,
    MultiStream,
}

pub(super) async fn run_workload(args: &BenchArgs, client: Client) -> ExitCode {
    let (name, default_clients, default_events, mode) = match args.scenario {
        Scenario::S1 => ("S1", 1, 1, Mode::Stream),
        Scenario::S2 => ("S2", 64, 1, Mode::Stream),
        Scenario::S3 => ("S3", 8, 100, Mode::Stream),
        Scenario::Dcb => ("dcb", 64, 1, Mode::Dcb),
        Scenario::MultiStream => ("multi-stream", 64, 1, Mode::MultiStream),
        Scenario::Failover
        | Scenario::Handoff
        | Scenario::Catchup
        | Scenario::Lag
        | Scenario::Restart
        | Scenario::Groups
        | Scenario::Scavenge => {
            unreachable!("this scenario has its own runner")
        }
    };
    let clients = args.clients.unwrap_or(default_clients);
    let events_per_append = args.events_per_append.unwrap_or(default_events);
    if clients == 0 || events_per_append == 0 || args.seconds <= 0.0 || args.warmup < 0.0 {
        eprintln!("error: --clients, --events-per-append and --seconds must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let run_id = format!("cb{}", std::process::id());
    let begin = Instant::now();
    let start = begin + Duration::from_secs_f64(args.warmup);
    let window = Arc::new(Window {
        start,
        end: start + Duration::from_secs_f64(args.seconds),
        hard_stop: start
            + Duration::from_secs_f64(args.seconds)
            + Duration::from_secs(HARD_STOP_EXTRA_S),
    });
    let progress = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let stream = format!("{run_id}-{}-{i}", name.to_lowercase());
            tokio::spawn(run_client(
                mode,
                client.clone(),
                stream,
                0x5EED_0000 + i as u64,
                events_per_append,
                args.max_appends,
                window.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let reporter = {
        let progress = progress.clone();
        let window = window.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let elapsed = begin.elapsed().as_secs_f64();
                let phase = if Instant::now() < window.start {
                    "warmup"
                } else {
                    "measuring"
                };
                eprintln!(
                    "{name}: {elapsed:.0} s ({phase}), {} appends counted",
                    progress.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let (mut appends, mut errors, mut conflicts, mut consistent) = (0u64, 0u64, 0u64, true);
    let mut last: Option<Instant> = None;
    for task in tasks {
        match task.await {
            Ok(stats) => {
                let _ = histogram.add(&stats.histogram);
                appends += stats.appends;
                errors += stats.errors;
                conflicts += stats.conflicts;
                consistent &= stats.consistent;
                last = last.max(stats.last_completion);
            }
            Err(e) => {
                eprintln!("error: a client task failed: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    reporter.abort();
    let duration = last.map_or(0.0, |l| l.duration_since(window.start).as_secs_f64());
    let rate = |n: u64| {
        if duration > 0.0 {
            n as f64 / duration
        } else {
            0.0
        }
    };
    eprintln!("{name}: streams consistent: {consistent}");
    let events = appends * events_per_append as u64;
    println!(
        "{{\"target\":{},\"scenario\":\"{name}\",\"clients\":{clients},\"events_per_append\":{events_per_append},\
         \"duration_s\":{duration:.3},\"appends\":{appends},\"events\":{events},\"events_per_s\":{:.1},\
         \"appends_per_s\":{:.1},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"errors\":{errors},\"conflicts\":{conflicts}}}",
        serde_json::Value::String(args.label.clone()),
        rate(events),
        rate(appends),
        ms(&histogram, 0.5),
        ms(&histogram, 0.99),
        ms(&histogram, 0.999),
    );
    if consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}
