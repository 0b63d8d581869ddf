"""A scientist's session on a worker: its kernels, objects, taint and lineage.

The trusted server keeps every record here; kernels only hold the values.
Taint is conservative: once the private kernel ran a scientist cell, every
object in it (old or new) carries everything that kernel ever held, until the
kernel restarts.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnknownObject
from .config import SandboxLimits
from .kernels import KernelHost

KERNELS = ("private", "mock")


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

    @property
    def is_output(self) -> bool:
        return self.outputs is not None


@dataclass
class KernelState:
    """Per-kernel taint bookkeeping (reset when the kernel restarts)."""

    host: KernelHost
    loaded: set[str] = field(default_factory=set)
    holds: set[str] = field(default_factory=set)  # union of taints ever placed in it
    dirty: bool = False  # a scientist cell ran here
    names: dict[str, str] = field(default_factory=dict)  # variables reported so far

    def reset(self) -> None:
        self.loaded.clear()
        self.holds.clear()
        self.dirty = False
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
        if kernel == "mock":
            taint = set()  # mock data is public by the owner's declaration
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
        state.holds |= obj.taint
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
        """The effective taint of ``obj`` (a dirty kernel taints all it holds)."""
        if obj.kernel == "mock":
            return set()
        state = self.kernels[obj.kernel]
        if state.dirty and obj.generation == state.host.generation:
            return obj.taint | state.holds
        return set(obj.taint)

    def kernel_restarted(self, kernel: str) -> None:
        """Forget what a kernel held (its generation already moved on)."""
        self.kernels[kernel].reset()
        for oid in [o.id for o in self.objects.values()
                    if o.kernel == kernel and o.generation != self.host(kernel).generation]:
            del self.objects[oid]

    def pointer_info(self, obj: RemoteObject, show_shape: bool) -> dict[str, Any]:
        """What the scientist learns about a pointer."""
        taint = self.taint_of(obj)
        info: dict[str, Any] = {"id": obj.id, "type": obj.type_name, "kernel": obj.kernel,
                                "taint": sorted(taint), "output": obj.is_output}
        # A dirty kernel could lie about shapes to encode private values.
        honest = not self.kernels[obj.kernel].dirty
        if not taint or (show_shape and honest):
            info["shape"] = obj.shape
            info["dtype"] = obj.dtype
        return info

    async def shutdown(self) -> None:
        for state in self.kernels.values():
            await state.host.shutdown()
