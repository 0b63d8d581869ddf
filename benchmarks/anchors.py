"""Anchors: what our figures are compared with, measured in the same run.

* :class:`BareKernel` -- a plain ipykernel through ``jupyter_client`` (the
  default ``python3`` kernel spec, no sandbox, no agent), to time a bare
  execute round trip.
* :class:`TcpLoopback` -- a second process that streams an existing buffer
  over 127.0.0.1, received into a freshly allocated ``bytearray`` like the
  client's bulk download.

Both are context managers that stop their processes on exit, even on error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Any

from . import THREAD_VARS


def one_thread_env() -> dict[str, str]:
    """This process's environment with every thread-count variable set to 1."""
    return {**os.environ, **{v: "1" for v in THREAD_VARS}}


class BareKernel:
    """A plain jupyter_client kernel driven by its async client on a private event loop.

    ``execute(code)`` sends an execute request and waits for both the shell
    reply and the ``idle`` status on iopub: the full round trip of a cell, as
    a frontend (or our worker, for cells) sees it.
    """

    def __init__(self, kernel_name: str = "python3", startup_timeout: float = 60.0) -> None:
        self.kernel_name = kernel_name
        self.startup_timeout = startup_timeout
        self.loop = asyncio.new_event_loop()
        self.km: Any = None
        self.kc: Any = None

    def __enter__(self) -> BareKernel:
        try:
            self.loop.run_until_complete(self._start())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> None:
        from jupyter_client import AsyncKernelManager

        self.km = AsyncKernelManager(kernel_name=self.kernel_name)
        await self.km.start_kernel(env=one_thread_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=self.startup_timeout)

    async def execute(self, code: str, timeout: float = 30.0) -> dict[str, Any]:
        """Run ``code``; returns the execute_reply content once the kernel is idle again."""
        kc = self.kc
        msg_id = kc.execute(code, allow_stdin=False)
        while True:
            reply = await kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        while True:
            msg = await kc.get_iopub_msg(timeout=timeout)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):
                break
        content: dict[str, Any] = reply["content"]
        return content

    def run(self, code: str, timeout: float = 30.0) -> dict[str, Any]:
        """:meth:`execute`, blocking; raises if the cell failed."""
        content = self.loop.run_until_complete(self.execute(code, timeout))
        if content.get("status") != "ok":
            raise RuntimeError(f"anchor kernel: {code!r} failed: {content.get('ename')}: "
                               f"{content.get('evalue')}")
        return content

    def time_execute(self, code: str, n: int) -> list[float]:
        """Seconds of each of ``n`` execute round trips of ``code`` (timed inside the loop)."""

        async def go() -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                content = await self.execute(code)
                out.append(time.perf_counter() - t0)
                if content.get("status") != "ok":
                    raise RuntimeError(f"anchor kernel: {code!r} failed: {content.get('ename')}")
            return out

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
            if self.km is not None and self.km.has_kernel:
                self.loop.run_until_complete(self.km.shutdown_kernel(now=True))
        finally:
            self.kc = self.km = None
            self.loop.close()


#: The sending side of :class:`TcpLoopback`: touches its buffer, then streams it to
#: every connection until it is stopped (or nobody connects for two minutes).
_SENDER = r"""
import socket, sys
n = int(sys.argv[1])
buf = bytearray(b"\x5a") * n      # an existing, fully touched buffer
srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(120)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.settimeout(None)
        conn.sendall(buf)
"""

_CHUNK = 8 << 20  # the client's bulk download reads at most this much per recv_into


class TcpLoopback:
    """Raw TCP over 127.0.0.1 between two processes: ``transfer()`` moves ``nbytes``.

    The receiver (this process) connects, allocates a fresh ``bytearray`` and
    fills it with ``recv_into`` in chunks of 8 MiB, as
    :func:`kernel_bridge.wire.bulk.download` does; the timing includes the
    connect and the allocation, like a ``.get()``'s download does.
    """

    def __init__(self, nbytes: int, timeout: float = 60.0) -> None:
        self.nbytes = nbytes
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> TcpLoopback:
        self.proc = subprocess.Popen([sys.executable, "-c", _SENDER, str(self.nbytes)],
                                     stdout=subprocess.PIPE, text=True, env=one_thread_env())
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line.strip():
                raise RuntimeError(f"TCP sender exited early ({self.proc.wait(5)})")
            self.port = int(line)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transfer(self) -> float:
        """Receive one full buffer; returns the seconds it took."""
        n = self.nbytes
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
            buf = bytearray(n)
            view = memoryview(buf)
            got = 0
            while got < n:
                k = sock.recv_into(view[got:], min(n - got, _CHUNK))
                if k == 0:
                    raise RuntimeError(f"TCP sender closed after {got} of {n} bytes")
                got += k
        dt = time.perf_counter() - t0
        if buf[0] != 0x5A or buf[-1] != 0x5A or buf[n // 2] != 0x5A:
            raise RuntimeError("TCP loopback received the wrong bytes")
        return dt

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
