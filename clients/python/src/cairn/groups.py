"""Consumer groups: their definitions and figures, and one consumer's connection (the Rust
client's client/src/client/groups.rs). Every group call goes to the leader, which serves
groups; a follower's answer names it and the call follows. A consumer whose connection
breaks, or whose leader changes, connects again by itself: events it had not acknowledged
are delivered again (to it or another consumer), so handling must be idempotent (at least
once).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Sequence, Union

import grpc
import grpc.aio

from cairn.errors import (
    CairnError,
    GroupExists,
    GroupFull,
    GroupNotFound,
    IdempotencyConflict,
    InternalError,
    InvalidInput,
    ResourceExhausted,
    Retry,
    StreamNotFound,
    classify,
)
from cairn.events import RecordedEvent, u64
from cairn.options import From, NodePreference, SubscriptionFilter
from cairn.policy import Retries
from cairn.proto import pb, pb_grpc

if TYPE_CHECKING:
    from cairn.aio import AsyncClient

log = logging.getLogger(__name__)

#: Connection attempts of a consumer (its first, or after its connection broke) before
#: :meth:`AsyncConsumer.next` gives up with :class:`~cairn.Unavailable`.
CONSUMER_RECONNECT_ATTEMPTS = 40
#: How long :meth:`AsyncConsumer.close` waits for the server to take the last acks and end
#: the call.
CONSUMER_CLOSE_TIMEOUT_S = 2.0


class GroupStrategy(enum.Enum):
    """How a group hands out its events."""

    #: Any consumer gets any event.
    ROUND_ROBIN = "round-robin"
    #: Never two events of one stream in flight at once; each stream's events in order.
    ORDERED = "ordered"

    def to_proto(self) -> int:
        if self is GroupStrategy.ORDERED:
            return pb.GROUP_STRATEGY_ORDERED
        return pb.GROUP_STRATEGY_ROUND_ROBIN


class NackAction(enum.Enum):
    """What to do with an event a consumer could not handle."""

    #: Deliver it again (past the group's max retries it is parked).
    RETRY = "retry"
    #: Record it in the group's parked stream (``$parked-<group>``) now.
    PARK = "park"
    #: Count it as done.
    SKIP = "skip"

    def to_proto(self) -> int:
        return {
            NackAction.RETRY: pb.NACK_ACTION_RETRY,
            NackAction.PARK: pb.NACK_ACTION_PARK,
            NackAction.SKIP: pb.NACK_ACTION_SKIP,
        }[self]


@dataclass(frozen=True)
class GroupSettings:
    """A new group's settings; ``None`` leaves a setting to the server's default (30,000 ms,
    10 retries, 10 in flight, 16 consumers, 1,000 ms). The server judges the bounds and
    answers :class:`~cairn.InvalidInput` naming the setting."""

    #: A stream, ``"$all"``, or an index (``"$ce-…"``, ``"$et-…"``, ``"$tag-…"``).
    source: str
    #: ``From.START``, ``From.END`` (events written after the group), or a revision (a
    #: stream) / position (``$all``, an index).
    start: Union[From, int] = From.START
    strategy: GroupStrategy = GroupStrategy.ROUND_ROBIN
    message_timeout_ms: Optional[int] = None
    max_retries: Optional[int] = None
    max_in_flight: Optional[int] = None
    max_consumers: Optional[int] = None
    checkpoint_interval_ms: Optional[int] = None
    #: ``"$all"`` only: the events the group delivers, as a filtered ``$all`` subscription
    #: would; ``$`` streams only if ``stream_prefix`` starts with ``$``. Fixed at create.
    filter: Optional[SubscriptionFilter] = None

    def to_proto(self) -> pb.GroupSettings:
        settings = pb.GroupSettings(source=self.source, strategy=self.strategy.to_proto())
        if self.start is From.END:
            settings.from_end = True
        elif isinstance(self.start, int):
            setattr(settings, "from", u64("start", self.start))
        elif self.start is not From.START:
            raise InvalidInput(f"start: {self.start!r} is not From.START, From.END or a number")
        _optional_settings(settings, self)
        if self.filter is not None:
            settings.filter.CopyFrom(self.filter.to_proto())
        return settings


@dataclass(frozen=True)
class GroupUpdate:
    """The settings :meth:`~cairn.aio.AsyncClient.update_group` changes (``None``: as it
    is). The leader's running dispatcher takes them at once; its consumers stay connected.
    The strategy cannot change: one given that is not the group's own is refused
    (:class:`~cairn.InvalidInput`), as is an update that names nothing."""

    message_timeout_ms: Optional[int] = None
    max_retries: Optional[int] = None
    max_in_flight: Optional[int] = None
    max_consumers: Optional[int] = None
    checkpoint_interval_ms: Optional[int] = None
    strategy: Optional[GroupStrategy] = None

    def to_proto(self) -> pb.GroupSettings:
        settings = pb.GroupSettings()
        if self.strategy is not None:
            settings.strategy = self.strategy.to_proto()
        _optional_settings(settings, self)
        return settings


_OPTIONAL_SETTINGS = (
    "message_timeout_ms",
    "max_retries",
    "max_in_flight",
    "max_consumers",
    "checkpoint_interval_ms",
)


def _optional_settings(settings: pb.GroupSettings, source: Any) -> None:
    for name in _OPTIONAL_SETTINGS:
        value = getattr(source, name)
        if value is not None:
            setattr(settings, name, u64(name, value))


@dataclass(frozen=True)
class GroupConsumer:
    """A consumer connected to a group's leader."""

    id: int
    peer: str
    in_flight: int
    acked: int


