"""The wire format: a typed value codec (msgpack header plus raw buffers, never
pickle) and the frame layout that carries one encoded value per message."""

from kernel_bridge.wire.codec import MAX_DEPTH, MAX_ITEMS, decode, dumps, encode, loads
from kernel_bridge.wire.frames import (
    DEFAULT_FRAME_LIMIT,
    MAGIC,
    MAX_BUFFERS,
    PRELUDE_MIN,
    SUPPORTED_VERSIONS,
    WIRE_VERSION,
    frame_size,
    pack,
    pack_bytes,
    parse_prelude,
    unpack,
)
from kernel_bridge.wire.refs import PointerRef

__all__ = [
    "DEFAULT_FRAME_LIMIT",
    "MAGIC",
    "MAX_BUFFERS",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "PRELUDE_MIN",
    "SUPPORTED_VERSIONS",
    "WIRE_VERSION",
    "PointerRef",
    "decode",
    "dumps",
    "encode",
    "frame_size",
    "loads",
    "pack",
    "pack_bytes",
    "parse_prelude",
    "unpack",
]
