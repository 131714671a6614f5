//! Catch-up: load the store, then time one subscriber on a follower reading it from the start.

use std::process::ExitCode;
use std::time::Instant;

use cairn_client::{
    Client, Error, EventData, ExpectedRevision, NodePreference, ReadFrom, SubscribeOptions,
    SubscriptionMessage,
};
use tokio_stream::StreamExt;

use super::{BenchArgs, SplitMix64};
use crate::cli::EXIT_FAILURE;

/// Events per append while loading the store for catch-up.
pub const CATCHUP_LOAD_BATCH: u64 = 1_000;
/// Concurrent writers loading the store for catch-up.
pub const CATCHUP_LOAD_WRITERS: u64 = 4;

/// Appends `total` events from several writers in large batches; returns the last position.
pub(super) async fn load(client: &Client, prefix: &str, total: u64) -> Result<u64, Error> {
    let per_writer = total.div_ceil(CATCHUP_LOAD_WRITERS);
    let writers: Vec<_> = (0..CATCHUP_LOAD_WRITERS)
        .map(|w| {
            let client = client.clone();
            let stream = format!("{prefix}-{w}");
            tokio::spawn(async move {
                let mut rng = SplitMix64(w);
                let mut written = 0;
                let mut last = 0;
                while written < per_writer {
                    let n = CATCHUP_LOAD_BATCH.min(per_writer - written);
                    let events = (0..n)
                        .map(|_| EventData::binary("Loaded", rng.payload()))
                        .collect();
                    last = client
                        .append(&stream, ExpectedRevision::Any, events)
                        .await?
                        .last_position;
                    written += n;
                }
                Ok::<u64, Error>(last)
            })
        })
        .collect();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    Ok(last)
}

/// The store's size now: the highest applied position any member reports.
pub(super) async fn highest_applied(client: &Client) -> Result<u64, ExitCode> {
    match client.status().await {
        Ok(status) => Ok(status
            .members
            .iter()
            .map(|m| m.applied_position)
            .max()
            .unwrap_or(0)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(EXIT_FAILURE))
        }
    }
}

pub(super) async fn run_catchup(args: &BenchArgs, client: Client) -> ExitCode {
    let first = match highest_applied(&client).await {
        Ok(position) => position,
        Err(code) => return code,
    };
    eprintln!("catchup: loading {} events", args.catchup_events);
    let loading = Instant::now();
    let last = match load(
        &client,
        &format!("cb{}-catchup", std::process::id()),
        args.catchup_events,
    )
    .await
    {
        Ok(last) => last,
        Err(e) => {
            eprintln!("error: loading: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    eprintln!(
        "catchup: loaded in {:.1} s; subscribing on a follower",
        loading.elapsed().as_secs_f64()
    );
    let options = SubscribeOptions::default()
        .from(ReadFrom::At(first))
        .prefer(NodePreference::Follower)
        .min_position(last)
        .no_resubscribe();
    let started = Instant::now();
    let mut sub = match client.subscribe_all(options).await {
        Ok(sub) => sub,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut received = 0u64;
    let mut expected = first;
    while let Some(message) = sub.next().await {
        match message {
            Ok(SubscriptionMessage::Event(event)) => {
                if event.position != expected {
                    eprintln!(
                        "error: expected position {expected}, got {}",
                        event.position
                    );
                    return ExitCode::from(EXIT_FAILURE);
                }
                expected += 1;
                received += 1;
                if event.position >= last {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"target\":{},\"scenario\":\"catchup\",\"events\":{received},\"seconds\":{seconds:.3},\"events_per_s\":{:.1},\"served_by\":{}}}",
        serde_json::Value::String(args.label.clone()),
        received as f64 / seconds,
        sub.served_by().unwrap_or(0)
    );
    ExitCode::SUCCESS
}
