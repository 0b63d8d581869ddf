"""What one client may cost the worker: frame sizes, decoding, timeouts.

* Before a client has authenticated, its frames are limited to
  :data:`PREAUTH_FRAME_LIMIT` (a hello is a few hundred bytes) and it has
  :data:`HANDSHAKE_TIMEOUT` seconds to say hello; the configured frame limit
  applies only once its token checked out.
* Frames above :data:`INLINE_DECODE_BYTES` are decoded off the event loop, in
  a small pool of threads (:class:`Decoder`), after
  :func:`kernel_bridge.wire.codec.check_cost` has refused headers whose
  decoding would hold the interpreter for long. So a large or hostile frame
  costs its sender time, not the other scientists.
* Every timeout a client sends is a finite number within bounds
  (:func:`timeout_arg`); nan, infinities, negatives and huge values get a
  :class:`~kernel_bridge.errors.ProtocolError` instead of a spinning or
  endless wait.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import MalformedFrame, ProtocolError
from ..wire import codec, frames

T = TypeVar("T")

#: Largest frame accepted before authentication (a hello is a few hundred bytes).
PREAUTH_FRAME_LIMIT = 64 * 1024
#: Seconds a new connection has to complete its hello.
HANDSHAKE_TIMEOUT = 10.0
#: Frames up to this size are decoded on the event loop (their worst case is ~ms).
INLINE_DECODE_BYTES = 4 * 1024
#: Frames a connection may have received and not yet handed over (websockets stops
#: reading past this), so a pipelining client holds at most this many frames in memory.
MAX_QUEUED_FRAMES = 4
#: Threads decoding large frames; a client waits for its own frame before sending more.
DECODE_THREADS = 2
#: Containers a hello may hold (it needs about ten).
PREAUTH_MAX_CONTAINERS = 256
#: After a frame decoded in the pool, its sender's next large frame waits this many
#: times as long: decoding one scientist's frames takes at most 1/(1 + x) of a thread.
DECODE_PENALTY = 4.0
#: Longest cell timeout a client may ask for, seconds.
MAX_RUN_TIMEOUT = 7 * 86400.0
#: Longest wait for a request decision in one call, seconds.
MAX_WAIT_TIMEOUT = 3600.0


def timeout_arg(value: Any, *, name: str = "timeout", default: float, maximum: float,
                allow_zero: bool = False) -> float:
    """A timeout sent by a client, checked: finite, positive, at most ``maximum``.

    Parameters
    ----------
    value : Any
        What the client sent; ``None`` (or absent) means ``default``.
    name : str
        The field's name, for the error message.
    default : float
        Used when ``value`` is None.
    maximum : float
        Largest value accepted.
    allow_zero : bool
        Whether 0 is accepted (a poll that does not wait).

    Returns
    -------
    float
        The timeout in seconds.

    Raises
    ------
    ProtocolError
        Not a number (bools included), nan, infinite, negative, zero (unless
        ``allow_zero``) or above ``maximum``.
    """
    if value is None:
        return float(default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{name!r} must be a number of seconds, not {type(value).__name__}",
                            field=name)
    seconds = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.inf
    low_ok = seconds >= 0 if allow_zero else seconds > 0
    if not math.isfinite(seconds) or not low_ok or seconds > maximum:
        lower = "0" if allow_zero else "above 0"
        raise ProtocolError(f"{name!r} must be a finite number of seconds, {lower} and at most "
                            f"{maximum:g}", field=name, maximum=maximum)
    return seconds


class Decoder:
    """Decodes clients' frames: small ones inline, large ones in a bounded thread pool.

    Parameters
    ----------
    threads : int
        Size of the pool.
    """

    def __init__(self, threads: int = DECODE_THREADS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="syftlab-decode")
        self._not_before: dict[str, float] = {}

    async def message(self, raw: Any, limit: int, sender: str | None = None) -> dict[str, Any]:
        """One client message: a map with an ``op`` string.

        Parameters
        ----------
        raw : bytes or str
            The frame as received.
        limit : int
            Largest frame accepted.
        sender : str or None
            The scientist who sent it; None before authentication (a hello, which
            may then hold only :data:`PREAUTH_MAX_CONTAINERS` containers).

        Raises
        ------
        ProtocolError
            A text frame, a frame above ``limit``, a costly or malformed header,
            or a value that is not a message.
        """
        if isinstance(raw, str):
            raise MalformedFrame("text frames are not part of the protocol; send binary frames")
        containers = codec.MAX_CONTAINERS if sender is not None else PREAUTH_MAX_CONTAINERS
        if len(raw) <= INLINE_DECODE_BYTES:
            return decode_message(raw, limit, containers, check=sender is None)
        loop = asyncio.get_running_loop()
        key = sender or ""
        wait = self._not_before.get(key, 0.0) - loop.time()
        if wait > 0:  # this sender's earlier frames cost a lot: its turn comes later
            await asyncio.sleep(min(wait, 10.0))
        t0 = loop.time()
        try:
            return await loop.run_in_executor(self._pool, decode_message, raw, limit,
                                              containers, True)
        finally:
            now = loop.time()
            spent = now - t0
            if spent > 0.005:
                self._not_before[key] = max(now, self._not_before.get(key, 0.0)) + \
                    DECODE_PENALTY * spent
            elif self._not_before.get(key, 0.0) < now:
                self._not_before.pop(key, None)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the pool (other heavy checks of client data)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def every(interval: float, fn: Callable[[], Any]) -> None:
    """Call ``fn()`` every ``interval`` seconds, forever (a housekeeping task)."""
    while True:
        await asyncio.sleep(interval)
        fn()


def validate_upload(data: bytearray | memoryview) -> tuple[bytes, list[memoryview]]:
    """Split and check an uploaded frame (blocking); returns its header and buffers."""
    header, buffers = frames.unpack(memoryview(data), limit=None)
    codec.check_cost(header)
    codec.decode(header, buffers, tensors="wire")  # checked, not used: no torch needed
    return bytes(header), list(buffers)


def decode_message(raw: bytes | bytearray | memoryview, limit: int | None,
                   max_containers: int = codec.MAX_CONTAINERS, check: bool = True
                   ) -> dict[str, Any]:
    """Decode one frame (blocking) after checking what its header would cost."""
    header, buffers = frames.unpack(raw, limit=limit)
    if check:
        codec.check_cost(header, max_containers)
    # Tensors stay numpy (WireTensor): the worker checks and forwards them, and so
    # never imports torch (~180 MB) for a message.
    msg = codec.decode(header, buffers, tensors="wire")
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise MalformedFrame("a message is a map with an 'op' string")
    return msg
