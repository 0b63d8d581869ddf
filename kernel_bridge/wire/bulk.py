"""The bulk path: large frames over a plain TCP socket, beside the websocket.

``websockets`` reaches about a tenth of loopback TCP for large messages here
(masking, framing and copies), so values above the bulk threshold travel as
raw bytes on a second port. A transfer is authorised by a one-time random
ticket that the worker hands out over the authenticated websocket; the socket
itself carries: one mode byte (``D`` download / ``U`` upload), the 16-byte
ticket, a u64 length, then the frame's bytes. When the worker serves TLS,
the bulk port does too (same certificate, same pinning).

Uploads are bounded: a ticket is issued only within the session's and the
worker's quotas (:class:`UploadQuotas`), its frame grows as bytes arrive (a
claimed size allocates nothing), and a ticket that is not used up in time
expires and gives back what it held.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FrameTooLarge, MalformedFrame, ProtocolError, QuotaExceeded, VersionMismatch
from . import frames, tls

TICKET_BYTES = 16
TICKET_TTL = 60.0
_LEN = struct.Struct("<Q")
_CHUNK = 8 << 20
#: Uploads are read in pieces of this size; the frame grows only as bytes arrive.
_UPLOAD_PIECE = 4 << 20
#: Slowest upload rate granted on top of the ticket's time to live (bytes per second).
_MIN_RATE = 4 << 20


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    _recv_into(sock, memoryview(buf))
    return bytes(buf)


def _recv_into(sock: socket.socket, view: memoryview) -> None:
    got, n = 0, view.nbytes
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, _CHUNK))
        if k == 0:
            raise ProtocolError("bulk connection closed mid-transfer")
        got += k


def _read_prelude(sock: socket.socket, n: int) -> tuple[bytearray, int | None]:
    """Read the prelude of an ``n``-byte frame; returns it and where the frame's buffers
    start (:func:`.frames.data_start`; ``None`` for anything but a frame), so that the
    caller can place the frame with its buffers 16-aligned: decoded arrays then view
    them instead of being copied (as :func:`.frames.aligned_copy` does)."""
    prefix = bytearray(min(n, frames.PRELUDE_MIN))
    _recv_into(sock, memoryview(prefix))
    while True:
        try:
            _, header_len, _, prelude = frames.parse_prelude(prefix)
            return prefix, prelude + header_len
        except MalformedFrame as exc:
            needed = int(exc.data.get("needed", 0))
        except VersionMismatch:
            return prefix, None
        # Out of the except block: its traceback holds a view of the prefix.
        more = min(n, needed) - len(prefix)
        if more <= 0:
            return prefix, None
        tail = bytearray(more)
        _recv_into(sock, memoryview(tail))
        prefix += tail


@dataclass(frozen=True)
class UploadQuotas:
    """How much upload a session and the whole worker may hold at once.

    Bytes are the sizes claimed by tickets not yet used up (announced, in
    transfer, or received and waiting for their ``send``); a ticket gives its
    share back when its value is taken, when its transfer fails and when it
    expires.
    """

    session_bytes: int = 4 << 30
    session_tickets: int = 8
    worker_bytes: int = 16 << 30
    worker_tickets: int = 256
    ttl: float = TICKET_TTL


@dataclass
class _Ticket:
    mode: str
    expires: float
    source: Sequence[Any] = ()
    limit: int = 0
    owner: str = ""
    done: Future[Any] = field(default_factory=Future)
    started: bool = False
    cancelled: bool = False


class BulkServer:
    """Serves bulk transfers on its own port, in threads (``sendall`` frees the GIL).

    Parameters
    ----------
    host : str
        Interface to listen on (the worker's host).
    port : int
        Port (0 picks a free one).
    ssl_context : ssl.SSLContext, optional
        The worker's server-side TLS context: every bulk connection is then TLS.
    quotas : UploadQuotas, optional
        Limits on outstanding uploads.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None,
                 quotas: UploadQuotas | None = None) -> None:
        self._sock = socket.create_server((host, port))
        self.port = self._sock.getsockname()[1]
        self._ssl = ssl_context
        self.quotas = quotas or UploadQuotas()
        self._tickets: dict[bytes, _Ticket] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="syftlab-bulk",
                                        daemon=True)
        self._thread.start()

    def offer(self, pieces: Sequence[Any]) -> tuple[bytes, asyncio.Future[Any]]:
        """Register a download of ``pieces``; returns the ticket and a future done after it."""
        ticket, t = self._add(_Ticket("D", time.monotonic() + TICKET_TTL, source=list(pieces)))
        return ticket, asyncio.wrap_future(t.done)

    def expect(self, size: int, owner: str = "") -> bytes:
        """Register an upload of at most ``size`` bytes for ``owner`` (a session id).

        Nothing is allocated here: the frame grows as its bytes arrive.

        Raises
        ------
        QuotaExceeded
            The owner or the worker already holds too many upload bytes or tickets.
        """
        q = self.quotas
        with self._lock:
            self._expire_locked(time.monotonic())
            mine = [t for t in self._tickets.values() if t.mode == "U" and t.owner == owner]
            every = [t for t in self._tickets.values() if t.mode == "U"]
            for scope, held, count, max_bytes, max_tickets in (
                    ("session", sum(t.limit for t in mine), len(mine), q.session_bytes,
                     q.session_tickets),
                    ("worker", sum(t.limit for t in every), len(every), q.worker_bytes,
                     q.worker_tickets)):
                if count + 1 > max_tickets:
                    raise QuotaExceeded(
                        f"too many uploads at once: the {scope} quota is {max_tickets} "
                        "outstanding upload tickets; finish or abandon one first",
                        scope=scope, tickets=max_tickets)
                if held + size > max_bytes:
                    raise QuotaExceeded(
                        f"an upload of {size} bytes exceeds the {scope} quota: "
                        f"{max_bytes - held} of {max_bytes} bytes are free; send less at once",
                        scope=scope, size=size, free=max_bytes - held, quota=max_bytes)
            # Until its transfer starts, a ticket lives ttl seconds; see _serve for after.
            ticket, _ = self._add_locked(_Ticket("U", time.monotonic() + q.ttl, limit=size,
                                                 owner=owner))
        return ticket

    async def take(self, ticket: Any, owner: str = "", timeout: float = 120.0) -> memoryview:
        """Wait for the upload behind ``ticket`` and hand over its bytes (and its quota).

        Raises
        ------
        ProtocolError
            Unknown ticket (or another session's), a failed or expired transfer.
        """
        with self._lock:
            t = self._tickets.get(ticket) if isinstance(ticket, bytes) else None
        if t is None or t.mode != "U" or t.owner != owner:
            raise ProtocolError("unknown upload ticket")
        try:
            data: memoryview = await asyncio.wait_for(asyncio.wrap_future(t.done), timeout)
        except TimeoutError:
            raise ProtocolError("the upload did not arrive in time") from None
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(f"the upload failed ({type(exc).__name__})") from None
        finally:
            self._drop(ticket, "upload taken")
        return data

    def expire(self) -> None:
        """Drop expired tickets: their memory and quota are given back."""
        with self._lock:
            self._expire_locked(time.monotonic())

    def outstanding(self, owner: str | None = None) -> tuple[int, int]:
        """Upload bytes claimed and tickets held, by ``owner`` or by everyone."""
        with self._lock:
            ts = [t for t in self._tickets.values()
                  if t.mode == "U" and (owner is None or t.owner == owner)]
        return sum(t.limit for t in ts), len(ts)

    def _expire_locked(self, now: float) -> None:
        for k in [k for k, v in self._tickets.items() if v.expires < now]:
            t = self._tickets.pop(k)
            t.cancelled = True  # a transfer in progress stops at its next piece
            if not t.done.done():
                t.done.set_exception(TimeoutError("bulk ticket expired"))

    def _add(self, t: _Ticket) -> tuple[bytes, _Ticket]:
        with self._lock:
            self._expire_locked(time.monotonic())
            return self._add_locked(t)

    def _add_locked(self, t: _Ticket) -> tuple[bytes, _Ticket]:
        ticket = secrets.token_bytes(TICKET_BYTES)
        self._tickets[ticket] = t
        return ticket, t

    def _drop(self, ticket: bytes, why: str) -> None:
        with self._lock:
            t = self._tickets.pop(ticket, None)
        if t is not None:
            t.cancelled = True
            if not t.done.done():
                t.done.set_exception(TimeoutError(f"bulk transfer {why}"))

    def cancel(self, ticket: bytes) -> None:
        self._drop(ticket, "cancelled")

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw_conn: socket.socket) -> None:
        t: _Ticket | None = None
        ticket = b""
        conn: socket.socket = raw_conn
        try:
            raw_conn.settimeout(min(30.0, max(1.0, self.quotas.ttl)))
            if self._ssl is not None:
                conn = self._ssl.wrap_socket(raw_conn, server_side=True)
            head = _recv_exact(conn, 1 + TICKET_BYTES)
            ticket = head[1:]
            with self._lock:
                t = self._tickets.get(ticket)
                if t is not None and (t.mode != chr(head[0]) or t.started
                                      or t.expires < time.monotonic()):
                    t = None
                if t is not None:
                    t.started = True
                    if t.mode == "D":
                        del self._tickets[ticket]
                    else:  # time for the bytes, at a slow but steady rate
                        t.expires = time.monotonic() + self.quotas.ttl + t.limit / _MIN_RATE
            if t is None:
                return  # unknown tickets get nothing, not even an error text
            if t.mode == "D":
                views = [memoryview(p).cast("B") for p in t.source]
                conn.sendall(_LEN.pack(sum(v.nbytes for v in views)))
                for v in views:
                    conn.sendall(v)
                t.done.set_result(None)
            else:
                (n,) = _LEN.unpack(_recv_exact(conn, _LEN.size))
                if n > t.limit:
                    raise FrameTooLarge(f"upload of {n} bytes exceeds its ticket's "
                                        f"{t.limit} bytes", size=n, limit=t.limit)
                buf = self._receive(conn, n, t)
                conn.sendall(b"\x01")
                with self._lock:
                    t.expires = time.monotonic() + self.quotas.ttl  # to be taken by a send
                if not t.done.done():
                    t.done.set_result(buf)
        except Exception as exc:
            # Without its traceback: the frames it holds would keep a partial upload alive.
            exc = exc.with_traceback(None)
            if t is not None and not t.done.done():
                t.done.set_exception(exc)
            if t is not None and t.mode == "U":
                self._drop(ticket, "failed")
        finally:
            conn.close()

    @staticmethod
    def _receive(conn: socket.socket, n: int, t: _Ticket) -> memoryview:
        """Read ``n`` bytes straight into the frame; memory grows with what arrived (at
        most twice it, plus one piece), never with what was claimed."""
        prefix, start = _read_prelude(conn, n)
        got = len(prefix)
        # numpy's memory: not zeroed first, on huge pages from 4 MB on, 64-aligned, so
        # that the frame's buffers start 16-aligned after ``pad`` bytes
        buf = np.empty(max(got, min(n, _UPLOAD_PIECE)) + 16, dtype=np.uint8)
        pad = (-(buf.ctypes.data + (start or 0))) % 16 if start is not None else 0
        buf[pad:pad + got] = np.frombuffer(prefix, dtype=np.uint8)
        while got < n:
            if t.cancelled or time.monotonic() > t.expires:
                raise ProtocolError("upload ticket expired mid-transfer")
            at = pad + got
            if at == len(buf):  # full: grow by what has arrived (one piece at least)
                bigger = np.empty(at + min(n - got, max(got, _UPLOAD_PIECE)), dtype=np.uint8)
                bigger[:at] = buf
                buf = bigger
            k = conn.recv_into(memoryview(buf.data)[at:], min(len(buf) - at, _CHUNK, n - got))
            if k == 0:
                raise ProtocolError("bulk connection closed mid-transfer")
            got += k
        return memoryview(buf.data)[pad:pad + n]

    def close(self) -> None:
        self._closed = True
        self._sock.close()


