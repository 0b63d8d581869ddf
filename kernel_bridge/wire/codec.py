"""The typed value codec: a msgpack header plus raw buffers, never pickle.

:func:`encode` turns a value from a closed set of types into a msgpack *header*
and a list of raw *buffers* (array, tensor and Arrow bytes, sent zero-copy where
the memory is C-contiguous). :func:`decode` rebuilds the value and treats its
input as hostile: every extension payload is validated, and any failure surfaces
as :class:`~kernel_bridge.errors.CodecError`. :func:`dumps` / :func:`loads` wrap
the pair in one self-contained frame (:mod:`kernel_bridge.wire.frames`).

Types
-----
None, bool, str, float (nan and inf included), int in [-2**63, 2**64) and bytes
travel as native msgpack; so do list and dict (a msgpack map: keys of any
encodable hashable type, order kept). ``OrderedDict`` and ``defaultdict`` are sent
as, and decode to, a plain dict; a namedtuple is sent as a plain tuple. Other
subclasses of the supported types are refused (``UnsupportedType``), so nothing
is silently reinterpreted. ``bytearray`` and ``memoryview`` are sent as bytes.

Everything else is a msgpack extension type. Payloads marked *msgpack* are a
nested msgpack array; ``buf`` is an index into the buffer list; each buffer must
be used exactly once.

====  ===========  ==========================================================
code  type         payload
====  ===========  ==========================================================
1     tuple        msgpack ``[item, ...]``
2     set          msgpack ``[item, ...]``
3     frozenset    msgpack ``[item, ...]``
4     big int      ASCII decimal, ``-?[0-9]+`` (ints outside int64/uint64;
                   at most 4300 digits, Python's default conversion limit)
5     complex      16 bytes, ``<dd`` (real, imag)
6     slice        msgpack ``[start, stop, step]``
7     Ellipsis     empty
8     PointerRef   UTF-8 id, at most 64 characters
9     ndarray      msgpack ``[dtype, shape, buf]``; dtype a little-endian numpy
                   dtype string from the allow-list (``"<f8"``, ``"|b1"``...)
10    np scalar    msgpack ``[dtype, raw bytes]``
11    tensor       msgpack ``[dtype name, shape, buf, requires_grad]``
12    DataFrame    msgpack ``[buf, labels, names]``; buf holds an Arrow IPC
                   stream; labels/names are the column labels and level names
                   when they are not unique strings (else nil)
13    Series       msgpack ``[buf, name]``; buf an Arrow IPC stream of one column
14    datetime     msgpack ``[y, mo, d, h, mi, s, us, fold, utcoffset_us|nil]``
15    date         msgpack ``[y, mo, d]``
16    timedelta    msgpack ``[days, seconds, microseconds]``
17    bytes        msgpack ``[buf]``: bytes of 64 KiB or more, sent out of band
18    HE context   msgpack ``[buf]``: a TenSEAL context without secret key
                   (:class:`~kernel_bridge.wire.sealed.HEContextBytes`)
19    HE vector    msgpack ``[buf]``: a TenSEAL CKKS vector
                   (:class:`~kernel_bridge.wire.sealed.HEVectorBytes`)
====  ===========  ==========================================================

HE values are checked structurally when decoded (size limits, TenSEAL's protobuf
fields, SEAL headers; a context holding a secret key is refused); SEAL's own
checks run when the worker loads them (:mod:`kernel_bridge.he.validate`).

Decisions
---------
* Arrays are sent C-contiguous and little-endian: other layouts are copied once.
* Decoded numpy arrays are views onto the received buffer when it is aligned
  for the dtype. They are writable exactly when the buffer is (pass a
  ``bytearray`` to get writable arrays without a copy); a misaligned buffer is
  copied, and the copy keeps the buffer's writability.
* Tensors are always writable: a read-only or misaligned buffer is copied
  (torch does not support read-only tensors). GPU tensors are moved to the CPU;
  they decode on the CPU.
* An aware datetime decodes with a fixed-offset ``datetime.timezone`` holding its
  UTC offset (same instant and offset; the zone name is not sent).
* DataFrames and Series travel as Arrow IPC streams (index, column labels and
  names kept; what Arrow drops, such as a DatetimeIndex ``freq`` or ``attrs``, is
  lost); only columns of safe Arrow types (see
  :func:`kernel_bridge.wire._arrow.safe_arrow_type`) are accepted, and
  compressed Arrow streams are refused (a decompression bomb could expand far
  beyond the frame limit).
* Decoding is bounded: at most ``MAX_DEPTH`` nested containers and
  ``MAX_ITEMS`` container items in all, and dict keys / set elements crafted to
  share one hash (which would make decoding quadratic) are refused; a header
  may still allocate one Python object per header byte, so bound frames with
  the frame limit.

Where the parts live
--------------------
This module is the codec's public face. The encoder and decoder walk values in
:mod:`._encoder` and :mod:`._decoder`; arrays and tensors are handled by
:mod:`._arrays`, DataFrames and Series by :mod:`._arrow` (with
:mod:`._arrow_guard` refusing compressed streams); :mod:`._cost` bounds what a
header costs to decode; :mod:`._codes` holds the type codes and limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from kernel_bridge.errors import CodecError, SyftError
from kernel_bridge.wire import frames
from kernel_bridge.wire._arrays import WireTensor
from kernel_bridge.wire._codes import (
    EXT_BIGINT,
    EXT_BYTES,
    EXT_COMPLEX,
    EXT_DATAFRAME,
    EXT_DATE,
    EXT_DATETIME,
    EXT_ELLIPSIS,
    EXT_FROZENSET,
    EXT_HE_CONTEXT,
    EXT_HE_VECTOR,
    EXT_NDARRAY,
    EXT_NPSCALAR,
    EXT_POINTER,
    EXT_SERIES,
    EXT_SET,
    EXT_SLICE,
    EXT_TENSOR,
    EXT_TIMEDELTA,
    EXT_TUPLE,
    MAX_BIGINT_DIGITS,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_NDIM,
    OOB_BYTES_MIN,
    bad,
)

# The decoder's internals (_Pairs, _STREAM_ABOVE, ...) stay importable from here for the
# tests that drive them.
from kernel_bridge.wire._codes import Pairs as _Pairs  # noqa: F401
from kernel_bridge.wire._cost import STREAM_ABOVE as _STREAM_ABOVE  # noqa: F401
from kernel_bridge.wire._cost import costly_bytes as _costly_bytes  # noqa: F401
from kernel_bridge.wire._cost import count_containers as _count_containers
from kernel_bridge.wire._cost import stream_unpack as _stream_unpack  # noqa: F401
from kernel_bridge.wire._decoder import Decoder
from kernel_bridge.wire._encoder import Encoder

__all__ = [
    "WireTensor",
    "EXT_BIGINT",
    "EXT_BYTES",
    "EXT_COMPLEX",
    "EXT_DATAFRAME",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_ELLIPSIS",
    "EXT_FROZENSET",
    "EXT_HE_CONTEXT",
    "EXT_HE_VECTOR",
    "EXT_NDARRAY",
    "EXT_NPSCALAR",
    "EXT_POINTER",
    "EXT_SERIES",
    "EXT_SET",
    "EXT_SLICE",
    "EXT_TENSOR",
    "EXT_TIMEDELTA",
    "EXT_TUPLE",
    "MAX_BIGINT_DIGITS",
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_NDIM",
    "OOB_BYTES_MIN",
    "check_cost",
    "decode",
    "dumps",
    "encode",
    "loads",
]


def encode(value: Any) -> tuple[bytes, list[memoryview]]:
    """Encode a value into a msgpack header and raw buffers.

    Parameters
    ----------
    value : Any
        A value built from the supported types (see the module docstring).

    Returns
    -------
    header : bytes
        msgpack bytes describing the value.
    buffers : list of memoryview
        Flat byte views holding array, tensor, Arrow and large bytes data,
        referenced by index from the header. A C-contiguous little-endian array
        or CPU tensor is not copied: its buffer views the array's own memory,
        so do not mutate it until the buffers are sent.

    Raises
    ------
    UnsupportedType
        The value (or something inside it) is of a type outside the closed set.
    CodecError
        The value is too deep, too large, or otherwise cannot be encoded.
    """
    enc = Encoder(MAX_DEPTH, MAX_ITEMS)
    p = enc.packer()
    try:
        enc.write(p, value, 1)
        header = bytes(p.bytes())
    except SyftError:
        raise
    except RecursionError as exc:
        raise CodecError("value is nested too deeply to encode") from exc
    except Exception as exc:
        raise CodecError(f"cannot encode value: {type(exc).__name__}: {exc}"[:300]) from exc
    return header, enc.buffers


def decode(header: bytes | memoryview, buffers: Sequence[bytes | bytearray | memoryview],
           tensors: Literal["torch", "wire"] = "torch") -> Any:
    """Rebuild a value from its header and buffers; the input is treated as hostile.

    Parameters
    ----------
    header : bytes or memoryview
        The msgpack header made by :func:`encode`.
    buffers : sequence of bytes, bytearray or memoryview
        The buffers, in index order. Each must be referenced exactly once.
        Decoded numpy arrays view these buffers when aligned, and are writable
        only when the buffer is (see the module docstring).
    tensors : {"torch", "wire"}
        Tensors as ``torch.Tensor``, or as :class:`~._arrays.WireTensor` (numpy,
        re-encoded as the same tensor): for trusted code that checks and forwards
        values without importing torch, such as a worker.

    Returns
    -------
    Any
        The decoded value.

    Raises
    ------
    CodecError
        For any malformed, inconsistent, disallowed or over-limit input; no other
        exception type escapes.
    """
    try:
        dec = Decoder(buffers, MAX_DEPTH, MAX_ITEMS, torch_tensors=tensors == "torch")
        value = dec.value(dec.unpack(header), 1)
        if not all(dec.used):
            raise bad(f"{dec.used.count(False)} buffer(s) are not referenced by the header")
        return value
    except CodecError:
        raise
    except RecursionError as exc:
        raise CodecError("malformed value: nested too deeply") from exc
    except Exception as exc:
        raise CodecError(f"malformed value: {type(exc).__name__}: {exc}"[:300]) from exc


def dumps(value: Any) -> bytes:
    """Encode a value into one self-contained frame.

    Parameters
    ----------
    value : Any
        A value built from the supported types.

    Returns
    -------
    bytes
        The frame: prelude, header and buffers.

    Raises
    ------
    UnsupportedType, CodecError
        As :func:`encode`.
    """
    header, buffers = encode(value)
    try:
        return frames.pack_bytes(header, buffers)
    except SyftError as exc:
        raise CodecError(exc.message, **exc.data) from exc


def check_cost(header: bytes | bytearray | memoryview, max_containers: int = MAX_CONTAINERS) -> int:
    """Refuse a header whose decoding would hold the interpreter for long.

    msgpack builds a header's objects in one C call that never releases the GIL,
    at about a microsecond per container: 8 MB of empty maps hold every other
    thread for seconds. This counts the arrays, maps and extension values of a
    header (those inside extension payloads included) without building them,
    so that :func:`decode` only ever gets headers with at most
    ``max_containers`` of them. A header with few bytes that could start a
    container is accepted after one vectorised scan; otherwise the count walks
    the header in Python, which lets other threads run while it does.

    Parameters
    ----------
    header : bytes-like
        A msgpack header, as :func:`kernel_bridge.wire.frames.unpack` returns it.
    max_containers : int, optional
        Most containers and extension values accepted.

    Returns
    -------
    int
        An upper bound on the containers and extension values of the header.

    Raises
    ------
    CodecError
        More containers than ``max_containers``, or a header too malformed to count.
    """
    data = bytes(header)
    costly = _costly_bytes(data)
    if costly <= max_containers:
        return costly  # every such byte counted, even those inside strings: an upper bound
    try:
        return _count_containers(data, max_containers)
    except CodecError:
        raise
    except Exception as exc:
        raise bad(f"header cannot be walked ({type(exc).__name__})") from exc


def loads(data: bytes | bytearray | memoryview, limit: int | None = None,
          tensors: Literal["torch", "wire"] = "torch") -> Any:
    """Decode one frame made by :func:`dumps`.

    Parameters
    ----------
    data : bytes, bytearray or memoryview
        Exactly one frame. Pass a ``bytearray`` to get writable arrays without a copy.
    limit : int or None, optional
        Largest frame accepted, in bytes; ``None`` (the default) accepts any size.
    tensors : {"torch", "wire"}
        As for :func:`decode`.

    Returns
    -------
    Any
        The decoded value.

    Raises
    ------
    FrameTooLarge
        ``data`` is longer than ``limit``.
    VersionMismatch
        The frame has an unsupported wire version.
    MalformedFrame
        The bytes do not follow the frame layout.
    CodecError
        The frame's header or buffers do not decode to a valid value.
    """
    header, buffers = frames.unpack(data, limit=limit)
    return decode(header, buffers, tensors)
