"""``AsyncWorker``: the scientist's client, as coroutines, and ``aconnect``.

This is the one implementation of talking to a worker. The blocking
:class:`~kernel_bridge.scientist.worker.Worker` notebooks use is generated
from it (each method runs the coroutine on a background loop), so an
orchestrator that talks to many workers at once can ``await`` them together::

    import asyncio, kernel_bridge as kb

    async def main():
        alice, bob = await asyncio.gather(kb.aconnect(url_a, token_a),
                                          kb.aconnect(url_b, token_b))
        receipts = await asyncio.gather(alice.run(code), bob.run(code))
        ...

Pointers, requests and receipts an ``AsyncWorker`` hands out are the same
classes the blocking API uses; their values are reached with the worker's
coroutines (``await alice.get(ptr)``, ``await alice.wait(req)``), since a
blocking call cannot wait inside the event loop it would wait on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from websockets.exceptions import InvalidHandshake

from ..errors import ConnectionLost
from ..wire.protocol import Op, OpKind
from . import he
from .connection import Connection
from .dp import DPQuery, DPResult
from .plans import Plan, PlanRun
from .plans import submit as _submit_plan
from .pointer import Pointer
from .receipt import Receipt, run_cell
from .request import Request

T = TypeVar("T")


class Dataset(dict):  # type: ignore[type-arg]
    """A worker's public description of one asset (a dict with a readable repr)."""

    def __repr__(self) -> str:
        cols = self.get("schema", {}).get("columns")
        schema = ", ".join(f"{c['name']}:{c['kind']}" for c in cols) if cols else \
            f"{self.get('schema', {}).get('dtype')} {self.get('schema', {}).get('shape')}"
        rows = f", {self['rows']} rows" if self.get("rows") is not None else ""
        return f"<Dataset {self['name']} ({self['type']}{rows}): {schema}>"


