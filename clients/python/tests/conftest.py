"""Fixtures: a shared three-node cluster for tests that do not disturb it, and fresh
clusters for tests that kill nodes."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

import cairn
from harness import Cluster


@contextlib.contextmanager
def running(root: Path) -> Iterator[Cluster]:
    """Three nodes under ``root``, a leader elected; killed on the way out, however it goes."""
    started = Cluster(root)
    started.start_all()
    try:
        with started.client() as c:
            started.wait_for_leader(c)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes shared by the session; tests must not kill them."""
    with running(tmp_path_factory.mktemp("shared-cluster")) as shared:
        yield shared


@pytest.fixture
def client(cluster: Cluster) -> Iterator[cairn.Client]:
    with cluster.client() as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes of this test's own, to kill or reshape."""
    with running(tmp_path / "cluster") as own:
        yield own


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Stream names unique to this test, so tests share a cluster without seeing each other."""
    tag = uuid.uuid4().hex[:8]

    def name(prefix: str = "s") -> str:
        return f"{prefix}-{request.node.name[:40]}-{tag}".replace("[", "_").replace("]", "_")

    return name
