"""One real ipykernel per session and side, hosted through jupyter_client.

:class:`KernelHost` starts a kernel lazily (sandboxed unless the worker runs
with ``--unsafe-no-sandbox``), installs the agent, and offers three calls:
:meth:`KernelHost.request` (agent requests on the shell channel),
:meth:`KernelHost.execute` (a scientist cell; every iopub message is collected
for the gate, none is forwarded) and :meth:`KernelHost.interrupt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec

from ..errors import ExecutionTimeout, KernelDied, SandboxUnavailable
from ..kernel.arena import Arena
from . import sandbox

log = logging.getLogger("syftlab.worker")

#: Output message types a cell can produce; all of them are held by the gate.
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "execute_result", "error", "update_display_data",
     "comm_open", "comm_msg", "comm_close", "clear_output"}
)


@dataclass
class CellResult:
    """What a kernel did with one cell, before the gate decides what leaves."""

    status: str  # "ok" | "error" | "interrupted" | "timeout"
    ename: str | None
    duration: float
    outputs: list[dict[str, Any]] = field(default_factory=list)
    user_expressions: dict[str, Any] = field(default_factory=dict)
    #: The kernel's traceback lines and execution count (for :func:`gate.error_line` only).
    traceback: list[str] = field(default_factory=list)
    execution_count: int | None = None


class KernelHost:
    """A lazily started kernel with the agent installed.

    Parameters
    ----------
    kind : str
        ``"private"`` or ``"mock"`` (used in names and logs).
    hide : list of Path
        What the sandbox hides from this kernel.
    sandboxed : bool
        False only with ``--unsafe-no-sandbox``.
    threads : int
        Threads per kernel process.
    bulk_threshold : int
        Values at least this large travel through the shared-memory arena.
    """

    def __init__(
        self,
        kind: str,
        hide: list[Path],
        sandboxed: bool = True,
        threads: int = 1,
        bulk_threshold: int = 1 << 20,
        startup_timeout: float = 60.0,
    ) -> None:
        self.kind = kind
        self.hide = hide
        self.sandboxed = sandboxed
        self.threads = threads
        self.bulk_threshold = bulk_threshold
        self.startup_timeout = startup_timeout
        self.lock = asyncio.Lock()
        self.generation = 0
        self._start_lock = asyncio.Lock()
        self._km: AsyncKernelManager | None = None
        self._kc: Any = None
        self._ipc_dir: Path | None = None
        self.arena: Arena | None = None
        self._iopub_task: asyncio.Task[None] | None = None
        self._collect: dict[str, list[dict[str, Any]]] = {}
        self._idle: dict[str, asyncio.Event] = {}

    @property
    def started(self) -> bool:
        return self._km is not None

    async def ensure_started(self) -> None:
        async with self._start_lock:
            if self._km is None:
                await self._start()

    async def _start(self) -> None:
        if self.sandboxed and sandbox.bwrap_path() is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not available, so kernels cannot be sandboxed; install "
                "it (apt-get install bubblewrap) or run the worker with --unsafe-no-sandbox"
            )
        # /dev/shm keeps the arena in memory; short paths keep socket names < 108 bytes.
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._ipc_dir = Path(tempfile.mkdtemp(prefix=f"syk-{self.kind[0]}-", dir=base))
        arena_path = self._ipc_dir / "arena"
        if self.sandboxed:
            argv = sandbox.kernel_argv(self._ipc_dir, self.hide, self.threads)
        else:
            argv = sandbox.unsandboxed_argv()
        # The kernel inherits nothing from the worker's environment (it may hold secrets).
        env = sandbox.sandbox_env(self.threads)
        km = AsyncKernelManager(transport="ipc", ip=str(self._ipc_dir / "k"))
        km.connection_file = str(self._ipc_dir / "kernel.json")
        km._kernel_spec = KernelSpec(  # a private spec: never written to the kernelspec path
            argv=argv,
            display_name=f"syftlab {self.kind}",
            language="python",
            interrupt_mode="message",
            env=env,
        )
        t0 = time.perf_counter()
        await km.start_kernel(env=dict(env))
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as exc:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            raise KernelDied(f"the {self.kind} kernel did not start: {exc}") from exc
        self._km, self._kc = km, kc
        self.arena = Arena(str(arena_path))
        self._iopub_task = asyncio.create_task(self._read_iopub())
        boot = (
            "import kernel_bridge.kernel.agent as _syft_agent\n"
            f"_syft_agent.install({str(arena_path)!r}, {int(self.bulk_threshold)})\n"
            "del _syft_agent"
        )
        result = await self._execute(boot, timeout=self.startup_timeout, silent=True)
        if result.status != "ok":
            raise KernelDied(f"the {self.kind} kernel could not load the agent ({result.ename})")
        log.info("%s kernel ready in %.2fs (sandboxed=%s)", self.kind,
                 time.perf_counter() - t0, self.sandboxed)

    async def _read_iopub(self) -> None:
        kc = self._kc
        while True:
            try:
                msg = await kc.get_iopub_msg()
            except asyncio.CancelledError:
                raise
            except Exception:  # channel closed on shutdown
                await asyncio.sleep(0.05)
                if self._kc is not kc:
                    return
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            sink = self._collect.get(parent)
            if sink is None:
                continue  # not a cell we run (agent status chatter, background threads)
            mtype = msg["msg_type"]
            if mtype == "status" and msg["content"].get("execution_state") == "idle":
                self._idle[parent].set()
            elif mtype in OUTPUT_TYPES:
                sink.append({"msg_type": mtype, "content": msg["content"],
                             "buffers": [bytes(b) for b in msg.get("buffers") or []]})

    async def _shell_reply(self, msg_id: str, timeout: float | None) -> dict[str, Any]:
        """Wait for the shell reply to ``msg_id``, noticing a dead kernel."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            try:
                reply: dict[str, Any] = await self._kc.get_shell_msg(timeout=step)
            except Exception as exc:
                if not isinstance(exc, asyncio.TimeoutError | TimeoutError) and \
                        type(exc).__name__ != "Empty":
                    raise
                if self._km is None or not await self._km.is_alive():
                    await self._died()
                if deadline is not None and time.monotonic() >= deadline:
                    raise ExecutionTimeout(
                        f"no reply from the {self.kind} kernel within {timeout:g}s"
                    ) from None
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply

    async def _died(self) -> None:
        log.warning("%s kernel died; restarting", self.kind)
        await self.restart()
        raise KernelDied(
            f"the {self.kind} kernel died (out of memory, a crash, or exit()); it was "
            "restarted and its variables are gone"
        )

    async def request(
        self, content: dict[str, Any], buffers: list[Any] | None = None,
        timeout: float | None = 600.0,
    ) -> tuple[dict[str, Any], list[memoryview]]:
        """Send one agent request and wait for its reply (caller holds :attr:`lock`)."""
        await self.ensure_started()
        kc = self._kc
        msg = kc.session.msg("syft_request", content)
        kc.session.send(kc.shell_channel.socket, msg, buffers=buffers or [])
        try:
            reply = await self._shell_reply(msg["header"]["msg_id"], timeout)
        except ExecutionTimeout:
            await self.interrupt()
            raise
        return reply["content"], list(reply.get("buffers") or [])

    async def execute(
        self, code: str, timeout: float | None = None,
        user_expressions: dict[str, str] | None = None,
    ) -> CellResult:
        """Run a cell (caller holds :attr:`lock`); outputs are collected, never forwarded."""
        await self.ensure_started()
        return await self._execute(code, timeout, user_expressions=user_expressions)

    async def _execute(
        self, code: str, timeout: float | None, silent: bool = False,
        user_expressions: dict[str, str] | None = None,
    ) -> CellResult:
        kc = self._kc
        msg_id = kc.execute(code, silent=silent, store_history=not silent,
                            user_expressions=user_expressions or {}, allow_stdin=False)
        self._collect[msg_id] = []
        self._idle[msg_id] = asyncio.Event()
        t0 = time.perf_counter()
        status = "ok"
        try:
            try:
                reply = await self._shell_reply(msg_id, timeout)
            except ExecutionTimeout:
                await self.interrupt()
                try:
                    reply = await self._shell_reply(msg_id, 5.0)
                except ExecutionTimeout:
                    await self.restart()
                    raise KernelDied(
                        f"the {self.kind} kernel ignored an interrupt after its timeout; "
                        "it was restarted and its variables are gone"
                    ) from None
                status = "timeout"
            # Outputs come on iopub; the idle status closes them.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle[msg_id].wait(), 5.0)
            content = reply["content"]
            ename = content.get("ename") if content.get("status") == "error" else None
            if status == "ok":
                if content.get("status") == "aborted":
                    status, ename = "error", "Aborted"
                elif ename == "KeyboardInterrupt":
                    status = "interrupted"
                elif content.get("status") == "error":
                    status = "error"
            return CellResult(
                status=status,
                ename=ename,
                duration=time.perf_counter() - t0,
                outputs=self._collect[msg_id],
                user_expressions=content.get("user_expressions") or {},
                traceback=[str(t) for t in content.get("traceback") or []
                           if isinstance(t, str)][:200] if ename else [],
                execution_count=content.get("execution_count")
                if isinstance(content.get("execution_count"), int) else None,
            )
        finally:
            self._collect.pop(msg_id, None)
            self._idle.pop(msg_id, None)

    async def interrupt(self) -> None:
        """Interrupt whatever the kernel runs (through the control channel)."""
        if self._km is not None:
            await self._km.interrupt_kernel()

    async def restart(self) -> None:
        """Replace the kernel with a fresh one; all its objects are gone."""
        await self.shutdown()
        self.generation += 1
        await self.ensure_started()

    async def shutdown(self) -> None:
        """Stop the kernel and remove its socket directory."""
        km, kc = self._km, self._kc
        self._km = self._kc = None
        if self._iopub_task is not None:
            self._iopub_task.cancel()
            self._iopub_task = None
        if kc is not None:
            kc.stop_channels()
        if km is not None:
            with contextlib.suppress(Exception):
                await km.shutdown_kernel(now=True)
        if self.arena is not None:
            self.arena.close()
            self.arena = None
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None
