"""Consumer groups from Python against a real three-node cluster: definitions (create,
list, info, update, delete) with their typed errors, and a consumer that acknowledges,
parks and gets its parked events again after a replay, sync and async."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import pytest

import cairn
from harness import Cluster

Names = Callable[..., str]

#: How long a test waits for the leader's dispatcher to commit what a consumer did.
SETTLE_S = 30.0


def next_event(consumer: cairn.Consumer) -> cairn.GroupEvent:
    message = next(consumer)
    assert isinstance(message, cairn.GroupEvent), message
    return message


def test_group_definitions_change_through_the_leader_and_bad_input_changes_nothing(
    client: cairn.Client, stream_name: Names
) -> None:
    stream, group = stream_name("orders"), stream_name("billing")
    client.append(stream, cairn.EventData.json("Placed", {}))
    client.create_group(group, cairn.GroupSettings(stream, max_in_flight=3))
    with pytest.raises(cairn.GroupExists):
        client.create_group(group, cairn.GroupSettings(stream))
    with pytest.raises(cairn.InvalidInput, match="max in flight"):
        client.create_group(stream_name("bad"), cairn.GroupSettings(stream, max_in_flight=0))
    with pytest.raises(cairn.InvalidInput, match="only"):
        filtered = cairn.SubscriptionFilter(stream_prefix="orders-")
        client.create_group(stream_name("bad"), cairn.GroupSettings(stream, filter=filtered))
    with pytest.raises(cairn.GroupNotFound):
        client.group_info(stream_name("bad"))  # none of the refused creates landed

    info = client.group_info(group)
    assert (info.source, info.max_in_flight, info.max_retries) == (stream, 3, 10)
    assert info.strategy is cairn.GroupStrategy.ROUND_ROBIN
    assert info.lag == 1
    assert group in [g.group for g in client.list_groups()]

    # Only what an update names changes; what cannot change is refused, naming it.
    client.update_group(group, cairn.GroupUpdate(max_retries=4, message_timeout_ms=5_000))
    info = client.group_info(group)
    assert (info.max_in_flight, info.max_retries, info.message_timeout_ms) == (3, 4, 5_000)
    with pytest.raises(cairn.InvalidInput, match="strategy"):
        client.update_group(group, cairn.GroupUpdate(strategy=cairn.GroupStrategy.ORDERED))
    with pytest.raises(cairn.InvalidInput, match="no setting"):
        client.update_group(group, cairn.GroupUpdate())
    with pytest.raises(cairn.GroupNotFound):
        client.update_group(stream_name("nobody"), cairn.GroupUpdate(max_retries=1))
    assert client.group_info(group).max_retries == 4

    client.delete_group(group)
    with pytest.raises(cairn.GroupNotFound):
        client.group_info(group)
    with pytest.raises(cairn.GroupNotFound):
        client.consume(group)


def test_a_consumer_acknowledges_parks_and_gets_parked_events_again_after_a_replay(
    client: cairn.Client, stream_name: Names
) -> None:
    stream, group = stream_name("orders"), stream_name("billing")
    client.append(stream, [cairn.EventData.json("Placed", {"n": n}) for n in range(4)])
    client.create_group(
        group, cairn.GroupSettings(stream, strategy=cairn.GroupStrategy.ORDERED)
    )
    with client.consume(group) as consumer:
        for revision in (0, 1):
            delivered = next_event(consumer)
            assert (delivered.event.revision, delivered.retry_count) == (revision, 0)
            consumer.ack([delivered.event.id])
        for revision in (2, 3):
            delivered = next_event(consumer)
            assert delivered.event.revision == revision
            consumer.nack([delivered.event.id], cairn.NackAction.PARK, "cannot bill")
        # Parking is committed by the leader's dispatcher after the nack.
        deadline = time.monotonic() + SETTLE_S
        while client.group_info(group).parked < 2:
            assert time.monotonic() < deadline, client.group_info(group)
            time.sleep(0.05)
        parked = [e.json()["revision"] for e in client.read_stream(f"$parked-{group}")]
        assert parked == [2, 3]
        client.replay_parked(group)
        again = []
        for _ in range(2):
            delivered = next_event(consumer)
            again.append((delivered.event.revision, delivered.retry_count))
            consumer.ack([delivered.event.id])
        assert [revision for revision, _ in again] == [2, 3], again
        # An ack of an event not in flight is answered, and changes nothing.
        consumer.ack([cairn.uuid7()])
        rejected = next(consumer)
        assert isinstance(rejected, cairn.AckRejected), rejected
        assert "not in flight" in rejected.reason


def test_an_async_consumer_of_a_filtered_all_group_gets_only_what_passes(
    cluster: Cluster, stream_name: Names
) -> None:
    prefix = stream_name("shipments") + "-"
    group = stream_name("shipping")

    async def run() -> list[tuple[str, int]]:
        async with cairn.AsyncClient(cluster.endpoints) as client:
            last = await client.append(prefix + "1", cairn.EventData.json("Shipped", {}))
            await client.append(stream_name("other"), cairn.EventData.json("Shipped", {}))
            await client.append(prefix + "2", cairn.EventData.json("Shipped", {}))
            await client.create_group(
                group,
                cairn.GroupSettings(
                    "$all",
                    start=last.last_position,
                    filter=cairn.SubscriptionFilter(stream_prefix=prefix),
                ),
            )
            info = await client.group_info(group)
            assert info.filter == cairn.SubscriptionFilter(stream_prefix=prefix)
            got = []
            async with await client.consume(group) as consumer:
                async for message in consumer:
                    assert isinstance(message, cairn.GroupEvent), message
                    got.append((message.event.stream, message.event.revision))
                    await consumer.ack([message.event.id])
                    if len(got) == 2:
                        break
            await client.delete_group(group)
            return got

    assert asyncio.run(run()) == [(prefix + "1", 0), (prefix + "2", 0)]
