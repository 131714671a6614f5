//! The stream cache (`state_machine::stream_cache`) is only a copy: a state machine that keeps
//! it across calls reaches every verdict a state machine reopened before each call reaches,
//! through appends, metadata, deletes, scavenges and erases.

use cairn_raft_store::{
    Command, DeleteKind, DeleteStream, EraseStream, ExpectedRevision as E, Scavenge,
    SetStreamMetadata, StreamMetadata,
};
use uuid::Uuid;

use crate::common::*;

const T0: u64 = 1_700_000_000_000;
/// Streams in play at once; every `CALLS_PER_ROUND` calls a fresh set, since tombstones and
/// erases end streams for good.
const STREAMS_PER_ROUND: u64 = 6;
const CALLS_PER_ROUND: u64 = 60;
const CALLS: u64 = 300;

fn stream_name(round: u64, n: u64) -> String {
    format!("s{round}-{n}")
}

/// SplitMix64: a fixed sequence of choices.
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

fn command(choices: &mut Choices, round: u64) -> Command {
    let stream = stream_name(round, choices.below(STREAMS_PER_ROUND));
    let expected = match choices.below(4) {
        0 => E::Any,
        1 => E::NoStream,
        2 => E::StreamExists,
        _ => E::Exact(choices.below(12)),
    };
    let id = Uuid::new_v4();
    match choices.below(40) {
        0..=27 => append(&stream, expected, events(1 + choices.below(3) as usize)),
        28..=31 => Command::SetStreamMetadata(SetStreamMetadata {
            stream,
            expected: E::Any,
            metadata: StreamMetadata {
                max_count: Some(1 + choices.below(3)),
                ..Default::default()
            },
            id,
            created_unix_ms: T0,
        }),
        32..=35 => Command::DeleteStream(DeleteStream {
            stream,
            expected,
            kind: if choices.below(8) == 0 {
                DeleteKind::Tombstone
            } else {
                DeleteKind::Soft
            },
            id,
            created_unix_ms: T0,
        }),
        36..=38 => Command::Scavenge(Scavenge {
            from_position: 0,
            created_unix_ms: T0,
        }),
        _ => Command::EraseStream(EraseStream {
            stream,
            id,
            created_unix_ms: T0,
        }),
    }
}

#[test]
fn verdicts_are_those_of_a_state_machine_reopened_before_each_call() {
    run(async {
        let mut kept = TestStore::mem();
        let mut reopened = TestStore::mem();
        let mut choices = Choices(7);
        let mut written = 0;
        for call in 0..CALLS {
            // One to four entries per call, so the cache also serves later entries of a call.
            let entries: Vec<_> = (0..1 + choices.below(4))
                .map(|_| command(&mut choices, call / CALLS_PER_ROUND))
                .collect();
            reopened = TestStore::on(reopened.disk.clone(), None);
            let mut answers = Vec::new();
            for store in [&mut kept, &mut reopened] {
                let first = store.next_index;
                let log: Vec<_> = entries
                    .iter()
                    .cloned()
                    .zip(first..)
                    .map(|(command, index)| cairn_raft_store::Entry {
                        log_id: log_id(index),
                        payload: cairn_raft_store::EntryPayload::Normal(command),
                    })
                    .collect();
                store.next_index += log.len() as u64;
                answers.push(format!(
                    "{:?}",
                    store.sm().apply_entries(log).await.unwrap()
                ));
            }
            assert_eq!(answers[0], answers[1], "call {call}: {entries:?}");
            written += answers[0].matches("Written").count();
        }
        // The sequence is fixed; this only checks that it mostly appends, as it is meant to.
        assert!(written > 200, "{written} commands written");
        for round in 0..CALLS / CALLS_PER_ROUND {
            for n in 0..STREAMS_PER_ROUND {
                let stream = stream_name(round, n);
                assert_eq!(kept.stream(&stream), reopened.stream(&stream), "{stream}");
            }
        }
        assert_eq!(kept.all(), reopened.all());
    });
}
