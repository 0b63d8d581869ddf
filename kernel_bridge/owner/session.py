"""A scientist's session on a worker: its kernels, objects, taint and lineage.

The trusted server keeps every record here; kernels only hold the values.

Taint, and why it is sound without trusting a kernel or tracking aliasing
--------------------------------------------------------------------------
A session has three kernels. The **clean** kernel holds what the scientist
sent and what allow-listed pointer operations made of it; no private byte ever
enters it and no scientist cell runs in it. The **private** kernel gets the
assets and runs the scientist's cells. The **mock** kernel gets mock data only.

1. The server adds an asset to the private kernel's ``holds`` *before* the
   first byte of it is sent to the kernel (:meth:`KernelState.hold`), so no
   answer of a hostile kernel (a replaced agent that replies "error") can keep
   the taint from being recorded.
2. The taint of every object in the private kernel is that kernel's current
   ``holds`` (:meth:`Session.taint_of`), computed at the moment of release:
   whatever Python aliasing, views or a cell did inside the kernel, a value
   there can only depend on data that entered it, and all of that is in
   ``holds``. ``holds`` only grows until the kernel restarts, and a restart
   replaces the process (a new sandbox) and invalidates every old object.
3. A clean value used together with a private one is *copied* into the
   private kernel (the receiver of a method or item assignment *moves* there,
   since it may be mutated), so nothing private ever reaches the clean
   kernel: its values, and the mock kernel's, are clean.
4. Held cell outputs live in the server, immutable; they carry the ``holds``
   of the moment their cell ended.

So a value is released without approval only if it lives in the clean or mock
kernel, or in a private kernel that never held an asset.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnknownObject
from ..wire.protocol import PointerInfo
from .config import SandboxLimits
from .kernels import KernelHost
from .ordering import Sequencer

KERNELS = ("private", "mock", "clean")
#: Kernels whose every value is clean by construction (see the module docstring).
CLEAN_KERNELS = frozenset({"mock", "clean"})


def new_id(prefix: str = "p") -> str:
    """An unguessable object id (forged ids simply do not resolve)."""
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class RemoteObject:
    """The server's record of one remote object (or held cell output)."""

    id: str
    kernel: str
    type_name: str
    taint: set[str]
    generation: int
    seq: int
    shape: list[int] | None = None
    dtype: str | None = None
    outputs: list[dict[str, Any]] | None = None  # held outputs of a cell, kept server-side
    asset: str | None = None  # the asset this object is, as loaded by the worker

    @property
    def is_output(self) -> bool:
        return self.outputs is not None


@dataclass
class KernelState:
    """Per-kernel taint bookkeeping (reset when the kernel restarts)."""

    host: KernelHost
    loaded: set[str] = field(default_factory=set)
    holds: set[str] = field(default_factory=set)  # assets that ever entered it (monotone)
    names: dict[str, str] = field(default_factory=dict)  # mock variables reported so far

    def hold(self, asset: str) -> None:
        """Record that ``asset`` is about to enter this kernel (call before sending it)."""
        self.holds.add(asset)

    def reset(self) -> None:
        self.loaded.clear()
        self.holds.clear()
        self.names.clear()


