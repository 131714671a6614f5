"""Multi-stream appends, DCB, indexes, stream metadata, delete and tombstone against a real
three-node cluster, blocking and asyncio."""

from __future__ import annotations

import asyncio
from typing import Callable

import pytest

import cairn
from harness import Cluster

Names = Callable[..., str]


def test_multi_stream_append_is_all_or_nothing(client: cairn.Client, stream_name: Names) -> None:
    order, stock = stream_name("order"), stream_name("stock")
    placed = cairn.EventData.json("OrderPlaced", {"sku": "x"})
    reserved = [cairn.EventData.json("Reserved", {"n": n}) for n in range(2)]
    result = client.append_multi(
        [
            cairn.StreamAppend(order, placed, cairn.NO_STREAM),
            cairn.StreamAppend(stock, reserved, cairn.NO_STREAM),
        ]
    )
    assert result.last_revisions == ((order, 0), (stock, 1)) and not result.already_written
    # Contiguous in $all, in the order given.
    in_all = list(client.read_all(start=result.last_position - 2, count=3))
    assert [e.id for e in in_all] == [placed.id] + [e.id for e in reserved]

    # One wrong expectation: nothing lands anywhere, and the error names the stream.
    with pytest.raises(cairn.WrongExpectedVersion) as wrong:
        client.append_multi(
            [
                cairn.StreamAppend(order, cairn.EventData.json("Paid", {}), 0),
                cairn.StreamAppend(stock, cairn.EventData.json("Released", {}), 5),
            ]
        )
    assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == (stock, 5, 1)
    assert [e.revision for e in client.read_stream(order)] == [0]
    with pytest.raises(cairn.InvalidInput):
        client.append_multi([cairn.StreamAppend("$all", placed)])


def test_dcb_condition_fails_with_the_position_of_the_newer_event(
    client: cairn.Client, stream_name: Names
) -> None:
    course = f"course:{stream_name('c')}"
    query = cairn.Query([cairn.QueryItem(types=["Enrolled"], tags=[course])])
    # The decision: nothing matches yet, so append unless something appears.
    assert list(client.read_query(query)) == []
    first = client.dcb_append(
        cairn.EventData.json("Enrolled", {"student": 1}, tags=[course]),
        condition=cairn.AppendCondition(query),
    )
    assert first.last_revisions[0][0] == cairn.DCB_STREAM
    (seen,) = client.read_query(query)
    assert seen.tags == (course,) and seen.position == first.last_position

    # A decision taken after `seen` holds; a stale one fails, naming the newer event.
    client.dcb_append(
        cairn.EventData.json("Enrolled", {"student": 2}, tags=[course]),
        condition=cairn.AppendCondition(query, after=seen.position),
    )
    with pytest.raises(cairn.ConditionFailed) as failed:
        client.dcb_append(
            cairn.EventData.json("Enrolled", {"student": 3}, tags=[course]),
            condition=cairn.AppendCondition(query, after=seen.position),
        )
    newest = list(client.read_query(query, direction=cairn.Direction.BACKWARDS, count=1))
    assert failed.value.position == newest[0].position
    assert [e.json()["student"] for e in client.read_query(query)] == [1, 2]
    with pytest.raises(cairn.InvalidInput):
        cairn.QueryItem()


