"""The blocking client against a real three-node cluster: round trips, expected versions,
typed errors, leader following, status, subscriptions, profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

import cairn
from harness import Cluster

Names = Callable[..., str]


def placed(n: int) -> cairn.EventData:
    return cairn.EventData.json("OrderPlaced", {"n": n}, metadata=b'{"by":"test"}')


def test_appended_events_read_back_forwards_backwards_and_in_all(
    client: cairn.Client, stream_name: Names
) -> None:
    stream = stream_name()
    first = client.append(stream, [placed(0), placed(1)], expected=cairn.NO_STREAM)
    second = client.append(stream, placed(2), expected=1)
    assert (first.last_revision, second.last_revision) == (1, 2)
    assert second.last_position > first.last_position and not second.already_written
    assert client.last_position == second.last_position

    events = list(client.read_stream(stream))
    assert [(e.revision, e.type, e.json()) for e in events] == [
        (0, "OrderPlaced", {"n": 0}), (1, "OrderPlaced", {"n": 1}), (2, "OrderPlaced", {"n": 2})
    ]
    assert events[0].metadata == b'{"by":"test"}' and events[0].stream == stream
    assert events[0].content_type is cairn.ContentType.JSON and events[0].created_unix_ms > 0
    assert events[2].position == second.last_position

    backwards = client.read_stream(stream, direction=cairn.Direction.BACKWARDS, count=2)
    assert [e.revision for e in backwards] == [2, 1]
    assert [e.revision for e in client.read_stream(stream, start=1, count=1)] == [1]
    in_all = client.read_all(start=events[0].position, count=3)
    assert [e.id for e in in_all] == [e.id for e in events]
    last = list(client.read_all(direction=cairn.Direction.BACKWARDS, count=1))
    assert last[0].position >= second.last_position

    # Read-your-writes on a follower: the node waits until it has applied our append.
    mine = client.read_stream(
        stream, prefer=cairn.NodePreference.FOLLOWER, min_position=client.last_position
    )
    assert len(list(mine)) == 3
    linearizable = client.read_stream(stream, consistency=cairn.ReadConsistency.LINEARIZABLE)
    assert len(list(linearizable)) == 3


def test_binary_events_keep_their_bytes(client: cairn.Client, stream_name: Names) -> None:
    stream = stream_name()
    client.append(stream, cairn.EventData.binary("Blob", bytes(range(256))))
    (event,) = client.read_stream(stream)
    assert event.content_type is cairn.ContentType.BINARY and event.data == bytes(range(256))


def test_a_wrong_expected_version_says_the_actual_revision(
    client: cairn.Client, stream_name: Names
) -> None:
    stream = stream_name()
    client.append(stream, [placed(0), placed(1)], expected=cairn.NO_STREAM)
    with pytest.raises(cairn.WrongExpectedVersion) as wrong:
        client.append(stream, placed(2), expected=0)
    assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == (stream, 0, 1)
    with pytest.raises(cairn.WrongExpectedVersion) as exists:
        client.append(stream, placed(2), expected=cairn.NO_STREAM)
    assert exists.value.actual == 1
    with pytest.raises(cairn.WrongExpectedVersion) as missing:
        client.append(stream_name("missing"), placed(0), expected=cairn.STREAM_EXISTS)
    assert missing.value.actual is None and "actual no stream" in str(missing.value)
    assert client.append(stream, placed(2), expected=cairn.STREAM_EXISTS).last_revision == 2
    assert len(list(client.read_stream(stream))) == 3  # nothing else was written


def test_errors_are_typed_and_bad_input_writes_nothing(
    client: cairn.Client, stream_name: Names
) -> None:
    with pytest.raises(cairn.StreamNotFound) as missing:
        client.read_stream(stream_name("never-written"))
    assert missing.value.stream.startswith("never-written")
    for bad in ("", "$reserved", "x" * 256):
        with pytest.raises(cairn.InvalidInput, match="stream"):
            client.append(bad, placed(0))
    with pytest.raises(cairn.InvalidInput, match="type"):
        client.append(stream_name(), cairn.EventData("", b"{}"))
    with pytest.raises(cairn.InvalidInput):
        client.append(stream_name(), [])
    with pytest.raises(cairn.InvalidInput):
        client.append(stream_name(), placed(0), expected=-1)
    with pytest.raises(cairn.InvalidInput):
        client.read_stream(stream_name(), count=0)
    with pytest.raises(cairn.StreamNotFound):
        client.read_stream(stream_name())  # none of the refused appends landed


def test_a_retry_is_recognised_and_a_reused_id_is_refused(
    client: cairn.Client, stream_name: Names
) -> None:
    stream = stream_name()
    event = placed(0)
    first = client.append(stream, event, expected=cairn.NO_STREAM)
    again = client.append(stream, event, expected=cairn.NO_STREAM)
    assert again.already_written and again.last_revision == first.last_revision
    assert again.last_position == first.last_position
    other_content = cairn.EventData.json("OrderPlaced", {"n": 99}, id=event.id)
    with pytest.raises(cairn.EventIdReused) as reused:
        client.append(stream, other_content, expected=cairn.NO_STREAM)
    assert reused.value.id == event.id
    with pytest.raises(cairn.IdempotencyConflict):
        client.append(stream_name("elsewhere"), event)
    assert [e.id for e in client.read_stream(stream)] == [event.id]


def test_the_client_finds_the_leader_from_a_follower(cluster: Cluster, stream_name: Names) -> None:
    with cluster.client() as probe:
        leader = probe.status().leader_id
    assert leader is not None
    follower = next(i for i in cluster.ids if i != leader)
    # Only a follower is configured: its "not the leader" answer names the leader.
    with cairn.Client([cluster.endpoint(follower)]) as client:
        result = client.append(stream_name(), placed(0), expected=cairn.NO_STREAM)
        assert result.last_revision == 0
        assert cluster.endpoint(leader) in client.endpoints
        status = client.status()
        assert status.leader_endpoint == cluster.endpoint(leader)
        roles = sorted(m.role.value for m in status.members)
        assert roles == ["follower", "follower", "leader"]
        assert all(m.reachable for m in status.members)
    # Or the follower forwards the append to the leader itself.
    with cairn.Client([cluster.endpoint(follower)], leader_only=False) as forwarding:
        stream = stream_name("forwarded")
        assert forwarding.append(stream, placed(0)).last_revision == 0
        assert forwarding.endpoints == [cluster.endpoint(follower)]


def test_a_subscription_catches_up_then_goes_live(client: cairn.Client, stream_name: Names) -> None:
    stream = stream_name()
    client.append(stream, [placed(0), placed(1)])
    with client.subscribe(stream) as subscription:
        assert subscription.served_by in (1, 2, 3)
        assert [next(subscription), next(subscription), next(subscription)][2] == cairn.CaughtUp(2)
        client.append(stream, placed(2))
        live = next(subscription)
        assert isinstance(live, cairn.RecordedEvent) and live.revision == 2
    with client.subscribe(stream, start=cairn.From.END) as from_end:
        assert next(from_end) == cairn.CaughtUp(3)
        client.append(stream, placed(3))
        assert next(from_end).revision == 3  # type: ignore[union-attr]


def test_a_filtered_all_subscription_sees_only_its_streams(
    client: cairn.Client, stream_name: Names
) -> None:
    prefix = stream_name("filtered")
    start = client.append(stream_name("other"), placed(0)).last_position
    client.append(f"{prefix}-a", placed(1))
    client.append(stream_name("other"), placed(2))
    client.append(f"{prefix}-b", placed(3))
    with client.subscribe_all(
        start=start, filter=cairn.SubscriptionFilter(stream_prefix=prefix)
    ) as subscription:
        seen = []
        for message in subscription:
            if isinstance(message, cairn.RecordedEvent):
                seen.append(message.stream)
            if isinstance(message, cairn.CaughtUp):
                break
    assert seen == [f"{prefix}-a", f"{prefix}-b"]


def test_membership_changes_that_would_weaken_the_cluster_are_refused(
    client: cairn.Client,
) -> None:
    with pytest.raises(cairn.InvalidInput, match="voter"):
        client.remove_node(1)
    with pytest.raises(cairn.InvalidInput):
        client.remove_node(99)
    assert len(client.status().members) == 3


def test_endpoints_come_from_the_profile_or_the_environment(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream_name: Names
) -> None:
    profile = tmp_path / "client-profile.toml"
    quoted = ", ".join(f'"{e}"' for e in cluster.endpoints)
    profile.write_text(f"endpoints = [{quoted}]\n")
    monkeypatch.delenv("CAIRN_ENDPOINTS", raising=False)
    monkeypatch.setenv("CAIRN_PROFILE", str(profile))
    with cairn.Client() as client:
        assert client.endpoints == cluster.endpoints
        client.append(stream_name(), placed(0))
    monkeypatch.setenv("CAIRN_ENDPOINTS", cluster.endpoints[1])
    with cairn.Client() as client:
        assert client.endpoints == [cluster.endpoints[1]]
        assert client.status().node_id == 2


def test_a_call_that_cannot_finish_in_its_deadline_is_unavailable_with_the_cause(
    cluster: Cluster, stream_name: Names
) -> None:
    with cluster.client(max_append_attempts=2) as client:
        with pytest.raises(cairn.Unavailable, match="no answer within|DEADLINE_EXCEEDED") as err:
            client.append(stream_name(), placed(0), timeout=0.000_001)
    assert "gave up after 2 attempts" in str(err.value)


def test_closing_a_client_on_another_clients_loop_thread_does_not_wait(
    cluster: Cluster, stream_name: Names
) -> None:
    """A client closed on another client's event-loop thread (a garbage collection there
    finalising an eventsourcing Application did it, while that thread held gRPC's lock) closes
    in the background: waiting there blocked the other client for ever."""
    import threading
    import time

    a = cluster.client()
    b = cluster.client()
    release = threading.Event()
    # b's loop is busy until released, as it was behind the lock the waiting thread held.
    b._loop.loop.call_soon_threadsafe(release.wait, 10)

    async def close_b() -> None:
        b.close()

    closer = threading.Thread(target=a._loop.run, args=(close_b(),))
    closer.start()
    closer.join(5)
    returned = not closer.is_alive()
    release.set()
    closer.join(10)
    assert returned, "closing a client waited on another client's loop thread"
    deadline = time.monotonic() + 10
    while b._loop._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not b._loop._thread.is_alive(), "the client closed in the background never stopped"
    stream = stream_name()
    with pytest.raises(cairn.InvalidInput, match="closed"):
        b.append(stream, placed(0))
    assert a.append(stream, placed(0)).last_revision == 0
    a.close()


def test_closing_a_client_ends_the_calls_other_threads_are_waiting_in(
    cluster: Cluster, stream_name: Names
) -> None:
    """A thread blocked in a call (here a live subscription with nothing to deliver) gets an
    error when another thread closes the client, instead of waiting for ever (which kept the
    interpreter from exiting when that thread was not a daemon)."""
    import threading

    stream = stream_name()
    c = cluster.client()
    c.append(stream, placed(0))
    outcome: list[object] = []
    subscription = c.subscribe(stream)
    assert isinstance(next(subscription), cairn.RecordedEvent)
    assert next(subscription) == cairn.CaughtUp(1)

    def wait_for_more() -> None:
        try:
            outcome.append(next(subscription))
        except BaseException as err:  # noqa: BLE001 - the test records whatever ends the wait
            outcome.append(err)

    waiter = threading.Thread(target=wait_for_more)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "the subscription had nothing to deliver"
    c.close()
    waiter.join(10)
    assert not waiter.is_alive(), "closing the client left a caller waiting"
    assert isinstance(outcome[0], cairn.InvalidInput), outcome
    assert "closed" in str(outcome[0])
    with pytest.raises(cairn.InvalidInput, match="closed"):
        c.append(stream, placed(1))
    c.close()  # a second close does nothing
