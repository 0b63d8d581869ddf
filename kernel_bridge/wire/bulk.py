"""The bulk path: large frames over a plain TCP socket, beside the websocket.

``websockets`` reaches about a tenth of loopback TCP for large messages here
(masking, framing and copies), so values above the bulk threshold travel as
raw bytes on a second port. A transfer is authorised by a one-time random
ticket that the worker hands out over the authenticated websocket; the socket
itself carries: one mode byte (``D`` download / ``U`` upload), the 16-byte
ticket, a u64 length, then the frame's bytes.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import FrameTooLarge, ProtocolError

TICKET_BYTES = 16
TICKET_TTL = 60.0
_LEN = struct.Struct("<Q")
_CHUNK = 8 << 20


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


@dataclass
class _Ticket:
    mode: str
    expires: float
    source: Sequence[Any] = ()
    limit: int = 0
    done: Future[Any] = field(default_factory=Future)


class BulkServer:
    """Serves bulk transfers on its own port, in threads (``sendall`` frees the GIL).

    Parameters
    ----------
    host : str
        Interface to listen on (the worker's host).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.create_server((host, port))
        self.port = self._sock.getsockname()[1]
        self._tickets: dict[bytes, _Ticket] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="syftlab-bulk",
                                        daemon=True)
        self._thread.start()

    def offer(self, pieces: Sequence[Any]) -> tuple[bytes, asyncio.Future[Any]]:
        """Register a download of ``pieces``; returns the ticket and a future done after it."""
        return self._add(_Ticket("D", time.monotonic() + TICKET_TTL, source=list(pieces)))

    def expect(self, limit: int) -> tuple[bytes, asyncio.Future[Any]]:
        """Register an upload of at most ``limit`` bytes; the future yields the bytes."""
        return self._add(_Ticket("U", time.monotonic() + TICKET_TTL, limit=limit))

    def _add(self, t: _Ticket) -> tuple[bytes, asyncio.Future[Any]]:
        ticket = secrets.token_bytes(TICKET_BYTES)
        with self._lock:
            now = time.monotonic()
            for k in [k for k, v in self._tickets.items() if v.expires < now]:
                self._tickets.pop(k).done.set_exception(TimeoutError("bulk ticket expired"))
            self._tickets[ticket] = t
        return ticket, asyncio.wrap_future(t.done)

    def cancel(self, ticket: bytes) -> None:
        with self._lock:
            t = self._tickets.pop(ticket, None)
        if t is not None and not t.done.done():
            t.done.set_exception(TimeoutError("bulk transfer cancelled"))

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        t: _Ticket | None = None
        try:
            conn.settimeout(30)
            head = _recv_exact(conn, 1 + TICKET_BYTES)
            with self._lock:
                t = self._tickets.pop(head[1:], None)
            if t is None or t.mode != chr(head[0]) or t.expires < time.monotonic():
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
                    raise FrameTooLarge(f"upload of {n} bytes exceeds the limit of {t.limit}",
                                        size=n, limit=t.limit)
                buf = bytearray(n)
                _recv_into(conn, memoryview(buf))
                conn.sendall(b"\x01")
                t.done.set_result(buf)
        except Exception as exc:
            if t is not None and not t.done.done():
                t.done.set_exception(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._sock.close()


def download(host: str, port: int, ticket: bytes, timeout: float = 60.0) -> bytearray:
    """Fetch the frame behind a download ticket (blocking; run it off the event loop)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"D" + ticket)
        head = bytearray(_LEN.size)
        _recv_into(sock, memoryview(head))
        (n,) = _LEN.unpack(head)
        buf = bytearray(n)
        _recv_into(sock, memoryview(buf))
        return buf


def upload(host: str, port: int, ticket: bytes, pieces: Sequence[Any],
           timeout: float = 60.0) -> None:
    """Send a frame's pieces against an upload ticket (blocking)."""
    views = [memoryview(p).cast("B") for p in pieces]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"U" + ticket + _LEN.pack(sum(v.nbytes for v in views)))
        for v in views:
            sock.sendall(v)
        if _recv_exact(sock, 1) != b"\x01":
            raise ProtocolError("the worker did not confirm the upload")
