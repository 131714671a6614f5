"""The asyncio client: appends that follow the leader and retry safely, reads, subscriptions,
cluster status and membership. The one implementation of every call; :class:`cairn.Client`
runs these same coroutines on a private event loop.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar, Union

import grpc
import grpc.aio

from cairn.cluster import ClusterStatus, Membership
from cairn.endpoints import (
    MAX_MESSAGE_BYTES,
    ChannelFactory,
    Endpoints,
    Node,
)
from cairn.dcb import (
    AppendCondition,
    MultiAppendResult,
    Query,
    StreamAppend,
    event_list,
)
from cairn.errors import (
    CairnError,
    ConditionFailed,
    InternalError,
    InvalidInput,
    Unavailable,
    WrongExpectedVersion,
    classify,
)
from cairn.events import (
    ALL_STREAM,
    ANY,
    AppendResult,
    EventData,
    ExpectedRevision,
    by_position,
    expected_to_proto,
    u64,
    uuid7,
)
from cairn.groups import (
    AsyncConsumer,
    GroupInfo,
    GroupSettings,
    GroupUpdate,
    group_error,
)
from cairn.lifecycle import StreamMetadata, StreamMetadataState
from cairn.options import (
    Direction,
    From,
    NodePreference,
    ReadConsistency,
    ReadFrom,
    SubscriptionFilter,
)
from cairn.policy import DEFAULT_MAX_APPEND_ATTEMPTS, Retries
from cairn.profile import resolve_endpoints, resolve_tls_ca, resolve_token
from cairn.proto import pb, pb_grpc
from cairn.reads import AsyncReadStream
from cairn.subscription import AsyncSubscription, SubscribeOptions

log = logging.getLogger(__name__)

#: Default bound on each attempt of a call (and on each wait for the next event of a read).
DEFAULT_REQUEST_TIMEOUT_MS = 5_000
#: Bound on each attempt of a membership change: above the server's own bounds (adding waits
#: up to 30 s for the new node to catch up, then two commits; removing the leader hands over).
MEMBERSHIP_REQUEST_TIMEOUT_MS = 60_000

#: What errors and the order check call a DCB query read (it reads by position, as $all).
QUERY_READ_LABEL = "$all"

T = TypeVar("T")


class AsyncClient:
    """A handle on a Cairn cluster for asyncio code. Belongs to the event loop that first uses
    it (its channels are opened there); close it with :meth:`close` or ``async with``.

    ``endpoints`` are node URLs (``http://host:port``, ``https://host:port`` for a cluster with
    TLS); when omitted they are found the way the ``cairn`` command line finds them (see
    :func:`cairn.resolve_endpoints`). ``tls_ca`` is the CA (a PEM file, or its bytes) that
    signed the nodes' certificates, else ``CAIRN_TLS_CA``, else the profile's ``tls_ca``, else
    the system's roots (:func:`cairn.resolve_tls_ca`). Nothing
    connects until the first call. ``request_timeout`` (seconds) bounds each attempt;
    ``max_append_attempts`` bounds the attempts of an append (and of opening a read);
    ``leader_only`` asks followers to name the leader instead of forwarding appends, so every
    later append goes straight there.
    """

    def __init__(
        self,
        endpoints: Optional[Sequence[str]] = None,
        *,
        profile: Optional[Union[str, Path]] = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_MS / 1000,
        max_append_attempts: int = DEFAULT_MAX_APPEND_ATTEMPTS,
        leader_only: bool = True,
        tls_ca: Optional[Union[str, Path, bytes]] = None,
        channel_factory: Optional[ChannelFactory] = None,
        token: Optional[str] = None,
    ) -> None:
        if not request_timeout > 0:
            raise InvalidInput("request_timeout: must be above zero")
        if max_append_attempts < 1:
            raise InvalidInput("max_append_attempts: must be at least 1")
        self._endpoints = Endpoints(
            resolve_endpoints(endpoints, profile),
            channel_factory,
            resolve_tls_ca(tls_ca, endpoints, profile),
            resolve_token(token, endpoints, profile),
        )
        self.request_timeout_s = float(request_timeout)
        self._max_attempts = max_append_attempts
        self._leader_only = leader_only
        self._last_position: Optional[int] = None

    def __repr__(self) -> str:
        leader = self._endpoints.leader
        return (
            f"AsyncClient(endpoints={self.endpoints!r}, leader={leader.url if leader else None!r})"
        )

    @property
    def endpoints(self) -> list[str]:
        """Every node URL the client knows: configured ones first, then learnt leaders."""
        return [node.url for node in self._endpoints.nodes]

    @property
    def last_position(self) -> Optional[int]:
        """The ``$all`` position of this client's latest successful append: pass it as
        ``min_position`` to read your own writes from any node."""
        return self._last_position

    async def close(self) -> None:
        """Closes every channel; calls in flight fail."""
        await self._endpoints.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _timeout(self, timeout: Optional[float]) -> float:
        if timeout is None:
            return self.request_timeout_s
        if not timeout > 0:
            raise InvalidInput("timeout: must be above zero")
        return float(timeout)

    async def append(
        self,
        stream: str,
        events: Union[EventData, Sequence[EventData]],
        *,
        expected: ExpectedRevision = ANY,
        timeout: Optional[float] = None,
    ) -> AppendResult:
        """Appends ``events`` to ``stream`` atomically if ``expected`` holds.

        Retries the very same request (same event ids, so the server recognises a retry and
        answers with the original result) on transport errors, timeouts and "not the leader",
        following the leader a follower names. ``timeout`` (seconds) bounds each attempt.

        Raises :class:`~cairn.WrongExpectedVersion` (never retried), :class:`~cairn.InvalidInput`,
        :class:`~cairn.EventIdReused` / :class:`~cairn.IdempotencyConflict`, or
        :class:`~cairn.Unavailable` with the last cause once the attempts run out.
        """
        request = pb.AppendRequest(
            stream=stream,
            expected=expected_to_proto(expected),
            events=[event.to_proto() for event in event_list(events)],
            leader_only=self._leader_only,
        )
        response = await self._send_append(
            "append", stream, request, lambda stub: stub.Append, timeout
        )
        return self._append_answer(response, stream, expected)

    async def append_multi(
        self,
        streams: Sequence[StreamAppend],
        *,
        dcb_events: Sequence[EventData] = (),
        condition: Optional[AppendCondition] = None,
        timeout: Optional[float] = None,
    ) -> MultiAppendResult:
        """Appends to several streams, and DCB events (``dcb_events``, which name no stream),
        all or nothing: every stream's expected revision and the ``condition`` must hold,
        and the events land contiguously in ``$all`` in the order given (each stream once,
        each with at least one event). Retried as :meth:`append` (same ids, so safely).

        Raises :class:`~cairn.WrongExpectedVersion` naming the first stream whose expectation
        failed, :class:`~cairn.ConditionFailed` with the first matching position after ``after``,
        :class:`~cairn.StreamDeleted` for a tombstoned stream, and :meth:`append`'s others.
        """
        if not all(isinstance(part, StreamAppend) for part in streams):
            raise InvalidInput("streams: give cairn.StreamAppend values")
        if condition is not None and not isinstance(condition, AppendCondition):
            raise InvalidInput("condition: give a cairn.AppendCondition")
        request = pb.MultiAppendRequest(
            streams=[part.to_proto() for part in streams],
            dcb_events=[event.to_proto() for event in event_list(dcb_events)],
            leader_only=self._leader_only,
        )
        if condition is not None:
            request.condition.CopyFrom(condition.to_proto())
        label = streams[0].stream if len(streams) == 1 else ""
        response = await self._send_append(
            "multi-stream append", label, request, lambda stub: stub.AppendMulti, timeout
        )
        result = response.WhichOneof("result")
        if result == "success":
            success = response.success
            self._last_position = max(self._last_position or 0, success.last_position)
            return MultiAppendResult(
                tuple((s.stream, s.last_revision) for s in success.streams),
                success.last_position,
                success.already_written,
            )
        if result == "wrong_expected_version":
            wrong = response.wrong_expected_version
            actual = wrong.actual_revision if wrong.HasField("actual_revision") else None
            asked = next((p.expected for p in streams if p.stream == wrong.stream), ANY)
            raise WrongExpectedVersion(wrong.stream, asked, actual)
        if result == "condition_failed":
            raise ConditionFailed(response.condition_failed.position)
        raise InternalError("multi-stream append: answered without a result")

    async def dcb_append(
        self,
        events: Union[EventData, Sequence[EventData]],
        *,
        condition: Optional[AppendCondition] = None,
        timeout: Optional[float] = None,
    ) -> MultiAppendResult:
        """A DCB append: ``events`` (recorded in no stream of their own, found by their
        types and tags) if ``condition`` holds. See :meth:`append_multi`."""
        return await self.append_multi(
            [], dcb_events=event_list(events), condition=condition, timeout=timeout
        )

    async def get_stream_metadata(
        self,
        stream: str,
        *,
        consistency: ReadConsistency = ReadConsistency.LINEARIZABLE,
        min_position: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> StreamMetadataState:
        """The stream's metadata, its revision, and whether it is deleted or tombstoned
        (linearizable by default: through the leader)."""
        attempt_s = self._timeout(timeout)
        request = pb.GetStreamMetadataRequest(stream=stream, consistency=consistency.to_proto())
        if min_position is not None:
            request.min_position = u64("min_position", min_position)
        linearizable = consistency is ReadConsistency.LINEARIZABLE
        prefer = NodePreference.LEADER if linearizable else NodePreference.ANY
        if linearizable:
            first = self._endpoints.leader_or_first()
        else:
            first = await self._choose(prefer, [])

        async def call(channel: grpc.aio.Channel) -> pb.GetStreamMetadataResponse:
            stub = pb_grpc.StreamsStub(channel)
            return await stub.GetStreamMetadata(request, timeout=attempt_s)

        response, node = await self._with_retries(
            "stream metadata", stream, first, prefer, call, attempt_s
        )
        if linearizable:
            self._endpoints.leader = node
        return StreamMetadataState.from_proto(response)

    async def set_stream_metadata(
        self,
        stream: str,
        metadata: StreamMetadata,
        *,
        expected: ExpectedRevision = ANY,
        timeout: Optional[float] = None,
    ) -> AppendResult:
        """Replaces the stream's metadata if ``expected`` holds for the metadata's revision;
        the result's ``last_revision`` is the metadata's new revision. Retries are safe: the
        change carries an id the client makes once."""
        request = pb.SetStreamMetadataRequest(
            stream=stream,
            expected=expected_to_proto(expected),
            metadata=metadata.to_proto(),
            id=str(uuid7()),
            leader_only=self._leader_only,
        )
        response = await self._send_append(
            "set stream metadata", stream, request, lambda stub: stub.SetStreamMetadata, timeout
        )
        return self._append_answer(response, stream, expected)

    async def delete_stream(
        self, stream: str, *, expected: ExpectedRevision = ANY, timeout: Optional[float] = None
    ) -> AppendResult:
        """Soft-deletes the stream if ``expected`` holds for its last revision: it reads as
        not found; appending with ``NO_STREAM`` or ``ANY`` recreates it, revisions continuing
        after the old ones. A stream with no events is :class:`~cairn.StreamNotFound`."""
        return await self._delete(stream, expected, False, timeout)

    async def tombstone_stream(
        self, stream: str, *, expected: ExpectedRevision = ANY, timeout: Optional[float] = None
    ) -> AppendResult:
        """Tombstones the stream if ``expected`` holds: it can never be written again;
        reads, appends and subscriptions raise :class:`~cairn.StreamDeleted`."""
        return await self._delete(stream, expected, True, timeout)

    async def _delete(
        self, stream: str, expected: ExpectedRevision, tombstone: bool, timeout: Optional[float]
    ) -> AppendResult:
        request = pb.DeleteStreamRequest(
            stream=stream,
            expected=expected_to_proto(expected),
            tombstone=tombstone,
            id=str(uuid7()),
            leader_only=self._leader_only,
        )
        what = "tombstone" if tombstone else "delete"
        response = await self._send_append(
            what, stream, request, lambda stub: stub.DeleteStream, timeout
        )
        return self._append_answer(response, stream, expected)

    async def _send_append(
        self,
        what: str,
        stream: str,
        request: Any,
        method: Callable[[Any], Any],
        timeout: Optional[float],
    ) -> Any:
        """Every write goes here: bounded in size, sent to the known leader, retried as the
        very same request (same ids, so the server recognises a retry) wherever failures
        point. The leader is learnt from whoever answers a leader-only request."""
        size = request.ByteSize()
        if size > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"events: the {what} is {size} bytes, at most {MAX_MESSAGE_BYTES}")
        attempt_s = self._timeout(timeout)

        async def call(channel: grpc.aio.Channel) -> Any:
            # The deadline lets the server give up too, instead of working for a caller who left.
            return await method(pb_grpc.StreamsStub(channel))(request, timeout=attempt_s)

        response, node = await self._with_retries(
            what, stream, self._endpoints.leader_or_first(), NodePreference.LEADER,
            call, attempt_s,
        )
        if self._leader_only:
            self._endpoints.leader = node  # only the leader answers a leader-only write
        return response

    def _append_answer(
        self, response: pb.AppendResponse, stream: str, expected: ExpectedRevision
    ) -> AppendResult:
        """An :class:`AppendResult`, or the wrong expected version as an exception."""
        result = response.WhichOneof("result")
        if result == "success":
            success = response.success
            self._last_position = max(self._last_position or 0, success.last_position)
            return AppendResult(
                success.last_revision, success.last_position, success.already_written
            )
        if result == "wrong_expected_version":
            wrong = response.wrong_expected_version
            actual = wrong.actual_revision if wrong.HasField("actual_revision") else None
            raise WrongExpectedVersion(stream, expected, actual)
        raise InternalError(f"write to {stream!r}: answered without a result")

    async def read_stream(
        self,
        stream: str,
        *,
        start: Optional[ReadFrom] = None,
        direction: Direction = Direction.FORWARDS,
        count: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        prefer: NodePreference = NodePreference.ANY,
        timeout: Optional[float] = None,
    ) -> AsyncReadStream:
        """Reads one stream: ``async for event in await client.read_stream(...)``.

        ``start`` is a revision (included), ``From.START`` or ``From.END``; by default the
        first event forwards, the last backwards. ``count`` bounds the events returned.
        ``LINEARIZABLE`` reads through the leader; a ``LOCAL`` read with ``min_position``
        waits until the node has applied it (read-your-writes on any node). Opening is
        retried; a stream with no events is :class:`~cairn.StreamNotFound`.
        """
        return await self._read(
            stream, start, direction, count, consistency, min_position, prefer, timeout
        )

    async def read_all(
        self,
        *,
        start: Optional[ReadFrom] = None,
        direction: Direction = Direction.FORWARDS,
        count: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        prefer: NodePreference = NodePreference.ANY,
        timeout: Optional[float] = None,
    ) -> AsyncReadStream:
        """Reads the global log, ``$all``, in commit order; ``start`` is a position. Otherwise
        like :meth:`read_stream`."""
        return await self._read(
            ALL_STREAM, start, direction, count, consistency, min_position, prefer, timeout
        )

    async def read_index(
        self,
        index: str,
        *,
        start: Optional[ReadFrom] = None,
        direction: Direction = Direction.FORWARDS,
        count: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        prefer: NodePreference = NodePreference.ANY,
        timeout: Optional[float] = None,
    ) -> AsyncReadStream:
        """Reads an index (``cairn.category_index("order")`` = ``$ce-order``,
        ``event_type_index``, ``tag_index``): its events in ``$all`` order, each with its own
        stream, revision and position; ``start`` is a position. Otherwise like
        :meth:`read_stream`. (:meth:`read_stream` with the index's name does the same.)"""
        if not by_position(index) or index == ALL_STREAM:
            raise InvalidInput(f"index {index!r}: an index name starts with $ce-, $et- or $tag-")
        return await self._read(
            index, start, direction, count, consistency, min_position, prefer, timeout
        )

    async def read_query(
        self,
        query: Query,
        *,
        start: Optional[ReadFrom] = None,
        direction: Direction = Direction.FORWARDS,
        count: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        prefer: NodePreference = NodePreference.ANY,
        timeout: Optional[float] = None,
    ) -> AsyncReadStream:
        """Reads the events matching a DCB ``query`` in ``$all`` order; ``start`` is a
        position. The last position read is the ``after`` of the decision's
        :class:`~cairn.AppendCondition`. Otherwise like :meth:`read_all`."""
        if not isinstance(query, Query):
            raise InvalidInput("query: give a cairn.Query")
        return await self._read(
            QUERY_READ_LABEL, start, direction, count, consistency, min_position, prefer,
            timeout, query,
        )

    async def _read(
        self,
        stream: str,
        start: Optional[ReadFrom],
        direction: Direction,
        count: Optional[int],
        consistency: ReadConsistency,
        min_position: Optional[int],
        prefer: NodePreference,
        timeout: Optional[float],
        query: Optional[Query] = None,
    ) -> AsyncReadStream:
        """Opens a read (of a stream, ``$all``, an index, or with ``query`` a DCB query),
        retrying until the first answer (an event, the end, or a final error); after that
        nothing is retried, since the caller may already hold events."""
        attempt_s = self._timeout(timeout)
        if start is None:
            start = From.START if direction is Direction.FORWARDS else From.END
        request: Any
        if query is None:
            request = pb.ReadRequest(
                stream=stream, direction=direction.to_proto(), consistency=consistency.to_proto()
            )
        else:
            request = pb.QueryReadRequest(
                query=query.to_proto(),
                direction=direction.to_proto(),
                consistency=consistency.to_proto(),
            )
        if start is From.END:
            request.from_end = True
        elif start is not From.START:
            setattr(request, "from", u64("start", start))  # `from` is a Python keyword
        if count is not None:
            if u64("count", count) == 0:
                raise InvalidInput("count: must be at least 1 (None reads everything)")
            request.count = count
        if min_position is not None:
            request.min_position = u64("min_position", min_position)
        linearizable = consistency is ReadConsistency.LINEARIZABLE
        if linearizable:
            # Starts at the known leader without asking first: a follower's answer names it.
            first_node, prefer = self._endpoints.leader_or_first(), NodePreference.LEADER
        else:
            first_node = await self._choose(prefer, [])

        async def call(channel: grpc.aio.Channel) -> tuple[Any, Any]:
            stub = pb_grpc.StreamsStub(channel)
            read = stub.Read(request) if query is None else stub.ReadQuery(request)
            try:
                return read, await read.read()
            except BaseException:
                read.cancel()
                raise

        (read, first), node = await self._with_retries(
            "read", stream, first_node, prefer, call, attempt_s
        )
        if linearizable:
            self._endpoints.leader = node
        first = None if first is grpc.aio.EOF else first
        return AsyncReadStream(read, first, stream, direction, attempt_s)

    async def subscribe(
        self,
        stream: str,
        *,
        start: ReadFrom = From.START,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        resubscribe: bool = True,
        prefer: NodePreference = NodePreference.ANY,
    ) -> AsyncSubscription:
        """Follows one stream: its events from ``start`` (a revision, ``From.START`` or
        ``From.END``), then :class:`~cairn.CaughtUp`, then new events as they are written. A
        stream with no events yet is not an error; the subscription waits.

        Returns once a node has confirmed (opening is retried), so final errors such as a bad
        stream name are raised here. If its node is lost, the subscription resubscribes on
        another from where delivery stopped (no gap, no duplicate), unless ``resubscribe`` is
        false; after :data:`~cairn.MAX_RESUBSCRIBE_ATTEMPTS` consecutive failed attempts it
        raises :class:`~cairn.Unavailable`.
        """
        options = SubscribeOptions(
            start=_start("start", start),
            consistency=consistency,
            min_position=None if min_position is None else u64("min_position", min_position),
            resubscribe=resubscribe,
            prefer=prefer,
        )
        return await self._subscribe(stream, options)

    async def subscribe_all(
        self,
        *,
        start: ReadFrom = From.START,
        filter: Optional[SubscriptionFilter] = None,
        checkpoint_interval: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        resubscribe: bool = True,
        prefer: NodePreference = NodePreference.ANY,
    ) -> AsyncSubscription:
        """Follows ``$all`` (``start`` is a position), optionally filtered on the server; a
        filtered subscription also yields :class:`~cairn.Checkpoint` every
        ``checkpoint_interval`` scanned events. Otherwise like :meth:`subscribe`."""
        options = SubscribeOptions(
            start=_start("start", start),
            filter=filter,
            checkpoint_interval=(
                None if checkpoint_interval is None
                else u64("checkpoint_interval", checkpoint_interval)
            ),
            consistency=consistency,
            min_position=None if min_position is None else u64("min_position", min_position),
            resubscribe=resubscribe,
            prefer=prefer,
        )
        return await self._subscribe(ALL_STREAM, options)

    async def _subscribe(self, stream: str, options: SubscribeOptions) -> AsyncSubscription:
        subscription = AsyncSubscription(self, stream, options)
        await subscription.open()
        return subscription

    async def create_group(
        self, group: str, settings: GroupSettings, *, timeout: Optional[float] = None
    ) -> None:
        """Creates a consumer group (at the leader, through Raft). :class:`~cairn.GroupExists`
        if it exists; bad settings are :class:`~cairn.InvalidInput` naming the setting;
        :class:`~cairn.GroupFull` at the cluster's most groups. Safe to retry (the request
        carries an id the client makes once)."""
        request = pb.CreateGroupRequest(
            group=group, settings=settings.to_proto(), id=str(uuid7())
        )
        await self._group_call("create group", group, "CreateGroup", request, timeout)

    async def update_group(
        self, group: str, update: GroupUpdate, *, timeout: Optional[float] = None
    ) -> None:
        """Changes the settings ``update`` gives; the leader's running dispatcher takes them
        at once and its consumers stay connected. Nothing named, a bad value, or a strategy
        other than the group's is :class:`~cairn.InvalidInput` (nothing changed)."""
        request = pb.UpdateGroupRequest(group=group, settings=update.to_proto(), id=str(uuid7()))
        await self._group_call("update group", group, "UpdateGroup", request, timeout)

    async def delete_group(self, group: str, *, timeout: Optional[float] = None) -> None:
        """Deletes a group; its consumers end with :class:`~cairn.GroupNotFound`."""
        request = pb.DeleteGroupRequest(group=group, id=str(uuid7()))
        await self._group_call("delete group", group, "DeleteGroup", request, timeout)

    async def replay_parked(self, group: str, *, timeout: Optional[float] = None) -> None:
        """Delivers every event parked so far (in ``$parked-<group>``) once more."""
        request = pb.ReplayParkedRequest(group=group, id=str(uuid7()))
        await self._group_call("replay parked", group, "ReplayParked", request, timeout)

    async def list_groups(self, *, timeout: Optional[float] = None) -> list[GroupInfo]:
        """Every group with its settings and figures."""
        response = await self._group_call(
            "list groups", "", "ListGroups", pb.ListGroupsRequest(), timeout
        )
        return [GroupInfo.from_proto(info) for info in response.groups]

    async def group_info(self, group: str, *, timeout: Optional[float] = None) -> GroupInfo:
        """One group's settings, checkpoint, lag, in flight, parked and consumers."""
        request = pb.GroupInfoRequest(group=group)
        response = await self._group_call("group info", group, "GroupInfo", request, timeout)
        return GroupInfo.from_proto(response)

    async def consume(self, group: str) -> AsyncConsumer:
        """Joins ``group`` as a consumer, at the leader. :class:`~cairn.GroupNotFound` if
        there is no such group, :class:`~cairn.GroupFull` at its max consumers."""
        consumer = AsyncConsumer(self, group)
        await consumer.open()
        return consumer

    async def _group_call(
        self, what: str, group: str, method: str, request: Any, timeout: Optional[float]
    ) -> Any:
        """A leader-only group call with the append's retry rules; final answers in the
        group's terms (:func:`cairn.groups.group_error`)."""
        attempt_s = self._timeout(timeout)

        async def call(channel: grpc.aio.Channel) -> Any:
            return await getattr(pb_grpc.GroupsStub(channel), method)(request, timeout=attempt_s)

        try:
            response, node = await self._with_retries(
                what, group, self._endpoints.leader_or_first(), NodePreference.LEADER,
                call, attempt_s,
            )
        except CairnError as err:
            raise group_error(err, group) from None
        self._endpoints.leader = node
        return response

    async def status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """The cluster as the first node that answers sees it (endpoints in order, no pauses).
        Also teaches the client the leader."""
        attempt_s = self._timeout(timeout)
        nodes = list(self._endpoints.nodes)
        retries = Retries(len(nodes))
        for node in nodes:
            stub = pb_grpc.ClusterStub(self._endpoints.channel(node))
            try:
                response = await asyncio.wait_for(
                    stub.Status(pb.StatusRequest(), timeout=attempt_s), attempt_s
                )
            except grpc.RpcError as err:
                failure = classify(err, "")
                if isinstance(failure, CairnError):
                    raise failure from None
                retries.noted(node, failure.cause)
                continue
            except asyncio.TimeoutError:
                retries.noted(node, f"no answer within {attempt_s * 1000:.0f} ms")
                continue
            if response.leader_endpoint:
                self._endpoints.follow_hint(response.leader_endpoint)
            return ClusterStatus.from_proto(response)
        raise Unavailable(f"status: no endpoint answered; last: {retries.last_cause}")

    async def add_node(self, node_id: int, address: str) -> Membership:
        """Adds node ``node_id``, reachable by the members at ``address`` (``HOST:PORT``, as in
        ``--peers``): it joins as a learner, catches up, then becomes a voter. The node must
        be running. Bad input is :class:`~cairn.InvalidInput` (nothing changed); a node that
        does not answer is :class:`~cairn.Unavailable`, not retried."""
        request = pb.AddNodeRequest(id=u64("node_id", node_id), address=address.strip())
        return await self._change_membership(
            "add-node", request, lambda stub: stub.AddNode
        )

    async def remove_node(self, node_id: int, *, force: bool = False) -> Membership:
        """Removes node ``node_id`` (a leader hands leadership over first). Refuses an id that
        is not a member, the last voter, or leaving fewer than three voters unless ``force``
        (:class:`~cairn.InvalidInput`, nothing changed)."""
        request = pb.RemoveNodeRequest(id=u64("node_id", node_id), force=force)
        return await self._change_membership(
            "remove-node", request, lambda stub: stub.RemoveNode
        )

    async def _change_membership(
        self, what: str, request: Any, method: Callable[[Any], Any]
    ) -> Membership:
        """A membership change at the leader with the append's retry rules. Once an attempt
        may have acted (anything but a clean "not the leader"), later attempts are marked as
        retries, so the server accepts finding the change made. ABORTED is final."""
        attempt_s = MEMBERSHIP_REQUEST_TIMEOUT_MS / 1000
        may_have_acted = False

        async def call(channel: grpc.aio.Channel) -> pb.MembershipResponse:
            nonlocal may_have_acted
            request.retry = may_have_acted
            may_have_acted = True
            try:
                return await method(pb_grpc.ClusterStub(channel))(request, timeout=attempt_s)
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.ABORTED:
                    raise Unavailable(err.details() or "") from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    may_have_acted = request.retry  # not the leader: this attempt did nothing
                raise

        response, node = await self._with_retries(
            what, "", self._endpoints.leader_or_first(), NodePreference.LEADER, call, attempt_s
        )
        self._endpoints.leader = node
        return Membership.from_proto(response)

    async def _choose(self, preference: NodePreference, avoid: Sequence[Node]) -> Node:
        """Where a call with ``preference`` goes. LEADER and FOLLOWER need the leader: if none
        is known, a status call learns it (when no node answers, any node will do)."""
        if preference is not NodePreference.ANY and self._endpoints.leader is None:
            try:
                await self.status()
            except CairnError as err:
                log.debug("no leader known (%s); any node will do", err)
        return self._endpoints.pick(preference, avoid)

    async def _with_retries(
        self,
        what: str,
        stream: str,
        start: Node,
        preference: NodePreference,
        call: Callable[[grpc.aio.Channel], Awaitable[T]],
        attempt_s: float,
    ) -> tuple[T, Node]:
        """Runs ``call`` against ``start``, then wherever failures point (the policy's rules:
        leader hints, pauses, avoided nodes), each attempt bounded by ``attempt_s``, at most
        ``max_append_attempts`` times. Returns the value and the node that gave it."""
        retries = Retries(self._max_attempts)
        node = start
        while True:
            try:
                value = await asyncio.wait_for(call(self._endpoints.channel(node)), attempt_s)
                return value, node
            except grpc.RpcError as err:
                failure = classify(err, stream)
                if isinstance(failure, CairnError):
                    raise failure from None
                cause, leader = failure.cause, failure.leader
            except asyncio.TimeoutError:
                cause, leader = f"no answer within {attempt_s * 1000:.0f} ms", None
            retries.failed(self._endpoints, node, cause, leader)
            following = retries.take_hinted() or self._endpoints.pick(preference, retries.tried)
            log.debug("%s %s: retrying at %s after %s", what, stream, following.url, cause)
            if retries.exhausted():
                of = f" of {stream!r}" if stream else ""
                raise retries.give_up(f"{what}{of}")
            await retries.pause()
            node = following


def _start(field: str, value: Any) -> ReadFrom:
    return value if isinstance(value, From) else u64(field, value)
