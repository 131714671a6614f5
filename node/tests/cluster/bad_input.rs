//! Bad input over gRPC gets a clear error, writes nothing, and the cluster keeps serving.

use bytes_codec::RawCodec;
use cairn_client::proto;
use cairn_client::proto::streams_client::StreamsClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

use crate::harness::{runtime, TestCluster};

/// Sends arbitrary bytes as a gRPC message body, to test malformed frames.
mod bytes_codec {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Status;

    #[derive(Default)]
    pub struct RawCodec;
    pub struct RawEncoder;
    pub struct RawDecoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            use bytes::Buf;
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
}

fn event(id: &str, data_bytes: usize) -> proto::NewEvent {
    proto::NewEvent {
        id: id.to_owned(),
        r#type: "Tested".into(),
        content_type: proto::ContentType::Json as i32,
        data: vec![b'1'; data_bytes],
        metadata: Vec::new(),
        tags: Vec::new(),
    }
}

fn request(stream: &str, events: Vec<proto::NewEvent>) -> proto::AppendRequest {
    proto::AppendRequest {
        stream: stream.into(),
        expected: None,
        events,
        leader_only: false,
    }
}

async fn expect_invalid(
    client: &mut StreamsClient<Channel>,
    request: proto::AppendRequest,
    field: &str,
) {
    let status = client
        .append(request)
        .await
        .expect_err("bad input must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message {:?} should name {field}",
        status.message()
    );
}

#[test]
fn bad_input_over_grpc_gets_a_clear_error_and_the_cluster_keeps_serving() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        // A follower, so that bad input is refused before any forwarding too.
        let follower = (1..=3).find(|&id| id != leader).expect("a follower");
        // Until the follower holds the first membership it refuses everything as a non-member
        // (FAILED_PRECONDITION), before looking at the request.
        cluster.wait_caught_up(follower, None).await;
        let channel = Channel::from_shared(cluster.endpoint(follower))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = StreamsClient::new(channel.clone()).max_encoding_message_size(64 << 20);
        let id = || uuid::Uuid::now_v7().to_string();

        expect_invalid(&mut client, request("", vec![event(&id(), 2)]), "stream").await;
        expect_invalid(
            &mut client,
            request("$system", vec![event(&id(), 2)]),
            "stream",
        )
        .await;
        expect_invalid(
            &mut client,
            request(&"s".repeat(256), vec![event(&id(), 2)]),
            "stream",
        )
        .await;
        expect_invalid(
            &mut client,
            request("s", vec![event(&id(), 10 * 1024 * 1024)]),
            "events[0]",
        )
        .await;
        expect_invalid(
            &mut client,
            request("s", vec![event("not-a-uuid", 2)]),
            "events[0].id",
        )
        .await;
        expect_invalid(&mut client, request("s", vec![]), "events").await;
        let mut unknown_kind = request("s", vec![event(&id(), 2)]);
        unknown_kind.expected = Some(proto::ExpectedRevision {
            kind: 9,
            revision: 0,
        });
        expect_invalid(&mut client, unknown_kind, "expected.kind").await;
        let mut unknown_content = request("s", vec![event(&id(), 2)]);
        unknown_content.events[0].content_type = 42;
        expect_invalid(&mut client, unknown_content, "events[0].content_type").await;
        let read = proto::ReadRequest {
            stream: "$all".into(),
            direction: 7,
            ..Default::default()
        };
        let status = client.read(read).await.expect_err("unknown direction");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("direction"), "{status:?}");

        // A frame that is not a protobuf AppendRequest at all.
        let mut raw = tonic::client::Grpc::new(channel.clone());
        raw.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::from_static("/cairn.v1.Streams/Append");
        let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02];
        let status = raw
            .unary(tonic::Request::new(garbage), path, RawCodec)
            .await
            .expect_err("a malformed frame must be refused");
        assert!(
            matches!(status.code(), Code::Internal | Code::InvalidArgument),
            "{status:?}"
        );

        // Nothing was written, and the cluster still serves. (Through the client library, which
        // retries if a loaded machine delayed heartbeats into an election; read back on the same
        // follower with the writer's position, which it may not have applied yet.)
        let writer = cluster.client();
        let good = cairn_client::EventData::json("Tested", &serde_json::json!({})).expect("json");
        let written = writer
            .append("good", cairn_client::ExpectedRevision::Any, vec![good])
            .await
            .expect("a good append");
        let read = proto::ReadRequest {
            stream: "$all".into(),
            min_position: Some(written.last_position),
            ..Default::default()
        };
        let mut all = client.read(read).await.expect("read").into_inner();
        let mut streams = Vec::new();
        while let Some(item) = all.next().await {
            streams.push(item.expect("event").event.expect("event").stream);
        }
        assert_eq!(streams, vec!["good".to_string()]);
    });
}
