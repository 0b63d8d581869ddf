"""One real ipykernel per session and side, hosted through jupyter_client.

:class:`KernelHost` starts a kernel lazily (sandboxed unless the worker runs
with ``--unsafe-no-sandbox``, see :mod:`.sandbox`), installs the agent, and
offers three calls: :meth:`KernelHost.request` (agent requests on the shell
channel), :meth:`KernelHost.execute` (a scientist cell; every iopub message is
collected for the gate, none is forwarded) and :meth:`KernelHost.interrupt`.

What the worker takes from a kernel is bounded, since the kernel runs hostile
code: ZeroMQ refuses any single message larger than ``message_mb`` (it is
dropped before it is read; the dropped connection is noticed and reported as
:class:`~kernel_bridge.errors.OutputTooLarge`), and a cell's collected outputs
stop at ``output_mb``: past it further output is dropped, the cell is
interrupted and :class:`~kernel_bridge.errors.OutputTooLarge` is raised.
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

import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from zmq.utils.monitor import parse_monitor_message

from ..errors import ExecutionTimeout, KernelDied, OutputTooLarge
from ..kernel.arena import Arena
from . import sandbox
from .config import SandboxLimits

log = logging.getLogger("syftlab.worker")

#: Output message types a cell can produce; all of them are held by the gate.
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "execute_result", "error", "update_display_data",
     "comm_open", "comm_msg", "comm_close", "clear_output"}
)


_MB = 2**20
#: Seconds a cell past its output cap may run on before it is interrupted (and as long
#: again before its kernel is restarted).
OVERFLOW_GRACE = 3.0


class _KernelManager(AsyncKernelManager):
    """A manager whose connection file the kernel's own uid may read."""

    kernel_uid: int | None = None

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.kernel_uid is not None:
            sandbox.give_to(Path(self.connection_file), self.kernel_uid)


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
    limits : SandboxLimits, optional
        Resource and output limits (the defaults when omitted).
    """

    def __init__(
        self,
        kind: str,
        hide: list[Path],
        sandboxed: bool = True,
        threads: int = 1,
        bulk_threshold: int = 1 << 20,
        startup_timeout: float = 60.0,
        limits: SandboxLimits | None = None,
    ) -> None:
        self.kind = kind
        self.hide = hide
        self.sandboxed = sandboxed
        self.threads = threads
        self.bulk_threshold = bulk_threshold
        self.startup_timeout = startup_timeout
        self.limits = limits or SandboxLimits()
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
        self._used: dict[str, int] = {}  # output bytes collected per cell
        self._overflow: dict[str, float] = {}  # cells whose output passed the cap: when
        self._interrupted: set[str] = set()  # ... and that were interrupted for it
        self._dropped = False  # a shell message was refused as too large
        self._drops = 0  # iopub connections dropped (each a message past the size limit)
        self._lease: sandbox.UidLease | None = None
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        return self._km is not None

    async def ensure_started(self) -> None:
        async with self._start_lock:
            if self._km is None:
                await self._start()

    @property
    def message_limit(self) -> int:
        """Largest single message accepted from the kernel, in bytes."""
        return max(self.limits.message_mb * _MB, 2 * self.bulk_threshold + _MB)

    async def _start(self) -> None:
        if self.sandboxed:
            # Probes the sandbox from inside once per worker; raises SandboxUnavailable.
            await asyncio.to_thread(sandbox.ensure_available, self.limits)
            self._lease = sandbox.lease_uid(self.limits)
        try:
            await self._launch()
        except BaseException:
            await self.shutdown()
            raise

    async def _launch(self) -> None:
        # /dev/shm keeps the arena in memory; short paths keep socket names < 108 bytes.
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._ipc_dir = Path(tempfile.mkdtemp(prefix=f"syk-{self.kind}-", dir=base))
        arena_path = self._ipc_dir / "arena"
        self.arena = Arena(str(arena_path))
        km = _KernelManager(transport="ipc", ip=str(self._ipc_dir / "k"))
        launch: sandbox.Launch | None = None
        extra = sandbox.PLAN_MALLOC if self.kind == "plan" else None
        if self.sandboxed:
            assert self._lease is not None
            uid = self._lease.uid
            sandbox.give_to(self._ipc_dir, uid)
            sandbox.give_to(arena_path, uid)
            km.kernel_uid = uid if sandbox.is_root() else None
            launch = sandbox.prepare(self._ipc_dir, self.hide, self.threads,
                                     limits=self.limits, uid=uid, env=extra)
            argv = launch.argv
        else:
            argv = sandbox.unsandboxed_argv()
        # The kernel inherits nothing from the worker's environment (it may hold secrets).
        env = sandbox.sandbox_env(self.threads, extra)
        km.connection_file = str(self._ipc_dir / "kernel.json")
        km._kernel_spec = KernelSpec(  # a private spec: never written to the kernelspec path
            argv=argv,
            display_name=f"syftlab {self.kind}",
            language="python",
            interrupt_mode="message",
            env=env,
        )
        t0 = time.perf_counter()
        self._km = km
        try:
            if launch is not None:
                await km.start_kernel(env=dict(env), pass_fds=launch.fds)
            else:
                await km.start_kernel(env=dict(env))
        finally:
            if launch is not None:
                launch.close()
        # No single message from the kernel may be larger than the limit (ZMQ_MAXMSGSIZE).
        ctx = zmq.asyncio.Context()
        ctx.setsockopt(zmq.MAXMSGSIZE, self.message_limit)
        kc = km.client(context=ctx)
        kc.start_channels()
        self._kc = kc
        self._watchers = [asyncio.create_task(self._watch(kc.shell_channel.socket, "shell")),
                          asyncio.create_task(self._watch(kc.iopub_channel.socket, "iopub"))]
        try:
            await kc.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as exc:
            raise KernelDied(f"the {self.kind} kernel did not start: {exc}") from exc
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

    async def _watch(self, sock: zmq.asyncio.Socket, channel: str) -> None:
        """Notice connections ZeroMQ dropped (a message past the size limit, or a dead kernel)."""
        mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            while True:
                event = parse_monitor_message(await mon.recv_multipart())
                if event["event"] != zmq.EVENT_DISCONNECTED:
                    continue
                log.warning("%s kernel: %s connection dropped (a message past %d MiB, or "
                            "the kernel died)", self.kind, channel, self.message_limit // _MB)
                if channel == "shell":
                    self._dropped = True
                else:
                    self._drops += 1
                for msg_id in list(self._collect):
                    self._overflow_cell(msg_id)
                # ZeroMQ does not reconnect after a protocol error (the oversized message).
                endpoint = event.get("endpoint")
                url = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)
                with contextlib.suppress(zmq.ZMQError):
                    sock.disconnect(url)
                with contextlib.suppress(zmq.ZMQError):
                    sock.connect(url)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket closed under us on shutdown
            return
        finally:
            with contextlib.suppress(Exception):
                sock.disable_monitor()
            mon.close(linger=0)

    def _overflow_cell(self, msg_id: str) -> None:
        """Stop collecting a cell's outputs (the wait for its reply interrupts it)."""
        if msg_id in self._overflow or msg_id not in self._collect:
            return
        self._overflow[msg_id] = time.monotonic()
        self._collect[msg_id].clear()

    async def _read_iopub(self) -> None:
        kc = self._kc
        sock, session = kc.iopub_channel.socket, kc.session
        while True:
            try:
                frames = await sock.recv_multipart(copy=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # channel closed on shutdown
                await asyncio.sleep(0.05)
                if self._kc is not kc:
                    return
                continue
            try:
                self._on_iopub(session, frames)
            except Exception:  # a malformed message from the kernel: dropped
                log.debug("%s kernel: malformed iopub message dropped", self.kind)

    def _on_iopub(self, session: Any, frames: list[Any]) -> None:
        """Collect one iopub message for its cell, counting raw bytes before decoding any."""
        _, parts = session.feed_identities(frames, copy=False)
        if len(parts) < 5:
            return
        # parts: signature, header, parent header, metadata, content, buffers...
        if len(parts[2].buffer) > 64 * 1024 or len(parts[1].buffer) > 64 * 1024:
            return
        parent = session.unpack(parts[2].bytes).get("msg_id")
        sink = self._collect.get(parent)
        if sink is None:
            return  # not a cell we run (agent status chatter, background threads)
        mtype = session.unpack(parts[1].bytes).get("msg_type")
        if mtype == "status":
            if len(parts[4].buffer) <= 64 * 1024 and \
                    session.unpack(parts[4].bytes).get("execution_state") == "idle":
                self._idle[parent].set()
        elif mtype in OUTPUT_TYPES and parent not in self._overflow:
            used = self._used.get(parent, 0) + sum(len(p.buffer) for p in parts[3:])
            self._used[parent] = used
            if used > self.limits.output_mb * _MB:
                self._overflow_cell(parent)
                return
            msg = session.deserialize(parts, content=True, copy=False)
            sink.append({"msg_type": mtype, "content": msg["content"],
                         "buffers": [bytes(b) for b in msg.get("buffers") or []]})

    async def _shell_reply(self, msg_id: str, timeout: float | None) -> dict[str, Any]:
        """Wait for the shell reply to ``msg_id``, noticing a dead kernel.

        A cell whose output passed the cap may finish for :data:`OVERFLOW_GRACE`
        seconds, is then interrupted, and restarted after as long again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            since = self._overflow.get(msg_id)
            if since is not None and time.monotonic() - since > OVERFLOW_GRACE:
                if msg_id not in self._interrupted:
                    self._interrupted.add(msg_id)
                    await self.interrupt()
                elif time.monotonic() - since > 2 * OVERFLOW_GRACE:
                    await self.restart()
                    raise KernelDied(
                        f"the cell's output passed the worker's limit of "
                        f"{self.limits.output_mb} MiB and the cell did not stop when "
                        "interrupted; the kernel was restarted and its variables are gone"
                    )
            step = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            try:
                reply: dict[str, Any] = await self._kc.get_shell_msg(timeout=step)
            except Exception as exc:
                if not isinstance(exc, asyncio.TimeoutError | TimeoutError) and \
                        type(exc).__name__ != "Empty":
                    raise
                if self._km is None or not await self._km.is_alive():
                    await self._died()
                if self._dropped:
                    await asyncio.sleep(0.5)  # a dying kernel also drops its connections
                    if self._km is None or not await self._km.is_alive():
                        await self._died()
                    self._dropped = False
                    raise OutputTooLarge(
                        f"the {self.kind} kernel sent a reply larger than "
                        f"{self.message_limit // _MB} MiB; it was dropped unread"
                    ) from None
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
            f"the {self.kind} kernel died (out of memory, past a resource limit, a crash, or "
            "exit()); it was restarted and its variables are gone"
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
        self._used[msg_id] = 0
        self._idle[msg_id] = asyncio.Event()
        drops = self._drops
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
            # Outputs come on iopub; the idle status closes them (it may be lost with
            # a message ZeroMQ dropped).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle[msg_id].wait(),
                                       1.0 if msg_id in self._overflow else 5.0)
            if msg_id in self._overflow or self._drops != drops:
                raise OutputTooLarge(
                    f"the cell's output passed the worker's limit of {self.limits.output_mb} "
                    "MiB; what came past the limit was dropped (and the cell interrupted if "
                    "it did not end by itself)"
                )
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
            self._used.pop(msg_id, None)
            self._overflow.pop(msg_id, None)
            self._interrupted.discard(msg_id)

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
        for task in self._watchers:
            task.cancel()
        self._watchers = []
        self._dropped = False
        if kc is not None:
            kc.stop_channels()
            with contextlib.suppress(Exception):
                kc.context.destroy(linger=0)
        if km is not None:
            with contextlib.suppress(Exception):
                await km.shutdown_kernel(now=True)
        if self._lease is not None:  # the kernel's processes are gone: its uid is free
            self._lease.release()
            self._lease = None
        if self.arena is not None:
            self.arena.close()
            self.arena = None
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None
