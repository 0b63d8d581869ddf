"""The worker's services: each owns a set of operations and their state.

The worker's core (:mod:`..server`) listens, authenticates, keeps sessions and
dispatches each message to the service that owns its op. To add a service
(SMPC, plans, HE follow this way):

1. subclass :class:`Service` in a module of this package;
2. return ``{Op.X: self.op_x, ...}`` from :meth:`Service.ops` (add the names to
   :class:`~kernel_bridge.wire.protocol.Op` first);
3. give each handler a docstring saying what it takes, what it returns and
   what it may release to the scientist; a handler takes ``(session, msg)``
   and returns the reply's fields, or raises a typed
   :class:`~kernel_bridge.errors.SyftError`;
4. if an op reads or changes a session's kernels, say which in
   :meth:`Service.kernels`, so it runs in order after earlier messages on them;
5. register it in ``WorkerServer.__init__``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ...wire.protocol import Op
from ..context import WorkerContext
from ..session import Session

Handler = Callable[[Session, dict[str, Any]], Awaitable[dict[str, Any]]]


class Service:
    """One area of the worker: its ops, their state and their docs.

    Parameters
    ----------
    ctx : WorkerContext
        Settings, state and kernel access shared by all services.
    """

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def ops(self) -> Mapping[Op, Handler]:
        """The operations this service answers."""
        raise NotImplementedError

    def kernels(self, op: Op, session: Session, msg: dict[str, Any]) -> set[str]:
        """The session's kernels a message may read or change (none by default)."""
        return set()