class AsyncWorker:
    """A connection to one worker whose methods are coroutines.

    Made by :func:`aconnect` (or by a blocking ``Worker``, which wraps one).
    It implements :class:`~kernel_bridge.scientist._session.Session`, the
    interface the pointers, requests and receipts it hands out talk through.

    Parameters
    ----------
    url : str
        ``ws://host:port`` of the worker (``wss://`` with TLS).
    token : str
        The token the data owner gave you.
    name : str, optional
        A local name for the worker (defaults to the worker's own name).
    fingerprint : str, optional
        For a ``wss://`` worker: its certificate's SHA-256 fingerprint, to pin.
    open_timeout : float
        Seconds to wait for the worker to answer when connecting.
    handle : object, optional
        What the objects it hands out call their ``worker`` (the blocking
        ``Worker`` wrapping this one); itself by default.
    """

    def __init__(self, url: str, token: str, name: str | None = None,
                 fingerprint: str | None = None, open_timeout: float = 30.0,
                 handle: Any = None) -> None:
        self.conn = Connection(url, token, fingerprint=fingerprint, open_timeout=open_timeout)
        self.url = url
        self._name = name
        # Weakly: a Worker that nobody holds goes away (and leaves connected_workers()).
        self._handle: weakref.ref[Any] | None = None if handle is None else weakref.ref(handle)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconnect_lock: asyncio.Lock | None = None
        self._generation = 0

    async def open(self) -> AsyncWorker:
        """Connect and authenticate (the event loop it runs in becomes the worker's)."""
        self._loop = asyncio.get_running_loop()
        await self.conn.open()
        return self

    def __repr__(self) -> str:
        state = "connected" if self.conn.connected else "disconnected"
        return f"<AsyncWorker {self.name} {self.url} ({state}, session {self.session_id})>"

    # -- what it is -------------------------------------------------------------
    @property
    def name(self) -> str:
        """The local name (the worker's own unless one was given)."""
        return self._name or str(self.conn.info.get("worker"))

    @property
    def core(self) -> AsyncWorker:
        """The session: this worker itself."""
        return self

    @property
    def handle(self) -> Any:
        """What the pointers, requests and receipts it hands out call their ``worker``."""
        handle = None if self._handle is None else self._handle()
        return self if handle is None else handle

    @property
    def session_id(self) -> str:
        """Your session's id on the worker (kept across reconnects that resume it)."""
        return str(self.conn.info.get("session"))

    @property
    def scientist(self) -> str:
        """Who the worker knows you as (the name on your token)."""
        return str(self.conn.info.get("scientist"))

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self.conn.connected

    @property
    def stats(self) -> dict[str, int]:
        """Messages and bytes exchanged with the worker, and calls in flight."""
        c = self.conn
        return {"messages": c.messages, "bytes_sent": c.bytes_sent,
                "bytes_received": c.bytes_received, "in_flight": len(c._pending)}

    # -- the Session interface ---------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on this worker's event loop from another thread.

        Raises
        ------
        RuntimeError
            Called from inside that loop (whose caller would wait on itself):
            ``await`` the worker's coroutine there instead.
        """
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            coro.close()
            raise RuntimeError("a blocking syftlab call inside the event loop of an "
                               "AsyncWorker: await the worker's coroutine instead "
                               "(e.g. `await worker.get(ptr)`)")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on this worker's event loop from another thread and wait.

        Raises
        ------
        RuntimeError
            Called from inside that loop (which would wait on itself).
        """
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    async def call(self, op: Op, **fields: Any) -> dict[str, Any]:
        """One request; reconnects (resuming the session) once if the connection dropped."""
        try:
            return await self.conn.call(op, **fields)
        except ConnectionLost:
            if self.conn.connected:
                raise
            await self.reconnect()
            return await self.conn.call(op, **fields)

    async def call_once(self, op: Op, reply_timeout: float | None = None,
                        **fields: Any) -> dict[str, Any]:
        """One request that never reconnects (and waits at most ``reply_timeout`` s)."""
        if reply_timeout is None:
            return await self.conn.call(op, **fields)
        return await asyncio.wait_for(self.conn.call(op, reply_timeout=reply_timeout, **fields),
                                      reply_timeout + 1.0)

    async def fetch_value(self, reply: dict[str, Any]) -> Any:
        """The value a ``get`` reply carries (inline, or over the bulk path)."""
        return await self.conn.fetch_value(reply)

    async def fetch_frame(self, reply: dict[str, Any]) -> bytes | bytearray | memoryview:
        """The encoded value a ``request_result`` reply carries."""
        return await self.conn.fetch_frame(reply)

    async def send_value(self, op: Op, value: Any, **fields: Any) -> dict[str, Any]:
        """Call ``op`` with ``value`` (large values travel over the bulk path first)."""
        return await self.conn.send_value(op, value, **fields)

    # -- the worker --------------------------------------------------------------
    async def reconnect(self, attempts: int = 20, delay: float = 0.25) -> bool:
        """Reconnect, resuming the session if the worker still has it.

        Returns True when the old session (and its pointers) came back.
        """
        if self._reconnect_lock is None:
            self._reconnect_lock = asyncio.Lock()
        generation = self._generation
        async with self._reconnect_lock:  # a poller and the user may both notice a drop
            if self._generation != generation and self.conn.connected:
                return bool(self.conn.info.get("resumed"))  # another caller just did it
            last: Exception | None = None
            for _ in range(attempts):
                try:
                    await self.conn.close()
                    info = await self.conn.open(resume=True)
                    self._generation += 1
                    return bool(info.get("resumed"))
                except (OSError, ConnectionLost, InvalidHandshake) as exc:
                    last = exc  # InvalidHandshake: the worker died mid-handshake
                    await asyncio.sleep(delay)
        raise ConnectionLost(f"could not reconnect to {self.url}: {last}")

    async def datasets(self) -> list[Dataset]:
        """The worker's assets: names, descriptions, schemas, mock previews."""
        return [Dataset(d) for d in (await self.call(Op.DATASETS))["datasets"]]

    async def send(self, value: Any, mock: bool = False) -> Pointer:
        """Place ``value`` in your session on the worker; returns a (clean) pointer."""
        reply = await self.send_value(Op.SEND, value, mock=mock)
        return Pointer(self, reply["pointer"])

    async def asset(self, name: str, mock: bool = False) -> Pointer:
        """A pointer to a private asset (tainted with its name), or to its mock."""
        return Pointer(self, (await self.call(Op.ASSET, name=name, mock=mock))["pointer"])

    async def var(self, name: str, mock: bool = False) -> Pointer:
        """A pointer to a variable of your session's private (or mock) kernel."""
        return Pointer(self, (await self.call(Op.VAR, name=name, mock=mock))["pointer"])

    async def run(self, code: str, mock: bool = False, timeout: float | None = None
                  ) -> Receipt:
        """Run a cell in your session's private kernel (or mock kernel with ``mock=True``).

        From the private kernel you get a :class:`Receipt`, never outputs: they
        are held, and can be requested.
        """
        return await run_cell(self, code, mock, timeout)

    async def interrupt(self, mock: bool = False) -> None:
        """Interrupt what your session's kernel is running."""
        await self.call(Op.INTERRUPT, mock=mock)

    async def restart(self, mock: bool = False) -> None:
        """Restart your session's kernel: clean slate, old pointers into it are gone."""
        await self.call(Op.RESTART, mock=mock)

    async def requests(self, timeout: float | None = None) -> list[Request]:
        """Your requests on this worker, oldest first.

        With ``timeout`` the call fails fast (``TimeoutError``, or ``ConnectionLost``
        without reconnecting), as a monitor such as a widget needs.
        """
        reply = await (self.call(Op.REQUESTS) if timeout is None else
                       self.call_once(Op.REQUESTS, reply_timeout=timeout))
        return [Request(self, r) for r in reply["requests"]]

    async def request_by_id(self, request_id: int) -> Request:
        """Find one of your requests again (e.g. after a reconnect)."""
        return Request(self, (await self.call(Op.REQUEST_STATUS,
                                              request=request_id))["request"])

    async def budget(self) -> dict[str, dict[str, Any]]:
        """Your DP budget on each asset: ``epsilon_spent``, ``epsilon_limit``,
        ``epsilon_remaining``, ``delta_spent``, ``delta_limit``."""
        return dict((await self.call(Op.BUDGET))["budget"])

    async def he_services(self) -> list[dict[str, Any]]:
        """The worker's HE services (encrypted predictions, encrypted evaluation),
        with your predictions used and your budgets."""
        return await he.services(self)

    async def he_predict(self, pointer: Pointer, enc_x: Any) -> Any:
        """``pointer.he_predict(enc_x)``: the owner's model on your encrypted input."""
        return await pointer._ahe_predict(enc_x)

    async def he_evaluate(self, pointer: Pointer, enc_weights: Any, metric: str = "mse"
                          ) -> Any:
        """``pointer.he_evaluate(enc_weights)``: an encrypted DP evaluation of your model."""
        return await pointer._ahe_evaluate(enc_weights, metric)

    async def ping(self, timeout: float | None = None) -> float:
        """Round-trip time to the worker, in seconds.

        With ``timeout`` a silent worker raises ``TimeoutError`` after that many
        seconds and a lost connection raises ``ConnectionLost`` at once (no reconnect).
        """
        t = time.perf_counter()
        if timeout is None:
            await self.call(Op.PING)
        else:
            await self.call_once(Op.PING, reply_timeout=timeout)
        return time.perf_counter() - t

    # -- what the blocking objects do, awaited ------------------------------------
    async def get(self, pointer: Pointer) -> Any:
        """``pointer.get()``: the value, if it may leave the worker without approval."""
        return await pointer._aget()

    async def request(self, pointer: Pointer, reason: str = "") -> Request:
        """``pointer.request(reason)``: ask the owner to release the value."""
        return await pointer._arequest(reason)

    async def delete(self, pointer: Pointer) -> None:
        """``pointer.delete()``: free the remote object."""
        await pointer._adelete()

    async def op(self, pointer: Pointer, kind: OpKind | str, name: str, *args: Any,
                 reflected: bool = False, **kwargs: Any) -> Pointer:
        """One remote operation, as a pointer operator would run it.

        ``await w.op(p, "binop", "add", 1)`` is ``p + 1``;
        ``await w.op(p, "method", "sum")`` is ``p.sum()``;
        ``await w.op(p, "getitem", "getitem", "age")`` is ``p["age"]``.
        """
        return await pointer._anew(OpKind(kind), name, list(args), kwargs, reflected)

    async def wait(self, request: Request, timeout: float | None = 600.0,
                   poll: float = 30.0) -> Request:
        """``request.wait()``: until the owner decides (or ``timeout`` s pass)."""
        return await request._await(timeout, poll)

    async def refresh(self, request: Request) -> Request:
        """``request.refresh()``: the request's status now."""
        return await request._arefresh()

    async def result(self, request: Request) -> Any:
        """``request.result()``: the released value (or ``RequestPending``/``RequestDenied``)."""
        return await request._aresult()

    async def accuracy(self, query: DPQuery, alpha: float = 0.05,
                       rows: int | None = None) -> Any:
        """``query.accuracy()``: the ± a release would have; spends nothing."""
        return await query._aaccuracy(alpha, rows)

    async def release(self, query: DPQuery, alpha: float = 0.05) -> DPResult:
        """``query.release()``: run a DP query, spending its ε."""
        return await query._arelease(alpha)

    # -- plans ---------------------------------------------------------------------
    async def submit_plan(self, doc: dict[str, Any], reason: str = "") -> Plan:
        """Submit a plan (:mod:`kernel_bridge.plan_document`) for the owner's approval.

        Returns a :class:`~kernel_bridge.scientist.plans.Plan` (pending). The same
        document submitted again gives the same plan back while it is not denied.
        """
        return await _submit_plan(self, doc, reason)

    async def plans(self, timeout: float | None = None) -> list[Plan]:
        """Your plans on this worker, oldest first (status, runs used, ε spent).

        With ``timeout`` the call fails fast, as :meth:`requests` does (for monitors).
        """
        reply = await (self.call(Op.PLANS) if timeout is None else
                       self.call_once(Op.PLANS, reply_timeout=timeout))
        return [Plan(self.handle, p) for p in reply["plans"]]

    async def plan_by_id(self, plan_id: int) -> Plan:
        """Find one of your plans again (e.g. after a reconnect)."""
        return Plan(self.handle, (await self.call(Op.PLAN_STATUS, plan=plan_id))["plan"])

    async def wait_plan(self, plan: Plan, timeout: float | None = 600.0) -> Plan:
        """``plan.wait()``: until the owner decides (or ``timeout`` s pass)."""
        return await plan._await(timeout)

    async def refresh_plan(self, plan: Plan) -> Plan:
        """``plan.refresh()``: the plan's status and progress now."""
        return await plan._arefresh()

    async def run_plan(self, plan: Plan, /, **args: Any) -> PlanRun:
        """``plan.run(**args)``: one run under the plan's policy."""
        return await plan._arun(**args)

    async def close(self) -> None:
        """Close the connection (the session stays on the worker for a while)."""
        await self.conn.close()

    async def __aenter__(self) -> AsyncWorker:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def aconnect(url: str, token: str, name: str | None = None,
                   fingerprint: str | None = None, open_timeout: float = 30.0
                   ) -> AsyncWorker:
    """Connect to a worker from an asyncio program.

    The same as :func:`~kernel_bridge.connect`, with coroutines:
    ``worker = await kb.aconnect(url, token)``, then ``await worker.run(code)``.

    Parameters
    ----------
    url : str
        ``ws://host:port`` (or ``wss://`` for TLS) the data owner gave you.
    token : str
        Your token.
    name : str, optional
        Local name for the worker.
    fingerprint : str, optional
        ``sha256:...`` of a ``wss://`` worker's certificate, to pin.
    open_timeout : float
        Seconds to wait for the worker to answer.

    Returns
    -------
    AsyncWorker
    """
    return await AsyncWorker(url, token, name, fingerprint=fingerprint,
                             open_timeout=open_timeout).open()
