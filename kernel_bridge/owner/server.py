"""The worker's core: listen, handshake, authenticate, keep sessions, dispatch.

Everything an op does lives in a service (:mod:`.services`: objects, cells,
requests, DP); the core maps each message's op to its service, in order
(:mod:`.ordering`). Each authenticated connection gets a session (resumable
after a reconnect); each message becomes a task, so an ``interrupt`` can
overtake a running cell. Kernel work is serialised per kernel by
:attr:`KernelHost.lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

from .._version import __version__
from ..errors import (
    AuthenticationError,
    CodecError,
    ProtocolError,
    SyftError,
    VersionMismatch,
)
from ..wire import codec, frames
from ..wire.bulk import BulkServer, UploadQuotas
from ..wire.protocol import Op
from . import limits, tls
from .assets import Asset, load_assets
from .config import WorkerConfig
from .context import WorkerContext
from .revocation import RevocationWatch
from .services import Handler, Service
from .services.cells import CellService
from .services.dp import DPService
from .services.he import HEService
from .services.objects import ObjectService
from .services.plans import PlanService
from .services.requests import RequestService
from .services.secagg import SecAggService
from .services.smpc import SMPCService
from .session import Session
from .store import Store, hash_token

log = logging.getLogger("syftlab.worker")



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
        self.ctx = WorkerContext(config, self.store, self.assets)
        self.dp = DPService(self.ctx)
        self.services: list[Service] = [ObjectService(self.ctx), CellService(self.ctx),
                                        RequestService(self.ctx), self.dp,
                                        SMPCService(self.ctx)]  # smpc
        self.plans = PlanService(self.ctx, self.dp.ledger)  # plans
        self.services.append(self.plans)
        self.services.append(HEService(self.ctx))  # HE
        self.services.append(SecAggService(self.ctx, self.plans))  # fl: secure aggregation
        #: op -> (service, handler); a service's ops are listed in its ops().
        self.handlers: dict[str, tuple[Service | None, Handler]] = {
            Op.PING: (None, self.op_ping)}
        for service in self.services:
            for op, handler in service.ops().items():
                if op in self.handlers:
                    raise RuntimeError(f"two services answer {op!r}")
                self.handlers[op] = (service, handler)
        self.sandboxed = config.sandbox != "none"
        self._hide = [self.store.dir] + [a.spec.path for a in self.assets.values()]
        self.bulk: BulkServer | None = None
        self._server: Any = None
        self._reaper: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        if not self.sandboxed:
            log.warning("!" * 72)
            log.warning("UNSAFE: kernels run WITHOUT a sandbox (--unsafe-no-sandbox). Scientist "
                        "code can read this worker's state and private files.")
            log.warning("!" * 72)
        cfg = self.config
        self._decoder = self.ctx.decoder
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
        self.ctx.bulk = self.bulk
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
        await self.plans.close()  # plans: the spare plan kernel
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
        service, handler = self.handlers.get(msg["op"], (None, None))
        # Taken before the first await, so in arrival order (see ordering.py).
        kernels = service.kernels(Op(msg["op"]), session, msg) if service is not None else set()
        ticket = session.order.enter(kernels)
        try:
            if handler is None:
                raise ProtocolError(f"unknown operation {str(msg['op'])[:40]!r}")
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

    # -- operations -------------------------------------------------------------
    async def op_ping(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The worker's clock; releases nothing of any session."""
        return {"time": time.time()}
