"""The nodes a client talks to, one lazily opened channel each, and the last known leader.

The same rules as the Rust client (client/src/endpoints.rs): URLs are normalised so
``host:port``, ``http://host:port`` and ``http://host:port/`` name one node; leader hints add
unknown nodes up to :data:`MAX_ENDPOINTS`; ``pick`` says which node a preference means.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit

import grpc
import grpc.aio

from cairn.errors import InvalidInput
from cairn.options import NodePreference

#: Most endpoints a client holds, configured plus learnt from leader hints: a confused server
#: cannot make the client open channels without bound. A hint beyond it is ignored.
MAX_ENDPOINTS = 64
#: Largest gRPC message either way, the server's limit: a bigger append is refused here.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: HTTP/2 pings while a call is open: a live subscription may be silent for hours, and a node
#: that vanished without closing the connection must not hold it forever.
KEEPALIVE_INTERVAL_MS = 10_000
#: A ping unanswered this long drops the connection; its calls fail (a subscription moves on).
KEEPALIVE_TIMEOUT_MS = 5_000
#: First and longest wait of grpc's own reconnection to a node that went away: short, so a
#: restarted node is used again soon (a call to a node still down fails at once and the
#: client's retry policy moves on).
RECONNECT_BACKOFF_INITIAL_MS = 100
RECONNECT_BACKOFF_MAX_MS = 1_000

#: Builds the channel of a node from its ``host:port`` target.
ChannelFactory = Callable[[str], grpc.aio.Channel]


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_INTERVAL_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_INITIAL_MS),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
    ]


def insecure_channel(target: str) -> grpc.aio.Channel:
    """The channel factory for ``http://`` endpoints: plaintext HTTP/2 (nodes run with
    ``--insecure``)."""
    return grpc.aio.insecure_channel(target, options=channel_options())


def tls_channel_factory(ca_pem: Optional[bytes], token: Optional[str] = None) -> ChannelFactory:
    """The channel factory for ``https://`` endpoints: TLS, the nodes' certificates checked
    against ``ca_pem`` (PEM), or the system's roots when ``None``; with ``token``, every call
    carries it (``authorization: Bearer TOKEN``, what a node that checks users asks for)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )

    def channel(target: str) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(target, credentials, options=channel_options())

    return channel


def normalise(url: str, default_scheme: str = "http") -> str:
    """Adds ``default_scheme://`` when the scheme is missing and drops trailing slashes."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = default_scheme, url
    return f"{scheme}://{rest.rstrip('/')}"


def _target(url: str) -> str:
    """``host:port`` of a normalised URL; :class:`InvalidInput` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"endpoint {url!r}: the scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"endpoint {url!r}: only scheme, host and port are allowed")
    try:
        port = parts.port
    except ValueError as err:
        raise InvalidInput(f"endpoint {url!r}: {err}") from err
    if not parts.hostname:
        raise InvalidInput(f"endpoint {url!r}: no host")
    if port is None:
        raise InvalidInput(f"endpoint {url!r}: no port")
    return parts.netloc


class Node:
    """One endpoint: its normalised URL (matched against leader hints) and its channel."""

    def __init__(self, url: str, default_scheme: str = "http") -> None:
        self.url = normalise(url, default_scheme)
        self.target = _target(self.url)
        self.channel: Optional[grpc.aio.Channel] = None

    def __repr__(self) -> str:
        return f"Node({self.url})"