class Session:
    """One scientist's session: two lazily started kernels and the records.

    Parameters
    ----------
    scientist : str
        Name bound to the token that opened the session.
    hide : list of Path
        Paths the sandbox hides from both kernels.
    """

    def __init__(self, scientist: str, hide: list[Path], *, sandboxed: bool, threads: int,
                 bulk_threshold: int, limits: SandboxLimits | None = None) -> None:
        self.id = new_id("s")
        self.scientist = scientist
        self.resume_key = secrets.token_urlsafe(24)
        self.objects: dict[str, RemoteObject] = {}
        self.lineage: list[dict[str, Any]] = []
        self.kernels = {
            kind: KernelState(KernelHost(kind, hide, sandboxed=sandboxed, threads=threads,
                                         bulk_threshold=bulk_threshold, limits=limits))
            for kind in KERNELS
        }
        self.order = Sequencer()
        self.detached_at: float | None = None
        self.connection: Any = None

    def host(self, kernel: str) -> KernelHost:
        return self.kernels[kernel].host

    # -- records --------------------------------------------------------------
    def record(self, kind: str, code: str, kernel: str = "private",
               obj: str | None = None) -> int:
        """Append to the session's lineage; returns the entry's sequence number."""
        seq = len(self.lineage) + 1
        self.lineage.append({"seq": seq, "kind": kind, "kernel": kernel, "code": code,
                             "object": obj, "time": time.time()})
        return seq

    def add_object(self, kernel: str, meta: dict[str, Any], taint: set[str], seq: int,
                   oid: str | None = None, outputs: list[dict[str, Any]] | None = None
                   ) -> RemoteObject:
        from ..ops.allowlist import safe_type_name

        state = self.kernels[kernel]
        if kernel in CLEAN_KERNELS:
            taint = set()  # never holds private data (mock data is public by declaration)
        elif outputs is None:
            taint = set(state.holds)
        obj = RemoteObject(
            id=oid or new_id(), kernel=kernel,
            type_name=safe_type_name(meta.get("type")), taint=set(taint),
            generation=state.host.generation, seq=seq, outputs=outputs,
        )
        shape = meta.get("shape")
        if isinstance(shape, list) and len(shape) <= 32 and all(
                isinstance(s, int) and 0 <= s < 2**63 for s in shape):
            obj.shape = shape
        dtype = meta.get("dtype")
        if isinstance(dtype, str) and len(dtype) <= 32 and dtype.replace(".", "").replace(
                "_", "").isalnum():
            obj.dtype = dtype
        self.objects[obj.id] = obj
        return obj

    def get(self, oid: Any, kernel: str | None = None) -> RemoteObject:
        """Resolve an id sent by the scientist; forged or stale ids all look the same."""
        obj = self.objects.get(oid) if isinstance(oid, str) else None
        if obj is None or obj.generation != self.kernels[obj.kernel].host.generation:
            raise UnknownObject(
                "no such object in this session (it may belong to a restarted kernel)",
                object=str(oid)[:80],
            )
        if kernel is not None and obj.kernel != kernel:
            raise UnknownObject(f"object lives in the {obj.kernel} kernel, not {kernel}",
                                object=obj.id)
        return obj

    def taint_of(self, obj: RemoteObject) -> set[str]:
        """The taint of ``obj`` now: everything its kernel ever held (module docstring)."""
        if obj.is_output:
            return set(obj.taint)  # immutable, kept in the server
        if obj.kernel in CLEAN_KERNELS:
            return set()
        return set(obj.taint) | self.kernels[obj.kernel].holds

    def kernel_restarted(self, kernel: str) -> None:
        """Forget what a kernel held (its generation already moved on)."""
        self.kernels[kernel].reset()
        for oid in [o.id for o in self.objects.values()
                    if o.kernel == kernel and o.generation != self.host(kernel).generation]:
            del self.objects[oid]

    def pointer_info(self, obj: RemoteObject,
                     declared: dict[str, Any] | None = None) -> PointerInfo:
        """What the scientist learns about a pointer.

        Data-dependent content of a tainted pointer: its type name, from the
        fixed vocabulary of :func:`~kernel_bridge.ops.allowlist.safe_type_name`
        (under 6 bits). Shape and dtype come only for clean objects, or for an
        asset as the worker itself loaded it (``declared``, computed by trusted
        code, given only where the owner's ``show_shape`` allows).
        """
        taint = self.taint_of(obj)
        info: PointerInfo = {"id": obj.id, "type": obj.type_name, "kernel": obj.kernel,
                             "taint": sorted(taint), "output": obj.is_output}
        if declared is not None:
            info["type"] = str(declared["type"])
            info["shape"] = declared.get("shape")
            info["dtype"] = declared.get("dtype")
        elif not taint:
            info["shape"] = list(obj.shape) if obj.shape is not None else None
            info["dtype"] = obj.dtype
        return info

    async def shutdown(self) -> None:
        for state in self.kernels.values():
            await state.host.shutdown()
