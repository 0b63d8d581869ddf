"""Objects and pointers: send, assets, pointer operations, variables, get, delete.

Values live in a session's kernels: what the scientist sends in the clean
kernel, assets and cell results in the private one, mock data in the mock one
(:mod:`..session` says why this keeps taint sound). Operations mixing clean and
private values run in the private kernel on copies; ``get`` releases a value
only if it is clean at the moment it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from ...errors import (
    MethodNotAllowed,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    SyftError,
    UnknownAsset,
    UnknownObject,
)
from ...ops import allowlist
from ...wire import codec, frames
from ...wire.protocol import Action, Op
from ...wire.refs import PointerRef
from .. import gate, limits
from ..session import CLEAN_KERNELS, RemoteObject, Session, new_id
from .base import Handler, Service
from .describe import describe_op

#: Largest upload accepted on the bulk path.
MAX_UPLOAD = 16 << 30


class ObjectService(Service):
    """Pointers: what the scientist sends, assets, operations on them, and ``get``."""

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.DATASETS: self.op_datasets, Op.UPLOAD_TICKET: self.op_upload_ticket,
                Op.SEND: self.op_send, Op.ASSET: self.op_asset, Op.OP: self.op_op,
                Op.VAR: self.op_var, Op.DELETE: self.op_delete, Op.GET: self.op_get}

    def kernels(self, op: Op, session: Session, msg: dict[str, Any]) -> set[str]:
        side = "mock" if msg.get("mock") else None
        if op in (Op.VAR, Op.ASSET):
            return {side or "private"}
        if op == Op.SEND:
            return {side or "clean"}
        ids: list[Any] = []
        if op == Op.GET:
            ids = [msg.get("id")]
        elif op == Op.DELETE:
            ids = list(msg.get("ids") or [])[:10000]
        elif op == Op.OP:
            refs: list[PointerRef] = []
            with contextlib.suppress(ProtocolError):
                _walk_refs([msg.get("args"), msg.get("kwargs")], refs)
            ids = [msg.get("target"), *(r.id for r in refs)]
        found = kernels_of(session, ids)
        if op == Op.OP and "private" in found:
            found.add("clean")  # clean operands are copied (or moved) into the private kernel
        return found

    async def op_datasets(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The worker's assets as their owner declared them (public by declaration)."""
        return {"datasets": [a.describe() for a in self.ctx.assets.values()]}

    async def op_upload_ticket(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """A one-shot ticket for a large upload on the bulk path.

        Takes ``size`` (bytes, 1 to 16 GiB); returns ``ticket`` and ``port``. Memory
        grows only as bytes arrive, within the session's and the worker's quotas
        (:class:`~kernel_bridge.errors.QuotaExceeded` past them). Releases nothing.
        """
        assert self.ctx.bulk is not None
        size = msg.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_UPLOAD:
            raise ProtocolError(f"an upload 'size' is a number of bytes from 1 to {MAX_UPLOAD}")
        ticket = self.ctx.bulk.expect(size, owner=session.id)  # QuotaExceeded when over
        return {"ticket": ticket, "port": self.ctx.bulk.port}

    async def op_send(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Store a value the scientist sends; returns its (clean) pointer.

        Takes ``value`` (or ``upload``, a bulk ticket) and ``mock``. The value goes
        to the clean kernel (the mock kernel with ``mock``), never to the private
        one, so it stays free to fetch. Releases nothing the scientist did not send.
        """
        kernel = "mock" if msg.get("mock") else "clean"
        if "upload" in msg:
            assert self.ctx.bulk is not None
            data = await self.ctx.bulk.take(msg["upload"], owner=session.id)
            # Validate before it reaches a kernel, off the event loop (it may be large).
            value_header, value_buffers = await self.ctx.decoder.run(limits.validate_upload, data)
        else:
            value_header, value_buffers = codec.encode(msg.get("value"))
        host = session.host(kernel)
        async with host.lock:
            content, bufs = await self.ctx.put_content(session, kernel, value_header, value_buffers)
            oid = new_id()
            content.update(action=Action.PUT, id=oid)
            reply, _ = await self.ctx.agent(session, kernel, content, bufs)
            seq = session.record("send", f"{oid} = send(<{reply['meta'].get('type')}>)",
                                 kernel, oid)
            obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        return {"pointer": self.ctx.pointer(session, obj)}

    async def op_asset(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """A pointer to a registered asset, placed in the private (or mock) kernel.

        Takes ``name`` and ``mock``. The private kernel's taint record gets the asset
        before the asset is sent to it. Releases the asset's type and, where the
        owner allows, its declared shape.
        """
        name = msg.get("name")
        kernel = "mock" if msg.get("mock") else "private"
        if name not in self.ctx.assets:
            raise UnknownAsset(f"no asset named {name!r}; this worker has "
                               f"{sorted(self.ctx.assets)}", name=str(name)[:80])
        host = session.host(kernel)
        async with host.lock:
            await self.ctx.load_asset(session, kernel, name)
            obj = session.get(f"asset_{name}_{kernel}_{host.generation}")
        return {"pointer": self.ctx.pointer(session, obj)}

    async def _transfer(self, session: Session, obj: RemoteObject, dest: str,
                        oid: str) -> dict[str, Any]:
        """Copy ``obj``'s value from its (clean) kernel into ``dest`` under ``oid``."""
        src = session.host(obj.kernel)
        async with src.lock:
            reply, bufs = await self.ctx.agent(session, obj.kernel,
                                               {"action": Action.GET, "id": obj.id})
            pieces, _ = self.ctx.value_frame(session, obj.kernel, reply, bufs, copy=True)
        header, buffers = frames.unpack(memoryview(pieces[0]), limit=None)
        host = session.host(dest)
        async with host.lock:
            content, bufs = await self.ctx.put_content(session, dest, bytes(header), list(buffers))
            content.update(action=Action.PUT, id=oid)
            put, _ = await self.ctx.agent(session, dest, content, bufs)
        meta: dict[str, Any] = put["meta"]
        return meta

    async def _bring(self, session: Session, obj: RemoteObject, dest: str,
                     move: bool) -> str:
        """Make a clean object usable in kernel ``dest``; returns the id to use there.

        A copy gets a new id and the original stays where it is, clean. With
        ``move`` (a receiver that an operation may mutate) the object itself
        moves: its pointer now names the copy in ``dest``.
        """
        if obj.kernel not in CLEAN_KERNELS:
            raise PermissionDenied("values of the private and the mock kernel cannot be "
                                   "combined; use the mock's own values with mock data")
        if not move:
            oid = new_id()
            await self._transfer(session, obj, dest, oid)
            session.record("copy", f"{oid} = copy({obj.id})  # into the {dest} kernel", dest, oid)
            return oid
        await self._transfer(session, obj, dest, obj.id)
        src = obj.kernel
        obj.kernel, obj.generation = dest, session.host(dest).generation
        async with session.host(src).lock:
            await self.ctx.agent(session, src, {"action": Action.DELETE, "ids": [obj.id]})
        session.record("move", f"{obj.id}: moved into the {dest} kernel", dest, obj.id)
        return obj.id

    async def op_op(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Run one allow-listed operation on a pointer.

        Takes ``target``, ``kind`` (binop, unop, getitem, setitem, attr, method),
        ``name``, ``args``, ``kwargs`` and ``reflected``; returns the result's
        pointer (None for setitem). The operation runs in the kernel of its
        operands; clean operands mixed with private ones are copied into the
        private kernel first (a mutable receiver moves there). Releases: the
        result's pointer metadata (:meth:`Session.pointer_info`) or, on failure,
        an error type from a fixed vocabulary.
        """
        kind, name = msg.get("kind"), msg.get("name")
        target = session.get(msg.get("target"))
        if target.is_output:
            raise PermissionDenied("held outputs cannot be operated on; request them instead")
        args, kwargs = list(msg.get("args") or []), dict(msg.get("kwargs") or {})
        if kind == "binop" and name not in allowlist.BINARY_OPS:
            raise MethodNotAllowed(f"operator {str(name)[:40]!r} is not allowed")
        if kind == "unop" and name not in allowlist.UNARY_OPS:
            raise MethodNotAllowed(f"operator {str(name)[:40]!r} is not allowed")
        if kind in ("attr", "method"):
            family = allowlist.family_of(target.type_name)
            allowlist.check_name(family, str(name))
            allowlist.check_dispatch_strings(family, str(name), [args, kwargs])
        elif kind not in ("binop", "unop", "getitem", "setitem"):
            raise ProtocolError(f"unknown operation kind {kind!r}")
        refs: list[PointerRef] = []
        _walk_refs([args, kwargs], refs)
        operands = [session.get(r.id) for r in refs]
        for o in operands:
            if o.is_output:
                raise PermissionDenied("held outputs cannot be used as arguments")
            if allowlist.family_of(o.type_name) is None:
                raise MethodNotAllowed(f"a pointer to a {o.type_name} cannot be an argument")
        kernels = {target.kernel, *(o.kernel for o in operands)}
        if {"private", "mock"} <= kernels:
            raise PermissionDenied("values of the private and the mock kernel cannot be "
                                   "combined; use the mock's own values with mock data")
        kernel = "private" if "private" in kernels else "mock" if "mock" in kernels else "clean"
        renames: dict[str, str] = {}
        if target.kernel != kernel:
            renames[target.id] = await self._bring(session, target, kernel,
                                                   move=kind in ("setitem", "method"))
        for o in operands:
            if o.kernel != kernel and o.id not in renames:
                renames[o.id] = await self._bring(session, o, kernel, move=False)
        shown = (args, kwargs)  # the lineage shows the scientist's pointers, not copies
        if renames:
            args, kwargs = _rename_refs(args, kwargs, renames)
        copies = [new for old, new in renames.items() if new != old]
        host = session.host(kernel)
        async with host.lock:
            oid = new_id()
            req = {"kind": kind, "name": name, "target": renames.get(target.id, target.id),
                   "args": args, "kwargs": kwargs, "reflected": bool(msg.get("reflected")),
                   "out": oid}
            header, buffers = codec.encode(req)
            try:
                reply, _ = await self.ctx.agent(session, kernel, {"action": Action.OP},
                                             [header, *buffers])
            except MethodNotAllowed:
                raise MethodNotAllowed(
                    f"{str(name)[:128]!r} is neither in the allow-list for remote "
                    f"{target.type_name} nor one of its columns; run it in a cell "
                    "(worker.run) instead", name=str(name)[:128]) from None
            finally:
                if copies:
                    with contextlib.suppress(SyftError):
                        await self.ctx.agent(session, kernel,
                                             {"action": Action.DELETE, "ids": copies})
            made = reply.get("meta", {}).get("type")
            if kind != "setitem" and allowlist.family_of(str(made)) is None:
                # Functions, classes, modules: a pointer to one could be called with
                # private data through a later op, producing "clean" results.
                await self.ctx.agent(session, kernel, {"action": Action.DELETE, "ids": [oid]})
                raise MethodNotAllowed(
                    f"{str(name)[:60]!r} on a remote {target.type_name} gave an object of a "
                    "type pointers never hold (functions, classes, modules, other objects); "
                    "use a cell (worker.run) for this")
            seq = session.record("op", describe_op(oid, target.id, kind, name, *shown,
                                                   bool(msg.get("reflected"))), kernel, oid)
            if kind == "setitem":
                return {"pointer": None}
            obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        return {"pointer": self.ctx.pointer(session, obj)}

    async def op_var(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """A pointer to a variable of the private (or mock) kernel.

        Takes ``name`` and ``mock``. Releases whether the name is bound and, if
        so, the pointer's metadata: together at most a type name per call.
        """
        name = msg.get("name")
        kernel = "mock" if msg.get("mock") else "private"
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ProtocolError("a variable name is a public Python identifier")
        host = session.host(kernel)
        async with host.lock:
            if name in self.ctx.assets and name not in session.kernels[kernel].loaded:
                await self.ctx.load_asset(session, kernel, name)
            oid = new_id()
            try:
                reply, _ = await self.ctx.agent(session, kernel,
                                             {"action": Action.BIND_VAR, "name": name, "id": oid})
            except RemoteError:
                raise UnknownObject(f"no variable {name!r} in the {kernel} kernel",
                                    name=name) from None
            seq = session.record("var", f"{oid} = {name}", kernel, oid)
            obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        return {"pointer": self.ctx.pointer(session, obj)}

    async def op_delete(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Forget objects of the session (assets stay). Takes ``ids``; releases nothing."""
        by_kernel: dict[str, list[str]] = {}
        for oid in msg.get("ids") or []:
            obj = session.objects.get(oid) if isinstance(oid, str) else None
            if obj is not None and not obj.id.startswith("asset_"):
                del session.objects[oid]
                if not obj.is_output:
                    by_kernel.setdefault(obj.kernel, []).append(oid)
        for kernel, ids in by_kernel.items():
            host = session.host(kernel)
            if host.started:
                async with host.lock:
                    await self.ctx.agent(session, kernel, {"action": Action.DELETE, "ids": ids})
        return {}

    async def op_get(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The value behind a pointer, if it is clean.

        Takes ``id``; returns the encoded value inline (``frame``) or a bulk
        ``download`` ticket. The release check runs under the lock of the kernel
        that holds the value, right before it is read, after every earlier
        message of the session on that kernel (:mod:`.ordering`): nothing can
        taint the value between the check and the read. Tainted values raise
        :class:`ApprovalRequired` and release nothing.
        """
        obj = session.get(msg.get("id"))
        if obj.is_output:
            gate.check_release(session, obj)
            header, buffers = codec.encode(obj.outputs)
            out, _ = self.ctx.deliver(frames.pack(header, buffers),
                                   frames.frame_size(header, buffers))
            return out
        host = session.host(obj.kernel)
        await host.lock.acquire()
        done: asyncio.Future[Any] | None = None
        try:
            obj = session.get(msg.get("id"), obj.kernel)  # still there, in this kernel
            gate.check_release(session, obj)  # at the moment of release, under the lock
            reply, bufs = await self.ctx.agent(session, obj.kernel,
                                               {"action": Action.GET, "id": obj.id})
            pieces, size = self.ctx.value_frame(session, obj.kernel, reply, bufs, copy=False)
            out, done = self.ctx.deliver(pieces, size)
            session.record("get", f"get({obj.id})", obj.kernel, obj.id)
        finally:
            if done is None:
                host.lock.release()
            else:
                # The arena must not be reused before the client has read it all.
                def release(f: asyncio.Future[Any]) -> None:
                    if not f.cancelled():
                        f.exception()  # retrieved, so asyncio does not log it
                    host.lock.release()

                done.add_done_callback(release)
        return out


def kernels_of(session: Session, ids: list[Any]) -> set[str]:
    """The kernels holding the objects ``ids`` (held outputs count as private)."""
    objs = (session.objects.get(i) if isinstance(i, str) else None for i in ids)
    return {o.kernel if not o.is_output else "private" for o in objs if o is not None}


def _walk_refs(value: Any, found: list[PointerRef], depth: int = 0) -> None:
    """Collect the pointers inside an operation's arguments."""
    if depth > 32:
        raise ProtocolError("arguments nest too deeply")
    if isinstance(value, PointerRef):
        found.append(value)
    elif isinstance(value, list | tuple):
        for v in value:
            _walk_refs(v, found, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _walk_refs(v, found, depth + 1)

def _rename_refs(args: list[Any], kwargs: dict[str, Any], renames: dict[str, str]
                 ) -> tuple[list[Any], dict[str, Any]]:
    """The arguments with pointers to copied objects renamed to the copies."""
    def walk(v: Any) -> Any:
        if isinstance(v, PointerRef):
            return PointerRef(renames.get(v.id, v.id))
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, tuple):
            return tuple(walk(x) for x in v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return [walk(a) for a in args], {k: walk(v) for k, v in kwargs.items()}
