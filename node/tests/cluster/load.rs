//! Steady write load for tests that change the cluster underneath it (rolling restarts,
//! membership changes): writers appending to their own streams with exact expected revisions,
//! every acknowledgement recorded with its time, and the checks that nothing acknowledged was
//! lost or doubled.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Client, Error, EventData, ExpectedRevision, ReadOptions, RecordedEvent};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use uuid::Uuid;

/// Pause before a writer looks again after its append's outcome was unknown.
const UNKNOWN_OUTCOME_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct Acked {
    pub stream: String,
    pub id: Uuid,
    pub revision: u64,
    pub position: u64,
    pub at: Instant,
}

#[derive(Default)]
pub struct History {
    pub acked: Vec<Acked>,
    /// Appends whose outcome the client could not learn (it gave up retrying).
    pub unknown: Vec<Uuid>,
    pub unexpected: Vec<String>,
}

impl History {
    /// The longest stretch without any acknowledgement that overlaps `from..to`, and where it
    /// started (acknowledgements are merged across writers).
    pub fn longest_gap(&self, from: Instant, to: Instant) -> (Duration, Instant) {
        let mut times: Vec<Instant> = self.acked.iter().map(|a| a.at).collect();
        times.sort();
        let mut longest = (Duration::ZERO, from);
        for pair in times.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b >= from && a <= to && b - a > longest.0 {
                longest = (b - a, a);
            }
        }
        longest
    }

    pub fn acked_after(&self, at: Instant) -> usize {
        self.acked.iter().filter(|a| a.at > at).count()
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    tasks: Vec<JoinHandle<()>>,
    pub started: Instant,
}

impl Load {
    /// `writers` writers, each on its own stream `{prefix}-{n}`, each with its own clone of
    /// `client` (clones share the known leader).
    pub fn start(client: &Client, prefix: &str, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(History::default()));
        let tasks = (0..writers)
            .map(|n| {
                tokio::spawn(writer(
                    client.clone(),
                    format!("{prefix}-{n}"),
                    stop.clone(),
                    history.clone(),
                ))
            })
            .collect();
        Load {
            stop,
            history,
            tasks,
            started: Instant::now(),
        }
    }

    /// Acknowledgements so far.
    pub fn acked(&self) -> usize {
        self.history.lock().unwrap().acked.len()
    }

    /// The highest acknowledged `$all` position so far.
    pub fn last_position(&self) -> Option<u64> {
        let history = self.history.lock().unwrap();
        history.acked.iter().map(|a| a.position).max()
    }

    /// Stops the writers and hands over what they saw.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        std::mem::take(&mut *self.history.lock().unwrap())
    }
}

/// The stream's last revision, read linearizably.
pub async fn last_revision(client: &Client, stream: &str) -> Result<Option<u64>, Error> {
    let options = ReadOptions::backwards().max_count(1).linearizable();
    match client.read_stream(stream, options).await {
        Ok(mut events) => match events.next().await {
            Some(Ok(event)) => Ok(Some(event.revision)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        },
        Err(Error::StreamNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn writer(
    client: Client,
    stream: String,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut last: Option<u64> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let event = EventData::json("Loaded", &serde_json::json!({ "n": n })).expect("json");
        let id = event.id;
        let expected = last.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
        match client.append(&stream, expected, vec![event]).await {
            Ok(result) => {
                let mut h = history.lock().unwrap();
                let want = last.map_or(0, |r| r + 1);
                if result.last_revision != want {
                    h.unexpected.push(format!(
                        "{stream}: acked revision {} but expected {want}",
                        result.last_revision
                    ));
                }
                h.acked.push(Acked {
                    stream: stream.clone(),
                    id,
                    revision: result.last_revision,
                    position: result.last_position,
                    at: Instant::now(),
                });
                last = Some(result.last_revision);
            }
            Err(Error::Unavailable(_)) => {
                history.lock().unwrap().unknown.push(id);
                // It may or may not have landed: learn where the stream is.
                loop {
                    match last_revision(&client, &stream).await {
                        Ok(revision) => {
                            last = revision;
                            break;
                        }
                        Err(_) if !stop.load(Ordering::Relaxed) => {
                            tokio::time::sleep(UNKNOWN_OUTCOME_PAUSE).await
                        }
                        Err(_) => return,
                    }
                }
            }
            Err(e) => history
                .lock()
                .unwrap()
                .unexpected
                .push(format!("{stream}: {e}")),
        }
    }
}

/// `$all` as node `client` serves it from its own applied state.
pub async fn read_all(client: &Client) -> Vec<RecordedEvent> {
    let mut events = client
        .read_all(ReadOptions::forwards())
        .await
        .expect("read $all");
    let mut all = Vec::new();
    while let Some(event) = events.next().await {
        all.push(event.expect("event"));
    }
    all
}

/// `$all` holds every acknowledged append exactly once, where it was acknowledged, with gapless
/// positions (after a TLS cluster's first, its users and tokens, which no read shows) and
/// per-stream revisions and no event id twice.
pub fn check_history(node: u64, all: &[RecordedEvent], history: &History) {
    assert!(
        history.unexpected.is_empty(),
        "unexpected errors: {:?}",
        history.unexpected
    );
    let mut next_revision: HashMap<&str, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let first = all.first().map_or(0, |e| e.position);
    assert!(first <= 1, "node {node}: $all starts at {first}");
    for (offset, event) in all.iter().enumerate() {
        assert_eq!(
            event.position,
            first + offset as u64,
            "node {node}: gap in $all"
        );
        let next = next_revision.entry(event.stream.as_str()).or_insert(0);
        assert_eq!(
            event.revision, *next,
            "node {node}: gap in {}",
            event.stream
        );
        *next += 1;
        assert!(
            seen.insert(event.id),
            "node {node}: event id {} twice",
            event.id
        );
    }
    for acked in &history.acked {
        let event = acked
            .position
            .checked_sub(first)
            .and_then(|offset| all.get(offset as usize))
            .unwrap_or_else(|| panic!("node {node}: acknowledged {acked:?} missing"));
        assert_eq!(
            (event.id, event.revision, event.stream.as_str()),
            (acked.id, acked.revision, acked.stream.as_str()),
            "node {node}: acknowledged append not where it was acknowledged"
        );
    }
}
