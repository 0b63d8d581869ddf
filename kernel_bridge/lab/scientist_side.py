"""The scientist's side: what the "Remote data" sidebar shows about each worker.

Every worker in the connections file gets one cached :class:`Worker` handle
(its own session, under the scientist's token). All calls here block; the
handlers run them in a thread pool so tornado's loop never waits on a worker.

A worker that does not answer costs little: connecting gives up after
``connect_timeout`` seconds, a failure is remembered for ``retry_after``
seconds (no new attempt meanwhile), and a listing waits at most ``wait``
seconds for any one worker: a slower one is shown with its last known state
while its refresh goes on in the background.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProtocolError, SyftError
from ..scientist.connections import ConnectionEntry, ConnectionsError, read
from ..scientist.worker import Worker, connect

__all__ = ["ConnectionsError", "ScientistSide", "budget_of"]


class _Cached(Exception):
    """A worker that failed to connect moments ago (its error is the message)."""


@dataclass
class _Slot:
    conn: ConnectionEntry
    worker: Worker | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    datasets_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The last listing of this worker, its refresh in flight, and when connecting last failed.
    last: dict[str, Any] | None = None
    refresh: Future[dict[str, Any]] | None = None
    failed_at: float = 0.0
    error: str | None = None


class ScientistSide:
    """Live views of the scientist's workers.

    Parameters
    ----------
    connections_file : str
        Path of the JSON connections file (re-read when it changes).
    datasets_ttl : float
        Seconds to cache each worker's dataset list.
    connect_timeout : float
        Seconds to wait for a worker to answer when connecting.
    retry_after : float
        Seconds a failed connection is remembered before the next attempt.
    wait : float
        Seconds a listing waits for any one worker before showing its last state.
    """

    side = "scientist"

    def __init__(self, connections_file: str, datasets_ttl: float = 30.0,
                 connect_timeout: float = 3.0, retry_after: float = 10.0,
                 wait: float = 1.5) -> None:
        self.connections_file = connections_file
        self.datasets_ttl = datasets_ttl
        self.connect_timeout = connect_timeout
        self.retry_after = retry_after
        self.wait = wait
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="syftlab-lab")
        self._slots: dict[str, _Slot] = {}
        self._mtime: float | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        for slot in self._slots.values():
            self._drop(slot)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- connections --------------------------------------------------------------
    def _reload(self) -> list[_Slot]:
        with self._lock:
            if not self.connections_file:
                return []
            path = Path(self.connections_file)
            mtime = path.stat().st_mtime if path.exists() else None
            if mtime != self._mtime:
                conns = read(path) if mtime is not None else []
                fresh: dict[str, _Slot] = {}
                for c in conns:
                    old = self._slots.pop(c.name, None)
                    if old is not None and old.conn == c:
                        fresh[c.name] = old
                    else:
                        if old is not None:
                            self._drop(old)
                        fresh[c.name] = _Slot(c)
                for old in self._slots.values():
                    self._drop(old)
                self._slots, self._mtime = fresh, mtime
            return list(self._slots.values())

    @staticmethod
    def _drop(slot: _Slot) -> None:
        w, slot.worker = slot.worker, None
        if w is not None:
            try:
                w.close()
            except Exception:  # noqa: BLE001 - already gone is fine
                pass

    def _worker(self, slot: _Slot) -> Worker:
        if slot.worker is None or not slot.worker.connected:
            self._drop(slot)
            if time.monotonic() - slot.failed_at < self.retry_after and slot.error:
                raise _Cached(slot.error)  # failed a moment ago: do not wait on it again
            try:
                slot.worker = connect(slot.conn.url, slot.conn.token, name=slot.conn.name,
                                      fingerprint=slot.conn.fingerprint,
                                      open_timeout=self.connect_timeout)
            except (OSError, SyftError, TimeoutError) as exc:
                slot.failed_at, slot.error = time.monotonic(), f"{type(exc).__name__}: {exc}"
                raise
            slot.failed_at, slot.error = 0.0, None
            slot.datasets_at = 0.0
        return slot.worker

    # -- views --------------------------------------------------------------------
    def _status(self, slot: _Slot) -> dict[str, Any]:
        c = slot.conn
        out: dict[str, Any] = {"name": c.name, "url": c.url, "online": False,
                               "latency_ms": None, "datasets": slot.datasets, "requests": [],
                               "plans": [], "budget": None, "error": None}
        with slot.lock:
            try:
                w = self._worker(slot)
                out["latency_ms"] = round(w.ping() * 1000, 2)
                if time.monotonic() - slot.datasets_at > self.datasets_ttl:
                    slot.datasets = [dict(d) for d in w.datasets]
                    slot.datasets_at = time.monotonic()
                out["datasets"] = slot.datasets
                out["requests"] = [r._info for r in w.requests()]
                out["budget"] = budget_of(w)
                out["plans"] = plans_of(w)
                out["online"] = True
            except _Cached as exc:
                out["error"] = str(exc)[:300]
            except (OSError, SyftError, TimeoutError) as exc:
                self._drop(slot)
                out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        slot.last = out
        return out

    def workers(self) -> list[dict[str, Any]]:
        """Every worker: online, latency, datasets, the scientist's requests, budget.

        Waits at most ``wait`` seconds: a worker still being reached is listed with
        its last known state (``"pending": True``) and its refresh goes on.
        """
        slots = self._reload()
        for slot in slots:
            if slot.refresh is None or slot.refresh.done():
                slot.refresh = self.pool.submit(self._status, slot)
        wait_futures([s.refresh for s in slots if s.refresh is not None], timeout=self.wait)
        out = []
        for slot in slots:
            if slot.refresh is not None and slot.refresh.done():
                out.append(slot.refresh.result())
            else:
                c = slot.conn
                last = dict(slot.last or {"name": c.name, "url": c.url, "online": False,
                                          "latency_ms": None, "datasets": slot.datasets,
                                          "requests": [], "plans": [], "budget": None,
                                          "error": "connecting…"})
                out.append({**last, "pending": True})
        return out

    def urls(self) -> dict[str, str]:
        """Each worker's URL by name (the status bar matches a kernel's connections by URL)."""
        return {s.conn.name: s.conn.url for s in self._reload()}

    def budget(self, names: list[str] | None = None) -> dict[str, Any]:
        """Remaining ε per worker and asset, for ``names`` (all workers when None)."""
        slots = [s for s in self._reload() if names is None or s.conn.name in names]

        def one(slot: _Slot) -> tuple[str, dict[str, Any] | None]:
            if not slot.lock.acquire(timeout=self.wait):
                return slot.conn.name, (slot.last or {}).get("budget")  # busy reaching it
            try:
                return slot.conn.name, budget_of(self._worker(slot))
            except _Cached:
                return slot.conn.name, None
            except (OSError, SyftError, TimeoutError):
                self._drop(slot)
                return slot.conn.name, None
            finally:
                slot.lock.release()
        return dict(self.pool.map(one, slots))


def budget_of(worker: Worker) -> dict[str, Any]:
    """``Worker.budget()``: per asset ε spent/limit/remaining, as JSON-ready dicts."""
    return {str(k): dict(v) for k, v in worker.budget().items()}


def plans_of(worker: Worker) -> list[dict[str, Any]]:
    """The scientist's plans on a worker (status, runs used, ε spent); [] on a worker
    that predates plans."""
    try:
        return [p.info for p in worker.plans()]
    except ProtocolError:
        return []
