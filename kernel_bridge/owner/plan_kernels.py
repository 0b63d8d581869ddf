"""Plan kernels: one sandboxed kernel per (approved plan hash, scientist), kept across runs.

An FL job runs its plan once per round; starting a kernel and importing torch
for each run cost seconds and hundreds of MB. So the first run of a plan (or
its approval, :meth:`PlanKernels.warm`) starts a kernel that only ever runs

* the worker's trusted agent and trusted import lines, and
* that plan's approved code, compiled once, then executed once per run,

and the kernel serves that plan's later runs by the same scientist. Nothing
else reaches it: a changed plan has another hash and gets another kernel;
another scientist gets another kernel; the scientist's interactive kernels
are separate processes. Each run executes the approved code afresh in a new
namespace (plain Python: ``exec``, no IPython magics) and the names a run adds
to ``builtins`` are removed after it, so a run does not find what an earlier
run left in its globals; what the code could still keep between its own runs
(attributes it sets on imported modules) is in the code the owner approved.

A kernel is dropped after any run that did not end cleanly (an error, a
timeout, a crash), after :data:`IDLE_S` seconds unused, when the worker stops, and when
the pool is full and another plan needs a kernel (least recently used first).

The asset's columns are bound once per kernel as ``plan_data`` and handed to
each run as a copy, so a run that edits its ``data`` does not change the next
run's. They are a pandas DataFrame, or, for a plan with ``inputs.encoding``,
arrays the worker encoded (``{"X", "y"}``); such a kernel imports no pandas
(about 65 MB less per kernel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProtocolError, RemoteError
from ..wire import codec, frames
from ..wire.protocol import Action
from . import gate
from .config import WorkerConfig
from .kernels import KernelHost

log = logging.getLogger("syftlab.worker")

#: Plan kernels alive at once on one worker (each is a sandboxed process); also how
#: many runs go at once.
MAX_PLAN_KERNELS = 2
#: A plan kernel unused this long is stopped (the next run starts a new one).
IDLE_S = 300.0
#: Trusted imports run in each plan kernel before the plan's code: for a table, and
#: for arrays (a plan with ``inputs.encoding``).
WARM_IMPORTS = {"frame": "import numpy, pandas, pyarrow", "arrays": "import numpy"}
#: Trusted code that defines how a run calls the approved code (``{code!r}``: a literal).
_CALLER = """
import builtins as _syft_b
import copy as _syft_copy
import marshal as _syft_marshal
_syft_plan_code = compile({code!r}, "<plan>", "exec")
_syft_builtins = set(vars(_syft_b))
try:  # each run gets its own copy of the spec: marshal's is 10x faster than deepcopy
    _syft_spec_bytes = _syft_marshal.dumps(plan_spec)
except ValueError:
    _syft_spec_bytes = None

def _syft_spec():
    if _syft_spec_bytes is None:
        return _syft_copy.deepcopy(plan_spec)
    return _syft_marshal.loads(_syft_spec_bytes)

def _syft_fresh(data):
    if isinstance(data, dict):
        return {{k: v.copy() for k, v in data.items()}}
    return data.copy()

def _syft_plan_call(entry, data, spec, args):
    ns = {{"__name__": "__plan__", "__builtins__": _syft_b}}
    try:
        exec(_syft_plan_code, ns)
        return ns[entry](_syft_fresh(data), spec=spec, **args)
    finally:
        for name in set(vars(_syft_b)) - _syft_builtins:
            delattr(_syft_b, name)

def _syft_plan_run(request):
    return _syft_plan_call(request["entry"], plan_data, _syft_spec(), request["args"])
"""


@dataclass
class _Kernel:
    """One plan's kernel for one scientist."""

    key: tuple[str, str]  # (plan hash, scientist)
    host: KernelHost
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False  # the approved code is defined and the data bound
    used: float = field(default_factory=time.monotonic)
    runs: int = 0


