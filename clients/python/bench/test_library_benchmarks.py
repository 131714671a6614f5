"""The eventsourcing library's own performance tests (``test_performance``,
``test_concurrent_throughput``), unmodified, on Cairn and, for comparison, on the library's
SQLite and PostgreSQL modules. Not part of the test suite (pytest's testpaths is tests/):
BENCHMARKS.md gives the commands. ``BENCH_STORE`` picks the store:

- ``cairn``: a three-node cluster of ``$CAIRN_BIN`` (build it with --release), started here;
- ``sqlite``: a file in a temporary directory (the library's SQLite module, WAL);
- ``postgres``: ``BENCH_POSTGRES`` = ``host:port:dbname:user:password`` (a local server).

Each test prints the library's own figure ("μs per insert", "Rate: N inserts per second").
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder, ProcessRecorder
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    ProcessRecorderTestCase,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import running  # noqa: E402

STORE = os.environ.get("BENCH_STORE", "cairn")
_store: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def store() -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="es-bench-") as tmp:
        if STORE == "cairn":
            import cairn

            with running(Path(tmp) / "cluster") as cluster:
                with cairn.Client(cluster.endpoints) as client:
                    _store["client"] = client
                    yield
        elif STORE == "sqlite":
            from eventsourcing.sqlite import SQLiteDatastore

            _store["datastore"] = SQLiteDatastore(str(Path(tmp) / "bench.db"))
            yield
        elif STORE == "postgres":
            from eventsourcing.postgres import PostgresDatastore

            host, port, dbname, user, password = os.environ["BENCH_POSTGRES"].split(":")
            _store["datastore"] = PostgresDatastore(
                dbname, host, port, user, password, pool_size=10, max_overflow=10
            )
            yield
        else:
            raise RuntimeError(f"BENCH_STORE={STORE!r}: cairn, sqlite or postgres")
        _store.clear()


def _make(kind: str) -> Any:
    """A fresh recorder of ``kind`` (aggregate, application, process) on the chosen store;
    SQL stores get tables of their own per recorder."""
    name = f"b{uuid.uuid4().hex[:10]}"
    if STORE == "cairn":
        from cairn.eventsourcing import (
            CairnAggregateRecorder,
            CairnApplicationRecorder,
            CairnProcessRecorder,
        )

        cls = {"aggregate": CairnAggregateRecorder, "application": CairnApplicationRecorder,
               "process": CairnProcessRecorder}[kind]
        return cls(_store["client"], name)
    if STORE == "sqlite":
        from eventsourcing import sqlite as module

        prefix = "SQLite"
    else:
        from eventsourcing import postgres as module

        prefix = "Postgres"
    cls = getattr(module, f"{prefix}{kind.capitalize()}Recorder")
    kwargs: dict[str, Any] = {"events_table_name": f"{name}_events"}
    if kind == "process" and STORE == "postgres":
        kwargs["tracking_table_name"] = f"{name}_tracking"
    recorder = cls(_store["datastore"], **kwargs)
    recorder.create_table()
    return recorder


class TestAggregateRecorder(AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return _make("aggregate")


class TestApplicationRecorder(ApplicationRecorderTestCase[Any]):
    def create_recorder(self) -> ApplicationRecorder:
        return _make("application")


class TestProcessRecorder(ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return _make("process")


del AggregateRecorderTestCase, ApplicationRecorderTestCase, ProcessRecorderTestCase
