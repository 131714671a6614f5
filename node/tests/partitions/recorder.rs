//! The clients of a partition test and the history they record: the simulation's JSON-lines
//! format (`cairn_simulation::history`), judged by its checker exactly as `cairn-sim --check`
//! judges a file. Times are milliseconds of wall-clock time since the recording began.
//!
//! Each client mixes appends to shared hot streams (conflicting expected revisions), appends to
//! streams of its own, re-sends of earlier appends with the same event ids (the idempotent
//! retry an application makes after a timeout), and linearizable and local reads. The Rust
//! client retries each operation itself ([`APPEND_ATTEMPTS`]) with the same ids.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{
    Client, ClientConfig, EventData, ExpectedRevision, NodePreference, ReadFrom, ReadOptions,
    ALL_STREAM,
};
use cairn_simulation::history::{AppendOutcome, Consistency, EventRef, Record};
use cairn_simulation::rng::SimRng;
use cairn_simulation::workload::{
    collect, digest_of, expected_of, learn_from, timed_append, timed_read,
};

/// Bound on each attempt inside the client library.
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Attempts the client library makes per append before reporting `Unavailable`.
const APPEND_ATTEMPTS: u32 = 3;
/// Hot streams shared by every client.
const HOT_STREAMS: u64 = 2;
/// Streams of each client's own.
const OWN_STREAMS: u64 = 8;
/// Most events one append carries.
const MAX_EVENTS_PER_APPEND: u64 = 3;
/// Most events a read asks for.
const READ_MAX_COUNT: u64 = 64;
/// Most earlier appends a client remembers for re-sending.
const RESEND_MEMORY: usize = 16;
/// Most pause between two operations of one client.
const MAX_PAUSE_MS: u64 = 25;
/// Pause between the heal probe's attempts.
const HEAL_PROBE_PAUSE_MS: u64 = 20;

/// The history being recorded, shared by the clients and the harness.
pub struct Recording {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

impl Recording {
    pub fn new(seed: u64, nodes: u32, clients: u32) -> Arc<Recording> {
        Arc::new(Recording {
            start: Instant::now(),
            records: Mutex::new(vec![Record::Run {
                seed,
                nodes,
                clients,
            }]),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn push(&self, record: Record) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn client_for(endpoints: Vec<String>) -> Client {
    Client::with_config(ClientConfig {
        endpoints,
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        max_append_attempts: APPEND_ATTEMPTS,
        leader_only: true,
        // The partition clusters run --insecure (LocalCluster without TLS).
        tls_ca: None,
        credentials: None,
    })
    .expect("client")
}

/// The running clients.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts `clients` clients against `endpoints`, their choices drawn from `seed`.
    pub fn start(
        endpoints: &[String],
        clients: u32,
        seed: u64,
        recording: &Arc<Recording>,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let rng = SimRng::new(seed);
        let tasks = (1..=clients)
            .map(|client| {
                let mut state =
                    ClientState::new(client, rng.split(u64::from(client)), endpoints, recording);
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        state.step().await;
                        let pause = state.rng.below(MAX_PAUSE_MS);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                })
            })
            .collect();
        Workload { stop, tasks }
    }

    /// Lets every client finish its operation in progress (each is bounded by
    /// `OP_TIMEOUT_MS` of the simulation's workload) and start no other.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("client task");
        }
    }
}

