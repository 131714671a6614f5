"""Events as written and as recorded, expected revisions, and their wire conversions."""

from __future__ import annotations

import enum
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from cairn.errors import InternalError, InvalidInput
from cairn.proto import pb

#: The name that reads (or subscribes to) the global log instead of one stream.
ALL_STREAM = "$all"
#: Prefixes of the index names: ``$ce-<category>`` (streams named ``<category>-...``),
#: ``$et-<event type>``, ``$tag-<tag>``. An index is read and followed by ``$all`` position.
CATEGORY_INDEX_PREFIX = "$ce-"
EVENT_TYPE_INDEX_PREFIX = "$et-"
TAG_INDEX_PREFIX = "$tag-"
#: Most tags on one event, as the server counts them (client/proto: ``NewEvent.tags``).
MAX_TAGS_PER_EVENT = 16


def by_position(name: str) -> bool:
    """Whether reading ``name`` yields events of many streams in ``$all`` order (``$all`` or
    an index), rather than one stream's events by revision."""
    return name == ALL_STREAM or name.startswith(
        (CATEGORY_INDEX_PREFIX, EVENT_TYPE_INDEX_PREFIX, TAG_INDEX_PREFIX)
    )


def category_index(category: str) -> str:
    """The index of the streams named ``<category>-...``."""
    return CATEGORY_INDEX_PREFIX + category


def event_type_index(event_type: str) -> str:
    """The index of the events of type ``event_type``."""
    return EVENT_TYPE_INDEX_PREFIX + event_type


def tag_index(tag: str) -> str:
    """The index of the events carrying ``tag``."""
    return TAG_INDEX_PREFIX + tag
#: Largest revision or position on the wire (uint64).
MAX_U64 = 2**64 - 1


class StreamState(str, enum.Enum):
    """An expected revision that is not an exact revision. The values are the CLI's
    spellings (``cairn append --expected``)."""

    #: Append whatever the stream holds.
    ANY = "any"
    #: The stream must have no events.
    NO_STREAM = "no-stream"
    #: The stream must have at least one event.
    EXISTS = "exists"


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
STREAM_EXISTS = StreamState.EXISTS

#: The optimistic-concurrency condition of an append: a :class:`StreamState`, or the exact
#: revision the stream's last event must have.
ExpectedRevision = Union[StreamState, int]


def parse_expected(text: str) -> ExpectedRevision:
    """Parses the CLI's spelling: ``any``, ``no-stream``, ``exists`` or a revision number.
    Anything else (``no_stream``, `` 3``) is :class:`InvalidInput`, not another condition."""
    for state in StreamState:
        if text == state.value:
            return state
    if text and text.isascii() and text.isdigit() and int(text) <= MAX_U64:
        return int(text)
    raise InvalidInput(
        f"expected revision {text!r}: use any, no-stream, exists or a revision number"
    )


def expected_to_proto(expected: ExpectedRevision) -> pb.ExpectedRevision:
    """The wire form; an exact revision must be an int in 0..=2**64-1."""
    kinds = {
        StreamState.ANY: pb.ExpectedRevision.KIND_ANY,
        StreamState.NO_STREAM: pb.ExpectedRevision.KIND_NO_STREAM,
        StreamState.EXISTS: pb.ExpectedRevision.KIND_STREAM_EXISTS,
    }
    if isinstance(expected, StreamState):
        return pb.ExpectedRevision(kind=kinds[expected])
    revision = u64("expected (cairn.ANY, NO_STREAM, STREAM_EXISTS or a revision)", expected)
    return pb.ExpectedRevision(kind=pb.ExpectedRevision.KIND_EXACT, revision=revision)


def u64(field: str, value: Any) -> int:
    """``value`` as a wire uint64 (a revision, position or count), or :class:`InvalidInput`
    naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U64:
        raise InvalidInput(f"{field}: {value!r} is not an integer in 0..=2**64-1")
    return value


class ContentType(enum.Enum):
    """How an event's data is encoded; the values are the media types."""

    JSON = "application/json"
    BINARY = "application/octet-stream"

    def to_proto(self) -> pb.ContentType:
        return pb.CONTENT_TYPE_JSON if self is ContentType.JSON else pb.CONTENT_TYPE_BINARY

    @staticmethod
    def from_proto(value: int) -> ContentType:
        if value == pb.CONTENT_TYPE_JSON:
            return ContentType.JSON
        if value == pb.CONTENT_TYPE_BINARY:
            return ContentType.BINARY
        raise InternalError(f"content type {value} is unknown to this client")