class Endpoints:
    """The node list, the known leader, and where calls start without one."""

    def __init__(
        self,
        urls: Sequence[str],
        factory: Optional[ChannelFactory] = None,
        tls_ca: Optional[bytes] = None,
        token: Optional[str] = None,
    ) -> None:
        """``factory`` builds the channels (default: TLS for ``https://`` endpoints, checked
        against ``tls_ca`` or the system's roots, plaintext for ``http://``). With ``tls_ca``,
        endpoints without a scheme are ``https://``. A cluster runs with TLS or without: mixed
        schemes are :class:`InvalidInput`."""
        if isinstance(urls, str):
            raise InvalidInput("endpoints: give a list of URLs, not one string")
        if not urls:
            raise InvalidInput("endpoints: at least one is needed")
        if len(urls) > MAX_ENDPOINTS:
            raise InvalidInput(f"endpoints: {len(urls)} given, at most {MAX_ENDPOINTS}")
        self.nodes: list[Node] = []
        default_scheme = "https" if tls_ca is not None else "http"
        for url in urls:
            node = Node(url, default_scheme)
            if all(known.url != node.url for known in self.nodes):
                self.nodes.append(node)
        schemes = {node.url.split("://", 1)[0] for node in self.nodes}
        if len(schemes) > 1:
            raise InvalidInput(
                "endpoints mix http:// and https://; a cluster runs with TLS or without"
            )
        #: Nodes name the leader as ``http://HOST:PORT``; with TLS, hints are followed as https.
        self.tls = schemes == {"https"}
        if factory is None:
            factory = tls_channel_factory(tls_ca, token) if self.tls else insecure_channel
        self.leader: Optional[Node] = None
        #: Where calls start without a leader: past the last node that failed.
        self._fallback: Optional[Node] = None
        self._factory = factory

    def channel(self, node: Node) -> grpc.aio.Channel:
        """The node's channel, opened on first use (inside the running event loop)."""
        if node.channel is None:
            node.channel = self._factory(node.target)
        return node.channel

    async def close(self) -> None:
        for node in self.nodes:
            if node.channel is not None:
                channel, node.channel = node.channel, None
                await channel.close()

    def first(self) -> Node:
        return self._fallback or self.nodes[0]

    def leader_or_first(self) -> Node:
        return self.leader or self.first()

    def after(self, node: Node) -> Node:
        """The node after ``node``, wrapping around."""
        index = next((i for i, known in enumerate(self.nodes) if known is node), -1)
        return self.nodes[(index + 1) % len(self.nodes)]

    def pick(self, preference: NodePreference, avoid: Sequence[Node]) -> Node:
        """Where a call with ``preference`` goes, avoiding ``avoid`` when another qualifies.
        LEADER: the known leader; FOLLOWER: the first node from :meth:`first` on that is not
        the leader; ANY (and the fallback of both): the first node from there on."""
        leader = self.leader
        if preference is NodePreference.LEADER and leader is not None and leader not in avoid:
            return leader
        start = self.first()
        at = next((i for i, known in enumerate(self.nodes) if known is start), 0)
        ring = self.nodes[at:] + self.nodes[:at]
        if preference is NodePreference.FOLLOWER:
            for node in ring:
                if node is not leader and node not in avoid:
                    return node
        return next((node for node in ring if node not in avoid), start)

    def avoid(self, node: Node, tried: list[Node]) -> None:
        """``node`` failed without pointing elsewhere: forget it as leader, start later calls
        after it, and add it to ``tried``. Once every node has failed, only ``node`` stays
        avoided, so the next round starts over from the others."""
        self.forget_leader(node)
        self._fallback = self.after(node)
        if node not in tried:
            tried.append(node)
        if len(tried) >= len(self.nodes):
            tried[:] = [node]

    def forget_leader(self, node: Node) -> None:
        if self.leader is node:
            self.leader = None

    def follow_hint(self, hint: str) -> Optional[Node]:
        """Records a leader hint and returns its node, adding it if new; ``None`` when the
        hint is not a usable URL or the endpoint limit is reached."""
        url = normalise(hint)
        if self.tls and url.startswith("http://"):
            url = "https://" + url[len("http://"):]
        node = next((known for known in self.nodes if known.url == url), None)
        if node is None:
            if len(self.nodes) >= MAX_ENDPOINTS:
                return None
            try:
                node = Node(url)
            except InvalidInput:
                return None
            self.nodes.append(node)
        self.leader = node
        return node
