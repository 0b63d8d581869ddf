"""One background event loop per process, behind the blocking API.

The async client (:class:`~kernel_bridge.scientist.async_worker.AsyncWorker`)
is the one implementation. A blocking ``Worker`` opens its ``AsyncWorker`` on
this loop (:func:`run_sync`) and runs every later call there too, which works
whether or not the caller's thread already runs an event loop (Jupyter's
does). An asyncio program that uses ``kb.aconnect`` never touches this loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="syftlab-client", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def in_loop_thread() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and wait for its result."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError("blocking syftlab call made from inside its own event loop; "
                           "use the async API there")
    fut = asyncio.run_coroutine_threadsafe(coro, get_loop())
    try:
        return fut.result(timeout)
    except BaseException:
        fut.cancel()
        raise
