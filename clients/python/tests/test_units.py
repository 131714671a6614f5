"""What needs no server: ids, expected revisions, endpoints, profiles, status mapping."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import grpc.aio
import pytest

import cairn
from cairn.endpoints import Endpoints
from cairn.errors import Retry, classify
from cairn.proto import pb
from cairn.subscription import AsyncSubscription, SubscribeOptions, _Gap


def test_event_ids_are_increasing_uuid7s() -> None:
    ids = [cairn.uuid7() for _ in range(5000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids, key=lambda i: i.bytes) and len(set(ids)) == len(ids)
    assert cairn.EventData.json("T", {}).id != cairn.EventData.json("T", {}).id


def test_expected_revision_spellings_are_the_clis_and_typos_are_refused() -> None:
    assert cairn.parse_expected("any") is cairn.ANY
    assert cairn.parse_expected("no-stream") is cairn.NO_STREAM
    assert cairn.parse_expected("exists") is cairn.STREAM_EXISTS
    assert cairn.parse_expected("007") == 7
    for typo in ("no_stream", " 3", "-1", "", "Any", "18446744073709551616"):
        with pytest.raises(cairn.InvalidInput):
            cairn.parse_expected(typo)


def test_endpoints_are_normalised_and_bad_ones_refused() -> None:
    endpoints = Endpoints(["127.0.0.1:1", "http://127.0.0.1:1/", "http://127.0.0.1:2"])
    assert [n.url for n in endpoints.nodes] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    for bad in (
        ["http://h:1", "https://h:2"],
        ["ftp://h:1"],
        ["http://h:1/path"],
        ["http://h"],
        [],
    ):
        with pytest.raises(cairn.InvalidInput):
            Endpoints(bad)
    # With a CA, bare host:port is https://, and leader hints (http:// from the nodes) follow.
    secured = Endpoints(["127.0.0.1:1"], tls_ca=b"-----BEGIN CERTIFICATE-----")
    assert [n.url for n in secured.nodes] == ["https://127.0.0.1:1"]
    hinted = secured.follow_hint("http://127.0.0.1:2")
    assert hinted is not None and hinted.url == "https://127.0.0.1:2"


def test_profile_and_environment_are_resolved_like_the_cli(tmp_path: Path) -> None:
    profile = tmp_path / "client-profile.toml"
    profile.write_text('endpoints = ["http://127.0.0.1:1", "h:2"]\ntoken = "later"\n')
    env = {"CAIRN_PROFILE": str(profile)}
    assert cairn.resolve_endpoints(environ=env) == ["http://127.0.0.1:1", "h:2"]
    env["CAIRN_ENDPOINTS"] = "a:1, b:2"
    assert cairn.resolve_endpoints(environ=env) == ["a:1", "b:2"]
    assert cairn.resolve_endpoints(["c:3"], environ=env) == ["c:3"]
    with pytest.raises(cairn.InvalidInput, match="nonexistent"):
        cairn.resolve_endpoints(profile="/nonexistent/profile.toml", environ={})
    with pytest.raises(cairn.InvalidInput):
        cairn.resolve_endpoints([" "], environ={})
    profile.write_text("endpoints = 3\n")
    with pytest.raises(cairn.InvalidInput, match="endpoints"):
        cairn.read_profile(profile)


def status(code: grpc.StatusCode, details: str = "", **metadata: str) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(*metadata.items())
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


def test_statuses_are_classified_like_the_rust_client() -> None:
    assert classify(status(grpc.StatusCode.NOT_FOUND), "s") .__class__ is cairn.StreamNotFound
    tombstoned = classify(status(grpc.StatusCode.NOT_FOUND, "deleted",
                                 **{"x-cairn-stream-deleted": "tombstoned"}), "s")
    assert type(tombstoned) is cairn.StreamDeleted and tombstoned.stream == "s"
    assert isinstance(classify(status(grpc.StatusCode.INVALID_ARGUMENT, "stream: x"), ""),
                      cairn.InvalidInput)
    hint = classify(
        status(grpc.StatusCode.FAILED_PRECONDITION, "not the leader",
               **{"x-cairn-leader": "http://127.0.0.1:9"}), "")
    assert hint == Retry("FAILED_PRECONDITION: not the leader", "http://127.0.0.1:9")
    for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN"):
        assert isinstance(classify(status(getattr(grpc.StatusCode, code)), ""), Retry)
    assert isinstance(classify(status(grpc.StatusCode.INTERNAL, "broke"), ""),
                      cairn.InternalError)
    assert type(classify(status(grpc.StatusCode.UNAUTHENTICATED, "no credentials"), "")) \
        is cairn.NotAuthenticated
    assert type(classify(status(grpc.StatusCode.PERMISSION_DENIED, "no grant"), "")) \
        is cairn.PermissionDenied
    event_id = cairn.uuid7()
    reused = classify(status(grpc.StatusCode.ALREADY_EXISTS, "conflict",
                             **{"x-cairn-conflict": "other-content",
                                "x-cairn-event-id": str(event_id)}), "")
    assert isinstance(reused, cairn.EventIdReused) and reused.id == event_id
    other = classify(status(grpc.StatusCode.ALREADY_EXISTS, "elsewhere",
                            **{"x-cairn-conflict": "not-a-retry"}), "")
    assert type(other) is cairn.IdempotencyConflict


def recorded(stream: str, revision: int, position: int) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        event=pb.RecordedEvent(stream=stream, revision=revision, position=position,
                               id=str(cairn.uuid7()), type="T")
    )


def event_of(message: object) -> cairn.RecordedEvent:
    assert isinstance(message, cairn.RecordedEvent), message
    return message


def test_a_subscription_drops_duplicates_and_refuses_gaps() -> None:
    sub = AsyncSubscription(None, "s", SubscribeOptions())  # type: ignore[arg-type]
    assert event_of(sub._judge(recorded("s", 0, 10))).revision == 0
    assert sub._judge(recorded("s", 0, 10)) is None
    with pytest.raises(_Gap):
        sub._judge(recorded("s", 2, 12))
    with pytest.raises(cairn.InternalError):
        sub._judge(recorded("other", 1, 11))
    assert event_of(sub._judge(recorded("s", 1, 11))).revision == 1
    # A resubscription resumes after what was delivered, on a node that has applied it.
    request = sub._resume.request("s", SubscribeOptions(min_position=3))
    assert getattr(request, "from") == 2 and request.min_position == 11


def test_a_subscription_passes_over_a_skipped_range_and_still_refuses_a_real_gap() -> None:
    sub = AsyncSubscription(None, "s", SubscribeOptions())  # type: ignore[arg-type]
    assert event_of(sub._judge(recorded("s", 0, 10))).revision == 0
    assert sub._judge(pb.SubscribeResponse(skipped=pb.Skipped(next=5))) is None
    assert event_of(sub._judge(recorded("s", 5, 15))).revision == 5
    # A stale marker changes nothing; a jump without one is still a gap.
    assert sub._judge(pb.SubscribeResponse(skipped=pb.Skipped(next=2))) is None
    with pytest.raises(_Gap):
        sub._judge(recorded("s", 8, 18))


def test_a_filtered_all_subscription_resumes_past_its_checkpoints() -> None:
    options = SubscribeOptions(filter=cairn.SubscriptionFilter(stream_prefix="a"))
    sub = AsyncSubscription(None, cairn.ALL_STREAM, options)  # type: ignore[arg-type]
    assert event_of(sub._judge(recorded("a-1", 0, 5))).position == 5
    checkpoint = pb.SubscribeResponse(checkpoint=pb.Checkpoint(next_position=40))
    assert sub._judge(checkpoint) == cairn.Checkpoint(40)
    assert sub._judge(recorded("a-2", 0, 3)) is None
    assert getattr(sub._resume.request(cairn.ALL_STREAM, options), "from") == 40
