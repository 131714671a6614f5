"""The one call policy: after a failed attempt, where the next one goes, whether it pauses
first, what the last cause was, and when to give up. Appends, reads, membership changes and
subscriptions keep one :class:`Retries` each (the Rust client's client/src/policy.rs)."""

from __future__ import annotations

import asyncio
from typing import Optional

from cairn.endpoints import Endpoints, Node
from cairn.errors import Unavailable

#: First pause between attempts; doubles on each retry up to :data:`RETRY_BACKOFF_MAX_MS`.
RETRY_BACKOFF_INITIAL_MS = 20
#: Longest pause between attempts.
RETRY_BACKOFF_MAX_MS = 500
#: Attempts of an append (and of opening a read, and of a membership change) before
#: :class:`~cairn.Unavailable`; with the backoff, about 8 s: enough for a leader election.
DEFAULT_MAX_APPEND_ATTEMPTS = 20
#: Consecutive (re)subscribe attempts that delivered nothing before a subscription ends with
#: :class:`~cairn.Unavailable` (about 8 s with the backoff).
MAX_RESUBSCRIBE_ATTEMPTS = 20


def backoff_ms(retry: int) -> int:
    """The pause before retry number ``retry`` (0-based): exponential, capped, no jitter
    (the same pauses as the Rust client)."""
    return min(RETRY_BACKOFF_INITIAL_MS * (1 << min(retry, 32)), RETRY_BACKOFF_MAX_MS)


class Retries:
    """The state of one call's attempts."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.failures = 0
        self._pauses = 0
        #: The next attempt follows a leader hint that just came in: no pause.
        self._redirected = False
        self._hinted: Optional[Node] = None
        #: Nodes that failed this round: the next choice avoids them.
        self.tried: list[Node] = []
        self.last_cause = "no attempt yet"

    def failed(
        self,
        endpoints: Endpoints,
        node: Node,
        cause: str,
        leader: Optional[str],
        counts: bool = True,
    ) -> None:
        """Records a failed attempt at ``node``. A usable leader hint is where the next
        attempt goes, at once if it is fresh news (not a hint that bounced, not ``node``);
        anything else forgets ``node`` as leader and avoids it. ``counts``: whether the
        attempt counts against the bound."""
        if counts:
            self.failures += 1
        self.last_cause = f"{node.url}: {cause}"
        hinted = endpoints.follow_hint(leader) if leader else None
        if hinted is not None:
            self._redirected = not self._redirected and hinted is not node
            self._hinted = hinted
        else:
            self._redirected = False
            self._hinted = None
            endpoints.avoid(node, self.tried)

    def noted(self, node: Node, cause: str) -> None:
        """A failed attempt that steers nothing (a status sweep over every endpoint)."""
        self.failures += 1
        self.last_cause = f"{node.url}: {cause}"

    def exhausted(self) -> bool:
        return self.failures >= self.max_attempts

    async def pause(self) -> None:
        """Waits before the next attempt, unless it follows a fresh leader hint."""
        if not self._redirected:
            await asyncio.sleep(backoff_ms(self._pauses) / 1000)
            self._pauses += 1

    def take_hinted(self) -> Optional[Node]:
        hinted, self._hinted = self._hinted, None
        return hinted

    def succeeded(self) -> None:
        """Something got through: the count, the backoff and the avoided nodes start again."""
        self.failures = 0
        self._pauses = 0
        self._redirected = False
        self._hinted = None
        self.tried.clear()

    def give_up(self, what: str) -> Unavailable:
        return Unavailable(
            f"{what} gave up after {self.max_attempts} attempts; last: {self.last_cause}"
        )
