"""Catch-up subscriptions kept going across server streams and nodes, with the no-gap,
no-duplicate guarantee checked on this side too (the Rust client's client/src/subscribe.rs).

A subscription yields :class:`~cairn.RecordedEvent`, :class:`CaughtUp`, :class:`FellBehind`
and :class:`Checkpoint`. It remembers where delivery stands (the resume point); when its
server stream fails or ends, it opens a new one from there, on another node when there is
one, so the consumer sees every event once and in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Optional, Union

import grpc
import grpc.aio

from cairn.endpoints import Node
from cairn.errors import CairnError, InternalError, Retry, Unavailable, classify
from cairn.events import ALL_STREAM, RecordedEvent, by_position
from cairn.options import From, NodePreference, ReadConsistency, ReadFrom, SubscriptionFilter
from cairn.policy import MAX_RESUBSCRIBE_ATTEMPTS, Retries
from cairn.proto import pb, pb_grpc

if TYPE_CHECKING:
    from cairn.aio import AsyncClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaughtUp:
    """History is delivered; live events follow. ``next`` is the next revision (stream) or
    position (``$all``). Comes again after every resubscription and every :class:`FellBehind`."""

    next: int


@dataclass(frozen=True)
class FellBehind:
    """Live delivery could not keep up; history is read again from ``next`` until
    :class:`CaughtUp`."""

    next: int


@dataclass(frozen=True)
class Checkpoint:
    """Filtered ``$all``: every event below ``next_position`` has been scanned. Store it to
    resume from there rather than from the last matching event."""

    next_position: int


SubscriptionMessage = Union[RecordedEvent, CaughtUp, FellBehind, Checkpoint]


@dataclass(frozen=True)
class SubscribeOptions:
    """How a subscription starts and survives failures (see ``AsyncClient.subscribe``)."""

    start: ReadFrom = From.START
    filter: Optional[SubscriptionFilter] = None
    checkpoint_interval: Optional[int] = None
    consistency: ReadConsistency = ReadConsistency.LOCAL
    min_position: Optional[int] = None
    resubscribe: bool = True
    prefer: NodePreference = NodePreference.ANY


class _Resume:
    """Where delivery stands: what a new server stream must start from."""

    def __init__(self, stream: str, options: SubscribeOptions) -> None:
        #: The next revision (stream) or position (``$all``) owed to the consumer; ``None``
        #: while a subscription from the end has not learnt where the end is.
        self.next: Optional[int]
        if options.start is From.START:
            self.next = 0
        elif options.start is From.END:
            self.next = None
        else:
            self.next = int(options.start)
        #: The highest ``$all`` position a serving node is known to have applied: a new node
        #: must have applied it too (``min_position``), so time never goes back.
        self.applied: Optional[int] = None
        #: Every revision or position is delivered, so one beyond ``next`` is a gap; a
        #: filtered ``$all`` and an index skip positions on purpose.
        self.dense = not by_position(stream) or (stream == ALL_STREAM and options.filter is None)

    def request(self, stream: str, options: SubscribeOptions) -> pb.SubscribeRequest:
        request = pb.SubscribeRequest(
            stream=stream,
            checkpoint_interval=options.checkpoint_interval or 0,
            consistency=options.consistency.to_proto(),
        )
        if self.next is None:
            request.from_end = True
        else:
            setattr(request, "from", self.next)  # `from` is a Python keyword
        if options.filter is not None:
            request.filter.CopyFrom(options.filter.to_proto())
        floors = [p for p in (options.min_position, self.applied) if p is not None]
        if floors:
            request.min_position = max(floors)
        return request

    def saw_applied(self, position: int) -> None:
        self.applied = position if self.applied is None else max(self.applied, position)


class _Gap(Exception):
    """The server stream broke the contract in a way another stream can repair."""


class AsyncSubscription(AsyncIterator[SubscriptionMessage]):
    """A running subscription. Iterate it with ``async for``; after an error it ends.
    Holds at most one server message (a batch) beyond grpc's flow-control window, so a slow
    consumer slows the server stream (which may then send :class:`FellBehind`)."""

    def __init__(self, client: AsyncClient, stream: str, options: SubscribeOptions) -> None:
        self._client = client
        self.stream = stream
        self._options = options
        self._resume = _Resume(stream, options)
        self._call: Optional[grpc.aio.UnaryStreamCall] = None
        #: Events of a batch message not yet judged (at most one batch).
        self._unbatched: collections.deque[pb.RecordedEvent] = collections.deque()
        self._node: Optional[Node] = None
        self._retries = Retries(MAX_RESUBSCRIBE_ATTEMPTS)
        #: The current server stream delivered a message after its confirmation.
        self._delivered = False
        self._served_by: Optional[int] = None
        self._done = False

    @property
    def served_by(self) -> Optional[int]:
        """The id of the node that confirmed the current (or last) server stream."""
        return self._served_by

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Ends the subscription; iteration stops."""
        self._done = True
        self._drop_stream()

    def _preference(self) -> NodePreference:
        if self._options.consistency is ReadConsistency.LINEARIZABLE:
            return NodePreference.LEADER
        return self._options.prefer

    async def open(self) -> None:
        """Opens a server stream from the resume point, trying nodes until one confirms."""
        first = self._node is None
        while True:
            if self._retries.exhausted():
                raise self._retries.give_up(f"subscription to {self.stream!r}")
            if not first:
                await self._retries.pause()
            first = False
            node = self._retries.take_hinted() or await self._client._choose(
                self._preference(), self._retries.tried
            )
            self._node = node
            request = self._resume.request(self.stream, self._options)
            log.debug("subscribing to %r at %s", self.stream, node.url)
            failure = await self._attempt(node, request)
            if failure is None:
                return
            if isinstance(failure, CairnError):
                raise failure
            self._failed(node, failure.cause, failure.leader)

    async def _attempt(self, node: Node, request: pb.SubscribeRequest) -> Optional[Union[Retry, CairnError]]:
        """One call, bounded by the request timeout up to and including the confirmation.
        ``None`` when it is open. No deadline goes on the call: it would end it."""
        timeout_s = self._client.request_timeout_s
        stub = pb_grpc.StreamsStub(self._client._endpoints.channel(node))
        call = stub.Subscribe(request)
        try:
            first = await asyncio.wait_for(call.read(), timeout_s)
        except asyncio.TimeoutError:
            call.cancel()
            return Retry(f"no confirmation within {timeout_s * 1000:.0f} ms")
        except grpc.RpcError as err:
            call.cancel()
            return classify(err, self.stream)
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:
            return Retry("the server ended the subscription before confirming it")
        if first.WhichOneof("message") != "confirmation":
            call.cancel()
            return InternalError(
                f"subscription to {self.stream!r}: {node.url} sent "
                f"{first.WhichOneof('message')} before a confirmation"
            )
        self._served_by = first.confirmation.node_id
        if self._options.consistency is ReadConsistency.LINEARIZABLE:
            # Only the leader serves a linearizable subscription.
            self._client._endpoints.leader = node
        self._call = call
        self._unbatched.clear()
        self._delivered = False
        return None

    def _failed(self, node: Node, cause: str, leader: Optional[str]) -> None:
        """Counts the attempt if it delivered nothing; the hinted leader goes next, or
        ``node`` is avoided when choosing the next one."""
        counts = not self._delivered
        self._delivered = False
        self._retries.failed(self._client._endpoints, node, cause, leader, counts)

    def _drop_stream(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._unbatched.clear()

    def _end(self, err: CairnError) -> CairnError:
        self._done = True
        self._drop_stream()
        return err

    async def __anext__(self) -> SubscriptionMessage:
        while True:
            if self._done:
                raise StopAsyncIteration
            call = self._call
            if call is None:
                try:
                    await self.open()
                except CairnError as err:
                    raise self._end(err) from None
                continue
            try:
                if self._unbatched:
                    response = pb.SubscribeResponse(event=self._unbatched.popleft())
                else:
                    response = await call.read()
            except asyncio.CancelledError:
                if self._done:  # cancel() from the consumer's side: the end, not an error
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as err:
                failure = classify(err, self.stream)
                if isinstance(failure, CairnError):
                    raise self._end(failure) from None
                error: CairnError = Unavailable(failure.cause)
                cause, leader = failure.cause, failure.leader
            else:
                if response is grpc.aio.EOF:
                    cause = "the server ended the subscription"
                    leader, error = None, Unavailable(cause)
                elif response.WhichOneof("message") == "events":
                    self._unbatched.extend(response.events.events)
                    continue
                else:
                    try:
                        message = self._judge(response)
                    except _Gap as gap:
                        cause, leader = str(gap), None
                        error = InternalError(f"subscription to {self.stream!r}: {gap}")
                    except CairnError as err:
                        raise self._end(err) from None
                    else:
                        if message is None:
                            continue
                        self._delivered = True
                        self._retries.succeeded()
                        return message
            self._drop_stream()
            if not self._options.resubscribe:
                raise self._end(error)
            node = self._node
            if node is None:
                raise self._end(InternalError("subscription lost a stream it never opened"))
            log.info(
                "subscription to %r lost at %s (%s); resubscribing from %s",
                self.stream, node.url, cause, self._resume.next,
            )
            self._failed(node, cause, leader)

    def _judge(self, response: pb.SubscribeResponse) -> Optional[SubscriptionMessage]:
        """Checks one message against the resume point and moves it forward. ``None``: already
        delivered or nothing for the consumer. Raises :class:`_Gap` for a gap, a
        :class:`CairnError` for a message no other stream can repair."""
        single = not by_position(self.stream)
        resume = self._resume
        kind = response.WhichOneof("message")
        if kind == "event":
            event = RecordedEvent.from_proto(response.event)
            if single and event.stream != self.stream:
                raise InternalError(
                    f"subscription to {self.stream!r} delivered an event of {event.stream!r}"
                )
            key = event.revision if single else event.position
            if resume.next is not None:
                if key < resume.next:
                    log.debug("subscription to %r: duplicate %d dropped", self.stream, key)
                    return None
                if key > resume.next and resume.dense:
                    log.warning(
                        "gap in the subscription to %r: expected %d, got %d; resubscribing",
                        self.stream, resume.next, key,
                    )
                    raise _Gap(f"expected {resume.next}, got {key}")
            resume.next = key + 1
            resume.saw_applied(event.position)
            return event
        if kind == "caught_up":
            next_ = response.caught_up.next
            if resume.next is None or not resume.dense:
                # The end a from-end subscription starts at, or a filtered $all that scanned
                # past events it did not deliver.
                resume.next = next_ if resume.next is None else max(resume.next, next_)
            if not single and next_ > 0:
                resume.saw_applied(next_ - 1)
            return CaughtUp(next_)
        if kind == "fell_behind":
            next_ = response.fell_behind.next
            if resume.next is None:
                resume.next = next_
            return FellBehind(next_)
        if kind == "checkpoint":
            next_position = response.checkpoint.next_position
            if single or (resume.next is not None and next_position < resume.next):
                return None  # meaningless on a stream; stale after a resubscription
            if not resume.dense:
                resume.next = (
                    next_position if resume.next is None else max(resume.next, next_position)
                )
            if next_position > 0:
                resume.saw_applied(next_position - 1)
            return Checkpoint(next_position)
        if kind == "skipped":
            # Hidden by retention on purpose: the next event may come after `next` without
            # a gap. A stale marker (after a resubscription) changes nothing.
            next_ = response.skipped.next
            if resume.next is None or next_ > resume.next:
                resume.next = next_
            return None
        # A repeated confirmation, or a kind of message newer than this client.
        return None
