"""What decoding a msgpack header would cost, measured without building it, and
piecewise unpacking of headers with many containers.

msgpack builds a header's objects in one C call that never releases the GIL, at
about a microsecond per container; these helpers bound that (see
:func:`kernel_bridge.wire.codec.check_cost`).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from kernel_bridge.errors import CodecError
from kernel_bridge.wire._codes import (
    EXT_BIGINT,
    EXT_COMPLEX,
    EXT_ELLIPSIS,
    EXT_POINTER,
    MAX_DEPTH,
    MAX_ITEMS,
    Pairs,
    bad,
)

#: First bytes of msgpack arrays and maps (fix, 16 and 32 bit) and of extension values.
_COSTLY_FIRST = np.zeros(256, dtype=bool)
_COSTLY_FIRST[0x80:0xA0] = True
_COSTLY_FIRST[[0xDC, 0xDD, 0xDE, 0xDF]] = True
_EXT_FIRST = frozenset({0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})
_COSTLY_FIRST[list(_EXT_FIRST)] = True
_ARRAY_FIRST = frozenset({*range(0x90, 0xA0), 0xDC, 0xDD})
_MAP_FIRST = frozenset({*range(0x80, 0x90), 0xDE, 0xDF})
#: Extension payloads that are not msgpack (nothing nested to count).
_OPAQUE_EXT = frozenset({EXT_BIGINT, EXT_COMPLEX, EXT_ELLIPSIS, EXT_POINTER})

#: msgpack data with more possible containers than this is built piecewise.
STREAM_ABOVE = 2048


def costly_bytes(data: bytes | bytearray | memoryview) -> int:
    """How many bytes of ``data`` could start a container or extension (an upper bound)."""
    return int(np.count_nonzero(_COSTLY_FIRST[np.frombuffer(data, dtype=np.uint8)]))


def stream_unpack(data: bytes, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """What ``msgpack.unpackb`` (with :class:`Pairs` for maps) gives, built one
    container at a time, so that other threads run in between: ``unpackb`` holds
    the interpreter for its whole call, about a microsecond per container."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                                object_pairs_hook=Pairs, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    end = len(data)

    def read(depth: int) -> Any:
        if depth > max_depth + 1:
            raise CodecError(f"value nests containers more than {max_depth} deep")
        pos = unpacker.tell()
        if pos >= end:
            raise bad("header truncated")
        first = data[pos]
        if first in _ARRAY_FIRST:
            n = unpacker.read_array_header()
            if n > max_items:
                raise CodecError(f"value holds more than {max_items} container items")
            return [read(depth + 1) for _ in range(n)]
        if first in _MAP_FIRST:
            n = unpacker.read_map_header()
            if n > max_items:
                raise CodecError(f"value holds more than {max_items} container items")
            return Pairs([(read(depth + 1), read(depth + 1)) for _ in range(n)])
        return unpacker.unpack()

    value = read(0)
    if unpacker.tell() != end:
        raise bad("extra bytes after the value")
    return value


def count_containers(data: bytes, limit: int, depth: int = 0) -> int:
    """Count the arrays, maps and extension values of ``data`` (those inside extension
    payloads included) by walking it; raise once there are more than ``limit``."""
    if depth > MAX_DEPTH:
        raise CodecError(f"value nests containers more than {MAX_DEPTH} deep")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    count, pending = 0, 1
    while pending:
        pos = unpacker.tell()
        if pos >= len(data):
            raise bad("header truncated")
        first = data[pos]
        pending -= 1
        if first in _ARRAY_FIRST:
            pending += unpacker.read_array_header()
            count += 1
        elif first in _MAP_FIRST:
            pending += 2 * unpacker.read_map_header()
            count += 1
        elif first in _EXT_FIRST:
            ext_obj = unpacker.unpack()
            count += 1
            if isinstance(ext_obj, msgpack.ExtType) and ext_obj.code not in _OPAQUE_EXT:
                count += count_containers(ext_obj.data, limit - count, depth + 1)
        else:
            unpacker.skip()
        if count > limit:
            raise CodecError(
                f"message holds more than {limit} containers (lists, dicts, tuples...); "
                "send arrays or DataFrames instead, or split it",
                limit=limit,
            )
    return count
