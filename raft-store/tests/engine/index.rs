//! The category, type and tag indexes: every read of one equals `$all` filtered by it.

use cairn_raft_store::{Direction, ExpectedRevision as E, IndexKind, IndexName, NewEvent};

use crate::common::*;

fn tagged(event_type: &str, tags: &[&str]) -> NewEvent {
    let mut e = event(event_type, b"{}");
    e.tags = tags.iter().map(|t| t.to_string()).collect();
    e
}

#[test]
fn index_reads_equal_all_filtered_by_category_type_and_tag() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply_all(vec![
                append(
                    "order-1",
                    E::NoStream,
                    vec![
                        tagged("OrderPlaced", &["customer:7"]),
                        tagged("OrderPlaced", &["customer:7", "order:1"]),
                        tagged("Paid", &[]),
                    ],
                ),
                append(
                    "customer-7",
                    E::Any,
                    vec![tagged("Registered", &["customer:7"])],
                ),
                append("orders", E::Any, vec![tagged("OrderPlaced", &[])]),
                append("order-2", E::Any, events(7)),
                // A type holding a NUL and a '-', and a stream starting with '-'.
                append("-odd", E::Any, vec![tagged("a\0b-c", &["a\0b"])]),
            ])
            .await;
            // A group commit and a refused append (it indexes nothing).
            s.apply(append(
                "order-1",
                E::NoStream,
                vec![tagged("Lost", &["lost"])],
            ))
            .await;
            assert!(s.assert_indexes_match_all(name) >= 12, "{name}");
            let ce_order = IndexName::parse("$ce-order").unwrap();
            let read = s.index(&ce_order, 0, Direction::Forwards);
            assert_eq!(read.len(), 10, "{name}: order-1 and order-2, not orders");
            assert!(read.windows(2).all(|w| w[0].position < w[1].position));
            assert_eq!((read[0].stream.as_str(), read[0].revision), ("order-1", 0));
            let lost = IndexName {
                kind: IndexKind::Tag,
                name: "lost".into(),
            };
            assert!(s.index(&lost, 0, Direction::Forwards).is_empty(), "{name}");
            let limited: Vec<_> = s
                .store
                .reader
                .read_index(&ce_order, 0, Direction::Forwards, 4)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(limited[..], read[..4], "{name}: a count stops the read");
        });
    }
}

#[test]
fn indexes_survive_a_reopen() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let disk = cairn_raft_store::disk::FjallDisk::open(
                dir.path(),
                cairn_raft_store::disk::FjallOptions::default(),
            )
            .unwrap();
            TestStore::on(disk, None)
        };
        let mut s = open();
        for i in 0..20 {
            s.apply(append(
                &format!("c{}-{i}", i % 3),
                E::Any,
                events(i % 4 + 1),
            ))
            .await;
        }
        let names = s.assert_indexes_match_all("before");
        drop(s);
        assert_eq!(open().assert_indexes_match_all("reopened"), names);
    });
}
