"""``Worker``: the scientist's blocking handle on one worker, and ``connect``."""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import InvalidHandshake

from ..errors import ConnectionLost, Interrupted, ProtocolError
from ..wire import codec
from ._loop import run_sync
from .connection import Connection
from .pointer import Pointer, _wire_arg
from .receipt import Receipt
from .request import Request


class Dataset(dict):  # type: ignore[type-arg]
    """A worker's public description of one asset (a dict with a readable repr)."""

    def __repr__(self) -> str:
        cols = self.get("schema", {}).get("columns")
        schema = ", ".join(f"{c['name']}:{c['kind']}" for c in cols) if cols else \
            f"{self.get('schema', {}).get('dtype')} {self.get('schema', {}).get('shape')}"
        rows = f", {self['rows']} rows" if self.get("rows") is not None else ""
        return f"<Dataset {self['name']} ({self['type']}{rows}): {schema}>"


class _Vars:
    """``worker.vars["s"]``: pointers to variables in a session kernel."""

    def __init__(self, worker: Worker, mock: bool) -> None:
        self._worker, self._mock = worker, mock

    def __getitem__(self, name: str) -> Pointer:
        return Pointer(self._worker, self._worker._call("var", name=name,
                                                        mock=self._mock)["pointer"])

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
        self._conn = Connection(url, token, fingerprint=fingerprint, open_timeout=open_timeout)
        run_sync(self._conn.open())
        _OPEN.add(self)
        self.name = name or str(self._conn.info.get("worker"))
        self.url = url
        self.vars = _Vars(self, mock=False)
        self.mock_vars = _Vars(self, mock=True)
        self.process: Any = None  # set by launch()
        # One reconnect at a time: a widget's poller and the user's call may both notice a drop.
        self._reconnect_lock = threading.Lock()
        self._generation = 0

    def __repr__(self) -> str:
        state = "connected" if self._conn.connected else "disconnected"
        return f"<Worker {self.name} {self.url} ({state}, session {self.session_id})>"

    @property
    def session_id(self) -> str:
        return str(self._conn.info.get("session"))

    @property
    def scientist(self) -> str:
        return str(self._conn.info.get("scientist"))

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def stats(self) -> dict[str, int]:
        """Messages and bytes this handle exchanged with the worker."""
        c = self._conn
        return {"messages": c.messages, "bytes_sent": c.bytes_sent,
                "bytes_received": c.bytes_received, "in_flight": len(c._pending)}

    # -- plumbing ---------------------------------------------------------------
    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            return run_sync(self._conn.call(op, **fields))
        except ConnectionLost:
            if self._conn.connected:
                raise
            self.reconnect()
            return run_sync(self._conn.call(op, **fields))

    def _call_once(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """One call that neither reconnects nor waits past ``timeout`` (for monitors)."""
        return run_sync(self._conn.call(op, reply_timeout=timeout, **fields), timeout + 1.0)

    def _op(self, target: Pointer, kind: str, name: str, args: list[Any] | None = None,
            kwargs: dict[str, Any] | None = None, reflected: bool = False) -> dict[str, Any]:
        for v in [*(args or []), *(kwargs or {}).values()]:
            if isinstance(v, Pointer) and v.worker is not self:
                raise ProtocolError("pointers from different workers cannot be combined; "
                                    "move data with send() or use SMPC")
        reply = self._call("op", target=target.id, kind=kind, name=name,
                           args=_wire_arg(list(args or [])), kwargs=_wire_arg(dict(kwargs or {})),
                           reflected=reflected)
        return reply["pointer"] or target._resolved()

    def _get(self, ptr: Pointer) -> Any:
        async def go() -> Any:
            reply = await self._conn.call("get", id=ptr.id)
            return await self._conn.fetch_value(reply)
        return run_sync(go())

    def _request(self, ptr: Pointer, reason: str) -> Request:
        return Request(self, self._call("request", id=ptr.id, reason=reason)["request"])

    def _request_result(self, req: Request) -> Any:
        async def go() -> Any:
            reply = await self._conn.call("request_result", request=req.id)
            data = await self._conn.fetch_frame(reply)
            # The value must be the one the owner saw: check it against the request's hash.
            # (The request's own hash, when it was shown before release, must agree too.)
            if hashlib.sha256(data).hexdigest() != reply["sha256"] or \
                    (req.sha256 is not None and reply["sha256"] != req.sha256):
                raise ProtocolError("released value does not match the approved snapshot")
            req._info.update(sha256=reply["sha256"], size=len(data))
            return codec.loads(data, limit=None)
        return run_sync(go())

    def _delete(self, ids: list[str]) -> None:
        self._call("delete", ids=ids)

    # -- public API -------------------------------------------------------------
    def reconnect(self, attempts: int = 20, delay: float = 0.25) -> bool:
        """Reconnect, resuming the session if the worker still has it.

        Returns True when the old session (and its pointers) came back.
        """
        generation = self._generation
        with self._reconnect_lock:
            if self._generation != generation and self._conn.connected:
                return bool(self._conn.info.get("resumed"))  # another thread just did it
            last: Exception | None = None
            for _ in range(attempts):
                try:
                    run_sync(self._conn.close())
                    info = run_sync(self._conn.open(resume=True))
                    self._generation += 1
                    return bool(info.get("resumed"))
                except (OSError, ConnectionLost, InvalidHandshake) as exc:
                    last = exc  # InvalidHandshake: the worker died mid-handshake
                    time.sleep(delay)
        raise ConnectionLost(f"could not reconnect to {self.url}: {last}")

    @property
    def datasets(self) -> list[Dataset]:
        """The worker's assets: names, descriptions, schemas, mock previews."""
        return [Dataset(d) for d in self._call("datasets")["datasets"]]

    def send(self, value: Any, mock: bool = False) -> Pointer:
        """Place ``value`` in your session on the worker; returns a (clean) pointer."""
        reply = run_sync(self._conn.send_value("send", value, mock=mock))
        return Pointer(self, reply["pointer"])

    def asset(self, name: str, mock: bool = False) -> Pointer:
        """A pointer to a private asset (tainted with its name), or to its mock."""
        return Pointer(self, self._call("asset", name=name, mock=mock)["pointer"])

    def run(self, code: str, mock: bool = False, timeout: float | None = None) -> Receipt:
        """Run a cell in your session's private kernel (or mock kernel with ``mock=True``).

        From the private kernel you get a :class:`Receipt`, never outputs: they
        are held, and can be requested. Ctrl-C interrupts the remote cell.
        """
        fut_reply: dict[str, Any]
        try:
            fut_reply = self._call("run", code=code, mock=mock, timeout=timeout)
        except KeyboardInterrupt:
            self.interrupt(mock=mock)
            raise Interrupted(f"cell on {self.name} interrupted") from None
        r = fut_reply["receipt"]
        held = [Pointer(self, h) for h in r.get("held") or []]
        return Receipt(self, r, held, code=code)

    def interrupt(self, mock: bool = False) -> None:
        """Interrupt what your session's kernel is running."""
        self._call("interrupt", mock=mock)

    def restart(self, mock: bool = False) -> None:
        """Restart your session's kernel: clean slate, old pointers into it are gone."""
        self._call("restart", mock=mock)

    def requests(self, timeout: float | None = None) -> list[Request]:
        """Your requests on this worker, oldest first.

        With ``timeout`` the call fails fast (``TimeoutError``, or ``ConnectionLost``
        without reconnecting), as a monitor such as a widget needs.
        """
        reply = self._call("requests") if timeout is None else \
            self._call_once("requests", timeout)
        return [Request(self, r) for r in reply["requests"]]

    def request_by_id(self, request_id: int) -> Request:
        """Find one of your requests again (e.g. after a reconnect)."""
        return Request(self, self._call("request_status", request=request_id)["request"])

    def budget(self) -> dict[str, dict[str, Any]]:
        """Your DP budget on each asset: ``epsilon_spent``, ``epsilon_limit``,
        ``epsilon_remaining``, ``delta_spent``, ``delta_limit``."""
        return dict(self._call("budget")["budget"])

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time to the worker, in seconds.

        With ``timeout`` a silent worker raises ``TimeoutError`` after that many
        seconds and a lost connection raises ``ConnectionLost`` at once (no reconnect).
        """
        t = time.perf_counter()
        if timeout is None:
            self._call("ping")
        else:
            self._call_once("ping", timeout)
        return time.perf_counter() - t

    def close(self) -> None:
        run_sync(self._conn.close())
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
