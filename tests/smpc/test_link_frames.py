"""The incoming link's frame reader: any chunking, aligned payloads, limits, back-pressure."""

from __future__ import annotations

import asyncio
import ctypes
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_bridge.owner import smpc_frames
from kernel_bridge.smpc import channel, keys


class _Transport:
    def __init__(self) -> None:
        self.closed = self.paused = False
        self.written: list[bytes] = []

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))


def _reader() -> tuple[smpc_frames.FrameReader, _Transport]:
    served: list[Any] = []
    r = smpc_frames.FrameReader(lambda link: served.append(link) or asyncio.sleep(0))
    t = _Transport()
    r.transport = t  # type: ignore[assignment]
    return r, t


def _feed(r: smpc_frames.FrameReader, data: bytes, cuts: list[int]) -> None:
    """Deliver ``data`` the way the event loop would, in pieces ending at ``cuts``."""
    pos = 0
    for end in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        while pos < end:
            buf = r.get_buffer(-1)
            n = min(len(buf), end - pos)
            assert n > 0
            buf[:n] = data[pos:pos + n]
            r.buffer_updated(n)
            pos += n


def _sealed_frames(count: int) -> tuple[list[bytes], channel.Receiver]:
    a = keys.Identity("alice", X25519PrivateKey.generate())
    b = keys.Identity("bob", X25519PrivateKey.generate())
    init = channel.Initiator(a, "bob")
    _, reply, receiver = channel.respond(b, init.hello())
    sender = init.finish(reply, lambda name, static: None)
    frames = [bytes(sender.seal(f"c_{i}", f"open:{i}", bytes(range(i % 200)) * (i + 1)))
              for i in range(count)]
    return frames, receiver


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(0, 4000), max_size=12))
def test_frames_survive_any_chunking_and_open_aligned(count: int, cuts: list[int]) -> None:
    frames, receiver = _sealed_frames(count)
    r, t = _reader()
    r.limit = smpc_frames.MAX_MESSAGE
    stream = b"".join(struct.pack("<Q", len(f)) + f for f in frames)
    _feed(r, stream, cuts)
    got = list(r._frames)
    assert [bytes(g) for g in got] == frames and not t.closed
    for i, g in enumerate(got):
        msg = receiver.open(g, in_place=True)
        assert msg.cid == f"c_{i}" and bytes(msg.payload) == bytes(range(i % 200)) * (i + 1)
        if msg.payload.nbytes:  # the payload lies 64-aligned in its receive buffer
            addr = ctypes.addressof(ctypes.c_char.from_buffer(msg.payload))
            assert addr % 64 == 0


def test_a_frame_over_the_limit_closes_the_link_before_any_allocation() -> None:
    r, t = _reader()  # not authenticated yet: only a handshake-sized frame is accepted
    _feed(r, struct.pack("<Q", 1 << 29) + b"\x00\x00", [])
    assert t.closed and not r._frames and r._body is None


def test_a_flood_of_frames_pauses_reading_until_they_are_taken() -> None:
    frames, _ = _sealed_frames(smpc_frames.QUEUE_FRAMES + 2)
    r, t = _reader()
    r.limit = smpc_frames.MAX_MESSAGE
    _feed(r, b"".join(struct.pack("<Q", len(f)) + f for f in frames), [])
    assert t.paused

    async def drain() -> int:
        n = 0
        while r._frames:
            await r.read()
            n += 1
        return n

    assert asyncio.run(drain()) == len(frames) and not t.paused

