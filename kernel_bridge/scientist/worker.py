"""``Worker``: the scientist's blocking handle on one worker, and ``connect``.

Every method is generated from :class:`~kernel_bridge.scientist.async_worker.AsyncWorker`'s
coroutine of the same name (run on one background event loop, which works
whether or not the caller's thread runs a loop of its own, as Jupyter's does),
the way ``jupyter_client`` builds its blocking client from the async one.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..wire.protocol import Op
from ._loop import run_sync
from .async_worker import AsyncWorker, Dataset
from .connection import Connection
from .pointer import Pointer
from .receipt import Receipt, run_blocking

__all__ = ["Dataset", "Worker", "connect", "connected_workers"]

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(fn: Callable[Concatenate[AsyncWorker, P], Coroutine[Any, Any, T]]
              ) -> Callable[Concatenate[Worker, P], T]:
    """``Worker.method``: ``AsyncWorker.method`` run on the background loop and waited for."""

    @functools.wraps(fn)
    def method(self: Worker, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._core.blocking(fn(self._core, *args, **kwargs))

    method.__qualname__ = f"Worker.{fn.__name__}"
    return method


class _Vars:
    """``worker.vars["s"]``: pointers to variables in a session kernel."""

    def __init__(self, worker: Worker, mock: bool) -> None:
        self._worker, self._mock = worker, mock

    def __getitem__(self, name: str) -> Pointer:
        return self._worker._core.blocking(self._worker._core.var(name, self._mock))

    def __repr__(self) -> str:
        return f"<{'mock ' if self._mock else ''}variables on {self._worker.name}>"


class Worker:
    """A connection to one worker, as the scientist uses it.

    Parameters
    ----------
    url : str
        ``ws://host:port`` of the worker.
    token : str
        The token the data owner gave you.
    name : str, optional
        A local name for the worker (defaults to the worker's own name).
    fingerprint : str, optional
        For a ``wss://`` worker: its certificate's SHA-256 fingerprint, to pin.
    open_timeout : float
        Seconds to wait for the worker to answer when connecting.
    """

    def __init__(self, url: str, token: str, name: str | None = None,
                 fingerprint: str | None = None, open_timeout: float = 30.0) -> None:
        self._core = AsyncWorker(url, token, name, fingerprint=fingerprint,
                                 open_timeout=open_timeout, handle=self)
        run_sync(self._core.open())
        _OPEN.add(self)
        self.url = url
        self.vars = _Vars(self, mock=False)
        self.mock_vars = _Vars(self, mock=True)
        self.process: Any = None  # set by launch()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<Worker {self.name} {self.url} ({state}, session {self.session_id})>"

    @property
    def name(self) -> str:
        """The local name (the worker's own unless one was given)."""
        return self._core.name

    @name.setter
    def name(self, value: str) -> None:
        self._core._name = value

    @property
    def core(self) -> AsyncWorker:
        """The :class:`AsyncWorker` behind this handle (its session)."""
        return self._core

    @property
    def session_id(self) -> str:
        """Your session's id on the worker (kept across reconnects that resume it)."""
        return self._core.session_id

    @property
    def scientist(self) -> str:
        """Who the worker knows you as (the name on your token)."""
        return self._core.scientist

    @property
    def connected(self) -> bool:
        """Whether the connection is open (calls reconnect by themselves when it is not)."""
        return self._core.connected

    @property
    def stats(self) -> dict[str, int]:
        """Messages and bytes this handle exchanged with the worker."""
        return self._core.stats

    # -- plumbing (tests and monitors use these) ---------------------------------
    @property
    def _conn(self) -> Connection:
        return self._core.conn

    def _call(self, op: Op | str, **fields: Any) -> dict[str, Any]:
        return self._core.blocking(self._core.call(Op(op), **fields))

    def _call_once(self, op: Op | str, timeout: float, **fields: Any) -> dict[str, Any]:
        """One call that neither reconnects nor waits past ``timeout`` (for monitors)."""
        return self._core.blocking(self._core.call_once(Op(op), reply_timeout=timeout,
                                                        **fields), timeout + 1.0)

    # -- public API (generated from AsyncWorker) ---------------------------------
    reconnect = _blocking(AsyncWorker.reconnect)
    send = _blocking(AsyncWorker.send)
    asset = _blocking(AsyncWorker.asset)
    interrupt = _blocking(AsyncWorker.interrupt)
    restart = _blocking(AsyncWorker.restart)
    requests = _blocking(AsyncWorker.requests)
    request_by_id = _blocking(AsyncWorker.request_by_id)
    budget = _blocking(AsyncWorker.budget)
    ping = _blocking(AsyncWorker.ping)
    # plans
    submit_plan = _blocking(AsyncWorker.submit_plan)
    plans = _blocking(AsyncWorker.plans)
    plan_by_id = _blocking(AsyncWorker.plan_by_id)
    wait_plan = _blocking(AsyncWorker.wait_plan)
    refresh_plan = _blocking(AsyncWorker.refresh_plan)
    run_plan = _blocking(AsyncWorker.run_plan)

    @property
    def datasets(self) -> list[Dataset]:
        """The worker's assets: names, descriptions, schemas, mock previews."""
        return self._core.blocking(self._core.datasets())

    def run(self, code: str, mock: bool = False, timeout: float | None = None) -> Receipt:
        """Run a cell in your session's private kernel (or mock kernel with ``mock=True``).

        From the private kernel you get a :class:`Receipt`, never outputs: they
        are held, and can be requested. Ctrl-C interrupts the remote cell.
        """
        return run_blocking(self._core, code, mock, timeout)

    def close(self) -> None:
        """Close the connection (and stop the worker if :func:`launch` started it)."""
        self._core.blocking(self._core.close())
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a Worker is not iterable")


#: Every Worker this process opened (weakly held): what a notebook's kernel is connected to.
_OPEN: weakref.WeakSet[Worker] = weakref.WeakSet()


class _Listing(list):  # type: ignore[type-arg]
    """A list that IPython also formats as ``application/json``."""

    def _repr_json_(self) -> list[Any]:
        return list(self)


def connected_workers() -> list[dict[str, str]]:
    """The workers this process holds open connections to: ``name`` and ``url``.

    JupyterLab's status bar asks a notebook's kernel this (instead of guessing
    from the words in its cells) to show the budget of the workers it really uses.
    """
    return _Listing(sorted(({"name": w.name, "url": w.url} for w in list(_OPEN)
                            if w.connected), key=lambda d: (d["name"], d["url"])))


def connect(url: str, token: str, name: str | None = None,
            fingerprint: str | None = None, open_timeout: float = 30.0) -> Worker:
    """Connect to a worker as a data scientist.

    Parameters
    ----------
    url : str
        ``ws://host:port`` (or ``wss://`` for TLS) the data owner gave you.
    token : str
        Your token (``syftlab token add YOU`` on the owner's side).
    name : str, optional
        Local name for the worker.
    fingerprint : str, optional
        ``sha256:...`` of a ``wss://`` worker's certificate, from the data owner
        (``syftlab tls fingerprint``): the connection is refused with
        :class:`~kernel_bridge.errors.CertificateMismatch`, before your token is
        sent, when the worker presents another certificate.
    open_timeout : float
        Seconds to wait for the worker to answer.

    Returns
    -------
    Worker
    """
    return Worker(url, token, name, fingerprint=fingerprint, open_timeout=open_timeout)