/// After a heal: appends one event (the same id on every attempt, so a retry never writes it
/// twice) until the cluster acknowledges it; how long that took from `healed_at`, or `None`
/// if nothing was acknowledged within `deadline`. Every attempt goes into the history.
pub async fn first_ack_after_heal(
    endpoints: &[String],
    recording: &Arc<Recording>,
    healed_at: Instant,
    deadline: Duration,
) -> Option<Duration> {
    let mut state = ClientState::new(0, SimRng::new(0), endpoints, recording);
    let id = uuid::Uuid::new_v4();
    let sent = Sent {
        stream: "heal-probe".into(),
        expected: ExpectedRevision::Any,
        events: vec![EventData::binary("Healed", id.as_bytes().to_vec()).with_id(id)],
    };
    while healed_at.elapsed() < deadline {
        if let AppendOutcome::Ok { .. } = state.append(&sent).await {
            return Some(healed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(HEAL_PROBE_PAUSE_MS)).await;
    }
    None
}

/// Node `id`'s whole `$all`, read from its own applied state.
pub async fn node_log(endpoint: String) -> Vec<EventRef> {
    let client = Client::with_config(ClientConfig {
        endpoints: vec![endpoint.clone()],
        ..ClientConfig::default()
    })
    .expect("client");
    collect(&client, ALL_STREAM, ReadOptions::forwards())
        .await
        .unwrap_or_else(|e| panic!("read $all from {endpoint}: {e}"))
}

/// An append as sent, kept for re-sending.
#[derive(Clone)]
struct Sent {
    stream: String,
    expected: ExpectedRevision,
    events: Vec<EventData>,
}

struct ClientState {
    id: u32,
    rng: SimRng,
    client: Client,
    recording: Arc<Recording>,
    ops: u64,
    /// The last revision this client believes each stream has.
    known: BTreeMap<String, Option<u64>>,
    sent: Vec<Sent>,
    last_position: Option<u64>,
}

impl ClientState {
    fn new(id: u32, rng: SimRng, endpoints: &[String], recording: &Arc<Recording>) -> Self {
        ClientState {
            id,
            rng,
            client: client_for(endpoints.to_vec()),
            recording: recording.clone(),
            ops: 0,
            known: BTreeMap::new(),
            sent: Vec::new(),
            last_position: None,
        }
    }

    fn next_op(&mut self) -> u64 {
        self.ops += 1;
        u64::from(self.id) * 1_000_000 + self.ops
    }

    async fn step(&mut self) {
        match self.rng.below(100) {
            0..=39 => {
                let stream = format!("hot-{}", self.rng.below(HOT_STREAMS));
                let expected = match self.known.get(&stream) {
                    Some(Some(revision)) => ExpectedRevision::Exact(*revision),
                    Some(None) => ExpectedRevision::NoStream,
                    None => ExpectedRevision::Any,
                };
                self.append_new(stream, expected).await;
            }
            40..=69 => {
                let stream = format!("own-{}-{}", self.id, self.rng.below(OWN_STREAMS));
                let expected = match self.known.get(&stream) {
                    Some(Some(revision)) => ExpectedRevision::Exact(*revision),
                    _ if self.rng.percent(50) => ExpectedRevision::Any,
                    _ => ExpectedRevision::NoStream,
                };
                self.append_new(stream, expected).await;
            }
            70..=79 => {
                if !self.sent.is_empty() {
                    let index = self.rng.below(self.sent.len() as u64) as usize;
                    let sent = self.sent[index].clone();
                    self.append(&sent).await;
                }
            }
            80..=91 => {
                let stream = format!("hot-{}", self.rng.below(HOT_STREAMS));
                self.read(Some(stream)).await;
            }
            _ => self.read(None).await,
        }
    }

    async fn append_new(&mut self, stream: String, expected: ExpectedRevision) {
        let count = self.rng.between(1, MAX_EVENTS_PER_APPEND);
        let events = (0..count)
            .map(|i| {
                let id = self.rng.uuid();
                EventData::binary(format!("T{i}"), id.as_bytes().to_vec()).with_id(id)
            })
            .collect();
        let sent = Sent {
            stream,
            expected,
            events,
        };
        let outcome = self.append(&sent).await;
        if matches!(
            outcome,
            AppendOutcome::Ok { .. } | AppendOutcome::Unknown { .. }
        ) {
            if self.sent.len() == RESEND_MEMORY {
                self.sent.remove(0);
            }
            self.sent.push(sent);
        }
    }

    async fn append(&mut self, sent: &Sent) -> AppendOutcome {
        let op = self.next_op();
        let start_ms = self.recording.now_ms();
        let outcome = timed_append(
            &self.client,
            &sent.stream,
            sent.expected,
            sent.events.clone(),
        )
        .await;
        learn_from(
            &mut self.known,
            &mut self.last_position,
            &sent.stream,
            &outcome,
        );
        self.recording.push(Record::Append {
            op,
            client: self.id,
            start_ms,
            end_ms: self.recording.now_ms(),
            stream: sent.stream.clone(),
            expected: expected_of(sent.expected),
            ids: sent.events.iter().map(|e| e.id).collect(),
            digests: sent.events.iter().map(digest_of).collect(),
            outcome: outcome.clone(),
        });
        outcome
    }

    /// A forwards read of a whole stream (`Some`) or of `$all` from a recent position,
    /// linearizable, local, or local from the client's own last write on.
    async fn read(&mut self, stream: Option<String>) {
        let op = self.next_op();
        let (consistency, mut options) = match self.rng.below(3) {
            0 => (
                Consistency::Linearizable,
                ReadOptions::forwards().linearizable(),
            ),
            1 => (Consistency::Local, ReadOptions::forwards()),
            _ => {
                let min = self.last_position.unwrap_or(0);
                (
                    Consistency::LocalMinPosition(min),
                    ReadOptions::forwards().min_position(min),
                )
            }
        };
        options = options
            .max_count(READ_MAX_COUNT)
            .prefer(NodePreference::Any);
        let from_position = match &stream {
            Some(_) => 0,
            None => self
                .last_position
                .map_or(0, |p| p.saturating_sub(READ_MAX_COUNT)),
        };
        if stream.is_none() {
            options = options.from(ReadFrom::At(from_position));
        }
        let start_ms = self.recording.now_ms();
        let name = stream.clone().unwrap_or_else(|| ALL_STREAM.to_owned());
        let outcome = timed_read(&self.client, &name, options).await;
        self.recording.push(Record::Read {
            op,
            client: self.id,
            start_ms,
            end_ms: self.recording.now_ms(),
            stream,
            from_position,
            max_count: READ_MAX_COUNT,
            consistency,
            outcome,
        });
    }
}
