"""The library's documented example, the dog school, end to end on a three-node Cairn
cluster through ``PERSISTENCE_MODULE=cairn.eventsourcing``: an application, its notification
log and snapshots, a second instance reading the same state, a save of two aggregates that is
all or nothing, and a process application that counts tricks with tracking records (a
system run by the library's runner), surviving a restart without counting twice."""

from __future__ import annotations

import sys
from typing import Any, Iterator
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest

if sys.version_info < (3, 11):  # the library needs 3.11; the client itself 3.10
    pytest.skip("eventsourcing 9.5 needs Python 3.11", allow_module_level=True)

from eventsourcing.application import AggregateNotFoundError, Application  # noqa: E402
from eventsourcing.domain import Aggregate, event  # noqa: E402
from eventsourcing.persistence import IntegrityError  # noqa: E402
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System  # noqa: E402

from harness import Cluster  # noqa: E402


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(Application[UUID]):
    is_snapshotting_enabled = True

    def register_dog(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str) -> None:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        self.save(dog)

    def get_dog(self, dog_id: UUID) -> dict[str, Any]:
        dog: Dog = self.repository.get(dog_id)
        return {"name": dog.name, "tricks": tuple(dog.tricks)}


class Counter(Aggregate):
    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/counters/{name}")

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


class TrickCounters(ProcessApplication[UUID]):
    def policy(self, domain_event: Any, processing_event: Any) -> None:
        if not isinstance(domain_event, Dog.TrickAdded):
            return
        counter_id = Counter.create_id(domain_event.trick)
        try:
            counter: Counter = self.repository.get(counter_id)
        except AggregateNotFoundError:
            counter = Counter(domain_event.trick)
        counter.increment()
        processing_event.collect_events(counter)

    def get_count(self, trick: str) -> int:
        try:
            counter: Counter = self.repository.get(Counter.create_id(trick))
        except AggregateNotFoundError:
            return 0
        return counter.count


@pytest.fixture
def env(cluster: Cluster) -> Iterator[dict[str, str]]:
    yield {
        "PERSISTENCE_MODULE": "cairn.eventsourcing",
        "CAIRN_ENDPOINTS": ",".join(cluster.endpoints),
    }


def test_dog_school_end_to_end(env: dict[str, str]) -> None:
    school = DogSchool(env=env)
    try:
        dog_id = school.register_dog("Fido")
        school.add_trick(dog_id, "roll over")
        school.add_trick(dog_id, "play dead")
        assert school.get_dog(dog_id) == {"name": "Fido", "tricks": ("roll over", "play dead")}

        # The notification log: this application's events, ids from $all positions.
        latest = school.recorder.max_notification_id()
        assert latest is not None
        notifications = school.recorder.select_notifications(start=latest - 2, limit=10)
        assert [n.originator_version for n in notifications] == [1, 2, 3]
        assert notifications[-1].id == latest

        # A snapshot, then more events: the dog comes back from the snapshot plus the rest.
        school.take_snapshot(dog_id)
        school.add_trick(dog_id, "fetch")
        assert school.snapshots is not None
        (snapshot,) = school.snapshots.get(dog_id)
        assert snapshot.originator_version == 3

        # Another instance (its own client) sees the same dog.
        other = DogSchool(env=env)
        try:
            assert other.get_dog(dog_id)["tricks"] == ("roll over", "play dead", "fetch")
            # Both instances saving version 5 of the dog: only one wins.
            mine: Dog = school.repository.get(dog_id)
            theirs: Dog = other.repository.get(dog_id)
            mine.add_trick("sit")
            theirs.add_trick("stay")
            school.save(mine)
            with pytest.raises(IntegrityError):
                other.save(theirs)
        finally:
            other.close()

        # One save of two aggregates is all or nothing: a stale dog sinks a new one.
        stale: Dog = school.repository.get(dog_id, version=3)
        stale.add_trick("beg")
        newcomer = Dog("Rex")
        with pytest.raises(IntegrityError):
            school.save(newcomer, stale)
        with pytest.raises(AggregateNotFoundError):
            school.repository.get(newcomer.id)
        assert school.get_dog(dog_id)["tricks"][-1] == "sit"
    finally:
        school.close()


def test_process_application_counts_each_trick_once(env: dict[str, str]) -> None:
    # Counter ids derive from trick names: tricks of this run's own, on a shared cluster.
    run = uuid4().hex[:8]
    tricks = [f"roll-{run}", f"fetch-{run}"]
    system = System(pipes=[[DogSchool, TrickCounters]])

    runner = SingleThreadedRunner(system, env=env)
    runner.start()
    try:
        school = runner.get(DogSchool)
        counters = runner.get(TrickCounters)
        dog = school.register_dog("Fido")
        school.add_trick(dog, tricks[0])
        school.add_trick(dog, tricks[1])
        school.add_trick(school.register_dog("Rex"), tricks[0])
        assert (counters.get_count(tricks[0]), counters.get_count(tricks[1])) == (2, 1)
        position = counters.recorder.max_tracking_id(DogSchool.name)
        assert position == school.recorder.max_notification_id()
    finally:
        runner.stop()

    # A restarted system resumes from its tracking records: nothing is counted twice.
    runner = SingleThreadedRunner(system, env=env)
    runner.start()
    try:
        school, counters = runner.get(DogSchool), runner.get(TrickCounters)
        school.add_trick(school.register_dog("Ace"), tricks[1])
        assert (counters.get_count(tricks[0]), counters.get_count(tricks[1])) == (2, 2)
    finally:
        runner.stop()
