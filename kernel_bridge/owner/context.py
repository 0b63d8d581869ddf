"""What the worker's services share: settings, state, assets, and the calls into kernels.

A :class:`WorkerContext` is made once per worker process and handed to every
service (:mod:`.services`). It holds no per-session state (that lives in
:class:`~.session.Session`); it knows how to talk to a session's kernels the
one trusted way: agent requests whose errors are reduced to their type, values
validated before they are passed on, assets placed with their taint recorded
first, and large values handed to the bulk path.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ..errors import KernelDied, MethodNotAllowed, ProtocolError, RemoteError, UnknownObject
from ..kernel.agent import meta_of
from ..wire import codec, frames
from ..wire.bulk import TICKET_TTL, BulkServer
from ..wire.protocol import Action, PointerInfo
from . import gate, limits
from .assets import Asset
from .config import WorkerConfig
from .session import RemoteObject, Session
from .store import Store


class WorkerContext:
    """Settings, state and kernel access shared by the worker's services.

    Parameters
    ----------
    config : WorkerConfig
        The worker's settings.
    store : Store
        The state directory (SQLite, snapshots, audit).
    assets : dict of str to Asset
        The assets the worker serves.
    """

    def __init__(self, config: WorkerConfig, store: Store, assets: dict[str, Asset]) -> None:
        self.config = config
        self.store = store
        self.assets = assets
        #: The bulk path; set when the server starts listening.
        self.bulk: BulkServer | None = None
        #: Decodes large client frames and uploads off the event loop.
        self.decoder = limits.Decoder()
        self._asset_frames: dict[tuple[str, str], tuple[bytes, list[Any]]] = {}
        #: Type/shape/dtype of each private asset as the worker itself loaded it, cut to
        #: what the owner's show_shape/show_row_count allow (never a kernel's claim).
        self._asset_meta: dict[str, dict[str, Any]] = {}

    def pointer(self, session: Session, obj: RemoteObject) -> PointerInfo:
        """What the scientist may learn about ``obj`` (an asset: as the worker loaded it)."""
        declared = None
        if obj.asset is not None and obj.kernel == "private":
            declared = self._asset_meta.get(obj.asset)
        return session.pointer_info(obj, declared)

    async def agent(self, session: Session, kernel: str, content: dict[str, Any],
                    buffers: list[Any] | None = None, timeout: float | None = None
                    ) -> tuple[dict[str, Any], list[Any]]:
        """One agent request; the caller holds the kernel's lock."""
        host = session.host(kernel)
        try:
            reply, bufs = await host.request(content, buffers,
                                             timeout=timeout or self.config.exec_timeout)
        except KernelDied:
            session.kernel_restarted(kernel)
            raise
        if reply.get("status") != "ok":
            ename = reply.get("ename")
            if ename == "ObjectGone" and content.get("action") in (Action.OP, Action.GET):
                raise UnknownObject("the object is gone from the kernel (restarted or deleted)")
            if ename == "MethodNotAllowed":
                # The kernel's own message is not forwarded: scientist code may have
                # replaced the agent, and a message can carry anything.
                raise MethodNotAllowed("the kernel refused this operation: it is neither an "
                                       "allow-listed member nor a column of the remote object")
            # Only the type: the message could quote private values.
            name = gate.safe_error_name(ename)
            raise RemoteError(f"{name} raised on the worker", error_type=name)
        return reply, bufs

    def value_frame(self, session: Session, kernel: str, reply: dict[str, Any],
                    bufs: list[Any], copy: bool) -> tuple[list[Any], int]:
        """The frame the agent produced, validated; ``copy`` detaches it from the arena."""
        if "arena" in reply:
            host = session.host(kernel)
            assert host.arena is not None
            size = int(reply["arena"])
            view = host.arena.view(size)
            data: Any = bytes(view) if copy else view
            codec.loads(data, limit=None, tensors="wire")  # validate: a kernel is not trusted
            return [data], size
        if not bufs:
            raise ProtocolError("the kernel sent no value")
        codec.decode(bufs[0], bufs[1:], tensors="wire")
        pieces = frames.pack(bytes(bufs[0]), bufs[1:])
        if copy:
            pieces = [b"".join(bytes(p) for p in pieces)]
        return pieces, frames.frame_size(bytes(bufs[0]), bufs[1:])

    def deliver(self, pieces: list[Any], size: int
                 ) -> tuple[dict[str, Any], asyncio.Future[Any] | None]:
        """Inline small frames; hand large ones to the bulk path.

        Returns the reply fields and, for a bulk transfer, a future that is done
        once the client has read every byte (or the ticket expired).
        """
        if size < self.config.bulk_threshold or self.bulk is None:
            data = pieces[0] if len(pieces) == 1 else b"".join(bytes(p) for p in pieces)
            return {"frame": bytes(data)}, None
        ticket, done = self.bulk.offer(pieces)
        asyncio.get_running_loop().call_later(TICKET_TTL, self.bulk.cancel, ticket)
        return {"download": ticket, "size": size}, done

    async def load_asset(self, session: Session, kernel: str, name: str) -> None:
        """Place asset ``name`` (private or mock side) in a kernel; caller holds the lock."""
        state = session.kernels[kernel]
        if name in state.loaded:
            return
        asset = self.assets[name]
        key = (kernel, name)
        if key not in self._asset_frames:
            value = asset.private() if kernel == "private" else asset.mock()
            self._asset_frames[key] = codec.encode(value)
            if kernel == "private":
                self._asset_meta[name] = declared_meta(value, asset)
        if kernel == "private":
            # Recorded before a byte of the asset reaches the kernel: the kernel's
            # answer (it may run a replaced agent) is never needed to know it holds it.
            state.hold(name)
        header, buffers = self._asset_frames[key]
        content, bufs = await self.put_content(session, kernel, header, buffers)
        oid = f"asset_{name}_{kernel}_{session.host(kernel).generation}"
        content.update(action=Action.PUT, id=oid, bind=name)
        reply, _ = await self.agent(session, kernel, content, bufs)
        state.loaded.add(name)
        seq = session.record("asset", f"{name} = <asset {name!r} ({kernel})>", kernel, oid)
        obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        obj.asset = name

    async def put_content(self, session: Session, kernel: str, header: bytes,
                          buffers: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        """The content and buffers of a ``put`` (large values go through the arena)."""
        size = frames.frame_size(header, buffers)
        host = session.host(kernel)
        await host.ensure_started()
        if size >= self.config.bulk_threshold and host.arena is not None:
            host.arena.write(frames.pack(header, buffers))
            return {"arena": size}, []
        return {}, [header, *buffers]

    def mentions(self, code: str) -> list[str]:
        """The assets a cell's source names (they are loaded before it runs)."""
        return [n for n in self.assets if re.search(rf"\b{re.escape(n)}\b", code)]


def declared_meta(value: Any, asset: Asset) -> dict[str, Any]:
    """What a pointer to a private asset may say about it, from the worker's own load.

    The type always (assets are declared as DataFrame, ndarray or tensor); shape
    and dtype only with the owner's ``show_shape``, and the first dimension (the
    row count) only with ``show_row_count``.
    """
    meta = meta_of(value)
    out: dict[str, Any] = {"type": meta["type"], "shape": None, "dtype": None}
    if asset.spec.show_shape:
        shape = list(meta.get("shape") or [])
        if shape and not asset.spec.show_row_count:
            shape[0] = None
        out.update(shape=shape or None, dtype=meta.get("dtype"))
    return out