def test_indexes_read_and_follow_by_position(client: cairn.Client, stream_name: Names) -> None:
    category = stream_name("cat").replace("-", "_")
    tag = f"t:{category}"
    written = [
        client.append(f"{category}-{n}", cairn.EventData.json("Tick", {"n": n}, tags=[tag]))
        for n in range(3)
    ]
    by_category = list(client.read_index(cairn.category_index(category)))
    by_tag = list(client.read_stream(cairn.tag_index(tag)))  # the same through read_stream
    assert [e.position for e in by_category] == [w.last_position for w in written]
    assert [e.stream for e in by_tag] == [f"{category}-{n}" for n in range(3)]
    backwards = client.read_index(
        cairn.tag_index(tag), direction=cairn.Direction.BACKWARDS, count=2
    )
    assert [e.json()["n"] for e in backwards] == [2, 1]
    with pytest.raises(cairn.InvalidInput):
        client.read_index("order-1")

    with client.subscribe(cairn.tag_index(tag), start=written[1].last_position) as followed:
        seen = []
        for message in followed:
            if isinstance(message, cairn.RecordedEvent):
                seen.append(message.json()["n"])
            elif isinstance(message, cairn.CaughtUp):
                client.append(f"{category}-9", cairn.EventData.json("Tick", {"n": 9}, tags=[tag]))
            if len(seen) == 3:
                break
    assert seen == [1, 2, 9]


def test_metadata_delete_and_tombstone(client: cairn.Client, stream_name: Names) -> None:
    stream = stream_name()
    client.append(stream, [cairn.EventData.json("E", {"n": n}) for n in range(3)])
    state = client.get_stream_metadata(stream)
    assert state.revision is None and not state.deleted and state.metadata == cairn.StreamMetadata()

    set_ = client.set_stream_metadata(
        stream, cairn.StreamMetadata(max_count=2, custom={"owner": "ops"}), expected=cairn.NO_STREAM
    )
    state = client.get_stream_metadata(stream)
    assert state.revision == set_.last_revision
    assert state.metadata == cairn.StreamMetadata(max_count=2, custom={"owner": "ops"})
    assert [e.json()["n"] for e in client.read_stream(stream)] == [1, 2]  # retention
    with pytest.raises(cairn.WrongExpectedVersion):
        client.set_stream_metadata(stream, cairn.StreamMetadata(), expected=cairn.NO_STREAM)

    client.delete_stream(stream, expected=2)
    with pytest.raises(cairn.StreamNotFound):
        list(client.read_stream(stream))
    assert client.get_stream_metadata(stream).deleted
    again = client.append(stream, cairn.EventData.json("E", {"n": 3}), expected=cairn.NO_STREAM)
    assert again.last_revision == 3  # revisions continue after a soft delete

    client.tombstone_stream(stream)
    with pytest.raises(cairn.StreamDeleted):
        client.append(stream, cairn.EventData.json("E", {}))
    with pytest.raises(cairn.StreamDeleted):
        list(client.read_stream(stream))
    assert client.get_stream_metadata(stream).tombstoned


def test_async_multi_append_dcb_and_lifecycle(cluster: Cluster, stream_name: Names) -> None:
    a, b = stream_name("a"), stream_name("b")
    tag = f"t:{a}"

    async def main() -> None:
        async with cairn.AsyncClient(cluster.endpoints) as client:
            result = await client.append_multi(
                [cairn.StreamAppend(a, cairn.EventData.json("A", {}, tags=[tag])),
                 cairn.StreamAppend(b, cairn.EventData.json("B", {}))]
            )
            assert [s for s, _ in result.last_revisions] == [a, b]
            query = cairn.Query([cairn.QueryItem(tags=[tag])])
            matched = await (await client.read_query(query)).collect()
            assert [e.stream for e in matched] == [a]
            with pytest.raises(cairn.ConditionFailed) as failed:
                await client.dcb_append(
                    cairn.EventData.json("A2", {}, tags=[tag]),
                    condition=cairn.AppendCondition(query),
                )
            assert failed.value.position == matched[0].position
            indexed = await (await client.read_index(cairn.tag_index(tag))).collect()
            assert [e.position for e in indexed] == [matched[0].position]
            await client.set_stream_metadata(b, cairn.StreamMetadata(custom={"k": 1}))
            assert (await client.get_stream_metadata(b)).metadata.custom == {"k": 1}
            await client.tombstone_stream(b, expected=0)
            with pytest.raises(cairn.StreamDeleted):
                await client.append(b, cairn.EventData.json("B", {}))

    asyncio.run(main())
