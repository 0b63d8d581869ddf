"""A background thread that refreshes a widget at a fixed interval.

The widgets never block the notebook kernel: every network or database read
happens here, off the kernel's main thread. The scientist's blocking calls go
run as coroutines on one event-loop thread (a ``Worker`` wraps an ``AsyncWorker``);
this thread is just another caller that waits on a future, so it cannot
deadlock with the user's calls (it never runs inside that loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("syftlab.widgets")


class Poller:
    """Call ``tick`` every ``interval`` seconds on a daemon thread until :meth:`stop`.

    Parameters
    ----------
    tick : callable
        Does one refresh; exceptions are logged and the loop goes on.
    interval : float
        Seconds between the starts of two ticks (a slow tick is not repeated at once).
    name : str
        Thread name, for debugging.
    """

    def __init__(self, tick: Callable[[], None], interval: float, name: str) -> None:
        self._tick = tick
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ticks = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._tick()
            except Exception:  # a broken refresh must not kill the widget's updates
                log.exception("widget refresh failed")
            self.ticks += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the tick in progress (waits up to ``timeout`` seconds for it)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