def _connect(host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None,
             fingerprint: str | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if ssl_context is None:
        return sock
    try:
        tls_sock = ssl_context.wrap_socket(sock, server_hostname=host)
        tls.check_peer(tls_sock, fingerprint, f"the worker's bulk port {host}:{port}")
    except BaseException:
        sock.close()
        raise
    return tls_sock


def download(host: str, port: int, ticket: bytes, timeout: float = 60.0,
             ssl_context: ssl.SSLContext | None = None,
             fingerprint: str | None = None) -> memoryview:
    """Fetch the frame behind a download ticket (blocking; run it off the event loop).

    With ``ssl_context`` the connection is TLS, and with ``fingerprint`` the
    worker's certificate is checked before the ticket is sent.
    """
    with _connect(host, port, timeout, ssl_context, fingerprint) as sock:
        sock.sendall(b"D" + ticket)
        head = bytearray(_LEN.size)
        _recv_into(sock, memoryview(head))
        (n,) = _LEN.unpack(head)
        prefix, start = _read_prelude(sock, n)
        # Not zero-filled (a bytearray's memset of megabytes holds the GIL); placed
        # so that the frame's buffers start 16-aligned.
        room = np.empty(n + 16, dtype=np.uint8)
        shift = (-(room.ctypes.data + start)) % 16 if start is not None else 0
        view = room.data[shift:shift + n]
        view[:len(prefix)] = prefix
        _recv_into(sock, view[len(prefix):])
        return view


def upload(host: str, port: int, ticket: bytes, pieces: Sequence[Any],
           timeout: float = 60.0, ssl_context: ssl.SSLContext | None = None,
           fingerprint: str | None = None) -> None:
    """Send a frame's pieces against an upload ticket (blocking; TLS as :func:`download`)."""
    views = [memoryview(p).cast("B") for p in pieces]
    with _connect(host, port, timeout, ssl_context, fingerprint) as sock:
        try:
            sock.sendall(b"U" + ticket + _LEN.pack(sum(v.nbytes for v in views)))
            for v in views:
                sock.sendall(v)
            confirmed = _recv_exact(sock, 1) == b"\x01"
        except (OSError, ProtocolError):
            confirmed = False
        if not confirmed:
            raise ProtocolError("the worker did not accept the upload (larger than its "
                                "ticket, expired, or the connection broke)")
