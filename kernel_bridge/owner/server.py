"""The worker server: websockets in, kernels behind, the gate in between.

Each authenticated connection gets a session (resumable after a reconnect);
each message becomes a task, so an ``interrupt`` can overtake a running cell.
Kernel work is serialised per kernel by :attr:`KernelHost.lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

from .. import __version__
from ..errors import (
    AuthenticationError,
    CodecError,
    KernelDied,
    MethodNotAllowed,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RequestDenied,
    RequestPending,
    SyftError,
    UnknownAsset,
    UnknownObject,
    VersionMismatch,
)
from ..kernel.agent import meta_of
from ..ops import allowlist
from ..wire import codec, frames
from ..wire.bulk import TICKET_TTL, BulkServer, UploadQuotas
from ..wire.refs import PointerRef
from . import gate, limits, tls
from .assets import Asset, load_assets
from .config import WorkerConfig
from .dp_service import DPService
from .revocation import RevocationWatch
from .session import CLEAN_KERNELS, RemoteObject, Session
from .store import Store, hash_token

log = logging.getLogger("syftlab.worker")

#: Largest upload accepted on the bulk path.
MAX_UPLOAD = 16 << 30

Handler = Callable[[Session, dict[str, Any]], Awaitable[dict[str, Any]]]


class WorkerServer:
    """The trusted worker process.

    Parameters
    ----------
    config : WorkerConfig
        Settings (from TOML and/or flags).
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.store = Store(config.state)
        self.assets: dict[str, Asset] = load_assets(config)
        self.sessions: dict[str, Session] = {}
        self.dp = DPService(self.store, self.assets)
        self.sandboxed = config.sandbox != "none"
        self._hide = [self.store.dir] + [a.spec.path for a in self.assets.values()]
        self.bulk: BulkServer | None = None
        self._server: Any = None
        self._reaper: asyncio.Task[None] | None = None
        self._asset_frames: dict[tuple[str, str], tuple[bytes, list[Any]]] = {}
        #: Type/shape/dtype of each private asset as the worker itself loaded it, cut to
        #: what the owner's show_shape/show_row_count allow (never a kernel's claim).
        self._asset_meta: dict[str, dict[str, Any]] = {}
        self.handlers: dict[str, Handler] = {
            "datasets": self.op_datasets,
            "send": self.op_send,
            "asset": self.op_asset,
            "op": self.op_op,
            "get": self.op_get,
            "var": self.op_var,
            "delete": self.op_delete,
            "request": self.op_request,
            "request_status": self.op_request_status,
            "wait_request": self.op_wait_request,
            "request_result": self.op_request_result,
            "requests": self.op_requests,
            "run": self.op_run,
            "interrupt": self.op_interrupt,
            "restart": self.op_restart,
            "upload_ticket": self.op_upload_ticket,
            "ping": self.op_ping,
            "dp_query": self.dp.op_dp_query,
            "budget": self.dp.op_budget,
        }

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        if not self.sandboxed:
            log.warning("!" * 72)
            log.warning("UNSAFE: kernels run WITHOUT a sandbox (--unsafe-no-sandbox). Scientist "
                        "code can read this worker's state and private files.")
            log.warning("!" * 72)
        cfg = self.config
        self._decoder = limits.Decoder()
        # Decoding threads hand the interpreter back to the event loop within 1 ms.
        sys.setswitchinterval(0.001)
        ssl_context = None
        self.tls_fingerprint: str | None = None
        if cfg.tls:
            cert = tls.certificate(cfg.state, cfg.host, cfg.tls_cert, cfg.tls_key)
            ssl_context, self.tls_fingerprint = cert.server_context(), cert.fingerprint
        self.bulk = BulkServer(cfg.host, ssl_context=ssl_context, quotas=UploadQuotas(
            session_bytes=cfg.upload_quota, worker_bytes=cfg.upload_quota_worker,
            ttl=cfg.upload_ttl))
        # Until a hello authenticates, a frame may be PREAUTH_FRAME_LIMIT bytes at most;
        # _handshake raises the limit to frame_limit for that connection afterwards.
        self._server = await serve(
            self._connection, cfg.host, cfg.port, ssl=ssl_context,
            max_size=limits.PREAUTH_FRAME_LIMIT, open_timeout=limits.HANDSHAKE_TIMEOUT,
            max_queue=limits.MAX_QUEUED_FRAMES, compression=None, ping_interval=20,
            ping_timeout=60,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._reaper = asyncio.create_task(self._reap_sessions())
        self._revocation = RevocationWatch(self.store, self.sessions)
        self._watchers = [asyncio.create_task(self._revocation.run()),
                          asyncio.create_task(limits.every(1.0, self.bulk.expire))]
        self.store.audit("worker", "start", {"port": self.port, "sandboxed": self.sandboxed,
                                             "tls": self.tls_fingerprint})
        scheme = "wss" if cfg.tls else "ws"
        log.info("worker %s listening on %s://%s:%d (bulk port %d)%s", cfg.name, scheme,
                 cfg.host, self.port, self.bulk.port,
                 f"; TLS certificate {self.tls_fingerprint}" if cfg.tls else "")

    async def serve_forever(self, ready: Callable[[int], None] | None = None) -> None:
        await self.start()
        if ready is not None:
            ready(self.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for s in list(self.sessions.values()):
            await s.shutdown()
        if self.bulk is not None:
            self.bulk.close()
        self.store.audit("worker", "stop", {})
        self.store.close()

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = time.time()
            for s in list(self.sessions.values()):
                if s.detached_at is not None and now - s.detached_at > self.config.session_grace:
                    del self.sessions[s.id]
                    await s.shutdown()

    # -- connections ------------------------------------------------------------
    async def _connection(self, ws: ServerConnection) -> None:
        session = await self._handshake(ws)
        if session is None:
            return
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for raw in ws:
                try:
                    msg = await self._decode(raw, sender=session.scientist)
                except ProtocolError as exc:
                    await self._send(ws, {"re": None, "error": exc.to_wire()})
                    continue
                t = asyncio.create_task(self._dispatch(ws, session, msg))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except websockets.ConnectionClosed:
            pass
        finally:
            if session.connection is ws:
                session.connection = None
                session.detached_at = time.time()

    async def _decode(self, raw: Any, limit: int | None = None,
                      sender: str | None = None) -> dict[str, Any]:
        """One client message; large frames are decoded off the event loop (limits.py)."""
        return await self._decoder.message(raw, limit or self.config.frame_limit, sender)

    async def _send(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        header, buffers = codec.encode(msg)
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(frames.pack_bytes(header, buffers))

    async def _handshake(self, ws: ServerConnection) -> Session | None:
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=limits.HANDSHAKE_TIMEOUT)
            try:
                msg = await self._decode(raw, limits.PREAUTH_FRAME_LIMIT)
            except VersionMismatch as exc:
                await self._send_v1_error(ws, exc)
                return None
            if msg.get("op") != "hello":
                raise ProtocolError("the first message must be 'hello'")
            versions = msg.get("versions") or []
            if frames.WIRE_VERSION not in versions:
                raise VersionMismatch(
                    f"this worker speaks wire versions {list(frames.SUPPORTED_VERSIONS)}, "
                    f"the client offered {versions}", supported=list(frames.SUPPORTED_VERSIONS))
            scientist = self.store.scientist_for(msg.get("token") or "")
            if scientist is None:
                self.store.audit("unknown", "auth_refused", {"peer": str(ws.remote_address)})
                raise AuthenticationError("token missing, wrong or revoked; ask the data owner "
                                          "for one (syftlab token add NAME)")
            session, resumed = self._open_session(scientist, msg.get("resume"))
            self._revocation.track(session, hash_token(msg["token"]))
        except (TimeoutError, SyftError, websockets.ConnectionClosed) as exc:
            if isinstance(exc, SyftError):
                await self._send(ws, {"re": 0, "error": exc.to_wire()})
                await ws.close(1008, type(exc).__name__)
            return None
        ws.protocol.max_message_size = self.config.frame_limit  # authenticated from here on
        old = session.connection
        session.connection, session.detached_at = ws, None
        if old is not None and old is not ws:
            await old.close(1000, "session resumed elsewhere")
        await self._send(ws, {
            "re": 0, "ok": True, "version": frames.WIRE_VERSION, "session": session.id,
            "resume_key": session.resume_key, "resumed": resumed, "worker": self.config.name,
            "scientist": scientist, "bulk_port": self.bulk.port if self.bulk else 0,
            "bulk_threshold": self.config.bulk_threshold, "frame_limit": self.config.frame_limit,
            "server": f"syftlab {__version__}", "sandboxed": self.sandboxed,
            "tls": self.tls_fingerprint,
        })
        return session

    async def _send_v1_error(self, ws: ServerConnection, exc: SyftError) -> None:
        await self._send(ws, {"re": 0, "error": exc.to_wire()})
        await ws.close(1002, "version mismatch")

    def _open_session(self, scientist: str, resume: Any) -> tuple[Session, bool]:
        if isinstance(resume, dict):
            s = self.sessions.get(str(resume.get("session")))
            if s is not None and s.scientist == scientist and resume.get("key") == s.resume_key:
                return s, True
        s = Session(scientist, self._hide, sandboxed=self.sandboxed,
                    threads=self.config.threads, bulk_threshold=self.config.bulk_threshold,
                    limits=self.config.limits)
        self.sessions[s.id] = s
        self.store.add_session(s.id, scientist)
        return s, False

    async def _dispatch(self, ws: ServerConnection, session: Session,
                        msg: dict[str, Any]) -> None:
        mid = msg.get("#")
        # Taken before the first await, so in arrival order (see ordering.py).
        ticket = session.order.enter(self._kernels_touched(session, msg))
        try:
            handler = self.handlers.get(msg["op"])
            if handler is None:
                raise ProtocolError(f"unknown operation {msg['op']!r}")
            async with ticket:
                reply = await handler(session, msg)
            reply = {"re": mid, "ok": True, **reply}
        except SyftError as exc:
            reply = {"re": mid, "error": exc.to_wire()}
        except Exception as exc:  # a bug of ours: say so without details that could leak
            log.exception("internal error in %s", msg.get("op"))
            reply = {"re": mid, "error": {
                "type": "SyftError", "data": {},
                "message": f"internal worker error ({type(exc).__name__})"}}
        finally:
            ticket.done()
        try:
            await self._send(ws, reply)
        except (CodecError, ValueError) as exc:
            await self._send(ws, {"re": mid, "error": CodecError(str(exc)).to_wire()})

    def _kernels_touched(self, session: Session, msg: dict[str, Any]) -> set[str]:
        """The kernels a message may read or change, for :class:`Sequencer` order."""
        op = msg.get("op")
        side = "mock" if msg.get("mock") else None
        if op in ("run", "var", "asset"):
            return {side or "private"}
        if op == "send":
            return {side or "clean"}
        ids: list[Any] = []
        if op in ("get", "request"):
            ids = [msg.get("id")]
        elif op == "delete":
            ids = list(msg.get("ids") or [])[:10000]
        elif op == "op":
            refs: list[Any] = []
            with contextlib.suppress(ProtocolError):
                _walk_refs([msg.get("args"), msg.get("kwargs")], refs)
            ids = [msg.get("target"), *(r.id for r in refs)]
        else:
            return set()
        found = {o.kernel if not o.is_output else "private"
                 for o in (session.objects.get(i) if isinstance(i, str) else None for i in ids)
                 if o is not None}
        if op == "op" and "private" in found:
            found.add("clean")  # clean operands are copied (or moved) into the private kernel
        return found

    # -- helpers ----------------------------------------------------------------
    def _pointer(self, session: Session, obj: RemoteObject) -> dict[str, Any]:
        declared = None
        if obj.asset is not None and obj.kernel == "private":
            declared = self._asset_meta.get(obj.asset)
        return session.pointer_info(obj, declared)

    async def _agent(self, session: Session, kernel: str, content: dict[str, Any],
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
            if ename == "ObjectGone" and content.get("action") in ("op", "get"):
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

    def _value_frame(self, session: Session, kernel: str, reply: dict[str, Any],
                     bufs: list[Any], copy: bool) -> tuple[list[Any], int]:
        """The frame the agent produced, validated; ``copy`` detaches it from the arena."""
        if "arena" in reply:
            host = session.host(kernel)
            assert host.arena is not None
            size = int(reply["arena"])
            view = host.arena.view(size)
            data: Any = bytes(view) if copy else view
            codec.loads(data, limit=None)  # validate: a kernel is not trusted
            return [data], size
        if not bufs:
            raise ProtocolError("the kernel sent no value")
        codec.decode(bufs[0], bufs[1:])
        pieces = frames.pack(bytes(bufs[0]), bufs[1:])
        if copy:
            pieces = [b"".join(bytes(p) for p in pieces)]
        return pieces, frames.frame_size(bytes(bufs[0]), bufs[1:])

    def _deliver(self, pieces: list[Any], size: int
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

    async def _load_asset(self, session: Session, kernel: str, name: str) -> None:
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
        content, bufs = await self._put_content(session, kernel, header, buffers)
        oid = f"asset_{name}_{kernel}_{session.host(kernel).generation}"
        content.update(action="put", id=oid, bind=name)
        reply, _ = await self._agent(session, kernel, content, bufs)
        state.loaded.add(name)
        seq = session.record("asset", f"{name} = <asset {name!r} ({kernel})>", kernel, oid)
        obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        obj.asset = name

    async def _put_content(self, session: Session, kernel: str, header: bytes,
                           buffers: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        size = frames.frame_size(header, buffers)
        host = session.host(kernel)
        await host.ensure_started()
        if size >= self.config.bulk_threshold and host.arena is not None:
            host.arena.write(frames.pack(header, buffers))
            return {"arena": size}, []
        return {}, [header, *buffers]

    def _mentions(self, code: str) -> list[str]:
        return [n for n in self.assets if re.search(rf"\b{re.escape(n)}\b", code)]

    # -- operations -------------------------------------------------------------
    async def op_ping(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"time": time.time()}

    async def op_datasets(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"datasets": [a.describe() for a in self.assets.values()]}

    async def op_upload_ticket(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.bulk is not None
        size = msg.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_UPLOAD:
            raise ProtocolError(f"an upload 'size' is a number of bytes from 1 to {MAX_UPLOAD}")
        ticket = self.bulk.expect(size, owner=session.id)  # QuotaExceeded when over
        return {"ticket": ticket, "port": self.bulk.port}

    async def op_send(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Store a value the scientist sends; returns its (clean) pointer.

        Takes ``value`` (or ``upload``, a bulk ticket) and ``mock``. The value goes
        to the clean kernel (the mock kernel with ``mock``), never to the private
        one, so it stays free to fetch. Releases nothing the scientist did not send.
        """
        kernel = "mock" if msg.get("mock") else "clean"
        if "upload" in msg:
            assert self.bulk is not None
            data = await self.bulk.take(msg["upload"], owner=session.id)
            # Validate before it reaches a kernel, off the event loop (it may be large).
            value_header, value_buffers = await self._decoder.run(limits.validate_upload, data)
        else:
            value_header, value_buffers = codec.encode(msg.get("value"))
        host = session.host(kernel)
        async with host.lock:
            content, bufs = await self._put_content(session, kernel, value_header, value_buffers)
            oid = gate_new_id()
            content.update(action="put", id=oid)
            reply, _ = await self._agent(session, kernel, content, bufs)
            seq = session.record("send", f"{oid} = send(<{reply['meta'].get('type')}>)",
                                 kernel, oid)
            obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        return {"pointer": self._pointer(session, obj)}

    async def op_asset(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        name = msg.get("name")
        kernel = "mock" if msg.get("mock") else "private"
        if name not in self.assets:
            raise UnknownAsset(f"no asset named {name!r}; this worker has "
                               f"{sorted(self.assets)}", name=str(name)[:80])
        host = session.host(kernel)
        async with host.lock:
            await self._load_asset(session, kernel, name)
            obj = session.get(f"asset_{name}_{kernel}_{host.generation}")
        return {"pointer": self._pointer(session, obj)}

    async def _transfer(self, session: Session, obj: RemoteObject, dest: str,
                        oid: str) -> dict[str, Any]:
        """Copy ``obj``'s value from its (clean) kernel into ``dest`` under ``oid``."""
        src = session.host(obj.kernel)
        async with src.lock:
            reply, bufs = await self._agent(session, obj.kernel, {"action": "get", "id": obj.id})
            pieces, _ = self._value_frame(session, obj.kernel, reply, bufs, copy=True)
        header, buffers = frames.unpack(memoryview(pieces[0]), limit=None)
        host = session.host(dest)
        async with host.lock:
            content, bufs = await self._put_content(session, dest, bytes(header), list(buffers))
            content.update(action="put", id=oid)
            put, _ = await self._agent(session, dest, content, bufs)
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
            oid = gate_new_id()
            await self._transfer(session, obj, dest, oid)
            session.record("copy", f"{oid} = copy({obj.id})  # into the {dest} kernel", dest, oid)
            return oid
        await self._transfer(session, obj, dest, obj.id)
        src = obj.kernel
        obj.kernel, obj.generation = dest, session.host(dest).generation
        async with session.host(src).lock:
            await self._agent(session, src, {"action": "delete", "ids": [obj.id]})
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
            oid = gate_new_id()
            req = {"kind": kind, "name": name, "target": renames.get(target.id, target.id),
                   "args": args, "kwargs": kwargs, "reflected": bool(msg.get("reflected")),
                   "out": oid}
            header, buffers = codec.encode(req)
            try:
                reply, _ = await self._agent(session, kernel, {"action": "op"},
                                             [header, *buffers])
            except MethodNotAllowed:
                raise MethodNotAllowed(
                    f"{str(name)[:128]!r} is neither in the allow-list for remote "
                    f"{target.type_name} nor one of its columns; run it in a cell "
                    "(worker.run) instead", name=str(name)[:128]) from None
            finally:
                if copies:
                    with contextlib.suppress(SyftError):
                        await self._agent(session, kernel, {"action": "delete", "ids": copies})
            made = reply.get("meta", {}).get("type")
            if kind != "setitem" and allowlist.family_of(str(made)) is None:
                # Functions, classes, modules: a pointer to one could be called with
                # private data through a later op, producing "clean" results.
                await self._agent(session, kernel, {"action": "delete", "ids": [oid]})
                raise MethodNotAllowed(
                    f"{str(name)[:60]!r} on a remote {target.type_name} gave an object of a "
                    "type pointers never hold (functions, classes, modules, other objects); "
                    "use a cell (worker.run) for this")
            seq = session.record("op", describe_op(oid, target.id, kind, name, *shown,
                                                   bool(msg.get("reflected"))), kernel, oid)
            if kind == "setitem":
                return {"pointer": None}
            obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        return {"pointer": self._pointer(session, obj)}

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
            if name in self.assets and name not in session.kernels[kernel].loaded:
                await self._load_asset(session, kernel, name)
            oid = gate_new_id()
            try:
                reply, _ = await self._agent(session, kernel,
                                             {"action": "bind_var", "name": name, "id": oid})
            except RemoteError:
                raise UnknownObject(f"no variable {name!r} in the {kernel} kernel",
                                    name=name) from None
            seq = session.record("var", f"{oid} = {name}", kernel, oid)
            obj = session.add_object(kernel, reply["meta"], set(), seq, oid=oid)
        return {"pointer": self._pointer(session, obj)}

    async def op_delete(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
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
                    await self._agent(session, kernel, {"action": "delete", "ids": ids})
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
            out, _ = self._deliver(frames.pack(header, buffers),
                                   frames.frame_size(header, buffers))
            return out
        host = session.host(obj.kernel)
        await host.lock.acquire()
        done: asyncio.Future[Any] | None = None
        try:
            obj = session.get(msg.get("id"), obj.kernel)  # still there, in this kernel
            gate.check_release(session, obj)  # at the moment of release, under the lock
            reply, bufs = await self._agent(session, obj.kernel, {"action": "get", "id": obj.id})
            pieces, size = self._value_frame(session, obj.kernel, reply, bufs, copy=False)
            out, done = self._deliver(pieces, size)
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

    async def op_request(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Ask the owner to release a value: snapshot it now, for review.

        Takes ``id`` and ``reason``. The snapshot and its digest stay in the
        worker; the scientist gets the request's id and status, and the digest
        only together with an approved value (``request_result``), so an
        undecided or denied snapshot cannot be confirmed by guessing its hash.
        """
        obj = session.get(msg.get("id"))
        reason = msg.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > 4000:
            raise ProtocolError("a reason is a string of at most 4000 characters")
        if obj.is_output:
            data = codec.dumps(obj.outputs)
            value_type = "outputs"
        else:
            host = session.host(obj.kernel)
            async with host.lock:
                reply, bufs = await self._agent(session, obj.kernel,
                                                {"action": "get", "id": obj.id})
                pieces, _ = self._value_frame(session, obj.kernel, reply, bufs, copy=True)
            data = pieces[0]
            value_type = obj.type_name
        lineage = [dict(e, target=(e["object"] == obj.id)) for e in session.lineage
                   if e["seq"] <= len(session.lineage)]
        row = self.store.add_request(
            scientist=session.scientist, session_id=session.id, object_id=obj.id,
            kind="output" if obj.is_output else "value", value_type=value_type,
            reason=reason, frame=data, lineage=lineage,
        )
        return {"request": row.public()}

    def _own_request(self, session: Session, rid: Any) -> Any:
        row = self.store.request(int(rid)) if isinstance(rid, int) else None
        if row is None or row.scientist != session.scientist:
            raise PermissionDenied(f"no request {rid} of yours on this worker", request=rid)
        return row

    async def op_request_status(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The status of one of the scientist's requests (no digest, no size)."""
        return {"request": self._own_request(session, msg.get("request")).public()}

    async def op_requests(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The scientist's own requests on this worker (no digests, no sizes)."""
        return {"requests": [r.public() for r in self.store.requests(scientist=session.scientist)]}

    async def op_wait_request(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        rid = msg.get("request")
        timeout = limits.timeout_arg(msg.get("timeout"), default=0.0,
                                     maximum=limits.MAX_WAIT_TIMEOUT, allow_zero=True)
        deadline = time.monotonic() + timeout
        while True:
            row = self._own_request(session, rid)
            if row.status != "pending" or time.monotonic() >= deadline:
                return {"request": row.public()}
            await asyncio.sleep(0.1)

    async def op_request_result(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The approved snapshot, byte for byte, with its SHA-256 to check it by.

        Releases exactly what the owner approved, to the scientist who asked; the
        release is committed to the audit log before a byte leaves.
        """
        row = self._own_request(session, msg.get("request"))
        if row.status == "pending":
            raise RequestPending(f"request {row.id} is still pending", request=row.id)
        if row.status == "denied":
            raise RequestDenied(f"request {row.id} was denied: {row.deny_reason or ''}",
                                request=row.id, reason=row.deny_reason or "")
        data = self.store.snapshot_bytes(row)
        self.store.record_release(row)  # committed before a byte leaves
        out, _ = self._deliver([data], len(data))
        out["sha256"] = row.sha256
        return out

    async def op_run(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Run a cell in the private (or, with ``mock``, the mock) kernel.

        Takes ``code``, ``mock`` and ``timeout``; returns a receipt. From the
        private kernel a receipt's data-dependent content is bounded and does not
        grow with the cell (see :mod:`.gate`): status, error type, error line,
        whether outputs were held, and the duration. Its names are parsed from
        the source. A mock receipt carries the mock kernel's outputs in full.
        """
        code = msg.get("code")
        if not isinstance(code, str):
            raise ProtocolError("'code' must be a string")
        kernel = "mock" if msg.get("mock") else "private"
        timeout = limits.timeout_arg(msg.get("timeout"), default=self.config.exec_timeout,
                                     maximum=limits.MAX_RUN_TIMEOUT)
        state = session.kernels[kernel]
        host = state.host
        candidates = gate.assigned_names(code)
        # Only the mock kernel is asked which names exist and their types: from the
        # private kernel that would be a channel of several bits per name.
        expr = {} if kernel == "private" else {
            "names": "__import__('kernel_bridge.kernel.agent').kernel.agent.names_json("
                     f"{candidates!r})"}
        async with host.lock:
            for name in self._mentions(code):
                await self._load_asset(session, kernel, name)
            seq = session.record("cell", code, kernel)
            try:
                result = await host.execute(code, timeout=timeout, user_expressions=expr)
            except KernelDied:
                session.kernel_restarted(kernel)
                raise
            reported = None
            if kernel == "mock":
                reported = gate.parse_user_expression(result.user_expressions.get("names"))
                if result.status != "ok" and candidates:
                    with contextlib.suppress(SyftError):
                        r, _ = await self._agent(session, kernel, {
                            "action": "names", "names": candidates}, timeout=10)
                        reported = r.get("names")
        if kernel == "private":
            names = gate.parsed_names(candidates)
        else:
            names = gate.receipt_names(candidates, reported, state.names)
        receipt: dict[str, Any] = {
            "worker": self.config.name, "kernel": kernel, "status": result.status,
            "error_type": gate.safe_error_name(result.ename) if result.ename else None,
            "duration": round(result.duration, 4), "names": names, "cell": seq, "held": [],
            "error_line": gate.error_line(result.traceback, result.execution_count, code)
            if result.ename else None,
        }
        if kernel == "mock":
            receipt["outputs"] = result.outputs
        elif result.outputs:
            obj = session.add_object(kernel, {"type": "outputs"}, set(state.holds), seq,
                                     oid=gate_new_id("o"), outputs=result.outputs)
            session.lineage[seq - 1]["object"] = obj.id  # the cell that produced them
            receipt["held"] = [self._pointer(session, obj)]
        if result.status == "timeout":
            receipt["error_type"] = "TimeoutError"
        return {"receipt": receipt}

    async def op_interrupt(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        kernel = "mock" if msg.get("mock") else "private"
        await session.host(kernel).interrupt()
        return {}

    async def op_restart(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        kernel = "mock" if msg.get("mock") else "private"
        host = session.host(kernel)
        await host.interrupt() if host.started else None
        async with host.lock:
            await host.restart()
            session.kernel_restarted(kernel)
        return {}


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


def gate_new_id(prefix: str = "p") -> str:
    from .session import new_id

    return new_id(prefix)


def _short(v: Any) -> str:
    if isinstance(v, PointerRef):
        return v.id
    if isinstance(v, list | tuple):
        inner = ", ".join(_short(x) for x in v[:8]) + (", ..." if len(v) > 8 else "")
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_short(x)}" for k, x in list(v.items())[:8]) + "}"
    shape = getattr(v, "shape", None)
    if shape is not None:
        return f"<{type(v).__name__} shape={tuple(shape)}>"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def describe_op(out: str, target: str, kind: str, name: Any, args: list[Any],
                kwargs: dict[str, Any], reflected: bool) -> str:
    """Readable code for one pointer operation, for the lineage the owner reviews."""
    a = ", ".join([_short(x) for x in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()])
    if kind == "binop":
        sym = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//",
               "mod": "%", "pow": "**", "matmul": "@", "and": "&", "or": "|", "xor": "^",
               "lshift": "<<", "rshift": ">>", "eq": "==", "ne": "!=", "lt": "<", "le": "<=",
               "gt": ">", "ge": ">="}.get(str(name))
        if name == "getitem":
            return f"{out} = {target}[{a}]"
        left, right = (a, target) if reflected else (target, a)
        return f"{out} = {left} {sym} {right}"
    if kind == "unop":
        return f"{out} = {name}({target})"
    if kind == "getitem":
        return f"{out} = {target}[{a}]"
    if kind == "setitem":
        key = _short(args[0]) if args else ""
        value = _short(args[1]) if len(args) > 1 else ""
        return f"{target}[{key}] = {value}"
    if kind == "attr":
        return f"{out} = {target}.{name}"
    return f"{out} = {target}.{name}({a})"