@dataclass(frozen=True)
class GroupInfo:
    """A group's settings and figures, as the leader sees them."""

    group: str
    source: str
    strategy: GroupStrategy
    filter: Optional[SubscriptionFilter]
    message_timeout_ms: int
    max_retries: int
    max_in_flight: int
    max_consumers: int
    checkpoint_interval_ms: int
    #: Every key of the source below this is done (acknowledged, parked or skipped).
    checkpoint: int
    #: Source events after the checkpoint not yet done (on ``$all`` and indexes: positions).
    lag: int
    in_flight: int
    #: Events in the parked stream (``$parked-<group>``), and how many wait for a replay.
    parked: int
    replay_pending: int
    redeliveries: int
    #: Whether the leader's dispatcher runs (it starts with the first consumer).
    active: bool
    consumers: tuple[GroupConsumer, ...] = field(default_factory=tuple)

    @staticmethod
    def from_proto(info: pb.GroupInfoResponse) -> GroupInfo:
        s = info.settings
        ordered = s.HasField("strategy") and s.strategy == pb.GROUP_STRATEGY_ORDERED
        filter_ = None
        if s.HasField("filter"):
            f = s.filter
            filter_ = SubscriptionFilter(
                f.stream_prefix or None, f.event_type_prefix or None, f.event_type_regex or None
            )
        return GroupInfo(
            group=info.group,
            source=s.source,
            strategy=GroupStrategy.ORDERED if ordered else GroupStrategy.ROUND_ROBIN,
            filter=filter_,
            message_timeout_ms=s.message_timeout_ms,
            max_retries=s.max_retries,
            max_in_flight=s.max_in_flight,
            max_consumers=s.max_consumers,
            checkpoint_interval_ms=s.checkpoint_interval_ms,
            checkpoint=info.checkpoint,
            lag=info.lag,
            in_flight=info.in_flight,
            parked=info.parked,
            replay_pending=info.replay_pending,
            redeliveries=info.redeliveries,
            active=info.active,
            consumers=tuple(
                GroupConsumer(c.id, c.peer, c.in_flight, c.acked) for c in info.consumers
            ),
        )


@dataclass(frozen=True)
class GroupEvent:
    """An event delivered to a consumer."""

    event: RecordedEvent
    #: Deliveries before this one (0: the first).
    retry_count: int


@dataclass(frozen=True)
class AckRejected:
    """An ack or nack of an event not in flight to this consumer (unknown, already
    acknowledged, or timed out); nothing changed."""

    id: str
    reason: str


ConsumerMessage = Union[GroupEvent, AckRejected]


def group_error(err: CairnError, group: str) -> CairnError:
    """A final answer to a group call, in the group's terms."""
    if isinstance(err, StreamNotFound):
        return GroupNotFound(group)
    if isinstance(err, IdempotencyConflict):
        return GroupExists(group)
    if isinstance(err, ResourceExhausted):
        return GroupFull(str(err))
    return err


