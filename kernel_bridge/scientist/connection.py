"""The async core of the scientist's client: one websocket to one worker.

Messages are codec frames; each call carries an id and awaits the reply with
the same id, so calls can overlap (an interrupt overtakes a running cell).
Large values go over the bulk path (:mod:`kernel_bridge.wire.bulk`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from typing import Any
from urllib.parse import urlparse

import websockets
from websockets.asyncio.client import ClientConnection, connect

from ..errors import (
    CertificateMismatch,
    ConnectionLost,
    FrameTooLarge,
    InvalidURL,
    ProtocolError,
    SyftError,
    WorkerUnreachable,
    from_wire,
)
from ..wire import bulk, codec, frames, tls
from ..wire.protocol import Op

log = logging.getLogger("syftlab.client")

#: Largest frame the client accepts from a worker.
CLIENT_FRAME_LIMIT = 1 << 30


def connect_error(url: str, exc: BaseException, timeout: float) -> SyftError:
    """A typed error, saying what to check, for a failure to open a connection to ``url``."""
    if isinstance(exc, websockets.InvalidURI) or not url.startswith(("ws://", "wss://")):
        return InvalidURL(f"{url!r} is not a worker address: use ws://HOST:PORT (or wss://), "
                          "as the data owner's `syftlab worker` prints it", url=url)
    if isinstance(exc, ConnectionRefusedError):
        why = "connection refused: is the worker running, and is the port right?"
    elif isinstance(exc, socket.gaierror):
        why = "unknown host: check the host name"
    elif isinstance(exc, TimeoutError):
        why = (f"no answer within {timeout:g} s: is the host reachable (firewall, VPN) "
               "and the port right?")
    elif isinstance(exc, websockets.InvalidHandshake):
        why = f"something answered, but not a syftlab worker ({exc}): check the port"
    else:
        why = f"{type(exc).__name__}: {exc}"
    return WorkerUnreachable(f"cannot reach the worker at {url}: {why}", url=url)


class Connection:
    """An authenticated connection (and session) to one worker.

    Parameters
    ----------
    url : str
        ``ws://host:port`` of the worker, or ``wss://`` when it serves TLS.
    token : str
        The scientist's token from the data owner.
    fingerprint : str, optional
        With ``wss://``: the SHA-256 fingerprint of the worker's certificate, as
        the data owner gave it (``sha256:...``). The certificate is checked
        against it before the token is sent; without it, the system's
        certificate authorities must vouch for the worker.
    """

    def __init__(self, url: str, token: str, open_timeout: float = 30.0,
                 fingerprint: str | None = None) -> None:
        self.url = url
        self.token = token
        self.open_timeout = open_timeout
        self.host = urlparse(url).hostname or "127.0.0.1"
        self.fingerprint = tls.normalize(fingerprint) if fingerprint else None
        self._ssl = tls.client_context(self.fingerprint) if url.startswith("wss://") else None
        if self.fingerprint is not None and self._ssl is None:
            raise ProtocolError("a certificate fingerprint needs a wss:// URL")
        self.info: dict[str, Any] = {}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    async def open(self, resume: bool = False) -> dict[str, Any]:
        """Connect and say hello; with ``resume`` try to get the previous session back."""
        try:
            ws = await connect(self.url, max_size=CLIENT_FRAME_LIMIT, compression=None,
                               open_timeout=self.open_timeout, ping_interval=20,
                               ping_timeout=60, ssl=self._ssl)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateMismatch(
                f"the worker at {self.url} has a TLS certificate no authority vouches for "
                f"({exc.verify_message}); pass the fingerprint the data owner gave you "
                "(kb.connect(url, token, fingerprint='sha256:...'))") from None
        except (OSError, TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake
                ) as exc:
            raise connect_error(self.url, exc, self.open_timeout) from exc
        if self._ssl is not None:
            try:  # the pin is checked before the token leaves
                tls.check_peer(ws.transport.get_extra_info("ssl_object"), self.fingerprint,
                               f"the worker at {self.url}")
            except SyftError:
                await ws.close()
                raise
        hello: dict[str, Any] = {"op": str(Op.HELLO), "#": 0, "token": self.token,
                                 "versions": list(frames.SUPPORTED_VERSIONS),
                                 "client": "kernel_bridge"}
        if resume and self.info.get("session"):
            hello["resume"] = {"session": self.info["session"], "key": self.info["resume_key"]}
        await ws.send(codec.dumps(hello))
        try:
            raw = await asyncio.wait_for(ws.recv(decode=False), self.open_timeout)
            reply = codec.loads(raw, limit=CLIENT_FRAME_LIMIT)
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"worker at {self.url} closed the connection: {exc}") from None
        if not isinstance(reply, dict):
            await ws.close()
            raise ProtocolError(f"the worker at {self.url} answered hello with a "
                                f"{type(reply).__name__}, not a map")
        if "error" in reply:
            await ws.close()
            raise from_wire(reply["error"])
        self.info = reply
        self._ws = ws
        self._reader = asyncio.create_task(self._read())
        return reply

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        err: SyftError = ConnectionLost(f"connection to {self.url} closed")
        try:
            while True:
                raw = await ws.recv(decode=False)
                self.bytes_received += len(raw)
                try:
                    msg = codec.loads(raw, limit=CLIENT_FRAME_LIMIT)
                except ProtocolError:
                    log.warning("undecodable frame from worker %s", self.url)
                    continue
                re_id = msg.get("re") if isinstance(msg, dict) else None
                fut = self._pending.pop(re_id, None) if isinstance(re_id, int) else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif isinstance(msg, dict) and msg.get("error"):
                    log.warning("worker %s: %s", self.url, msg["error"].get("message"))
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1009:
                err = FrameTooLarge(f"the worker refused a frame above its limit "
                                    f"({exc.rcvd.reason or 'message too big'})")
            else:
                err = ConnectionLost(f"connection to {self.url} closed ({exc})")
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()

    async def call(self, op: Op | str, *, reply_timeout: float | None = None,
                   **fields: Any) -> dict[str, Any]:
        """Send one request and return the reply's fields (raises the worker's typed error)."""
        if not self.connected:
            raise ConnectionLost(f"not connected to {self.url}; call reconnect()")
        mid = next(self._ids)
        header, buffers = codec.encode({"op": str(op), "#": mid, **fields})
        size = frames.frame_size(header, buffers)
        limit = int(self.info.get("frame_limit") or frames.DEFAULT_FRAME_LIMIT)
        if size > limit:
            raise FrameTooLarge(f"a {size}-byte message exceeds the worker's frame limit of "
                                f"{limit} bytes", size=size, limit=limit)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[mid] = fut
        assert self._ws is not None
        try:
            await self._ws.send(frames.pack_bytes(header, buffers))
        except websockets.ConnectionClosed as exc:
            self._pending.pop(mid, None)
            raise ConnectionLost(f"connection to {self.url} closed ({exc})") from None
        self.bytes_sent += size
        self.messages += 1
        try:
            reply = await asyncio.wait_for(fut, reply_timeout) if reply_timeout else await fut
        finally:
            self._pending.pop(mid, None)
        if "error" in reply:
            raise from_wire(reply["error"])
        return reply

    async def fetch_value(self, reply: dict[str, Any]) -> Any:
        """The value carried by a ``get``/``request_result`` reply (inline or bulk)."""
        if "frame" in reply:
            return codec.loads(reply["frame"], limit=None)
        port = int(self.info["bulk_port"])
        data = await asyncio.to_thread(bulk.download, self.host, port, reply["download"],
                                       60.0, self._ssl, self.fingerprint)
        self.bytes_received += len(data)
        return codec.loads(data, limit=None)

    async def fetch_frame(self, reply: dict[str, Any]) -> bytes | bytearray | memoryview:
        if "frame" in reply:
            return bytes(reply["frame"])
        port = int(self.info["bulk_port"])
        return await asyncio.to_thread(bulk.download, self.host, port, reply["download"],
                                       60.0, self._ssl, self.fingerprint)

    async def send_value(self, op: Op | str, value: Any, **fields: Any) -> dict[str, Any]:
        """Call ``op`` with ``value``; large values travel over the bulk path first."""
        header, buffers = codec.encode(value)
        size = frames.frame_size(header, buffers)
        if size < int(self.info.get("bulk_threshold") or 1 << 20):
            return await self.call(op, value=value, **fields)
        t = await self.call(Op.UPLOAD_TICKET, size=size)
        await asyncio.to_thread(bulk.upload, self.host, int(t["port"]), t["ticket"],
                                frames.pack(header, buffers), 60.0, self._ssl, self.fingerprint)
        self.bytes_sent += size
        return await self.call(op, upload=t["ticket"], **fields)

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader
        self._ws = None
