"""The events an opened read yields, checked as they arrive."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Optional

import grpc
import grpc.aio

from cairn.errors import InternalError, Unavailable, final_error
from cairn.events import RecordedEvent, by_position
from cairn.options import Direction
from cairn.proto import pb


class ReadOrder:
    """Positions move strictly in the read's direction, and a single stream's revisions are
    gapless (``$all`` and the indexes hold many streams: positions only); anything else is a server bug, raised as :class:`InternalError`."""

    def __init__(self, stream: str, direction: Direction) -> None:
        self.stream = stream
        self.direction = direction
        self.last: Optional[RecordedEvent] = None

    def check(self, event: RecordedEvent) -> None:
        single = not by_position(self.stream)
        if single and event.stream != self.stream:
            raise InternalError(f"read of {self.stream!r} returned an event of {event.stream!r}")
        last = self.last
        if last is not None:
            step = 1 if self.direction is Direction.FORWARDS else -1
            position_ok = (event.position - last.position) * step > 0
            revision_ok = event.revision == last.revision + step
            if not position_ok or (single and not revision_ok):
                raise InternalError(
                    f"read of {self.stream!r} out of order: revision {last.revision} position "
                    f"{last.position} then revision {event.revision} position {event.position}"
                )
        self.last = event


class AsyncReadStream(AsyncIterator[RecordedEvent]):
    """Events of an opened read. Errors after the first event are raised from iteration
    (nothing is retried then: the caller may already hold events); each wait for the next
    event is bounded by the request timeout (:class:`Unavailable` beyond it)."""

    def __init__(
        self,
        call: Optional[grpc.aio.UnaryStreamCall],
        first: Optional[pb.ReadResponse],
        stream: str,
        direction: Direction,
        idle_timeout_s: float,
    ) -> None:
        self._call = call if first is not None else None
        self._first = first
        self._order = ReadOrder(stream, direction)
        self._idle_timeout_s = idle_timeout_s

    def __aiter__(self) -> AsyncReadStream:
        return self

    async def __anext__(self) -> RecordedEvent:
        call = self._call
        if call is None:
            raise StopAsyncIteration
        try:
            if self._first is not None:
                response, self._first = self._first, None
            else:
                response = await asyncio.wait_for(call.read(), self._idle_timeout_s)
            if response is grpc.aio.EOF:
                self._call = None
                raise StopAsyncIteration
            if not response.HasField("event"):
                raise InternalError("read response without an event")
            event = RecordedEvent.from_proto(response.event)
            self._order.check(event)
            return event
        except grpc.RpcError as err:
            self._stop()
            raise final_error(err, self._order.stream) from None
        except asyncio.TimeoutError:
            self._stop()
            raise Unavailable(
                f"read of {self._order.stream!r}: no message within "
                f"{self._idle_timeout_s * 1000:.0f} ms"
            ) from None
        except InternalError:
            self._stop()
            raise

    async def collect(self) -> list[RecordedEvent]:
        """Every remaining event, in order."""
        return [event async for event in self]

    def cancel(self) -> None:
        """Stops the read on the server; iteration ends."""
        self._stop()

    def _stop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