class AsyncConsumer(AsyncIterator[ConsumerMessage]):
    """One consumer of a group: ``async for`` yields :class:`GroupEvent` and
    :class:`AckRejected`; :meth:`ack` (or :meth:`nack`) each event once handled. At most the
    group's max in flight events are unacknowledged at once. Close it (or use ``async
    with``) when done: events it has not acknowledged go to other consumers."""

    def __init__(self, client: AsyncClient, group: str) -> None:
        self._client = client
        self.group = group
        self._call: Optional[grpc.aio.StreamStreamCall] = None
        self.consumer_id: Optional[int] = None
        self.max_in_flight: Optional[int] = None
        self._closed = False

    async def open(self) -> None:
        """Connects at the leader, following hints, until the server says ``started``."""
        retries = Retries(CONSUMER_RECONNECT_ATTEMPTS)
        node = self._client._endpoints.leader_or_first()
        while True:
            failure = await self._attempt(node)
            if failure is None:
                self._client._endpoints.leader = node
                return
            if isinstance(failure, CairnError):
                raise group_error(failure, self.group)
            retries.failed(self._client._endpoints, node, failure.cause, failure.leader)
            if retries.exhausted():
                raise retries.give_up(f"consume {self.group!r}")
            await retries.pause()
            node = retries.take_hinted() or await self._client._choose(
                NodePreference.LEADER, retries.tried
            )

    async def _attempt(self, node: Any) -> Optional[Union[Retry, CairnError]]:
        timeout_s = self._client.request_timeout_s
        stub = pb_grpc.GroupsStub(self._client._endpoints.channel(node))
        call = stub.Consume()
        try:
            await call.write(pb.ConsumeRequest(start=pb.ConsumeStart(group=self.group)))
            first = await asyncio.wait_for(call.read(), timeout_s)
        except asyncio.TimeoutError:
            call.cancel()
            return Retry(f"no answer within {timeout_s * 1000:.0f} ms")
        except grpc.RpcError as err:
            call.cancel()
            return classify(err, self.group)
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:
            return Retry("the server ended the call before `started`")
        if first.WhichOneof("message") != "started":
            call.cancel()
            return InternalError("consume: the server's first message was not `started`")
        self._call = call
        self.consumer_id = first.started.consumer_id
        self.max_in_flight = first.started.max_in_flight
        return None

    def __aiter__(self) -> AsyncConsumer:
        return self

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __anext__(self) -> ConsumerMessage:
        """The next delivery or rejection. A broken connection (a node gone, a leader
        change) is opened again at the leader; the group deleted is
        :class:`~cairn.GroupNotFound`."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._call is None:
                await self.open()
            call = self._call
            assert call is not None
            try:
                response = await call.read()
            except grpc.RpcError as err:
                self._drop()
                failure = classify(err, self.group)
                if isinstance(failure, CairnError):
                    raise group_error(failure, self.group) from None
                log.debug("consumer of %r: reconnecting after %s", self.group, failure.cause)
                continue
            if response is grpc.aio.EOF:
                self._drop()
                continue
            kind = response.WhichOneof("message")
            if kind == "event":
                return GroupEvent(
                    RecordedEvent.from_proto(response.event.event), response.event.retry_count
                )
            if kind == "rejected":
                return AckRejected(response.rejected.id, response.rejected.reason)

    async def ack(self, ids: Sequence[Any]) -> None:
        """Acknowledges events (their ids) handled by this consumer. Sent on the current
        connection; if it broke, the events will be delivered again."""
        await self._send(pb.ConsumeRequest(ack=pb.Acks(ids=[str(i) for i in ids])))

    async def nack(self, ids: Sequence[Any], action: NackAction, reason: str = "") -> None:
        """Gives events back: to retry, to park, or to skip."""
        nacks = pb.Nacks(ids=[str(i) for i in ids], action=action.to_proto(), reason=reason)
        await self._send(pb.ConsumeRequest(nack=nacks))

    async def _send(self, request: pb.ConsumeRequest) -> None:
        if self._call is None:
            return  # broken: what was in flight is delivered again
        try:
            await self._call.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError) as err:
            log.debug("consumer of %r: ack not sent (%s)", self.group, err)
            self._drop()

    def _drop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def close(self) -> None:
        """Ends the call (after the acks already written); unacknowledged events go back."""
        self._closed = True
        call = self._call
        if call is not None:
            try:
                await asyncio.wait_for(_drain(call), CONSUMER_CLOSE_TIMEOUT_S)
            except (grpc.RpcError, asyncio.TimeoutError, asyncio.InvalidStateError):
                pass
        self._drop()


async def _drain(call: grpc.aio.StreamStreamCall) -> None:
    """Half-closes the call and reads until the server ends it: it has then taken every
    ack written before."""
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass

