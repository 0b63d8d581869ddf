"""Frame layout of one wire message.

A frame carries one encoded value: the msgpack header made by
:func:`kernel_bridge.wire.codec.encode` and the raw buffers it refers to by index.
All integers are little-endian::

    offset  size      field
    0       4         magic, b"SYFT"
    4       1         u8 wire version (see ``SUPPORTED_VERSIONS``)
    5       4         u32 header length H
    9       4         u32 buffer count N (at most ``MAX_BUFFERS``)
    13      8 * N     u64 length of each buffer
    13+8N   H         header bytes
    ...     sum(len)  the buffers, back to back, no padding

A stream reader first reads ``PRELUDE_MIN`` (13) bytes, which tell N; the whole
prelude is then ``PRELUDE_MIN + 8 * N`` bytes, after which :func:`parse_prelude`
gives the total frame length (``prelude_size + header_len + sum(buffer_lengths)``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernel_bridge.errors import FrameTooLarge, MalformedFrame, VersionMismatch

__all__ = [
    "DEFAULT_FRAME_LIMIT",
    "MAGIC",
    "aligned_copy",
    "data_start",
    "MAX_BUFFERS",
    "PRELUDE_MIN",
    "SUPPORTED_VERSIONS",
    "WIRE_VERSION",
    "frame_size",
    "pack",
    "pack_bytes",
    "parse_prelude",
    "unpack",
]

MAGIC = b"SYFT"
WIRE_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
DEFAULT_FRAME_LIMIT = 64 * 2**20
#: Bytes needed to learn the buffer count: magic, version, header length, count.
PRELUDE_MIN = 13
#: More buffers than this is treated as a malformed frame; it bounds the prelude
#: a stream reader must buffer (8 MiB) before it can check the frame size.
MAX_BUFFERS = 1 << 20

_FIXED = struct.Struct("<4sBII")
assert _FIXED.size == PRELUDE_MIN

Buffer = bytes | bytearray | memoryview


def _byte_view(buf: Any) -> memoryview:
    """A flat unsigned-byte view of ``buf``; copies only a non-contiguous buffer."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if mv.ndim == 1 and mv.format == "B":
        return mv
    if mv.c_contiguous:
        try:
            return mv.cast("B")
        except (TypeError, ValueError):  # exotic formats memoryview cannot cast
            return memoryview(mv.tobytes())
    return memoryview(mv.tobytes())


def _prelude(header_len: int, lengths: Sequence[int]) -> bytes:
    if len(lengths) > MAX_BUFFERS:
        raise MalformedFrame(
            f"a frame holds at most {MAX_BUFFERS} buffers, got {len(lengths)}",
            count=len(lengths),
            limit=MAX_BUFFERS,
        )
    if header_len >= 2**32:
        raise MalformedFrame(f"header of {header_len} bytes does not fit a frame")
    return _FIXED.pack(MAGIC, WIRE_VERSION, header_len, len(lengths)) + struct.pack(
        f"<{len(lengths)}Q", *lengths
    )


def pack(header: Buffer, buffers: Sequence[Buffer]) -> list[bytes | memoryview]:
    """Lay out one frame as pieces to write in order, without copying the buffers.

    Parameters
    ----------
    header : bytes-like
        The msgpack header.
    buffers : sequence of bytes-like
        The raw buffers the header refers to, in index order.

    Returns
    -------
    list of bytes or memoryview
        The prelude, the header and each buffer (as a flat byte view).

    Raises
    ------
    MalformedFrame
        Too many buffers or a header too long for the layout.
    """
    views = [_byte_view(b) for b in buffers]
    head = _byte_view(header)
    pieces: list[bytes | memoryview] = [_prelude(head.nbytes, [v.nbytes for v in views]), head]
    pieces.extend(views)
    return pieces


def pack_bytes(header: Buffer, buffers: Sequence[Buffer]) -> bytes:
    """Lay out one frame as a single ``bytes`` object.

    Parameters
    ----------
    header : bytes-like
        The msgpack header.
    buffers : sequence of bytes-like
        The raw buffers, in index order.

    Returns
    -------
    bytes
        The whole frame.
    """
    return b"".join(pack(header, buffers))


def data_start(prefix: Buffer) -> int | None:
    """Where a frame's buffers start, from a prefix holding its whole prelude; ``None``
    when the prefix is not (yet) a frame's prelude."""
    try:
        _, header_len, _, prelude = parse_prelude(prefix)
    except (MalformedFrame, VersionMismatch):
        return None
    return prelude + header_len


def aligned_copy(frame: Buffer, align: int = 16) -> memoryview:
    """A writable copy of one frame placed so that its buffers start ``align``-aligned.

    Buffers follow the header back to back, so in a plain copy they start wherever
    the header ends and a decoder must copy each misaligned array once more. Here
    the one copy a receiver makes anyway (out of shared memory, say) is placed so
    that decoded arrays can view it. Anything that is not a well-formed prelude is
    copied as it is (the decoder then says what is wrong).

    Parameters
    ----------
    frame : bytes-like
        One frame (as :func:`pack` laid it out).
    align : int
        Alignment of the buffers' start, in bytes (16 suits every dtype).

    Returns
    -------
    memoryview
        Writable bytes equal to ``frame``.
    """
    view = _byte_view(frame)
    start = data_start(view) or 0
    # numpy's memory: not zeroed first (a bytearray is), and on huge pages from 4 MB on
    # (one fault per 2 MB instead of one per 4 KB)
    buf = np.empty(view.nbytes + align, dtype=np.uint8)
    shift = (-(buf.ctypes.data + start)) % align
    out = memoryview(buf.data)[shift:shift + view.nbytes]
    out[:] = view
    return out


