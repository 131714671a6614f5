//! Hostile input to the node's decoders: the public requests (prost, then the conversion into
//! store commands: appends, multi-stream appends, queries) and the Raft messages peers send (postcard inside `RaftBytes`: entries,
//! votes, the snapshot header), fed arbitrary bytes and mutated valid encodings. No panic, an
//! error that says what was wrong, and no allocation beyond what the input justifies (a length
//! field may not size a buffer on its own). Bounded property tests, so CI stays fast.

use cairn_client::proto;
use cairn_raft_store::alloc_probe::{justified, largest_allocation, mutate, ProbeAllocator};
use cairn_raft_store::{
    Append, Command, ContentType, Entry, ExpectedRevision, LogId, NewEvent, NodeId, SnapshotMeta,
    TypeConfig, Vote,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::EntryPayload;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use prost::Message;
use uuid::Uuid;

use crate::api::convert::{append_from_proto, multi_from_proto, query_from_proto};
use crate::network::{decode, encode};

#[global_allocator]
static ALLOCATOR: ProbeAllocator = ProbeAllocator;

/// Cases per property: enough to find a length field that sizes a buffer, few enough for CI.
const CASES: u32 = 64;
/// Most bytes of one arbitrary input.
const MAX_INPUT_BYTES: usize = 4096;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        // The same cases on every run: a failure in CI replays here.
        rng_seed: RngSeed::Fixed(21),
        ..Config::default()
    }
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..MAX_INPUT_BYTES)
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
}

fn an_append_request() -> proto::AppendRequest {
    proto::AppendRequest {
        stream: "orders-1".into(),
        expected: Some(proto::ExpectedRevision {
            kind: 3,
            revision: 4,
        }),
        events: (0..3)
            .map(|i| proto::NewEvent {
                id: Uuid::from_u128(i + 1).to_string(),
                r#type: "Placed".into(),
                content_type: proto::ContentType::Json as i32,
                data: b"{\"total\":10}".to_vec(),
                metadata: vec![1, 2, 3],
                tags: vec![format!("region-{i}")],
            })
            .collect(),
        leader_only: true,
    }
}

fn an_entries_request() -> AppendEntriesRequest<TypeConfig> {
    let append = Append {
        stream: "orders-1".into(),
        expected: ExpectedRevision::Any,
        events: vec![NewEvent {
            id: Uuid::from_u128(7),
            event_type: "Placed".into(),
            content_type: ContentType::Json,
            data: b"{}".to_vec(),
            metadata: Vec::new(),
            tags: vec!["vip".into()],
        }],
        created_unix_ms: 1,
    };
    let entry = |index: u64, payload| Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), index),
        payload,
    };
    AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 9)),
        entries: vec![
            entry(10, EntryPayload::Blank),
            entry(11, EntryPayload::Normal(Command::Append(append.clone()))),
            entry(12, EntryPayload::Normal(Command::Appends(vec![append; 2]))),
        ],
        leader_commit: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 10)),
    }
}

/// Decodes `bytes` as each public request the node serves; the largest allocation.
fn decode_public(bytes: &[u8]) -> usize {
    let ((), largest) = largest_allocation(|| {
        if let Ok(request) = proto::AppendRequest::decode(bytes) {
            // Whatever decodes is converted, or refused with a message naming the field.
            if let Err(status) = append_from_proto(request, 1) {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(!status.message().is_empty());
            }
        }
        if let Ok(request) = proto::MultiAppendRequest::decode(bytes) {
            if let Err(status) = multi_from_proto(request, 1) {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(!status.message().is_empty());
            }
        }
        if let Ok(request) = proto::QueryReadRequest::decode(bytes) {
            let _ = query_from_proto(request.query);
        }
        let _ = proto::ReadRequest::decode(bytes);
        let _ = proto::SubscribeRequest::decode(bytes);
        let _ = proto::StatusRequest::decode(bytes);
        let _ = proto::AddNodeRequest::decode(bytes);
        let _ = proto::RemoveNodeRequest::decode(bytes);
    });
    largest
}

/// Decodes `bytes` as each Raft message a node receives; the largest allocation.
fn decode_raft(bytes: &[u8]) -> usize {
    let ((), largest) = largest_allocation(|| {
        let _ = decode::<AppendEntriesRequest<TypeConfig>>(bytes);
        let _ = decode::<VoteRequest<NodeId>>(bytes);
        let _ = decode::<(Vote, SnapshotMeta)>(bytes);
    });
    largest
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn public_requests_of_arbitrary_or_mutated_bytes_are_refused_or_converted(
        bytes in input(),
        edits in edits(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mutated = mutate(an_append_request().encode_to_vec(), &edits, cut);
        for candidate in [bytes, mutated] {
            let largest = decode_public(&candidate);
            prop_assert!(largest <= justified(candidate.len()), "{largest} bytes for {} of input", candidate.len());
        }
    }

    #[test]
    fn raft_messages_of_arbitrary_or_mutated_bytes_decode_to_an_error_or_a_message(
        bytes in input(),
        edits in edits(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let entries = mutate(encode(&an_entries_request()).unwrap(), &edits, cut);
        let header = mutate(
            encode(&(Vote::new(2, 1), SnapshotMeta::default())).unwrap(),
            &edits,
            cut,
        );
        for candidate in [bytes, entries, header] {
            let largest = decode_raft(&candidate);
            prop_assert!(largest <= justified(candidate.len()), "{largest} bytes for {} of input", candidate.len());
        }
    }
}

#[test]
fn the_valid_messages_the_properties_mutate_decode() {
    // The probe is this binary's allocator: without it every bound above would hold vacuously.
    let (_, largest) = largest_allocation(|| std::hint::black_box(vec![1u8; 1 << 20]));
    assert!(
        largest >= 1 << 20,
        "the allocation probe saw {largest} bytes"
    );
    let request = proto::AppendRequest::decode(&an_append_request().encode_to_vec()[..]).unwrap();
    assert_eq!(append_from_proto(request, 1).unwrap().events.len(), 3);
    let entries: AppendEntriesRequest<TypeConfig> =
        decode(&encode(&an_entries_request()).unwrap()).unwrap();
    assert_eq!(entries.entries.len(), 3);
}
