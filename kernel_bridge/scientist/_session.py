"""The small interface pointers, requests, receipts and DP queries need of a worker.

:class:`~kernel_bridge.scientist.async_worker.AsyncWorker` implements it (the
one implementation of talking to a worker); the objects it hands out hold a
:class:`Session` and nothing else of the worker, so this module sits below
them all and imports none of them.

Every object's behaviour is a coroutine (``_aget``, ``_aresult``, ...); its
blocking method is generated from it by :func:`blocking`, the way
``jupyter_client`` builds its blocking client from the async one (``run_sync``),
so the two faces cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from ..wire.protocol import Op

T = TypeVar("T")
P = ParamSpec("P")


class Session(Protocol):
    """One authenticated session on a worker, as seen by the objects that live in it."""

    @property
    def name(self) -> str:
        """The worker's local name (shown in reprs and markers)."""
        ...

    @property
    def core(self) -> Session:
        """The session itself (so a blocking handle and its core both pass as one)."""
        ...

    @property
    def handle(self) -> Any:
        """What ``ptr.worker`` returns: the blocking ``Worker`` wrapping it, or itself."""
        ...

    def blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the session's event loop from another thread and wait."""
        ...

    async def call(self, op: Op, **fields: Any) -> dict[str, Any]:
        """One request; reconnects (resuming the session) once if the connection dropped."""
        ...

    async def call_once(self, op: Op, reply_timeout: float | None = None,
                        **fields: Any) -> dict[str, Any]:
        """One request that never reconnects (and waits at most ``reply_timeout`` s)."""
        ...

    async def fetch_value(self, reply: dict[str, Any]) -> Any:
        """The value a ``get`` reply carries (inline, or over the bulk path)."""
        ...

    async def fetch_frame(self, reply: dict[str, Any]) -> bytes | bytearray | memoryview:
        """The encoded value a ``request_result`` reply carries."""
        ...

    async def send_value(self, op: Op, value: Any, **fields: Any) -> dict[str, Any]:
        """Call ``op`` with ``value`` (large values travel over the bulk path first)."""
        ...


class Handle(Protocol):
    """Anything that leads to a session: an ``AsyncWorker``, a ``Worker``."""

    @property
    def core(self) -> Session:
        """The session behind the handle."""
        ...


class HasSession(Protocol):
    """An object living in a session (a pointer, a request, a receipt...)."""

    _session: Session


class RemoteObject(Protocol):
    """What a DP query needs of the pointer it runs on."""

    _session: Session

    @property
    def id(self) -> str:
        """The object's id in the session."""
        ...

    @property
    def taint(self) -> frozenset[str]:
        """The private assets it derives from."""
        ...


S = TypeVar("S", bound=HasSession)


def blocking(fn: Callable[Concatenate[S, P], Coroutine[Any, Any, T]]
             ) -> Callable[Concatenate[S, P], T]:
    """The blocking twin of a coroutine method: run it on its session's loop and wait.

    ``get = blocking(_aget)`` in a class body gives ``obj.get()`` the docstring
    and the behaviour of ``await obj._aget()``.
    """

    @functools.wraps(fn)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._session.blocking(fn(self, *args, **kwargs))

    name = fn.__name__.removeprefix("_a")
    method.__name__ = name
    method.__qualname__ = fn.__qualname__.rpartition(".")[0] + "." + name
    return method
