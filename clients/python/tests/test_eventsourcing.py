"""The ``eventsourcing`` library's own test cases, unmodified, subclassed for Cairn and run on
three-node clusters (``cairn.eventsourcing``). What each subclass adds is only how to make a
recorder or factory on Cairn; every skipped or overridden test is listed, with its reason, in
clients/python/DESIGN.md ("The eventsourcing module: the library's tests").

Some of the library's tests count notification ids from 1 in an empty store (ids are ``$all``
positions + 1): those classes get a fresh cluster for each test (``FRESH_CLUSTER_PER_TEST``);
the others share one cluster, each test under an application name of its own (its own
notification tag and tracking streams).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import ClassVar, Iterator, Optional

import pytest

if sys.version_info < (3, 11):  # the library needs 3.11; the client itself 3.10
    pytest.skip("eventsourcing 9.5 needs Python 3.11", allow_module_level=True)

from eventsourcing.persistence import (  # noqa: E402
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests.application import ExampleApplicationTestCase  # noqa: E402
from eventsourcing.tests.persistence import (  # noqa: E402
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.tests.projection import EventSourcedProjectionTestCase  # noqa: E402
from eventsourcing.utils import Environment, get_topic  # noqa: E402

import cairn  # noqa: E402
from cairn.eventsourcing import (  # noqa: E402
    CairnAggregateRecorder,
    CairnApplicationRecorder,
    CairnFactory,
    CairnProcessRecorder,
    CairnTrackingRecorder,
)
from conftest import running  # noqa: E402
from harness import Cluster  # noqa: E402

#: The library's tests print figures (test_performance); they are for BENCHMARKS.md, where
#: the same tests run on SQLite and PostgreSQL. Here they run for correctness only.
_shared: Optional[Cluster] = None


@pytest.fixture(scope="module", autouse=True)
def shared_es_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the classes that do not need an empty store."""
    global _shared
    with running(tmp_path_factory.mktemp("es-cluster")) as cluster:
        _shared = cluster
        yield cluster
        _shared = None


