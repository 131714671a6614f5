//! Benchmark of the engine alone: 256-byte events through log append + durable flush + apply,
//! on the production disk (fjall and segment files) with real fdatasync, as one node would do
//! it with no network.
//!
//! ```text
//! cargo bench -p cairn-raft-store --bench engine -- [--events N] [--batches 1,10,100]
//!     [--event-bytes 256] [--max-seconds S] [--snapshot-every ENTRIES] [--dir DIR]
//!     [--random-ids]
//! ```
//!
//! Event ids are time-ordered UUIDv7 (what Cairn's client library generates) unless
//! `--random-ids` asks for UUIDv4, the worst case for the event-id index: random keys dirty a
//! random place in the keyspace per event.
//!
//! Each batch size runs on a fresh store until it has written `--events` events or run for
//! `--max-seconds`. Every `--snapshot-every` entries it builds a snapshot and purges the log
//! up to it, as openraft does under a snapshot policy, so the disk figure includes the log that
//! a running node would keep. Then it reads `$all` back from the start in pages, as a
//! catch-up subscription does (`read_all_events_per_s`). Prints one JSON line per batch size
//! on stdout.

use std::time::{Duration, Instant};

use cairn_raft_store::disk::{Disk, FjallDisk, FjallOptions};
use cairn_raft_store::EntryPayload;
use cairn_raft_store::{
    open_store, Append, Command, ContentType, Entry, ExpectedRevision, Limits, NewEvent,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};

struct Args {
    events: u64,
    batches: Vec<u64>,
    event_bytes: usize,
    max_seconds: f64,
    snapshot_every: u64,
    dir: Option<std::path::PathBuf>,
    random_ids: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        batches: vec![1, 10, 100],
        event_bytes: 256,
        max_seconds: 30.0,
        snapshot_every: 1000,
        dir: None,
        random_ids: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value().parse().expect("--events"),
            "--batches" => {
                args.batches = value()
                    .split(',')
                    .map(|b| b.parse().expect("--batches"))
                    .collect()
            }
            "--event-bytes" => args.event_bytes = value().parse().expect("--event-bytes"),
            "--max-seconds" => args.max_seconds = value().parse().expect("--max-seconds"),
            "--snapshot-every" => args.snapshot_every = value().parse().expect("--snapshot-every"),
            "--dir" => args.dir = Some(value().into()),
            "--random-ids" => args.random_ids = true,
            // cargo bench passes --bench; ignore flags meant for the harness.
            _ => {}
        }
    }
    args
}

/// Resident and peak resident memory of this process, in KiB (Linux).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn run_batch(args: &Args, batch: u64) {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent).expect("bench dir");
    let disk = FjallDisk::open(dir.path(), FjallOptions::default()).expect("open the store");
    let mut store = open_store(disk.clone(), Limits::default()).expect("open store");
    let payload = vec![b'x'; args.event_bytes];
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut events = 0u64;
    let mut index = 0u64;
    while events < args.events && started.elapsed().as_secs_f64() < args.max_seconds {
        index += 1;
        let command = Command::Append(Append {
            stream: format!("stream-{}", index % 64),
            expected: ExpectedRevision::Any,
            events: (0..batch)
                .map(|_| NewEvent {
                    id: if args.random_ids {
                        uuid::Uuid::new_v4()
                    } else {
                        uuid::Uuid::now_v7()
                    },
                    event_type: "BenchEvent".into(),
                    content_type: ContentType::Binary,
                    data: payload.clone(),
                    metadata: Vec::new(),
                    tags: Vec::new(),
                })
                .collect(),
            created_unix_ms: 0,
        });
        let entry = Entry {
            log_id: cairn_raft_store::log_id(1, 1, index),
            payload: EntryPayload::Normal(command),
        };
        let t = Instant::now();
        store
            .log
            .blocking_append(vec![entry.clone()])
            .await
            .expect("append");
        store
            .state_machine
            .apply_entries(vec![entry])
            .await
            .expect("apply");
        latencies.push(t.elapsed());
        events += batch;
        if index.is_multiple_of(args.snapshot_every) {
            let snapshot = store
                .state_machine
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
            if let Some(last) = snapshot.meta.last_log_id {
                store.log.purge(last).await.expect("purge");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (read_seconds, read_events) = read_back(&store.reader);
    disk.sync().expect("sync");
    let disk_bytes = disk.size_on_disk().expect("size");
    let payload_bytes = events * args.event_bytes as u64;
    latencies.sort();
    let (rss, peak_rss) = rss_kib();
    println!(
        "{{\"bench\":\"engine\",\"ids\":\"{}\",\"events_per_append\":{batch},\"event_bytes\":{},\"events\":{events},\
         \"seconds\":{elapsed:.2},\"events_per_s\":{:.0},\"appends_per_s\":{:.0},\
         \"append_p50_ms\":{:.3},\"append_p99_ms\":{:.3},\"disk_bytes\":{disk_bytes},\
         \"disk_bytes_per_payload_byte\":{:.2},\"rss_mib\":{:.1},\"peak_rss_mib\":{:.1},\
         \"read_all_events_per_s\":{:.0}}}",
        if args.random_ids { "v4" } else { "v7" },
        args.event_bytes,
        events as f64 / elapsed,
        index as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        disk_bytes as f64 / payload_bytes.max(1) as f64,
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        read_events as f64 / read_seconds,
    );
}

/// Events read back per page, as a catch-up subscription reads history (the node's
/// `feed::HISTORY_PAGE_EVENTS`).
const READ_PAGE_EVENTS: u64 = 256;

/// Reads `$all` from the start in pages, as a catch-up subscription does: the store's side of
/// catch-up, without the network. Returns the seconds taken and the events read.
fn read_back(reader: &cairn_raft_store::EventReader) -> (f64, u64) {
    let started = Instant::now();
    let mut next = 0;
    let mut bytes = 0usize;
    loop {
        let page: Vec<_> = reader
            .read_all(
                next,
                cairn_raft_store::Direction::Forwards,
                READ_PAGE_EVENTS,
            )
            .collect::<Result<_, _>>()
            .expect("read $all");
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        bytes += page.iter().map(|e| e.data.len()).sum::<usize>();
    }
    assert!(bytes > 0 || next == 0);
    (started.elapsed().as_secs_f64(), next)
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for &batch in &args.batches {
        runtime.block_on(run_batch(&args, batch));
    }
}
