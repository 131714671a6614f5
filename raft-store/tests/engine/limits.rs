//! Bad input gets a clear, typed error and writes nothing.

use cairn_raft_store::limits::{
    DEFAULT_MAX_APPEND_BYTES, DEFAULT_MAX_EVENT_BYTES, MAX_STREAM_NAME_BYTES, MAX_TAGS_PER_EVENT,
    MAX_TAG_BYTES,
};
use cairn_raft_store::{
    AppendRejection, AppendResult, ExpectedRevision as E, InvalidInput, Limits,
};

use crate::common::*;

async fn rejected(
    s: &mut TestStore,
    stream: &str,
    events: Vec<cairn_raft_store::NewEvent>,
) -> InvalidInput {
    match s.apply(append(stream, E::Any, events)).await {
        AppendResult::Rejected(AppendRejection::Invalid(why)) => why,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn bad_input_is_rejected_with_a_typed_error_and_writes_nothing() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            s.apply(append("ok", E::Any, events(1))).await;
            let before = s.all();

            assert_eq!(
                rejected(&mut s, "", events(1)).await,
                InvalidInput::EmptyStreamName,
                "{name}"
            );
            let long = "x".repeat(MAX_STREAM_NAME_BYTES + 1);
            assert_eq!(
                rejected(&mut s, &long, events(1)).await,
                InvalidInput::StreamNameTooLong {
                    bytes: 256,
                    max: 255
                },
                "{name}"
            );
            assert!(
                matches!(
                    rejected(&mut s, "$system", events(1)).await,
                    InvalidInput::ReservedStreamName { .. }
                ),
                "{name}"
            );
            assert_eq!(
                rejected(&mut s, "a\0b", events(1)).await,
                InvalidInput::StreamNameHasNul,
                "{name}"
            );
            for blank in [" ", "\t \n"] {
                assert_eq!(
                    rejected(&mut s, blank, events(1)).await,
                    InvalidInput::BlankStreamName,
                    "{name}: {blank:?}"
                );
            }
            assert_eq!(
                rejected(&mut s, "ok", vec![]).await,
                InvalidInput::NoEvents,
                "{name}"
            );

            let mut big = events(2);
            big[1].data = vec![b'x'; DEFAULT_MAX_EVENT_BYTES + 1];
            assert!(
                matches!(
                    rejected(&mut s, "ok", big).await,
                    InvalidInput::EventTooLarge { index: 1, .. }
                ),
                "{name}"
            );
            let huge: Vec<_> = (0..17)
                .map(|_| event("T", &vec![b'x'; DEFAULT_MAX_APPEND_BYTES / 16 - 16]))
                .collect();
            assert!(
                matches!(
                    rejected(&mut s, "ok", huge).await,
                    InvalidInput::AppendTooLarge { .. }
                ),
                "{name}"
            );
            let mut untyped = events(1);
            untyped[0].event_type.clear();
            assert_eq!(
                rejected(&mut s, "ok", untyped).await,
                InvalidInput::EmptyEventType { index: 0 },
                "{name}"
            );
            let twice = {
                let e = event("T", b"{}");
                vec![e.clone(), e]
            };
            assert!(
                matches!(
                    rejected(&mut s, "ok", twice).await,
                    InvalidInput::DuplicateEventIdInAppend { index: 1, .. }
                ),
                "{name}"
            );

            let tagged = |tags: Vec<String>| {
                let mut list = events(2);
                list[1].tags = tags;
                list
            };
            let many: Vec<String> = (0..=MAX_TAGS_PER_EVENT).map(|t| format!("t{t}")).collect();
            assert_eq!(
                rejected(&mut s, "ok", tagged(many)).await,
                InvalidInput::TooManyTags {
                    index: 1,
                    count: MAX_TAGS_PER_EVENT + 1,
                    max: MAX_TAGS_PER_EVENT
                },
                "{name}"
            );
            for blank in ["", "  "] {
                assert_eq!(
                    rejected(&mut s, "ok", tagged(vec!["a".into(), blank.into()])).await,
                    InvalidInput::BlankTag { index: 1, tag: 1 },
                    "{name}: {blank:?}"
                );
            }
            assert_eq!(
                rejected(&mut s, "ok", tagged(vec!["t".repeat(MAX_TAG_BYTES + 1)])).await,
                InvalidInput::TagTooLong {
                    index: 1,
                    tag: 0,
                    bytes: MAX_TAG_BYTES + 1,
                    max: MAX_TAG_BYTES
                },
                "{name}"
            );
            assert_eq!(
                rejected(&mut s, "ok", tagged(vec!["a".into(), "a".into()])).await,
                InvalidInput::DuplicateTag {
                    index: 1,
                    tag: "a".into()
                },
                "{name}"
            );

            assert_eq!(s.all(), before, "{name}: nothing written");
            assert_eq!(s.store.reader.stream_head("").unwrap(), None);
        });
    }
}

#[test]
fn a_stream_name_of_exactly_255_bytes_is_accepted() {
    run(async {
        let mut s = TestStore::mem();
        let name = "é".repeat(127) + "x"; // 255 bytes of multi-byte UTF-8
        assert_eq!(name.len(), 255);
        assert!(matches!(
            s.apply(append(&name, E::Any, events(1))).await,
            AppendResult::Written(_)
        ));
        assert_eq!(s.stream(&name).len(), 1);
    });
}

#[test]
fn events_per_append_is_limited() {
    let limits = Limits {
        max_events_per_append: 3,
        ..Limits::default()
    };
    let append = cairn_raft_store::Append {
        stream: "s".into(),
        expected: E::Any,
        events: events(4),
        created_unix_ms: 0,
    };
    assert_eq!(
        limits.validate_append(&append),
        Err(InvalidInput::TooManyEvents { count: 4, max: 3 })
    );
}
