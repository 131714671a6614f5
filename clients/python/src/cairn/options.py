"""Read and subscription options: direction, consistency, node preference, filters."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from cairn.proto import pb


class Direction(enum.Enum):
    FORWARDS = "forwards"
    BACKWARDS = "backwards"

    def to_proto(self) -> pb.Direction:
        if self is Direction.FORWARDS:
            return pb.DIRECTION_FORWARDS
        return pb.DIRECTION_BACKWARDS


class ReadConsistency(enum.Enum):
    #: Any node, from its applied state; may lag the leader unless ``min_position`` is set.
    LOCAL = "local"
    #: Through the leader, after it confirms it still leads.
    LINEARIZABLE = "linearizable"

    def to_proto(self) -> pb.ReadConsistency:
        if self is ReadConsistency.LOCAL:
            return pb.READ_CONSISTENCY_LOCAL
        return pb.READ_CONSISTENCY_LINEARIZABLE


class NodePreference(enum.Enum):
    """Which node a read or subscription goes to. It places load; it never changes what a
    call returns (a linearizable call goes to the leader whatever the preference)."""

    #: The known leader (learnt with a status call if none is known).
    LEADER = "leader"
    #: A node that is not the known leader; any node when none other answers.
    FOLLOWER = "follower"
    #: The first endpoint, or the one after the last that failed: the caller orders the list.
    ANY = "any"


class From(enum.Enum):
    """Where a read or subscription starts: from the first event, or from the end."""

    START = "start"
    #: A read: the last event (meaningful backwards). A subscription: only new events.
    END = "end"


#: A read's or subscription's start: :class:`From`, or a revision (stream) / position
#: (``$all``), included.
ReadFrom = Union[From, int]


@dataclass(frozen=True)
class SubscriptionFilter:
    """Server-side filters of a ``$all`` subscription; an event passes if it matches every
    filter given. Filtered subscriptions also deliver checkpoints."""

    stream_prefix: Optional[str] = None
    event_type_prefix: Optional[str] = None
    #: A regular expression (Rust ``regex`` syntax) the whole event type must match.
    event_type_regex: Optional[str] = None

    def to_proto(self) -> pb.SubscriptionFilter:
        # The wire has no "absent": None goes as the empty string, which the server ignores.
        return pb.SubscriptionFilter(
            stream_prefix=self.stream_prefix or "",
            event_type_prefix=self.event_type_prefix or "",
            event_type_regex=self.event_type_regex or "",
        )
