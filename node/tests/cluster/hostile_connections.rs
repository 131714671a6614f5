//! Garbage and half-open connections on every node's gRPC port (the one port that serves
//! clients and peers) do not disturb appends and reads: random bytes, an HTTP/2 preface
//! followed by a frame header that claims a huge frame, connections that say nothing and stay
//! open, and undecodable Raft messages to the internal service, all while a client writes;
//! on a plain-text cluster and on a TLS one (where the Raft service refuses callers without a
//! node certificate before it reads their message).

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use cairn_client::{EventData, ExpectedRevision};
use cairn_node::network::proto::raft_internal_client::RaftInternalClient;
use cairn_node::network::proto::RaftBytes;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::harness::{runtime, TestCluster};
use crate::load::read_all;

/// Connections of each hostile kind, per node.
const CONNECTIONS_PER_KIND: usize = 32;
/// Most garbage bytes one connection sends.
const MAX_GARBAGE_BYTES: usize = 4096;
/// Appends the client makes while the connections are open.
const APPENDS: usize = 60;
/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A small deterministic generator, so a failure replays.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Opens the hostile connections to `addr`; they stay open until the returned streams drop.
fn open_hostile(addr: &str, random: &mut Bytes) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS_PER_KIND {
        // Half-open: connected, never a byte.
        if let Ok(stream) = TcpStream::connect(addr) {
            held.push(stream);
        }
        // Random bytes, then silence.
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let len = 1 + random.next() as usize % MAX_GARBAGE_BYTES;
            let _ = stream.write_all(&random.fill(len));
            held.push(stream);
        }
        // A valid preface, then a DATA frame header claiming 16 MiB on stream 1, then silence.
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let mut bytes = PREFACE.to_vec();
            bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
            let _ = stream.write_all(&bytes);
            held.push(stream);
        }
    }
    held
}

/// Undecodable payloads to every Raft RPC that takes bytes: each must be refused.
async fn send_garbage_raft_messages(cluster: &TestCluster, id: u64, random: &mut Bytes) {
    let mut endpoint = Channel::from_shared(cluster.endpoint(id)).expect("endpoint");
    if let Some(ca) = cluster.client_tls_ca() {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .expect("tls config");
    }
    let tls = cluster.tls().is_some();
    let channel = endpoint.connect().await.expect("connect");
    let mut raft = RaftInternalClient::new(channel);
    for len in [0usize, 1, 7, 64, 1024] {
        let payload = random.fill(len);
        let append = raft
            .append_entries(RaftBytes {
                payload: payload.clone(),
            })
            .await;
        let vote = raft.vote(RaftBytes { payload }).await;
        // An empty or random payload could in principle decode; it must never crash the node.
        for (rpc, answer) in [("append_entries", append), ("vote", vote)] {
            if let Err(status) = &answer {
                assert!(
                    !status.message().is_empty(),
                    "{rpc} refused garbage without saying why"
                );
            }
            if tls {
                assert!(
                    matches!(&answer, Err(s) if s.code() == tonic::Code::Unauthenticated),
                    "{rpc} without a node certificate: {answer:?}"
                );
            }
        }
    }
}

#[test]
fn garbage_and_half_open_connections_do_not_disturb_appends_and_reads() {
    hostile_connections_leave_appends_and_reads_intact(TestCluster::start(3));
}

#[test]
fn garbage_on_the_tls_port_does_not_disturb_appends_and_reads() {
    hostile_connections_leave_appends_and_reads_intact(TestCluster::start_with_tls(3));
}

fn hostile_connections_leave_appends_and_reads_intact(mut cluster: TestCluster) {
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let mut random = Bytes(0x2121_2121_2121_2121);
        let mut held = Vec::new();
        for id in 1..=3 {
            held.extend(open_hostile(cluster.addr(id), &mut random));
            send_garbage_raft_messages(&cluster, id, &mut random).await;
        }

        let client = cluster.client();
        let mut acked = Vec::new();
        for n in 0..APPENDS {
            let event = EventData::json("Tested", &serde_json::json!({ "n": n })).expect("json");
            let id = event.id;
            let written = client
                .append("steady", ExpectedRevision::Any, vec![event])
                .await
                .unwrap_or_else(|e| panic!("append {n} while hostile connections are open: {e}"));
            acked.push((id, written.last_position));
            // More garbage between appends, on a fresh connection each time.
            if n % 10 == 0 {
                let id = 1 + (n / 10) as u64 % 3;
                held.extend(open_hostile(cluster.addr(id), &mut random));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.wait_until_converged().await;
        for id in 1..=3 {
            let all = read_all(&cluster.node_client(id)).await;
            for (event_id, position) in &acked {
                let stored = all.iter().find(|e| e.position == *position).map(|e| e.id);
                assert_eq!(
                    stored,
                    Some(*event_id),
                    "node {id}: the event acknowledged at {position} is missing"
                );
            }
        }
        assert!(
            cluster.reap_exited().is_empty(),
            "a node exited under hostile connections"
        );
        drop(held);
    });
}
