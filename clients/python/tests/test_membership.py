"""Membership changes through the client: a fourth node joins and leaves again."""

from __future__ import annotations

import cairn
from harness import Cluster


def test_a_node_is_added_and_removed(fresh_cluster: Cluster) -> None:
    with fresh_cluster.client() as client:
        client.append("before-the-join", cairn.EventData.json("Seen", {}))
        joiner = fresh_cluster.add_joiner()
        added = client.add_node(joiner, fresh_cluster.addrs[joiner - 1])
        assert added.voters == [1, 2, 3, joiner] and added.learners == []
        assert not added.unchanged
        # The new member serves what was written before it joined.
        with cairn.Client([fresh_cluster.endpoint(joiner)]) as on_joiner:
            events = on_joiner.read_stream("before-the-join", min_position=client.last_position)
            assert [e.type for e in events] == ["Seen"]
        removed = client.remove_node(joiner)
        assert removed.voters == [1, 2, 3] and removed.learners == []
        assert {m.id for m in client.status().members} == {1, 2, 3}
