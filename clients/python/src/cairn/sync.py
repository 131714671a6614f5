"""The blocking client: :class:`AsyncClient`'s coroutines run on a private event loop in a
daemon thread, so both APIs share one implementation of every call, retry and subscription.
Safe to use from several threads at once; each call blocks only its caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path
from typing import Any, Coroutine, Iterator, Optional, Sequence, TypeVar, Union

from cairn.aio import DEFAULT_REQUEST_TIMEOUT_MS, AsyncClient
from cairn.cluster import ClusterStatus, Membership
from cairn.dcb import AppendCondition, MultiAppendResult, Query, StreamAppend
from cairn.errors import InvalidInput
from cairn.groups import (
    AsyncConsumer,
    ConsumerMessage,
    GroupInfo,
    GroupSettings,
    GroupUpdate,
    NackAction,
)
from cairn.lifecycle import StreamMetadata, StreamMetadataState
from cairn.events import ANY, AppendResult, EventData, ExpectedRevision, RecordedEvent
from cairn.options import (
    Direction,
    From,
    NodePreference,
    ReadConsistency,
    ReadFrom,
    SubscriptionFilter,
)
from cairn.policy import DEFAULT_MAX_APPEND_ATTEMPTS
from cairn.reads import AsyncReadStream
from cairn.subscription import AsyncSubscription, SubscriptionMessage

T = TypeVar("T")


_LOOP_THREAD_NAME = "cairn-client"
"""The name of every client's event-loop thread."""


class _Loop:
    """An event loop running in a daemon thread until :meth:`stop`.

    Every call waiting on the loop is tracked, so :meth:`stop` can end them: a coroutine
    handed to a loop that has stopped would otherwise never finish, and its caller (perhaps
    a non-daemon thread of the application) would wait for ever.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._stopping = False
        # Set when the client starts closing, before its channels close: a call that their
        # closing cancels is then reported as ended by the close, like one `stop` ends.
        self._closing = False
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=_LOOP_THREAD_NAME, daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs ``coroutine`` on the loop and waits for it; an interrupt cancels it. A call
        still waiting when the client is closed raises :class:`InvalidInput`."""
        with self._lock:
            if self._stopping:
                coroutine.close()
                raise InvalidInput("the client is closed")
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            self._waiting.add(future)
        try:
            return future.result()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            if self._stopping or self._closing:
                raise InvalidInput("the client was closed during this call") from None
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            with self._lock:
                self._waiting.discard(future)

    def call_soon(self, function: Any) -> None:
        with self._lock:
            if not self._stopping:
                self.loop.call_soon_threadsafe(function)

    def begin_closing(self) -> None:
        """Notes that the client is closing (see ``_closing``)."""
        with self._lock:
            self._closing = True

    def close_in_background(self, closing: Coroutine[Any, Any, Any]) -> None:
        """Runs ``closing`` on the loop and stops the loop after it, without waiting: for a
        close called on a client's own loop thread, where waiting would block that loop."""
        with self._lock:
            if self._stopping:
                closing.close()
                return
            future = asyncio.run_coroutine_threadsafe(closing, self.loop)
        future.add_done_callback(lambda _: self.stop())

    def stop(self) -> None:
        """Cancels what still runs on the loop (so gRPC calls end cleanly), ends every call
        still waiting, then stops and closes the loop. Runs once; later calls do nothing."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            waiting = list(self._waiting)
        if threading.current_thread() is not self._thread:
            cancelled = asyncio.run_coroutine_threadsafe(_cancel_tasks(), self.loop)
            try:
                cancelled.result(STOP_GRACE_S)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                pass
        for future in waiting:
            future.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()
            self.loop.close()


STOP_GRACE_S = 2.0
"""How long closing a client waits for its calls in flight to end after cancelling them."""


async def _cancel_tasks() -> None:
    """Cancels every other task on the running loop and waits (bounded) for them to end."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_GRACE_S)


