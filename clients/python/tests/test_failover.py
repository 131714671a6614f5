"""SIGKILL during work: appends ride out the loss of the leader with nothing lost and nothing
written twice; a subscription survives the loss of the node it reads from with no gap and no
duplicate. Each test has a cluster of its own."""

from __future__ import annotations

import threading

import cairn
from harness import Cluster

#: Appends in the failover test; the leader is killed after KILL_AFTER of them.
APPENDS = 40
KILL_AFTER = 10


def test_appends_survive_a_sigkill_of_the_leader_exactly_once(fresh_cluster: Cluster) -> None:
    stream = "failover-appends"
    acknowledged: list[cairn.EventData] = []
    results: list[cairn.AppendResult] = []
    ten_done = threading.Event()
    errors: list[BaseException] = []

    def write(client: cairn.Client) -> None:
        try:
            for n in range(APPENDS):
                event = cairn.EventData.json("Counted", {"n": n})
                # Each append expects exactly the previous one: a retry that landed twice
                # would be refused, and one that was lost would leave a gap.
                expected = cairn.NO_STREAM if n == 0 else n - 1
                results.append(client.append(stream, event, expected=expected))
                acknowledged.append(event)
                if n + 1 == KILL_AFTER:
                    ten_done.set()
        except BaseException as err:  # surfaced by the main thread
            errors.append(err)
            ten_done.set()

    with fresh_cluster.client() as client:
        leader = client.status().leader_id
        assert leader is not None
        writer = threading.Thread(target=write, args=(client,))
        writer.start()
        assert ten_done.wait(60)
        fresh_cluster.kill(leader)
        writer.join(120)
        assert not writer.is_alive()
        assert not errors, errors
        assert len(acknowledged) == APPENDS
        assert [r.last_revision for r in results] == list(range(APPENDS))

        new_leader = fresh_cluster.wait_for_leader(client, without=leader)
        assert new_leader != leader
        stored = list(client.read_stream(stream, consistency=cairn.ReadConsistency.LINEARIZABLE))
        assert [e.id for e in stored] == [e.id for e in acknowledged]
        assert [e.revision for e in stored] == list(range(APPENDS))
        assert [e.json()["n"] for e in stored] == list(range(APPENDS))


def test_a_subscription_survives_a_sigkill_of_its_node_without_gap_or_duplicate(
    fresh_cluster: Cluster,
) -> None:
    stream = "failover-subscription"
    half = 25
    with fresh_cluster.client() as client:
        client.append(stream, [cairn.EventData.json("Counted", {"n": n}) for n in range(half)])
        subscription = client.subscribe(stream)
        revisions: list[int] = []
        killed = None
        for message in subscription:
            if isinstance(message, cairn.CaughtUp):
                if killed is None:
                    # History delivered: kill the node serving it, then write the rest.
                    killed = subscription.served_by
                    assert killed is not None
                    fresh_cluster.kill(killed)
                    for n in range(half, 2 * half):
                        client.append(stream, cairn.EventData.json("Counted", {"n": n}))
            elif isinstance(message, cairn.RecordedEvent):
                revisions.append(message.revision)
                if len(revisions) >= 2 * half:
                    break
        subscription.close()
        assert revisions == list(range(2 * half))
        assert subscription.served_by != killed