_uuid7_lock = threading.Lock()
_uuid7_last = (0, 0)


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Within one
    millisecond the 12 bits after the version count up, so the ids one process makes are
    increasing: time-ordered ids keep the server's event-id index cheap."""
    global _uuid7_last
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = _uuid7_last
        if ms <= last_ms:
            ms, seq = last_ms, last_seq + 1
            if seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms, seq = ms + 1, 0
        else:
            seq = int.from_bytes(os.urandom(2), "big") & 0x7FF
        _uuid7_last = (ms, seq)
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


@dataclass(frozen=True)
class EventData:
    """An event to append. Its ``id`` is the key of idempotent retries: the client keeps it
    when it retries, and the server recognises a retry by it. A fresh UUIDv7 by default."""

    type: str
    data: bytes = b""
    content_type: ContentType = ContentType.JSON
    metadata: bytes = b""
    id: uuid.UUID = field(default_factory=uuid7)
    #: What the event is about (``"customer:7"``): indexed, read and followed as
    #: ``$tag-<tag>``, and matched by DCB queries. At most :data:`MAX_TAGS_PER_EVENT`.
    tags: tuple[str, ...] = ()

    @staticmethod
    def json(
        type: str,
        value: Any,
        *,
        metadata: bytes = b"",
        id: Optional[uuid.UUID] = None,
        tags: Sequence[str] = (),
    ) -> EventData:
        """A JSON event with ``value`` serialised (compactly). Unserialisable values are
        :class:`InvalidInput`."""
        try:
            data = json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"event of type {type!r}: data is not JSON: {err}") from err
        return EventData(type, data, ContentType.JSON, metadata, id or uuid7(), _tags(tags))

    @staticmethod
    def binary(
        type: str,
        data: bytes,
        *,
        metadata: bytes = b"",
        id: Optional[uuid.UUID] = None,
        tags: Sequence[str] = (),
    ) -> EventData:
        """An event whose data is any bytes (``application/octet-stream``)."""
        return EventData(
            type, bytes(data), ContentType.BINARY, metadata, id or uuid7(), _tags(tags)
        )

    def to_proto(self) -> pb.NewEvent:
        return pb.NewEvent(
            id=str(self.id),
            type=self.type,
            content_type=self.content_type.to_proto(),
            data=bytes(self.data),
            metadata=bytes(self.metadata),
            tags=_tags(self.tags),
        )


def _tags(tags: Sequence[str]) -> tuple[str, ...]:
    """``tags`` as a tuple of strings; a lone string (a common slip) or too many is
    :class:`InvalidInput` (the server judges each tag's content)."""
    if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidInput("tags: give a sequence of strings")
    if len(tags) > MAX_TAGS_PER_EVENT:
        raise InvalidInput(f"tags: {len(tags)} given, at most {MAX_TAGS_PER_EVENT}")
    return tuple(tags)


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored: what was written, plus where and when."""

    stream: str
    #: 0-based, gapless within the stream.
    revision: int
    #: Position in ``$all``, gapless across the store.
    position: int
    id: uuid.UUID
    type: str
    content_type: ContentType
    data: bytes
    metadata: bytes
    #: Milliseconds since the Unix epoch, assigned once by the leader.
    created_unix_ms: int
    tags: tuple[str, ...] = ()

    def json(self) -> Any:
        """The data parsed as JSON."""
        return json.loads(self.data)

    @staticmethod
    def from_proto(event: pb.RecordedEvent) -> RecordedEvent:
        try:
            event_id = uuid.UUID(event.id)
        except ValueError as err:
            raise InternalError(f"event {event.stream}@{event.revision}: id {event.id!r}") from err
        return RecordedEvent(
            stream=event.stream,
            revision=event.revision,
            position=event.position,
            id=event_id,
            type=event.type,
            content_type=ContentType.from_proto(event.content_type),
            data=event.data,
            metadata=event.metadata,
            created_unix_ms=event.created_unix_ms,
            tags=tuple(event.tags),
        )


@dataclass(frozen=True)
class AppendResult:
    """The outcome of a successful append."""

    #: Revision of the last event written: the expected revision of the next append.
    last_revision: int
    #: ``$all`` position of the last event written: the minimum position for read-your-writes.
    last_position: int
    #: This was a retry of an append that had already landed; nothing new was written.
    already_written: bool