class ReadStream(Iterator[RecordedEvent]):
    """The events of an opened read, as a blocking iterator (see :class:`AsyncReadStream`)."""

    def __init__(self, loop: _Loop, events: AsyncReadStream) -> None:
        self._loop = loop
        self._events = events

    def __iter__(self) -> ReadStream:
        return self

    def __next__(self) -> RecordedEvent:
        try:
            return self._loop.run(self._events.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def cancel(self) -> None:
        """Stops the read on the server; iteration ends."""
        self._loop.call_soon(self._events.cancel)


class Subscription(Iterator[SubscriptionMessage]):
    """A running subscription as a blocking iterator (see :class:`AsyncSubscription`):
    ``RecordedEvent``, ``CaughtUp``, ``FellBehind`` and ``Checkpoint`` values. Close it (or
    use ``with``) when done."""

    def __init__(self, loop: _Loop, subscription: AsyncSubscription) -> None:
        self._loop = loop
        self._subscription = subscription

    @property
    def served_by(self) -> Optional[int]:
        """The id of the node that confirmed the current (or last) server stream."""
        return self._subscription.served_by

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> SubscriptionMessage:
        try:
            return self._loop.run(self._subscription.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Ends the subscription."""
        self._loop.call_soon(self._subscription.cancel)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(Iterator[ConsumerMessage]):
    """A group's consumer as a blocking iterator of :class:`~cairn.GroupEvent` and
    :class:`~cairn.AckRejected` (see :class:`cairn.groups.AsyncConsumer`). Close it (or use
    ``with``) when done."""

    def __init__(self, loop: _Loop, consumer: AsyncConsumer) -> None:
        self._loop = loop
        self._consumer = consumer

    @property
    def consumer_id(self) -> Optional[int]:
        """The server's id for the current connection."""
        return self._consumer.consumer_id

    @property
    def max_in_flight(self) -> Optional[int]:
        """The window the consumer joined with: events in flight to it at most."""
        return self._consumer.max_in_flight

    def __iter__(self) -> Consumer:
        return self

    def __next__(self) -> ConsumerMessage:
        try:
            return self._loop.run(self._consumer.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def ack(self, ids: Sequence[Any]) -> None:
        """See :meth:`cairn.groups.AsyncConsumer.ack`."""
        self._loop.run(self._consumer.ack(ids))

    def nack(self, ids: Sequence[Any], action: NackAction, reason: str = "") -> None:
        """See :meth:`cairn.groups.AsyncConsumer.nack`."""
        self._loop.run(self._consumer.nack(ids, action, reason))

    def close(self) -> None:
        """Ends the consumer; events it has not acknowledged go to other consumers."""
        self._loop.run(self._consumer.close())

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A blocking handle on a Cairn cluster: the same calls, arguments and errors as
    :class:`cairn.aio.AsyncClient` (see there), without ``await``. Close it with
    :meth:`close` or ``with``."""

    def __init__(
        self,
        endpoints: Optional[Sequence[str]] = None,
        *,
        profile: Optional[Union[str, Path]] = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_MS / 1000,
        max_append_attempts: int = DEFAULT_MAX_APPEND_ATTEMPTS,
        leader_only: bool = True,
        tls_ca: Optional[Union[str, Path, bytes]] = None,
        token: Optional[str] = None,
    ) -> None:
        self._async = AsyncClient(
            endpoints,
            profile=profile,
            request_timeout=request_timeout,
            max_append_attempts=max_append_attempts,
            leader_only=leader_only,
            tls_ca=tls_ca,
            token=token,
        )
        self._loop = _Loop()

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    @property
    def endpoints(self) -> list[str]:
        return self._async.endpoints

    @property
    def last_position(self) -> Optional[int]:
        """The ``$all`` position of this client's latest successful append."""
        return self._async.last_position

    def close(self) -> None:
        """Closes the channels and stops the client's thread. Called on a client's event-loop
        thread (a garbage collection there finalising an object that owns this client, such as
        an eventsourcing ``Application``), it closes in the background instead of waiting:
        that thread may hold a lock (gRPC's, mid-call) the closing needs, and waiting there
        hung the Python tests."""
        self._loop.begin_closing()
        if threading.current_thread().name == _LOOP_THREAD_NAME:
            self._loop.close_in_background(self._async.close())
            return
        try:
            self._loop.run(self._async.close())
        except InvalidInput:
            return  # closed before
        self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        stream: str,
        events: Union[EventData, Sequence[EventData]],
        *,
        expected: ExpectedRevision = ANY,
        timeout: Optional[float] = None,
    ) -> AppendResult:
        """See :meth:`cairn.aio.AsyncClient.append`."""
        return self._loop.run(
            self._async.append(stream, events, expected=expected, timeout=timeout)
        )

    def append_multi(
        self,
        streams: Sequence[StreamAppend],
        *,
        dcb_events: Sequence[EventData] = (),
        condition: Optional[AppendCondition] = None,
        timeout: Optional[float] = None,
    ) -> MultiAppendResult:
        """See :meth:`cairn.aio.AsyncClient.append_multi`."""
        return self._loop.run(
            self._async.append_multi(
                streams, dcb_events=dcb_events, condition=condition, timeout=timeout
            )
        )

    def dcb_append(
        self,
        events: Union[EventData, Sequence[EventData]],
        *,
        condition: Optional[AppendCondition] = None,
        timeout: Optional[float] = None,
    ) -> MultiAppendResult:
        """See :meth:`cairn.aio.AsyncClient.dcb_append`."""
        return self._loop.run(
            self._async.dcb_append(events, condition=condition, timeout=timeout)
        )

    def get_stream_metadata(
        self,
        stream: str,
        *,
        consistency: ReadConsistency = ReadConsistency.LINEARIZABLE,
        min_position: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> StreamMetadataState:
        """See :meth:`cairn.aio.AsyncClient.get_stream_metadata`."""
        return self._loop.run(
            self._async.get_stream_metadata(
                stream, consistency=consistency, min_position=min_position, timeout=timeout
            )
        )

    def set_stream_metadata(
        self,
        stream: str,
        metadata: StreamMetadata,
        *,
        expected: ExpectedRevision = ANY,
        timeout: Optional[float] = None,
    ) -> AppendResult:
        """See :meth:`cairn.aio.AsyncClient.set_stream_metadata`."""
        return self._loop.run(
            self._async.set_stream_metadata(stream, metadata, expected=expected, timeout=timeout)
        )

    def delete_stream(
        self, stream: str, *, expected: ExpectedRevision = ANY, timeout: Optional[float] = None
    ) -> AppendResult:
        """See :meth:`cairn.aio.AsyncClient.delete_stream`."""
        return self._loop.run(
            self._async.delete_stream(stream, expected=expected, timeout=timeout)
        )

    def tombstone_stream(
        self, stream: str, *, expected: ExpectedRevision = ANY, timeout: Optional[float] = None
    ) -> AppendResult:
        """See :meth:`cairn.aio.AsyncClient.tombstone_stream`."""
        return self._loop.run(
            self._async.tombstone_stream(stream, expected=expected, timeout=timeout)
        )

    def read_index(self, index: str, **options: Any) -> ReadStream:
        """See :meth:`cairn.aio.AsyncClient.read_index` (the same keyword options)."""
        return ReadStream(self._loop, self._loop.run(self._async.read_index(index, **options)))

    def read_query(self, query: Query, **options: Any) -> ReadStream:
        """See :meth:`cairn.aio.AsyncClient.read_query` (the same keyword options)."""
        return ReadStream(self._loop, self._loop.run(self._async.read_query(query, **options)))

    def read_stream(
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
    ) -> ReadStream:
        """See :meth:`cairn.aio.AsyncClient.read_stream`; ``list(...)`` collects it."""
        events = self._loop.run(
            self._async.read_stream(
                stream,
                start=start,
                direction=direction,
                count=count,
                consistency=consistency,
                min_position=min_position,
                prefer=prefer,
                timeout=timeout,
            )
        )
        return ReadStream(self._loop, events)

    def read_all(
        self,
        *,
        start: Optional[ReadFrom] = None,
        direction: Direction = Direction.FORWARDS,
        count: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        prefer: NodePreference = NodePreference.ANY,
        timeout: Optional[float] = None,
    ) -> ReadStream:
        """See :meth:`cairn.aio.AsyncClient.read_all`."""
        events = self._loop.run(
            self._async.read_all(
                start=start,
                direction=direction,
                count=count,
                consistency=consistency,
                min_position=min_position,
                prefer=prefer,
                timeout=timeout,
            )
        )
        return ReadStream(self._loop, events)

    def subscribe(
        self,
        stream: str,
        *,
        start: ReadFrom = From.START,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        resubscribe: bool = True,
        prefer: NodePreference = NodePreference.ANY,
    ) -> Subscription:
        """See :meth:`cairn.aio.AsyncClient.subscribe`."""
        subscription = self._loop.run(
            self._async.subscribe(
                stream,
                start=start,
                consistency=consistency,
                min_position=min_position,
                resubscribe=resubscribe,
                prefer=prefer,
            )
        )
        return Subscription(self._loop, subscription)

    def subscribe_all(
        self,
        *,
        start: ReadFrom = From.START,
        filter: Optional[SubscriptionFilter] = None,
        checkpoint_interval: Optional[int] = None,
        consistency: ReadConsistency = ReadConsistency.LOCAL,
        min_position: Optional[int] = None,
        resubscribe: bool = True,
        prefer: NodePreference = NodePreference.ANY,
    ) -> Subscription:
        """See :meth:`cairn.aio.AsyncClient.subscribe_all`."""
        subscription = self._loop.run(
            self._async.subscribe_all(
                start=start,
                filter=filter,
                checkpoint_interval=checkpoint_interval,
                consistency=consistency,
                min_position=min_position,
                resubscribe=resubscribe,
                prefer=prefer,
            )
        )
        return Subscription(self._loop, subscription)

    def create_group(
        self, group: str, settings: GroupSettings, *, timeout: Optional[float] = None
    ) -> None:
        """See :meth:`cairn.aio.AsyncClient.create_group`."""
        self._loop.run(self._async.create_group(group, settings, timeout=timeout))

    def update_group(
        self, group: str, update: GroupUpdate, *, timeout: Optional[float] = None
    ) -> None:
        """See :meth:`cairn.aio.AsyncClient.update_group`."""
        self._loop.run(self._async.update_group(group, update, timeout=timeout))

    def delete_group(self, group: str, *, timeout: Optional[float] = None) -> None:
        """See :meth:`cairn.aio.AsyncClient.delete_group`."""
        self._loop.run(self._async.delete_group(group, timeout=timeout))

    def replay_parked(self, group: str, *, timeout: Optional[float] = None) -> None:
        """See :meth:`cairn.aio.AsyncClient.replay_parked`."""
        self._loop.run(self._async.replay_parked(group, timeout=timeout))

    def list_groups(self, *, timeout: Optional[float] = None) -> list[GroupInfo]:
        """See :meth:`cairn.aio.AsyncClient.list_groups`."""
        return self._loop.run(self._async.list_groups(timeout=timeout))

    def group_info(self, group: str, *, timeout: Optional[float] = None) -> GroupInfo:
        """See :meth:`cairn.aio.AsyncClient.group_info`."""
        return self._loop.run(self._async.group_info(group, timeout=timeout))

    def consume(self, group: str) -> Consumer:
        """See :meth:`cairn.aio.AsyncClient.consume`."""
        return Consumer(self._loop, self._loop.run(self._async.consume(group)))

    def status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """See :meth:`cairn.aio.AsyncClient.status`."""
        return self._loop.run(self._async.status(timeout=timeout))

    def add_node(self, node_id: int, address: str) -> Membership:
        """See :meth:`cairn.aio.AsyncClient.add_node`."""
        return self._loop.run(self._async.add_node(node_id, address))

    def remove_node(self, node_id: int, *, force: bool = False) -> Membership:
        """See :meth:`cairn.aio.AsyncClient.remove_node`."""
        return self._loop.run(self._async.remove_node(node_id, force=force))
