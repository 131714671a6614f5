"""The asyncio client on the main paths: round trips, typed errors, subscriptions, and
failover (concurrent appends and a `$all` subscription across a SIGKILL of the leader)."""

from __future__ import annotations

import asyncio
from typing import Callable

import pytest

import cairn
from harness import Cluster

Names = Callable[..., str]


def test_async_round_trip_and_typed_errors(cluster: Cluster, stream_name: Names) -> None:
    stream = stream_name()

    async def main() -> None:
        async with cairn.AsyncClient(cluster.endpoints) as client:
            events = [cairn.EventData.json("Placed", {"n": n}) for n in range(3)]
            written = await client.append(stream, events, expected=cairn.NO_STREAM)
            assert written.last_revision == 2
            read = await client.read_stream(stream)
            assert [e.id async for e in read] == [e.id for e in events]
            backwards = await client.read_all(direction=cairn.Direction.BACKWARDS, count=1)
            assert (await backwards.collect())[0].position >= written.last_position
            with pytest.raises(cairn.WrongExpectedVersion) as wrong:
                await client.append(stream, cairn.EventData.json("Late", {}), expected=5)
            assert wrong.value.actual == 2
            with pytest.raises(cairn.StreamNotFound):
                await client.read_stream(stream_name("missing"))
            with pytest.raises(cairn.InvalidInput):
                await client.append("$nope", events[0])
            status = await client.status()
            assert status.leader_id in cluster.ids and len(status.members) == 3

    asyncio.run(main())


def test_async_subscription_catches_up_then_goes_live(
    cluster: Cluster, stream_name: Names
) -> None:
    stream = stream_name()

    async def main() -> None:
        async with cairn.AsyncClient(cluster.endpoints) as client:
            await client.append(stream, cairn.EventData.json("Placed", {"n": 0}))
            async with await client.subscribe(stream) as subscription:
                assert isinstance(await subscription.__anext__(), cairn.RecordedEvent)
                assert await subscription.__anext__() == cairn.CaughtUp(1)
                await client.append(stream, cairn.EventData.json("Placed", {"n": 1}))
                live = await subscription.__anext__()
                assert isinstance(live, cairn.RecordedEvent) and live.revision == 1

    asyncio.run(main())


def test_async_appends_and_an_all_subscription_survive_a_sigkill_of_the_leader(
    fresh_cluster: Cluster,
) -> None:
    writers, per_writer = 4, 15

    written = [0]

    async def write(client: cairn.AsyncClient, w: int) -> list[str]:
        ids = []
        for n in range(per_writer):
            event = cairn.EventData.json("Counted", {"w": w, "n": n})
            expected = cairn.NO_STREAM if n == 0 else n - 1
            await client.append(f"writer-{w}", event, expected=expected)
            ids.append(str(event.id))
            written[0] += 1
        return ids

    async def main() -> None:
        async with cairn.AsyncClient(fresh_cluster.endpoints) as client:
            status = await client.status()
            leader = status.leader_id
            assert leader is not None
            subscription = await client.subscribe_all(prefer=cairn.NodePreference.LEADER)
            assert subscription.served_by == leader
            tasks = [asyncio.create_task(write(client, w)) for w in range(writers)]
            while written[0] < writers * 5:  # the leader dies with appends in flight
                await asyncio.sleep(0.01)
            await asyncio.to_thread(fresh_cluster.kill, leader)
            acknowledged = [i for ids in await asyncio.gather(*tasks) for i in ids]

            positions, seen = [], []
            async for message in subscription:
                if isinstance(message, cairn.RecordedEvent):
                    positions.append(message.position)
                    seen.append(str(message.id))
                    if len(seen) == len(acknowledged):
                        break
            subscription.cancel()
            assert positions == list(range(len(acknowledged)))  # no gap, no duplicate
            assert sorted(seen) == sorted(acknowledged)
            assert subscription.served_by != leader

    asyncio.run(main())
