"""Program order for a session's pipelined messages.

A client may send many messages without waiting for replies; each becomes a
task. :class:`Sequencer` makes every message that touches a kernel wait for
all earlier messages of the same session that touch that kernel, so a release
check can never run before an earlier cell or operation that could change the
value it checks (no time-of-check/time-of-use under pipelining). Messages that
touch no kernel (DP queries, request status, interrupt) are not ordered: an
interrupt must be able to overtake the cell it stops.

The order is taken when a message's task first runs, which asyncio does in
the order the tasks were created, that is, in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType


class Ticket:
    """A message's place in its kernels' queues; ``async with`` waits for its turn."""

    def __init__(self, waits: list[asyncio.Future[None]], mine: asyncio.Future[None]) -> None:
        self._waits = waits
        self._mine = mine

    async def __aenter__(self) -> Ticket:
        for fut in self._waits:
            # shield: a cancelled waiter must not cancel the earlier message's future
            await asyncio.shield(fut)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.done()

    def done(self) -> None:
        """Let the next messages go (idempotent)."""
        if not self._mine.done():
            self._mine.set_result(None)


class Sequencer:
    """Per-kernel FIFO order of one session's messages."""

    def __init__(self) -> None:
        self._tail: dict[str, asyncio.Future[None]] = {}

    def enter(self, kernels: Iterable[str]) -> Ticket:
        """Queue a message behind every earlier one on any of ``kernels`` (call synchronously)."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waits = []
        for k in set(kernels):
            prev = self._tail.get(k)
            if prev is not None and not prev.done() and prev not in waits:
                waits.append(prev)
            self._tail[k] = mine
        return Ticket(waits, mine)
