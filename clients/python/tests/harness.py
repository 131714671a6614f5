"""Test clusters: ``cairn node`` child processes on free loopback ports with temporary data
directories, as the Rust tests run them (node/tests/cluster/harness.rs). Every child is
killed when the cluster stops, and with SIGKILL if this process dies first (through
util-linux's ``setpriv --pdeathsig``, when present: a ``preexec_fn`` would run Python in a
child forked from a process with grpc threads, which can hang it before the exec).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import cairn

#: The repository's root (deploy/certs.sh makes the TLS clusters' certificates).
REPO = Path(__file__).resolve().parents[3]
#: How long a test waits for a leader (or a node to catch up) before it fails.
CLUSTER_WAIT_S = 30.0
#: Pause between polls of a node's status.
POLL_S = 0.1


def cairn_exe() -> Path:
    """The workspace's build of ``cairn``: ``$CAIRN_BIN``, else ``target/debug/cairn``
    (``$CARGO_TARGET_DIR`` respected). run-tests.sh builds it."""
    if os.environ.get("CAIRN_BIN"):
        exe = Path(os.environ["CAIRN_BIN"])
    else:
        root = Path(__file__).resolve().parents[3]
        target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
        exe = target / "debug" / "cairn"
    if not exe.is_file():
        raise RuntimeError(f"{exe}: no cairn binary; build it with `cargo build -p cairn-node`")
    return exe


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> list[str]:
    """The prefix that makes a child get SIGKILL when this process dies (Linux), so a killed
    pytest leaves no node holding ports; none where ``setpriv`` is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class Cluster:
    """Nodes 1..=n of one cluster; started by :meth:`start_all`, killed by :meth:`stop`."""

    def __init__(self, root: Path, nodes: int = 3, tls: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        #: With TLS: a CA and one node certificate for 127.0.0.1 (deploy/certs.sh, openssl);
        #: without, the nodes run ``--insecure``.
        self.tls_dir: Optional[Path] = None
        if tls:
            self.tls_dir = root / "tls"
            subprocess.run(
                ["bash", str(REPO / "deploy" / "certs.sh"), str(self.tls_dir), "node",
                 "127.0.0.1", "localhost"],
                check=True, capture_output=True,
            )
            #: A node with TLS checks users: the admin secret, bootstrapped as the admin's token.
            self.admin_token = "python-harness-admin-" + os.urandom(16).hex()
            (self.tls_dir / "admin.token").write_text(self.admin_token + "\n")
        self.exe = cairn_exe()
        self.addrs = [f"127.0.0.1:{port}" for port in free_ports(nodes)]
        #: Nodes 1..=initial form the cluster; later ones (add_joiner) wait to be added.
        self.initial = nodes
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def ids(self) -> list[int]:
        return list(range(1, len(self.addrs) + 1))

    @property
    def ca_path(self) -> Optional[Path]:
        """The CA file clients trust, when the nodes run with TLS."""
        return self.tls_dir / "ca.crt" if self.tls_dir else None

    def endpoint(self, node_id: int) -> str:
        scheme = "https" if self.tls_dir else "http"
        return f"{scheme}://{self.addrs[node_id - 1]}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint(i) for i in self.ids]

    def log_path(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}.log"

    def start(self, node_id: int) -> None:
        """Starts (or restarts, with the same flags) node ``node_id``."""
        peers = ",".join(
            f"{i}={a}" for i, a in zip(self.ids, self.addrs) if i <= self.initial or i == node_id
        )
        args = _die_with_parent() + [
            str(self.exe), "node", "--id", str(node_id),
            "--listen", self.addrs[node_id - 1],
            "--peers", peers,
            "--data-dir", str(self.root / f"node-{node_id}"),
        ]
        if self.tls_dir:
            node = self.tls_dir / "node"
            args += ["--tls-cert", str(node / "tls.crt"), "--tls-key", str(node / "tls.key"),
                     "--tls-ca", str(node / "ca.crt"),
                     "--admin-token-file", str(self.tls_dir / "admin.token")]
        else:
            args.append("--insecure")
        with open(self.log_path(node_id), "ab") as log:
            self.children[node_id] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def add_joiner(self) -> int:
        """A node that joins the running cluster: the next id on a free port, started with
        the initial members and itself as peers (so it does not bootstrap; it waits to be
        added). Returns its id."""
        port = free_ports(1)[0]
        self.addrs.append(f"127.0.0.1:{port}")
        node_id = len(self.addrs)
        self.start(node_id)
        deadline = time.monotonic() + CLUSTER_WAIT_S
        while True:  # listening: ready to be added
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                return node_id
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {node_id} is not listening; see {self.root}")
                time.sleep(POLL_S)

    def start_all(self) -> None:
        for node_id in self.ids:
            self.start(node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        child = self.children.pop(node_id, None)
        if child is not None:
            child.kill()
            child.wait()

    def stop(self) -> None:
        for node_id in list(self.children):
            self.kill(node_id)

    def client(self, **options: object) -> cairn.Client:
        if self.ca_path is not None:
            options.setdefault("tls_ca", self.ca_path)
            options.setdefault("token", self.admin_token)
        return cairn.Client(self.endpoints, **options)  # type: ignore[arg-type]

    def wait_for_leader(self, client: cairn.Client, without: Optional[int] = None) -> int:
        """The leader's id once one is elected and every running node has applied what it
        knows; ``without``: a leader other than this (killed) node."""
        deadline = time.monotonic() + CLUSTER_WAIT_S
        last: object = None
        while time.monotonic() < deadline:
            try:
                status = client.status(timeout=1.0)
                last = status
                running = [m for m in status.members if m.id in self.children]
                if (
                    status.leader_id is not None
                    and status.leader_id != without
                    and all(m.reachable for m in running)
                ):
                    return status.leader_id
            except cairn.CairnError as err:
                last = err
            time.sleep(POLL_S)
        raise AssertionError(
            f"no leader within {CLUSTER_WAIT_S}s (last: {last}); logs in {self.root}"
        )
