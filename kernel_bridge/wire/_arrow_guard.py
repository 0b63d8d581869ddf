"""A hand-written reader of just enough of Arrow's flatbuffer message metadata to
refuse compressed record batches before pyarrow reads them."""

from __future__ import annotations

import struct

from kernel_bridge.wire._codes import bad


def _fb_read(fmt: str, data: bytes, pos: int) -> int:
    size = struct.calcsize(fmt)
    if not 0 <= pos <= len(data) - size:
        raise bad("Arrow message metadata out of bounds")
    value: int = struct.unpack_from(fmt, data, pos)[0]
    return value


def _fb_field(data: bytes, table: int, index: int) -> int | None:
    """Position of field ``index`` of the flatbuffer table at ``table``, or None if absent."""
    vtable = table - _fb_read("<i", data, table)
    vtable_size = _fb_read("<H", data, vtable)
    if 4 + 2 * index + 2 > vtable_size:
        return None
    offset = _fb_read("<H", data, vtable + 4 + 2 * index)
    return table + offset if offset else None


def _fb_subtable(data: bytes, table: int, index: int) -> int:
    pos = _fb_field(data, table, index)
    if pos is None:
        raise bad("Arrow message metadata lacks a required table")
    return pos + _fb_read("<I", data, pos)


def refuse_compressed(buf: memoryview) -> None:
    """Refuse an Arrow stream whose batches are compressed: a few bytes could expand
    to gigabytes while being read, beyond any frame limit.

    Reads each message's flatbuffer metadata (Message.header -> RecordBatch, or
    DictionaryBatch.data -> RecordBatch) and checks that RecordBatch.compression
    (field 3) is absent.
    """
    import pyarrow as pa

    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(buf))
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        if message is None:
            return
        kind = message.type
        if kind == "schema":
            continue
        if kind not in ("record batch", "dictionary"):
            raise bad(f"unexpected Arrow message of type {kind!r}")
        meta = message.metadata.to_pybytes()
        batch = _fb_subtable(meta, _fb_read("<I", meta, 0), 2)  # Message.header
        if kind == "dictionary":
            batch = _fb_subtable(meta, batch, 1)  # DictionaryBatch.data
        if _fb_field(meta, batch, 3) is not None:  # RecordBatch.compression
            raise bad("compressed Arrow streams are not accepted")
