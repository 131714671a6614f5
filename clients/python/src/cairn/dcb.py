"""Multi-stream appends and Dynamic Consistency Boundaries (dcb.events): the types of
:meth:`cairn.AsyncClient.append_multi` and :meth:`cairn.AsyncClient.read_query`, and their
wire forms. The same shapes as the Rust client's (client/src/dcb.rs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from cairn.errors import InvalidInput
from cairn.events import ANY, EventData, ExpectedRevision, expected_to_proto, u64
from cairn.proto import pb

#: Most items of one query, and most types or tags of one item (client/proto: ``Query``).
MAX_QUERY_ITEMS = 16
MAX_QUERY_ITEM_VALUES = 16
#: The stream a multi-stream append's result names for its DCB events.
DCB_STREAM = "$dcb"


@dataclass(frozen=True)
class QueryItem:
    """One alternative of a :class:`Query`: an event matches if its type is one of ``types``
    (or ``types`` is empty) and it carries every tag of ``tags``. At least one is given."""

    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __init__(self, types: Sequence[str] = (), tags: Sequence[str] = ()) -> None:
        for field, values in (("types", types), ("tags", tags)):
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise InvalidInput(f"query item {field}: give a sequence of strings")
            if len(values) > MAX_QUERY_ITEM_VALUES:
                raise InvalidInput(
                    f"query item {field}: {len(values)} given, at most {MAX_QUERY_ITEM_VALUES}"
                )
        if not types and not tags:
            raise InvalidInput("query item: give types, tags or both")
        object.__setattr__(self, "types", tuple(types))
        object.__setattr__(self, "tags", tuple(tags))

    def to_proto(self) -> pb.QueryItem:
        return pb.QueryItem(types=list(self.types), tags=list(self.tags))


@dataclass(frozen=True)
class Query:
    """A DCB query: its items OR'd. No items matches every event."""

    items: tuple[QueryItem, ...] = ()

    def __init__(self, items: Sequence[QueryItem] = ()) -> None:
        if not all(isinstance(item, QueryItem) for item in items):
            raise InvalidInput("query: give cairn.QueryItem values")
        if len(items) > MAX_QUERY_ITEMS:
            raise InvalidInput(f"query: {len(items)} items, at most {MAX_QUERY_ITEMS}")
        object.__setattr__(self, "items", tuple(items))

    def to_proto(self) -> pb.Query:
        return pb.Query(items=[item.to_proto() for item in self.items])


@dataclass(frozen=True)
class AppendCondition:
    """Fail the append if an event matching ``fail_if_events_match`` is stored after
    ``after`` (the position the decision's read ended at), or at all when ``after`` is
    ``None``. A failed condition is :class:`cairn.ConditionFailed`."""

    fail_if_events_match: Query
    after: Optional[int] = None

    def to_proto(self) -> pb.AppendCondition:
        condition = pb.AppendCondition(fail_if_events_match=self.fail_if_events_match.to_proto())
        if self.after is not None:
            condition.after = u64("condition after", self.after)
        return condition


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of a multi-stream append."""

    stream: str
    events: Union[EventData, Sequence[EventData]]
    expected: ExpectedRevision = ANY

    def to_proto(self) -> pb.StreamAppend:
        return pb.StreamAppend(
            stream=self.stream,
            expected=expected_to_proto(self.expected),
            events=[event.to_proto() for event in event_list(self.events)],
        )


@dataclass(frozen=True)
class MultiAppendResult:
    """The outcome of a successful multi-stream or DCB append."""

    #: Each stream's last revision, in the request's order (:data:`DCB_STREAM` for DCB events).
    last_revisions: tuple[tuple[str, int], ...]
    #: ``$all`` position of the last event written: the ``after`` of the next decision.
    last_position: int
    #: A retry of an append that had already landed; nothing new was written.
    already_written: bool


def event_list(events: Union[EventData, Sequence[EventData]]) -> list[EventData]:
    """One event or several as a list; anything but :class:`EventData` is InvalidInput."""
    batch = [events] if isinstance(events, EventData) else list(events)
    if not all(isinstance(event, EventData) for event in batch):
        raise InvalidInput("events: give cairn.EventData values")
    return batch
