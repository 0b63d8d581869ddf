"""Length-prefixed frames on an SMPC link: reading them into buffers of their own, and
writing them without copies.

Every frame is an 8-byte little-endian length and that many bytes (a handshake
message, then sealed :mod:`~kernel_bridge.smpc.channel` messages).
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

#: Largest sealed message (the material of a 1000x1000 matmul is ~24 MB per party).
MAX_MESSAGE = 1 << 30
_FRAME = struct.Struct("<Q")


class LinkClosed(Exception):
    """The far end closed the link (or sent a frame over the size limit)."""


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One length-prefixed frame."""
    try:
        (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
        if size > MAX_MESSAGE:
            raise LinkClosed("frame over the limit")
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise LinkClosed(str(exc)) from None


def write_frame(writer: asyncio.StreamWriter | asyncio.WriteTransport, frame: Any) -> None:
    """Queue one length-prefixed frame (the caller drains)."""
    writer.write(_FRAME.pack(memoryview(frame).nbytes))
    writer.write(frame)

#: A large frame is written in pieces of this size, each once the socket took the last
#: (the link's transport has a zero high-water mark): otherwise what the socket cannot take
#: at once is copied into the transport's buffer, a 16 MB frame into fresh memory whose
#: pages all fault.
WRITE_CHUNK = 1 << 18


async def write_chunked(writer: asyncio.StreamWriter, frame: Any) -> None:
    """Write one length-prefixed frame and wait until the socket has taken it."""
    view = memoryview(frame).cast("B")
    writer.write(_FRAME.pack(view.nbytes))
    for start in range(0, view.nbytes, WRITE_CHUNK):
        writer.write(view[start:start + WRITE_CHUNK])
        await writer.drain()
    if not view.nbytes:
        await writer.drain()


#: Largest frame before the link is authenticated (a handshake is ~150 bytes).
HELLO_LIMIT = 1 << 12
#: Frames queued unread before the link stops reading (TCP then holds the sender back).
QUEUE_FRAMES = 8
#: Payloads start this aligned in their receive buffer, so tensors view them as they are.
_ALIGN = 64


class FrameReader(asyncio.BufferedProtocol):
    """An incoming link: length-prefixed frames read by the kernel straight into their own
    buffers.

    A stream reader would copy every byte three times (into its buffer, out of
    it, into ``bytes``); here each frame gets an uninitialised buffer of its
    size, placed so that the sealed payload (after the frame's 2-byte header
    length and header) starts ``_ALIGN``-aligned, and the receiving end
    decrypts it in place (:meth:`~kernel_bridge.smpc.channel.Receiver.open`).
    """

    def __init__(self, serve: Callable[[FrameReader], Any]) -> None:
        self._serve = serve
        self.limit = HELLO_LIMIT
        self.transport: asyncio.Transport | None = None
        self._prefix = bytearray(_FRAME.size + 2)  # frame length, then header length
        self._body: memoryview | None = None
        self._got = 0
        self._frames: collections.deque[memoryview] = collections.deque()
        self._wake: asyncio.Future[None] | None = None
        self._closed: Exception | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._serve(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is None:
            return memoryview(self._prefix)[self._got:]
        return self._body[self._got:]

    def buffer_updated(self, nbytes: int) -> None:
        self._got += nbytes
        if self._body is None:
            if self._got < len(self._prefix):
                return
            (size,) = _FRAME.unpack_from(self._prefix, 0)
            (hlen,) = struct.unpack_from("<H", self._prefix, _FRAME.size)
            if size > self.limit or size < 2:
                self._close(LinkClosed("a frame over the limit or malformed"))
                return
            if hlen > size - 2:  # not a sealed message's layout (a hello): the receiver judges
                hlen = 0
            raw = np.empty(size + _ALIGN, dtype=np.uint8)
            off = -(raw.ctypes.data + 2 + hlen) % _ALIGN
            self._body = memoryview(raw.data)[off:off + size]
            self._body[:2] = self._prefix[_FRAME.size:]
            self._got = 2
        if self._got == self._body.nbytes:
            self._frames.append(self._body)
            self._body, self._got = None, 0
            if len(self._frames) >= QUEUE_FRAMES and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _close(self, exc: Exception) -> None:
        self._closed = self._closed or exc
        if self.transport is not None:
            self.transport.close()
        self._notify()

    def eof_received(self) -> bool:
        self._close(LinkClosed("the far end closed the link"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._closed or LinkClosed(str(exc or "link closed"))
        self._notify()

    async def read(self) -> memoryview:
        """The next frame (writable, the caller's own); :class:`LinkClosed` at the end."""
        while not self._frames:
            if self._closed is not None:
                raise LinkClosed(str(self._closed))
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        frame = self._frames.popleft()
        if self._paused and len(self._frames) < QUEUE_FRAMES // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()
        return frame

    def write(self, frame: Any) -> None:
        if self.transport is not None:
            write_frame(self.transport, frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
