"""HE values as they travel: a TenSEAL public context and a TenSEAL CKKS vector.

Both hold TenSEAL's own serialization (protobuf messages whose fields are SEAL
objects) and nothing else; the codec sends them as extension types 18 and 19
(:mod:`kernel_bridge.wire.codec`). This module checks their *structure* without
TenSEAL: sizes, the protobuf fields TenSEAL writes, the SEAL header of every
embedded object, and that a context carries no secret key. What SEAL itself
checks (parameters, that a ciphertext fits its context) happens when the worker
loads the value (:mod:`kernel_bridge.he.validate`), never on the event loop.

A context is refused here, on the wire, if it holds a secret key: a scientist's
client never sends one, and a worker never accepts one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kernel_bridge.errors import CodecError

__all__ = [
    "MAX_CONTEXT_BYTES",
    "MAX_VECTOR_BYTES",
    "HEContextBytes",
    "HEVectorBytes",
    "check_context",
    "check_vector",
    "proto_fields",
    "seal_header",
]

#: Largest public context accepted (Galois keys for N=16384 fill most of it).
MAX_CONTEXT_BYTES = 256 * 1024 * 1024
#: Largest CKKS vector accepted (several ciphertexts at N=32768 fit).
MAX_VECTOR_BYTES = 64 * 1024 * 1024
#: Most ciphertexts in one vector.
MAX_CIPHERTEXTS = 64

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr, rsv, size
#: SEAL compression modes: none, zlib, zstd.
SEAL_COMPRESSION = {0: "none", 1: "zlib", 2: "zstd"}


def _bad(what: str) -> CodecError:
    return CodecError(f"malformed HE value: {what}")


@dataclass(frozen=True)
class HEContextBytes:
    """A TenSEAL context without its secret key, serialized (``TenSEALContextProto``).

    Parameters
    ----------
    data : bytes
        ``context.serialize(save_secret_key=False, ...)``.

    Raises
    ------
    CodecError
        The bytes are not such a context, are too large, or hold a secret key.
    """

    data: bytes

    def __post_init__(self) -> None:
        check_context(self.data)


@dataclass(frozen=True)
class HEVectorBytes:
    """A TenSEAL CKKS vector, serialized (``CKKSVectorProto``: sizes, ciphertexts, scale).

    Parameters
    ----------
    data : bytes
        ``vector.serialize()``.

    Raises
    ------
    CodecError
        The bytes are not such a vector, or are too large.
    """

    data: bytes

    def __post_init__(self) -> None:
        check_vector(self.data)


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _bad("truncated or overlong varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def proto_fields(data: bytes | memoryview) -> list[tuple[int, int, object]]:
    """The top-level fields of a protobuf message: ``(number, wire type, value)``.

    Length-delimited values come back as ``bytes``, varints as ``int``, 64-bit
    fixed values as their 8 raw bytes. Groups and 32-bit values are refused
    (TenSEAL writes neither).
    """
    out: list[tuple[int, int, object]] = []
    pos = 0
    view = memoryview(data)
    while pos < len(view):
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _bad("protobuf field number 0")
        if wire == 0:
            value, pos = _varint(view, pos)
            out.append((number, wire, value))
        elif wire == 1:
            if pos + 8 > len(view):
                raise _bad("truncated fixed64 field")
            out.append((number, wire, bytes(view[pos:pos + 8])))
            pos += 8
        elif wire == 2:
            length, pos = _varint(view, pos)
            if pos + length > len(view):
                raise _bad("a field runs past the end")
            out.append((number, wire, bytes(view[pos:pos + length])))
            pos += length
        else:
            raise _bad(f"protobuf wire type {wire} is not used by TenSEAL")
    return out


def seal_header(blob: bytes) -> tuple[str, int]:
    """Check a serialized SEAL object's header; returns (compression, size).

    Raises
    ------
    CodecError
        Not a SEAL object, an unknown compression, or a size that does not match.
    """
    if len(blob) < _SEAL_HEADER.size:
        raise _bad("a SEAL object is shorter than its header")
    magic, hsize, major, _minor, compr, _rsv, size = _SEAL_HEADER.unpack_from(blob)
    if magic != _SEAL_MAGIC or hsize != _SEAL_HEADER.size:
        raise _bad("a SEAL object has no SEAL header")
    if major not in (3, 4):
        raise _bad(f"SEAL serialization version {major} is not supported")
    if compr not in SEAL_COMPRESSION:
        raise _bad(f"SEAL compression mode {compr} is unknown")
    if size != len(blob):
        raise _bad("a SEAL object's declared size does not match its bytes")
    return SEAL_COMPRESSION[compr], size


def _fields_of(data: bytes, limit: int, what: str) -> list[tuple[int, int, object]]:
    if type(data) is not bytes:
        raise _bad(f"{what} must be bytes")
    if not data:
        raise _bad(f"{what} is empty")
    if len(data) > limit:
        raise CodecError(f"{what} is {len(data)} bytes; at most {limit} are accepted",
                         limit=limit)
    return proto_fields(data)


def check_context(data: bytes) -> list[bytes]:
    """Check a public context's structure; returns its embedded SEAL objects.

    Raises
    ------
    CodecError
        Malformed, too large, or carrying a secret key (``TenSEALPrivateProto``).
    """
    seal: list[bytes] = []
    have_params = False
    for number, wire, value in _fields_of(data, MAX_CONTEXT_BYTES, "an HE context"):
        if number == 3:
            raise CodecError("an HE context carrying a secret key is refused: send "
                             "context.public() (kb.he contexts never send their secret key)",
                             reason="secret_key")
        if number == 1 and wire == 2:
            assert isinstance(value, bytes)
            seal.append(value)
            have_params = True
        elif number == 2 and wire == 2:
            assert isinstance(value, bytes)
            for sub, sub_wire, sub_value in proto_fields(value):
                if sub in (1, 4, 5) and sub_wire == 2:
                    assert isinstance(sub_value, bytes)
                    if sub_value:
                        seal.append(sub_value)
                elif not (sub == 2 and sub_wire == 0) and not (sub == 3 and sub_wire == 1):
                    raise _bad(f"unexpected public-context field {sub}")
        elif not (number == 4 and wire == 0):
            raise _bad(f"unexpected context field {number}")
    if not have_params:
        raise _bad("an HE context without encryption parameters")
    for blob in seal:
        seal_header(blob)
    return seal


def check_vector(data: bytes) -> list[bytes]:
    """Check a CKKS vector's structure; returns its SEAL ciphertexts.

    Raises
    ------
    CodecError
        Malformed or too large.
    """
    cts: list[bytes] = []
    for number, wire, value in _fields_of(data, MAX_VECTOR_BYTES, "an HE vector"):
        if number == 2 and wire == 2:
            assert isinstance(value, bytes)
            cts.append(value)
        elif number == 1 and wire in (0, 2):
            continue
        elif number == 3 and wire == 1:
            (scale,) = struct.unpack("<d", value)  # type: ignore[arg-type]
            if not 0 < scale < 2.0**1000:
                raise _bad("a vector's scale is out of range")
        else:
            raise _bad(f"unexpected vector field {number}")
    if not 1 <= len(cts) <= MAX_CIPHERTEXTS:
        raise _bad(f"an HE vector holds 1 to {MAX_CIPHERTEXTS} ciphertexts")
    for blob in cts:
        seal_header(blob)
    return cts