class OnCairn:
    """Gives a library test case a Cairn client (and ``CAIRN_ENDPOINTS`` in the process
    environment, for the tests that build applications from it)."""

    FRESH_CLUSTER_PER_TEST: ClassVar[bool] = False
    cluster: Cluster
    client: cairn.Client
    application_name: str

    @pytest.fixture(autouse=True)
    def _on_cairn(self) -> Iterator[None]:
        with tempfile.TemporaryDirectory(prefix="cairn-es-") as tmp:
            if self.FRESH_CLUSTER_PER_TEST:
                with running(Path(tmp) / "cluster") as fresh:
                    yield from self._with(fresh)
            else:
                assert _shared is not None
                yield from self._with(_shared)

    def _with(self, cluster: Cluster) -> Iterator[None]:
        self.cluster = cluster
        # A name of its own: its own notification tag and tracking streams.
        self.application_name = f"Test{uuid.uuid4().hex[:12]}"
        saved = {k: os.environ.get(k) for k in ("CAIRN_ENDPOINTS", "PERSISTENCE_MODULE")}
        os.environ["CAIRN_ENDPOINTS"] = ",".join(cluster.endpoints)
        os.environ["PERSISTENCE_MODULE"] = "cairn.eventsourcing"
        try:
            with cluster.client() as client:
                self.client = client
                yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class TestAggregateRecorder(OnCairn, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return CairnAggregateRecorder(self.client, self.application_name)


class TestSnapshotRecorder(OnCairn, AggregateRecorderTestCase):
    """The same test case on the snapshot recorder (versions in metadata; only newer
    snapshots are appended)."""

    def create_recorder(self) -> AggregateRecorder:
        return CairnAggregateRecorder(self.client, self.application_name, for_snapshotting=True)


class TestApplicationRecorder(OnCairn, ApplicationRecorderTestCase[CairnApplicationRecorder]):
    FRESH_CLUSTER_PER_TEST = True

    def create_recorder(self) -> CairnApplicationRecorder:
        return CairnApplicationRecorder(self.client, self.application_name)

    def test_insert_subscribe(self) -> None:
        # The library ships this one as optional (not every store can subscribe): Cairn can.
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(OnCairn, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return CairnTrackingRecorder(self.client, self.application_name)


class TestProcessRecorder(OnCairn, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return CairnProcessRecorder(self.client, self.application_name)


class TestNonInterleavingNotificationIDs(OnCairn, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return CairnApplicationRecorder(self.client, self.application_name)


class CairnTrackingRecorderSubclass(CairnTrackingRecorder):
    pass


class TestInfrastructureFactory(OnCairn, InfrastructureFactoryTestCase[CairnFactory]):
    def setUp(self) -> None:
        self.env = Environment(self.application_name)
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "cairn.eventsourcing"
        self.env[CairnFactory.CAIRN_ENDPOINTS] = ",".join(self.cluster.endpoints)
        super().setUp()

    def expected_factory_class(self) -> type[CairnFactory]:
        return CairnFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return CairnAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return CairnApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return CairnTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CairnTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return CairnProcessRecorder


class TestExampleApplication(OnCairn, ExampleApplicationTestCase):
    # Reads the notification log from id 1: an empty store.
    FRESH_CLUSTER_PER_TEST = True
    expected_factory_topic = get_topic(CairnFactory)


class TestEventSourcedProjection(OnCairn, EventSourcedProjectionTestCase):
    """An application, and a projection fed by its subscription, tracking what it did."""

    def setUp(self) -> None:
        self.env = {"PERSISTENCE_MODULE": "cairn.eventsourcing"}
        super().setUp()


del AggregateRecorderTestCase
del ApplicationRecorderTestCase
del TrackingRecorderTestCase
del ProcessRecorderTestCase
del NonInterleavingNotificationIDsBaseCase
del InfrastructureFactoryTestCase
del ExampleApplicationTestCase
del EventSourcedProjectionTestCase


# What the mapping adds beyond the library's tests: versions as revisions plus the stream's
# first version, learnt by a recorder that has never seen the stream.


def _events(originator_id: uuid.UUID, versions: range) -> list[StoredEvent]:
    return [StoredEvent(originator_id, v, f"topic{v}", b"state") for v in versions]


def test_a_recorder_that_never_saw_a_stream_appends_at_the_right_revision(
    client: cairn.Client,
) -> None:
    originator = uuid.uuid4()
    CairnApplicationRecorder(client, "Writer").insert_events(_events(originator, range(1, 3)))
    # A new recorder (another process, say) guesses "new aggregate", is told otherwise,
    # learns the stream starts at version 1, and appends version 3 at revision 2.
    fresh = CairnApplicationRecorder(client, "Writer")
    (notification_id,) = fresh.insert_events(_events(originator, range(3, 4)))
    assert [e.originator_version for e in fresh.select_events(originator)] == [1, 2, 3]
    assert notification_id == fresh.max_notification_id()
    # Neither a version that exists nor one that skips ahead is accepted.
    for versions in (range(2, 3), range(5, 6), range(1, 2)):
        with pytest.raises(IntegrityError):
            CairnApplicationRecorder(client, "Writer").insert_events(_events(originator, versions))
    # Ranges beyond the end, backwards.
    assert [e.originator_version for e in fresh.select_events(originator, lte=9, desc=True)] == [
        3, 2, 1
    ]
    assert [e.originator_version for e in fresh.select_events(originator, gt=1, lte=2)] == [2]


def test_one_insert_of_two_aggregates_is_all_or_nothing(client: cairn.Client) -> None:
    recorder = CairnApplicationRecorder(client, "Pair")
    first, second = uuid.uuid4(), uuid.uuid4()
    recorder.insert_events(_events(first, range(0, 1)))
    ids = recorder.insert_events(_events(second, range(0, 2)) + _events(first, range(1, 2)))
    assert ids is not None and list(ids) == sorted(ids) and len(set(ids)) == 3
    notes = recorder.select_notifications(start=ids[0], limit=3)
    assert [(n.originator_id, n.originator_version) for n in notes] == [
        (second, 0), (second, 1), (first, 1)
    ]
    # `first` at version 1 exists: the new aggregate's events are not written either.
    third = uuid.uuid4()
    with pytest.raises(IntegrityError):
        recorder.insert_events(_events(third, range(0, 1)) + _events(first, range(1, 2)))
    assert recorder.select_events(third) == []
