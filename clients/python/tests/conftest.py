"""Fixtures: a shared three-node cluster for tests that do not disturb it, and fresh
clusters for tests that kill nodes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

import cairn
from harness import Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes shared by the session; tests must not kill them."""
    shared = Cluster(tmp_path_factory.mktemp("shared-cluster"))
    shared.start_all()
    try:
        with shared.client() as client:
            shared.wait_for_leader(client)
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[cairn.Client]:
    with cluster.client() as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes of this test's own, a leader elected; killed at the end."""
    own = Cluster(tmp_path / "cluster")
    own.start_all()
    try:
        with own.client() as c:
            own.wait_for_leader(c)
        yield own
    finally:
        own.stop()


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Stream names unique to this test, so tests share a cluster without seeing each other."""
    tag = uuid.uuid4().hex[:8]

    def name(prefix: str = "s") -> str:
        return f"{prefix}-{request.node.name[:40]}-{tag}".replace("[", "_").replace("]", "_")

    return name
