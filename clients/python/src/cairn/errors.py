"""The client's exceptions, and how a failed gRPC call becomes one (or a reason to retry).

The same classification as the Rust client (client/src/error.rs), against the node's one
status mapping (node/src/api/status.rs): INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND and
RESOURCE_EXHAUSTED are final answers; UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED and UNKNOWN mean "try again, here or
elsewhere"; FAILED_PRECONDITION means "not the leader" (the leader's URL in
``x-cairn-leader`` when known) and is followed internally; INTERNAL from a server is final.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Optional, Union

import grpc

#: Metadata key on FAILED_PRECONDITION: the leader's endpoint URL.
LEADER_METADATA_KEY = "x-cairn-leader"
#: Metadata key on ALREADY_EXISTS from an append: the first conflicting event id.
CONFLICT_EVENT_ID_METADATA_KEY = "x-cairn-event-id"
#: Metadata key on ALREADY_EXISTS from an append: ``other-content`` or ``not-a-retry``.
CONFLICT_KIND_METADATA_KEY = "x-cairn-conflict"
#: The ids are stored at this place, but an event's content differs: an id reused.
CONFLICT_OTHER_CONTENT = "other-content"
#: Metadata key on NOT_FOUND: the stream is deleted, not merely absent (value ``tombstoned``).
STREAM_DELETED_METADATA_KEY = "x-cairn-stream-deleted"
STREAM_DELETED_TOMBSTONED = "tombstoned"

#: How grpc core words a stream the transport reset (INTERNAL raised on this side, not an
#: answer of the server): the Python counterpart of tonic's INTERNAL with a ``source()``.
_LOCAL_RESET_PREFIX = "Received RST_STREAM"


class CairnError(Exception):
    """Base class of every error this package raises."""


class NotAuthenticated(CairnError):
    """The node did not accept who the client is (no token, an unknown, revoked or expired
    one, a wrong password) or how it connected (plain text to a TLS node); never retried."""


class PermissionDenied(CairnError):
    """The client's user holds no grant for the call (an append to a stream it may only
    read); never retried, nothing was written."""


class WrongExpectedVersion(CairnError):
    """The optimistic-concurrency check failed: a normal outcome, never retried.

    ``actual`` is the stream's last revision, ``None`` when the stream has no events.
    """

    def __init__(self, stream: str, expected: Any, actual: Optional[int]) -> None:
        # `expected` is a cairn.ExpectedRevision: a StreamState (its value is the CLI's
        # spelling) or an exact revision.
        self.stream = stream
        self.expected = expected
        self.actual = actual
        actual_text = "no stream" if actual is None else str(actual)
        super().__init__(
            f"wrong expected version on stream {stream!r}: "
            f"expected {getattr(expected, 'value', expected)}, actual {actual_text}"
        )


class ConditionFailed(CairnError):
    """A DCB append's condition failed: an event matching its query is stored after its
    ``after``. ``position`` is the first such event's ``$all`` position: read from there,
    decide again. Nothing was written; never retried (the CLI's exit 3, as a wrong expected
    version)."""

    def __init__(self, position: int) -> None:
        self.position = position
        super().__init__(f"append condition failed: a matching event is at position {position}")


class StreamNotFound(CairnError):
    """A read of a stream that has no events."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} not found")


class StreamDeleted(CairnError):
    """The stream is tombstoned: it can never be written or read again (the CLI's exit 5)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} is deleted (tombstoned)")


class InvalidInput(CairnError):
    """The request was malformed (the message names the field); retrying cannot help.
    Nothing was written."""


class IdempotencyConflict(CairnError):
    """An event id of the append is already stored, written by a different append (another
    stream or place, or the ids only partly match). Nothing was written."""


class EventIdReused(IdempotencyConflict):
    """Event ``id`` is already stored at this place with other content (type, content type,
    data or metadata): the id was reused for another event. A retry must resend the same
    event; a new event needs a new id. Nothing was written."""

    def __init__(self, event_id: uuid.UUID) -> None:
        self.id = event_id
        super().__init__(
            f"event id {event_id} is already stored with other content (type, content type, "
            "data or metadata); nothing was written (a retry must resend the same event; a new "
            "event needs a new id)"
        )


class Unavailable(CairnError):
    """No node could serve the request within the retry budget. ``cause`` is the last one."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(f"unavailable: {cause}")


class ResourceExhausted(CairnError):
    """The cluster is at one of its limits (RESOURCE_EXHAUSTED); nothing changed."""


class GroupNotFound(CairnError):
    """No consumer group of that name exists (or it was deleted)."""

    def __init__(self, group: str) -> None:
        self.group = group
        super().__init__(f"consumer group {group!r} not found")


class GroupExists(CairnError):
    """A create of a consumer group that exists; nothing changed."""

    def __init__(self, group: str) -> None:
        self.group = group
        super().__init__(f"consumer group {group!r} already exists")


class GroupFull(ResourceExhausted):
    """A group at its max consumers, or the cluster at its most groups; nothing changed."""


class InternalError(CairnError):
    """Anything else, including answers from the server that break the contract."""


@dataclass(frozen=True)
class Retry:
    """A failed call worth another attempt; ``leader`` is the endpoint a follower named."""

    cause: str
    leader: Optional[str] = None


Failure = Union[Retry, CairnError]


def _metadata(err: grpc.RpcError, key: str) -> Optional[str]:
    """The value of ``key`` in the status' trailing (or, trailers-only, initial) metadata."""
    for getter in ("trailing_metadata", "initial_metadata"):
        entries = getattr(err, getter, None)
        for entry_key, value in (entries() if entries else None) or ():
            if entry_key == key:
                text = value.decode() if isinstance(value, bytes) else str(value)
                return text.strip() or None
    return None


def classify(err: grpc.RpcError, stream: str) -> Failure:
    """Sorts a failed call into a :class:`Retry` or a final :class:`CairnError`.

    ``stream`` names the stream for NOT_FOUND. Retrying is safe for appends because a retry
    reuses the same event ids.
    """
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    cause = f"{code.name}: {details}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(details)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return _conflict(err, details)
    if code == grpc.StatusCode.NOT_FOUND:
        if _metadata(err, STREAM_DELETED_METADATA_KEY) == STREAM_DELETED_TOMBSTONED:
            return StreamDeleted(stream)
        return StreamNotFound(stream)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return NotAuthenticated(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return Retry(cause, _metadata(err, LEADER_METADATA_KEY))
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    ):
        return Retry(cause)
    if code == grpc.StatusCode.INTERNAL and details.startswith(_LOCAL_RESET_PREFIX):
        return Retry(cause)
    return InternalError(cause)


def final_error(err: grpc.RpcError, stream: str) -> CairnError:
    """The error a failed call becomes when it is not (or no longer) retried."""
    failure = classify(err, stream)
    return Unavailable(failure.cause) if isinstance(failure, Retry) else failure


def _conflict(err: grpc.RpcError, details: str) -> IdempotencyConflict:
    """:class:`EventIdReused` when the metadata says so and names a valid id, else
    :class:`IdempotencyConflict` with the server's message."""
    if _metadata(err, CONFLICT_KIND_METADATA_KEY) == CONFLICT_OTHER_CONTENT:
        text = _metadata(err, CONFLICT_EVENT_ID_METADATA_KEY)
        try:
            return EventIdReused(uuid.UUID(text or ""))
        except ValueError:
            pass
    return IdempotencyConflict(details)
