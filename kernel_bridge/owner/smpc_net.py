"""Direct worker-to-worker links for SMPC: a listener, outgoing links and a mailbox.

Each ordered pair of workers has one link, a TCP connection opened by the
sender to the receiver's SMPC port, carrying length-prefixed frames (plain
TCP: a websocket's framing and masking cost more than the AEAD on the
megabytes a matmul opens, and the frames are sealed anyway). It starts with a
:mod:`~kernel_bridge.smpc.channel` handshake, in which both ends check the
other's name and key against their owner's pins
(:class:`~kernel_bridge.smpc.keys.TrustStore`), then sealed messages in order.
Messages are filed by (sender, computation id, kind) in a mailbox that the
protocol waits on, always with a timeout. A link that drops or carries a
rejected message fails every wait on its sender at once, so a dead party is
noticed in milliseconds, not at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..errors import MessageRejected, PartyUnavailable, SyftError, UntrustedParty
from ..smpc import channel
from ..smpc.keys import Identity, Role, TrustStore
from .smpc_frames import (
    MAX_MESSAGE,
    FrameReader,
    LinkClosed,
    read_frame,
    write_chunked,
    write_frame,
)

log = logging.getLogger("syftlab.smpc")

HANDSHAKE_TIMEOUT = 10.0
#: Reader buffer: large, so a big frame is not read in 128 KiB pause/resume steps.
STREAM_LIMIT = 1 << 26


Key = tuple[str, str, str]  # (sender, cid, kind)
Payload = bytes | bytearray | memoryview


class _OutLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 sender: channel.Sender) -> None:
        self.reader, self.writer, self.sender = reader, writer, sender
        self.lock = asyncio.Lock()
        #: Reused for every large message (the largest so far; written whole before reuse).
        self.buffer: memoryview | None = None

    @property
    def open(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class PeerNet:
    """One worker's SMPC network: whom it talks to, and what has arrived.

    Parameters
    ----------
    me : Identity
        The worker's long-term key and name.
    trust : TrustStore
        The owner's pins.
    host : str
        Interface the SMPC port listens on.
    audit : callable
        ``audit(event, detail)``: rejected messages and links go to the audit log.
    """

    def __init__(self, me: Identity, trust: TrustStore, host: str,
                 audit: Callable[[str, dict[str, Any]], None]) -> None:
        self.me, self.trust, self.host, self.audit = me, trust, host, audit
        self.port = 0
        self._server: Any = None
        self._start_lock = asyncio.Lock()
        self._out: dict[str, _OutLink] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._in: dict[str, FrameReader] = {}
        self._roles: dict[str, set[Role]] = {}
        self._arrived: dict[Key, Payload] = {}
        self._waiting: dict[Key, asyncio.Future[Payload]] = {}
        #: cid -> error, for computations cancelled (a later wait fails at once).
        self._failed: dict[str, tuple[float, SyftError]] = {}
        #: kinds answered by a callback instead of the mailbox (e.g. approval status).
        self.handlers: dict[str, Callable[[str, channel.Message], Any]] = {}

    # -- listener ---------------------------------------------------------------
    async def start(self) -> int:
        """Listen on a free port (once); returns it."""
        async with self._start_lock:
            if self._server is None:
                loop = asyncio.get_running_loop()
                self._server = await loop.create_server(
                    lambda: FrameReader(self._incoming), self.host, 0)
                self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._out.values()):
            link.writer.close()

    async def _incoming(self, link: FrameReader) -> None:
        name = None
        try:
            hello = await asyncio.wait_for(link.read(), HANDSHAKE_TIMEOUT)
            h, reply, receiver = channel.respond(self.me, bytes(hello))
            roles = self.trust.trusts(h.sender, h.static)
            if not roles:
                self.audit("smpc_untrusted", {"party": h.sender[:64]})
                return
            link.write(reply)
            name = h.sender
            link.limit = MAX_MESSAGE
            self.audit("smpc_link", {"party": name[:64], "roles": sorted(roles)})
            old = self._in.get(name)
            self._in[name], self._roles[name] = link, roles
            if old is not None:
                old.close()
            while True:
                frame = await link.read()
                if frame.nbytes > 1 << 20:
                    msg = await asyncio.to_thread(receiver.open, frame, True)
                else:
                    msg = receiver.open(frame, True)
                self._deliver(name, msg)
        except MessageRejected as exc:
            self.audit("smpc_rejected", {"party": (name or "?")[:64], "why": exc.data.get("why")})
            log.warning("SMPC link from %s: %s", name, exc.message)
            if name is not None:
                self._fail_sender(name, exc)
        except (TimeoutError, LinkClosed, ConnectionError):
            pass
        finally:
            link.close()
            if name is not None and self._in.get(name) is link:
                del self._in[name]
                self._fail_sender(name, PartyUnavailable(
                    f"SMPC party {name!r} left (its link closed)", party=name))

    def _deliver(self, sender: str, msg: channel.Message) -> None:
        handler = self.handlers.get(msg.kind.split(":", 1)[0])
        if handler is not None:
            asyncio.get_running_loop().create_task(_guard(handler(sender, msg)))
            return
        if msg.kind == "abort":
            self.fail(msg.cid, PartyUnavailable(
                f"SMPC party {sender!r} cancelled the computation", party=sender), notify=False)
            return
        key = (sender, msg.cid, msg.kind)
        fut = self._waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(msg.payload)
        elif msg.cid not in self._failed:
            self._arrived[key] = msg.payload

    def _fail_sender(self, sender: str, exc: SyftError) -> None:
        for key, fut in list(self._waiting.items()):
            if key[0] == sender and not fut.done():
                fut.set_exception(exc)
                del self._waiting[key]

    def roles(self, name: str) -> set[Role]:
        """The roles an incoming link from ``name`` was authenticated in (empty: none yet)."""
        return set(self._roles.get(name, set()))

    # -- sending ----------------------------------------------------------------
    async def _link(self, peer: str, url: str) -> _OutLink:
        lock = self._connecting.setdefault(peer, asyncio.Lock())
        async with lock:
            link = self._out.get(peer)
            if link is not None and link.open:
                return link
            where = urlparse(url)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(where.hostname, where.port, limit=STREAM_LIMIT),
                    HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                raise PartyUnavailable(f"SMPC party {peer!r} cannot be reached "
                                       f"({type(exc).__name__})", party=peer) from None
            init = channel.Initiator(self.me, peer)
            try:
                write_frame(writer, init.hello())
                await writer.drain()
                reply = await asyncio.wait_for(read_frame(reader), HANDSHAKE_TIMEOUT)

                def check(name: str, static: bytes) -> None:
                    if not self.trust.trusts(name, static):
                        raise UntrustedParty(f"{name!r} is not a peer or dealer this worker's "
                                             "owner trusts (or its key changed)", party=name)

                sender = init.finish(reply, check)
            except (LinkClosed, ConnectionError, TimeoutError):
                writer.close()
                raise PartyUnavailable(f"SMPC party {peer!r} refused the link (does its owner "
                                       "trust this worker?)", party=peer) from None
            except SyftError:
                writer.close()
                raise
            # Wait for the socket to take every piece before writing the next: each piece
            # goes to the kernel straight from the frame (never copied into the transport's
            # buffer), and the send buffer is free for reuse once a frame is written.
            writer.transport.set_write_buffer_limits(high=0)
            link = _OutLink(reader, writer, sender)
            self._out[peer] = link
            return link

    async def send(self, peer: str, url: str, cid: str, kind: str, payload: Any) -> None:
        """Seal and send one message to ``peer`` (linking to ``url`` first if needed)."""
        link = await self._link(peer, url)
        async with link.lock:  # sequence numbers in send order
            size = memoryview(payload).nbytes
            if size > 1 << 20:
                need = size + 2 + channel.MAX_HEADER + channel.TAG
                if link.buffer is None or link.buffer.nbytes < need:
                    link.buffer = memoryview(np.empty(need, dtype=np.uint8).data)
                frame = await asyncio.to_thread(link.sender.seal, cid, kind, payload,
                                                link.buffer)
            else:
                frame = link.sender.seal(cid, kind, payload)
            try:
                await write_chunked(link.writer, frame)
            except ConnectionError:
                self._out.pop(peer, None)
                raise PartyUnavailable(f"SMPC party {peer!r} left", party=peer) from None

    # -- receiving --------------------------------------------------------------
    async def recv(self, sender: str, cid: str, kind: str, timeout: float) -> Payload:
        """The payload of message (``sender``, ``cid``, ``kind``), waiting up to ``timeout``."""
        if cid in self._failed:
            raise self._failed[cid][1]
        key = (sender, cid, kind)
        if key in self._arrived:
            return self._arrived.pop(key)
        if key in self._waiting:
            raise SyftError("two waits on one SMPC message")
        fut: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise PartyUnavailable(f"SMPC party {sender!r} did not answer within {timeout:g} s",
                                   party=sender) from None
        finally:
            if self._waiting.get(key) is fut:
                del self._waiting[key]

    def fail(self, cid: str, exc: SyftError, notify: bool = True) -> None:
        """Cancel computation ``cid`` here: every wait on it fails with ``exc``."""
        now = time.monotonic()
        self._failed[cid] = (now, exc)
        for key, fut in list(self._waiting.items()):
            if key[1] == cid and not fut.done():
                fut.set_exception(exc)
                del self._waiting[key]
        self.forget(cid)
        for old, (t, _) in list(self._failed.items()):
            if now - t > 600:
                del self._failed[old]

    def forget(self, cid: str) -> None:
        """Drop messages of ``cid`` that nobody took."""
        for key in [k for k in self._arrived if k[1] == cid]:
            del self._arrived[key]

    async def abort(self, cid: str, peers: dict[str, str], exc: SyftError) -> None:
        """Cancel ``cid`` here and tell ``peers`` (best effort, never blocks for long)."""
        self.fail(cid, exc)

        async def tell(name: str, url: str) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send(name, url, cid, "abort", b""), 2.0)

        await asyncio.gather(*(tell(n, u) for n, u in peers.items()))


async def _guard(coro: Any) -> None:
    try:
        await coro
    except Exception:  # a failed reply to a peer's question: the peer times out
        log.exception("SMPC handler failed")