class PlanKernels:
    """The worker's plan kernels (see the module docstring for what runs in them).

    Parameters
    ----------
    config : WorkerConfig
        Sandbox, threads, limits and timeouts.
    hide : list of Path
        What the sandbox hides from plan kernels (the worker's state and asset files).
    size : int
        Kernels alive at once (and runs at once).
    idle : float
        Seconds unused before a kernel is stopped.
    """

    def __init__(self, config: WorkerConfig, hide: list[Path], size: int = MAX_PLAN_KERNELS,
                 idle: float = IDLE_S) -> None:
        self.config = config
        self.hide = list(hide)
        self.size = size
        self.idle = idle
        self._kernels: dict[tuple[str, str], _Kernel] = {}
        self._pool = asyncio.Lock()
        self._slots = asyncio.Semaphore(size)
        self._reaper: asyncio.Task[None] | None = None
        self._warming: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> int:
        """Plan kernels alive now."""
        return len(self._kernels)

    async def run(self, code: str, entry: str, key: tuple[str, str],
                  data: Callable[[], Any], spec: Callable[[], dict[str, Any]],
                  args: dict[str, Any]) -> Any:
        """Run ``entry(data, spec=spec, **args)`` of an approved plan in its kernel.

        Parameters
        ----------
        code, entry : str
            The plan's approved code and the function it names.
        key : (str, str)
            ``(plan hash, scientist)``: whose kernel.
        data, spec : callable
            Return the asset's declared columns and its public spec (called when a
            kernel is prepared; both are the same for every run of the plan).
        args : dict
            The run's checked args.

        Returns
        -------
        Any
            The decoded return value (checked against the policy by the caller).
        """
        async with self._slots:
            while True:
                k = await self._kernel(key)
                async with k.lock:
                    if self._kernels.get(key) is not k:
                        continue  # dropped while we waited (its warm-up failed): a new one
                    try:
                        await self._prepare(k, code, data, spec)
                        value = await self._call(k, entry, args)
                    except BaseException:
                        await self._drop(k)
                        raise
                    k.used, k.runs = time.monotonic(), k.runs + 1
                    return value

    def warm(self, code: str, key: tuple[str, str], data: Callable[[], Any],
             spec: Callable[[], dict[str, Any]]) -> None:
        """Start the kernel of an approved plan ahead of its first run (in the background)."""
        if key in self._kernels or any(t.get_name() == repr(key) for t in self._warming):
            return

        async def start() -> None:
            with contextlib.suppress(Exception):  # the run will start one and report why
                async with self._slots:
                    k = await self._kernel(key)
                    async with k.lock:
                        if self._kernels.get(key) is not k:
                            return
                        try:
                            await self._prepare(k, code, data, spec)
                        except BaseException:
                            await self._drop(k)
                            raise

        task = asyncio.create_task(start(), name=repr(key))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def close(self) -> None:
        """Stop every plan kernel (the worker is stopping)."""
        for task in [*self._warming, *([self._reaper] if self._reaper else [])]:
            task.cancel()
        self._reaper = None
        for k in list(self._kernels.values()):
            await self._drop(k)

    # -- internals -------------------------------------------------------------------
    async def _kernel(self, key: tuple[str, str]) -> _Kernel:
        async with self._pool:
            k = self._kernels.get(key)
            if k is None:
                # The caller holds a slot, so at most size - 1 kernels are busy: one
                # of a full pool is idle and can go.
                while len(self._kernels) >= self.size:
                    idle = [x for x in self._kernels.values() if not x.lock.locked()]
                    if not idle:
                        break
                    await self._drop(min(idle, key=lambda x: x.used))
                cfg = self.config
                k = _Kernel(key, KernelHost("plan", list(self.hide),
                                            sandboxed=cfg.sandbox != "none",
                                            threads=cfg.threads,
                                            bulk_threshold=cfg.bulk_threshold,
                                            limits=cfg.limits))
                self._kernels[key] = k
                if self._reaper is None:
                    self._reaper = asyncio.create_task(self._reap())
            return k

    async def _prepare(self, k: _Kernel, code: str, data: Callable[[], Any],
                       spec: Callable[[], dict[str, Any]]) -> None:
        """Start the kernel, compile the approved code, bind the data and spec (once)."""
        if k.ready:
            return
        timeout = self.config.exec_timeout
        await k.host.ensure_started()
        value = await asyncio.to_thread(data)
        form = "arrays" if isinstance(value, dict) else "frame"
        _raise_for(await k.host.execute(WARM_IMPORTS[form], timeout=timeout))
        await self._put(k.host, "plan_data", value)
        await self._put(k.host, "plan_spec", spec())
        _raise_for(await k.host.execute(_CALLER.format(code=code), timeout=timeout))
        # One consolidated, writable copy now, so that each run's own copy is a memcpy.
        # Then what the kernel holds after its imports goes to the collector's permanent
        # generation: each run's young objects would otherwise set off full collections
        # that walk torch's and IPython's hundreds of thousands (8 % of a run here).
        _raise_for(await k.host.execute(
            "plan_data = _syft_fresh(plan_data)\nimport gc as _syft_gc\n_syft_gc.freeze()",
            timeout=timeout))
        k.ready = True

    async def _call(self, k: _Kernel, entry: str, args: dict[str, Any]) -> Any:
        """One run: a single agent request that calls the runner with the args and
        replies the result (nothing of the run stays bound in the kernel)."""
        content: dict[str, Any] = {"action": Action.CALL, "function": "_syft_plan_run"}
        bufs = await self._payload(k.host, content, {"entry": entry, "args": args})
        reply, out = await _agent(k.host, content, self.config.exec_timeout, bufs,
                                  failed=_CODE_FAILED)
        if "arena" in reply:
            assert k.host.arena is not None
            # A private snapshot first (the kernel may still write its arena), writable
            # and aligned so that the decoded arrays view it and are usable as they are
            # (check_outputs(owned=True)).
            data = frames.aligned_copy(k.host.arena.view(int(reply["arena"])))
            return await asyncio.to_thread(codec.loads, data, None, "wire")
        if not out:
            raise ProtocolError("the plan kernel sent no value")
        return codec.decode(bytes(out[0]), [bytes(b) for b in out[1:]], tensors="wire")

    async def _put(self, host: KernelHost, name: str, value: Any) -> None:
        content: dict[str, Any] = {"action": Action.PUT, "id": f"in_{name}", "bind": name}
        bufs = await self._payload(host, content, value)
        await _agent(host, content, self.config.exec_timeout, bufs)

    async def _payload(self, host: KernelHost, content: dict[str, Any], value: Any
                       ) -> list[Any]:
        """Encode ``value`` for an agent request: into the arena when large (noted in
        ``content``), else as the message's buffers."""
        header, buffers = await asyncio.to_thread(codec.encode, value)
        size = frames.frame_size(header, buffers)
        if size >= self.config.bulk_threshold and host.arena is not None:
            host.arena.write(frames.pack(header, buffers))
            content["arena"] = size
            return []
        return [header, *buffers]

    async def _drop(self, k: _Kernel) -> None:
        if self._kernels.get(k.key) is k:
            del self._kernels[k.key]
        await k.host.shutdown()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle / 2))
            now = time.monotonic()
            for k in list(self._kernels.values()):
                if now - k.used > self.idle and not k.lock.locked():
                    log.info("plan kernel %s… idle for %.0f s: stopped", k.key[0][:12],
                             now - k.used)
                    await self._drop(k)


#: How a failure of the plan's own code is reported (its type only).
_CODE_FAILED = "the plan's code ended with {name} (only the type is reported)"


async def _agent(host: KernelHost, content: dict[str, Any], timeout: float,
                 bufs: list[Any] | None = None, failed: str = "{name} raised in the plan's kernel"
                 ) -> tuple[dict[str, Any], list[Any]]:
    reply, out = await host.request(content, bufs, timeout=timeout)
    if reply.get("status") != "ok":
        name = gate.safe_error_name(reply.get("ename"))
        raise RemoteError(failed.format(name=name), error_type=name)
    return reply, out


def _raise_for(result: Any) -> None:
    if result.status == "ok":
        return
    name = gate.safe_error_name(result.ename) if result.status == "error" else result.status
    raise RemoteError(_CODE_FAILED.format(name=name), error_type=name)
