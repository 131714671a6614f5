"""A cluster with TLS: the client trusts its CA from the argument, ``CAIRN_TLS_CA`` or the
profile, and a client that speaks plain text or trusts another CA gets a clear error and
writes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import cairn
from harness import REPO, Cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("tls-cluster"), tls=True)
    started.start_all()
    try:
        with started.client() as c:
            started.wait_for_leader(c)
        yield started
    finally:
        started.stop()


def test_a_client_trusting_the_ca_appends_and_reads_over_tls(tls_cluster: Cluster) -> None:
    with tls_cluster.client() as client:
        assert all(url.startswith("https://") for url in client.endpoints)
        written = client.append(
            "tls-orders", cairn.EventData.json("Placed", {"n": 1}), expected=cairn.NO_STREAM
        )
        events = list(client.read_stream("tls-orders"))
        assert [e.revision for e in events] == [written.last_revision]


def test_the_ca_comes_from_the_profile_or_the_environment(
    tls_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_cluster.ca_path is not None
    profile = tmp_path / "client-profile.toml"
    urls = ", ".join(f'"{url}"' for url in tls_cluster.endpoints)
    # The profile holds the token too (as `cairn dev` writes it): a node with TLS checks users.
    profile.write_text(
        f'endpoints = [{urls}]\ntls_ca = "{tls_cluster.ca_path}"\n'
        f'token = "{tls_cluster.admin_token}"\n'
    )
    monkeypatch.delenv("CAIRN_ENDPOINTS", raising=False)
    monkeypatch.delenv("CAIRN_TLS_CA", raising=False)
    monkeypatch.delenv("CAIRN_TOKEN", raising=False)
    with cairn.Client(profile=profile) as client:
        assert client.status().leader_id is not None
    monkeypatch.setenv("CAIRN_TLS_CA", str(tls_cluster.ca_path))
    with cairn.Client(tls_cluster.endpoints) as client:
        # Without a token: refused, never retried into a timeout.
        with pytest.raises(cairn.NotAuthenticated, match="no credentials"):
            client.status()
    monkeypatch.setenv("CAIRN_TOKEN", tls_cluster.admin_token)
    with cairn.Client(tls_cluster.endpoints) as client:
        assert client.status().leader_id is not None


def test_plain_text_and_untrusting_clients_are_refused_and_write_nothing(
    tls_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAIRN_TLS_CA", raising=False)
    plain = [url.replace("https://", "http://") for url in tls_cluster.endpoints]
    event = cairn.EventData.json("Placed", {"n": 2})
    with cairn.Client(plain, max_append_attempts=2, request_timeout=2.0) as client:
        with pytest.raises(cairn.CairnError, match="this node requires TLS"):
            client.append("tls-refused", event)
    other = tmp_path / "other"
    subprocess.run(
        ["bash", str(REPO / "deploy" / "certs.sh"), str(other), "x", "127.0.0.1"],
        check=True, capture_output=True,
    )
    with cairn.Client(
        tls_cluster.endpoints, tls_ca=other / "ca.crt", max_append_attempts=2, request_timeout=2.0
    ) as client:
        with pytest.raises(cairn.Unavailable):
            client.append("tls-refused", event)
    with tls_cluster.client() as client:
        with pytest.raises(cairn.StreamNotFound):
            list(client.read_stream("tls-refused"))


def test_a_ca_file_that_is_not_one_is_refused_before_connecting(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(cairn.InvalidInput, match="no PEM certificate"):
        cairn.Client(["https://127.0.0.1:1"], tls_ca=bogus)
