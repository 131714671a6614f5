"""The cluster as a node sees it (``status``), and membership after a change."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from cairn.proto import pb


class Role(enum.Enum):
    UNKNOWN = "unknown"
    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEARNER = "learner"
    #: No longer a member: it refuses reads, appends and subscriptions.
    REMOVED = "removed"

    @staticmethod
    def from_proto(value: int) -> Role:
        roles: dict[int, Role] = {
            pb.ROLE_LEADER: Role.LEADER,
            pb.ROLE_FOLLOWER: Role.FOLLOWER,
            pb.ROLE_CANDIDATE: Role.CANDIDATE,
            pb.ROLE_LEARNER: Role.LEARNER,
            pb.ROLE_REMOVED: Role.REMOVED,
        }
        return roles.get(value, Role.UNKNOWN)


@dataclass(frozen=True)
class Member:
    id: int
    endpoint: str
    role: Role
    #: Whether the member answered; the fields below mean something only if it did.
    reachable: bool
    term: int
    last_applied_index: int
    #: The ``$all`` position the member's next event will get (= events applied).
    applied_position: int


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as node ``node_id`` sees it."""

    node_id: int
    leader_id: Optional[int]
    #: The leader's URL, empty when no leader is known.
    leader_endpoint: str
    term: int
    members: list[Member]

    @staticmethod
    def from_proto(status: pb.StatusResponse) -> ClusterStatus:
        return ClusterStatus(
            node_id=status.node_id,
            leader_id=status.leader_id if status.HasField("leader_id") else None,
            leader_endpoint=status.leader_endpoint,
            term=status.term,
            members=[
                Member(
                    id=m.id,
                    endpoint=m.endpoint,
                    role=Role.from_proto(m.role),
                    reachable=m.reachable,
                    term=m.term,
                    last_applied_index=m.last_applied_index,
                    applied_position=m.applied_position,
                )
                for m in status.members
            ],
        )


@dataclass(frozen=True)
class Membership:
    """The membership after ``add_node`` or ``remove_node``."""

    #: Voter ids, ascending.
    voters: list[int]
    #: Learner ids (members that replicate but do not vote), ascending.
    learners: list[int]
    #: Nothing had to change: a retry found the change already made.
    unchanged: bool
    #: The leader that made (or found) the change.
    leader_id: int

    @staticmethod
    def from_proto(response: pb.MembershipResponse) -> Membership:
        return Membership(
            voters=sorted(response.voters),
            learners=sorted(response.learners),
            unchanged=response.unchanged,
            leader_id=response.leader_id,
        )