def frame_size(header: Buffer, buffers: Sequence[Buffer]) -> int:
    """Size in bytes of the frame :func:`pack` would lay out.

    Parameters
    ----------
    header : bytes-like
        The msgpack header.
    buffers : sequence of bytes-like
        The raw buffers.

    Returns
    -------
    int
        Prelude, header and buffer bytes together.
    """
    total = PRELUDE_MIN + 8 * len(buffers) + memoryview(header).nbytes
    return total + sum(memoryview(b).nbytes for b in buffers)


def parse_prelude(prefix: Buffer, *, limit: int | None = None) -> tuple[int, int, list[int], int]:
    """Read the prelude at the start of a frame.

    ``PRELUDE_MIN`` bytes tell the buffer count N; the whole prelude needs
    ``PRELUDE_MIN + 8 * N`` bytes. Extra bytes after the prelude are ignored.

    Parameters
    ----------
    prefix : bytes-like
        The first bytes of a frame.
    limit : int or None, optional
        When given, a frame announcing more bytes than this raises
        :class:`FrameTooLarge`, so a stream reader can refuse before reading it.

    Returns
    -------
    version : int
        The wire version.
    header_len : int
        Length of the header.
    buffer_lengths : list of int
        Length of each buffer.
    prelude_size : int
        Bytes taken by the prelude; the frame is
        ``prelude_size + header_len + sum(buffer_lengths)`` bytes.

    Raises
    ------
    MalformedFrame
        Bad magic, an absurd buffer count, or a prefix too short to tell;
        ``data["needed"]`` then says how many bytes are needed.
    VersionMismatch
        A wire version outside ``SUPPORTED_VERSIONS``.
    FrameTooLarge
        The announced frame exceeds ``limit``.
    """
    try:
        view = _byte_view(prefix)
    except TypeError:
        raise MalformedFrame(f"a frame must be bytes-like, not {type(prefix).__name__!r}") from None
    if view.nbytes < PRELUDE_MIN:
        raise MalformedFrame(
            f"frame prelude truncated: {view.nbytes} of at least {PRELUDE_MIN} bytes",
            needed=PRELUDE_MIN,
            got=view.nbytes,
        )
    magic, version, header_len, count = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise MalformedFrame("not a syftlab frame: bad magic bytes")
    if version not in SUPPORTED_VERSIONS:
        raise VersionMismatch(
            f"peer speaks wire version {version}; this side supports {list(SUPPORTED_VERSIONS)}",
            version=version,
            supported=list(SUPPORTED_VERSIONS),
        )
    if count > MAX_BUFFERS:
        raise MalformedFrame(
            f"frame claims {count} buffers; at most {MAX_BUFFERS} are allowed",
            count=count,
            limit=MAX_BUFFERS,
        )
    prelude_size = PRELUDE_MIN + 8 * count
    if view.nbytes < prelude_size:
        raise MalformedFrame(
            f"frame prelude truncated: {view.nbytes} of {prelude_size} bytes",
            needed=prelude_size,
            got=view.nbytes,
        )
    lengths = list(struct.unpack_from(f"<{count}Q", view, PRELUDE_MIN))
    if limit is not None:
        total = prelude_size + header_len + sum(lengths)
        if total > limit:
            raise _too_large(total, limit)
    return version, header_len, lengths, prelude_size


def _too_large(size: int, limit: int) -> FrameTooLarge:
    return FrameTooLarge(
        f"frame of {size} bytes exceeds the limit of {limit} bytes; "
        "send less data per message or raise the limit",
        size=size,
        limit=limit,
    )


def unpack(
    data: Buffer, limit: int | None = DEFAULT_FRAME_LIMIT
) -> tuple[memoryview, list[memoryview]]:
    """Split one whole frame into its header and buffers, without copying.

    Parameters
    ----------
    data : bytes-like
        Exactly one frame. The returned views are writable when ``data`` is
        (for example a ``bytearray``), which lets decoded arrays be writable
        without a copy.
    limit : int or None, optional
        Largest frame accepted, in bytes; ``None`` accepts any size.

    Returns
    -------
    header : memoryview
        A view of the header bytes.
    buffers : list of memoryview
        A view of each buffer, in index order.

    Raises
    ------
    FrameTooLarge
        ``data`` is longer than ``limit``.
    VersionMismatch
        An unsupported wire version.
    MalformedFrame
        Bad magic, truncation, lengths that do not add up, or trailing bytes.
    """
    try:
        view = _byte_view(data)
    except TypeError:
        raise MalformedFrame(f"a frame must be bytes-like, not {type(data).__name__!r}") from None
    size = view.nbytes
    if limit is not None and size > limit:
        raise _too_large(size, limit)
    _, header_len, lengths, offset = parse_prelude(view)
    expected = offset + header_len + sum(lengths)
    if expected > size:
        raise MalformedFrame(
            f"frame truncated: its prelude announces {expected} bytes, got {size}",
            expected=expected,
            got=size,
        )
    if expected < size:
        raise MalformedFrame(
            f"{size - expected} trailing bytes after the frame",
            expected=expected,
            got=size,
        )
    header = view[offset : offset + header_len]
    offset += header_len
    buffers: list[memoryview] = []
    for n in lengths:
        buffers.append(view[offset : offset + n])
        offset += n
    return header, buffers
