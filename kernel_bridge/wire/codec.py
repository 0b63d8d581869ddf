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
====  ===========  ==========================================================

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
  lost); only columns of safe Arrow types (see :func:`_safe_arrow_type`) are
  accepted, and compressed Arrow streams are refused (a decompression bomb could
  expand far beyond the frame limit).
* Decoding is bounded: at most ``MAX_DEPTH`` nested containers and
  ``MAX_ITEMS`` container items in all, and dict keys / set elements crafted to
  share one hash (which would make decoding quadratic) are refused; a header
  may still allocate one Python object per header byte, so bound frames with
  the frame limit.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import struct
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

from kernel_bridge.errors import CodecError, SyftError, UnsupportedType
from kernel_bridge.wire import frames
from kernel_bridge.wire.refs import MAX_POINTER_ID_LEN, PointerRef

__all__ = [
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "check_cost",
    "decode",
    "dumps",
    "encode",
    "loads",
]

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_BIGINT = 4
EXT_COMPLEX = 5
EXT_SLICE = 6
EXT_ELLIPSIS = 7
EXT_POINTER = 8
EXT_NDARRAY = 9
EXT_NPSCALAR = 10
EXT_TENSOR = 11
EXT_DATAFRAME = 12
EXT_SERIES = 13
EXT_DATETIME = 14
EXT_DATE = 15
EXT_TIMEDELTA = 16
EXT_BYTES = 17

#: Most nested containers (list, tuple, dict, set, frozenset, slice) in one value.
MAX_DEPTH = 64
#: Most container items (elements plus dict entries) in one value.
MAX_ITEMS = 1 << 24
#: Most containers and extension values in one header accepted by :func:`check_cost`.
MAX_CONTAINERS = 1 << 16
#: Most dimensions of an array or tensor.
MAX_NDIM = 32
#: Bytes values at least this long are sent as a buffer instead of in the header.
OOB_BYTES_MIN = 64 * 1024
MAX_BIGINT_DIGITS = 4300

_HASH_CHECK_MIN = 64
_MAX_SAME_HASH = 16
_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_NoneType = type(None)
_ELLIPSIS_TYPE = type(Ellipsis)
_BIGINT_RE = re.compile(rb"-?[0-9]{1,%d}" % MAX_BIGINT_DIGITS)
_COMPLEX = struct.Struct("<dd")
_MAX_UTC_OFFSET_US = 86_400 * 10**6  # timezone() needs |offset| < 24 h

#: Wire dtype string -> numpy dtype. Always little-endian on the wire.
_NP_DTYPES: dict[str, np.dtype[Any]] = {
    d.str: d
    for d in (
        np.dtype(name).newbyteorder("<")
        for name in (
            "bool",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "float16",
            "float32",
            "float64",
            "complex64",
            "complex128",
        )
    )
}
#: Torch dtype name -> wire numpy dtype of its buffer (bfloat16 travels as int16 bits).
_TORCH_DTYPES: dict[str, str] = {
    "bool": "|b1",
    "uint8": "|u1",
    "int8": "|i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "float16": "<f2",
    "bfloat16": "<i2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
}

_SUPPORTED = (
    "None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset, "
    "slice, Ellipsis, PointerRef, numpy arrays and scalars (bool, int, uint, float, complex), "
    "torch tensors (dense), pandas DataFrame and Series, datetime, date, timedelta"
)
_NP_SUPPORTED = "bool, int8-64, uint8-64, float16/32/64, complex64/128"


def _type_name(tp: type) -> str:
    module = getattr(tp, "__module__", None)
    qual = getattr(tp, "__qualname__", tp.__name__)
    return qual if module in (None, "builtins") else f"{module}.{qual}"


def _unsupported(value: Any) -> UnsupportedType:
    name = _type_name(type(value))
    return UnsupportedType(
        f"cannot send a value of type {name!r}; supported: {_SUPPORTED}", type=name
    )


class _Pairs(list[tuple[Any, Any]]):
    """A decoded msgpack map, as its (key, value) pairs; keys are hashed only later."""


# ---------------------------------------------------------------------------------------
# encoding


def _plain(items: Any) -> bool:
    """True when every item packs natively, so a whole container packs in one C call."""
    for x in items:
        t = type(x)
        if t is int:
            if not _I64_MIN <= x <= _U64_MAX:
                return False
        elif t is str or t is float or t is bool or t is _NoneType:
            continue
        elif t is bytes:
            if len(x) >= OOB_BYTES_MIN:
                return False
        else:
            return False
    return True


def _wire_dtype(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        return None
    return _NP_DTYPES.get(dtype.newbyteorder("<").str)


def _array_buffer(arr: np.ndarray[Any, Any]) -> tuple[str, list[int], memoryview]:
    """Wire dtype, shape and a flat byte view of ``arr``; copies only to fix layout."""
    wire = _wire_dtype(arr.dtype)
    if wire is None:
        raise UnsupportedType(
            f"cannot send a numpy array of dtype {str(arr.dtype)!r}; "
            f"supported dtypes: {_NP_SUPPORTED}",
            type="numpy.ndarray",
            dtype=str(arr.dtype),
        )
    shape = [int(n) for n in arr.shape]
    if arr.dtype != wire:
        arr = arr.astype(wire)  # byte swap: the wire is little-endian
    elif not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    # A C-contiguous reshape(-1) is a view, so the memoryview shares the array's memory.
    flat = arr.reshape(-1).view(np.uint8)
    return wire.str, shape, flat.data


class _Encoder:
    def __init__(self) -> None:
        self.buffers: list[memoryview] = []
        self.items = 0

    # -- bookkeeping
    def enter(self, n: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CodecError(f"value nests containers more than {MAX_DEPTH} deep", limit=MAX_DEPTH)
        self.items += n
        if self.items > MAX_ITEMS:
            raise CodecError(
                f"value holds more than {MAX_ITEMS} container items; send an array instead",
                limit=MAX_ITEMS,
            )

    def add_buffer(self, view: memoryview) -> int:
        if len(self.buffers) >= frames.MAX_BUFFERS:
            raise CodecError(
                f"value needs more than {frames.MAX_BUFFERS} buffers; "
                "stack small arrays into one array",
                limit=frames.MAX_BUFFERS,
            )
        self.buffers.append(view)
        return len(self.buffers) - 1

    @staticmethod
    def packer() -> msgpack.Packer:
        # strict_types: subclasses (numpy.float64 is a float) reach our dispatch, not msgpack.
        return msgpack.Packer(use_bin_type=True, strict_types=True, autoreset=False)

    def payload(self, fields: list[Any], depth: int) -> bytes:
        """Pack internal payload fields (no container counted) with values at ``depth``."""
        p = self.packer()
        p.pack_array_header(len(fields))
        for f in fields:
            self.write(p, f, depth)
        return bytes(p.bytes())

    def items_payload(self, items: Sequence[Any] | Any, n: int, depth: int) -> bytes:
        """Pack the items of a tuple/set/slice sitting at ``depth``."""
        self.enter(n, depth)
        p = self.packer()
        if _plain(items):
            p.pack(list(items))
        else:
            p.pack_array_header(n)
            for x in items:
                self.write(p, x, depth + 1)
        return bytes(p.bytes())

    # -- dispatch
    def write(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        t = type(v)
        if t is str or t is float or t is bool or t is _NoneType:
            p.pack(v)
        elif t is int:
            self.write_int(p, v)
        elif t is list:
            self.enter(len(v), depth)
            if _plain(v):
                p.pack(v)
            else:
                p.pack_array_header(len(v))
                for x in v:
                    self.write(p, x, depth + 1)
        elif t is dict or t is OrderedDict or t is defaultdict:
            self.write_dict(p, v, depth)
        else:
            handler = _HANDLERS.get(t)
            if handler is not None:
                handler(self, p, v, depth)
            else:
                self.write_other(p, v, depth)

    def write_int(self, p: msgpack.Packer, v: int) -> None:
        if _I64_MIN <= v <= _U64_MAX:
            p.pack(v)
            return
        try:
            digits = str(v)
        except ValueError:  # beyond sys.int_info.default_max_str_digits
            raise CodecError(
                f"int with more than {MAX_BIGINT_DIGITS} digits cannot be sent",
                limit=MAX_BIGINT_DIGITS,
            ) from None
        if len(digits.lstrip("-")) > MAX_BIGINT_DIGITS:
            raise CodecError(
                f"int with more than {MAX_BIGINT_DIGITS} digits cannot be sent",
                limit=MAX_BIGINT_DIGITS,
            )
        p.pack_ext_type(EXT_BIGINT, digits.encode("ascii"))

    def write_dict(self, p: msgpack.Packer, v: dict[Any, Any], depth: int) -> None:
        self.enter(len(v), depth)
        if type(v) is dict and _plain(v.keys()) and _plain(v.values()):
            p.pack(v)
            return
        p.pack_map_header(len(v))
        for k, x in v.items():
            self.write(p, k, depth + 1)
            self.write(p, x, depth + 1)

    def write_bytes(self, p: msgpack.Packer, v: bytes | bytearray | memoryview, depth: int) -> None:
        view = frames._byte_view(v)
        if view.nbytes >= OOB_BYTES_MIN:
            index = self.add_buffer(view)
            p.pack_ext_type(EXT_BYTES, self.payload([index], depth))
        else:
            p.pack(view.tobytes() if type(v) is not bytes else v)

    def write_tuple(self, p: msgpack.Packer, v: tuple[Any, ...], depth: int) -> None:
        p.pack_ext_type(EXT_TUPLE, self.items_payload(v, len(v), depth))

    def write_set(self, p: msgpack.Packer, v: set[Any], depth: int) -> None:
        p.pack_ext_type(EXT_SET, self.items_payload(v, len(v), depth))

    def write_frozenset(self, p: msgpack.Packer, v: frozenset[Any], depth: int) -> None:
        p.pack_ext_type(EXT_FROZENSET, self.items_payload(v, len(v), depth))

    def write_complex(self, p: msgpack.Packer, v: complex, depth: int) -> None:
        p.pack_ext_type(EXT_COMPLEX, _COMPLEX.pack(v.real, v.imag))

    def write_slice(self, p: msgpack.Packer, v: slice, depth: int) -> None:
        p.pack_ext_type(EXT_SLICE, self.items_payload((v.start, v.stop, v.step), 3, depth))

    def write_ellipsis(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        p.pack_ext_type(EXT_ELLIPSIS, b"")

    def write_pointer(self, p: msgpack.Packer, v: PointerRef, depth: int) -> None:
        # Re-validate: a frozen dataclass can still be forged with object.__setattr__.
        if not isinstance(v.id, str) or len(v.id) > MAX_POINTER_ID_LEN:
            raise CodecError("PointerRef id must be a str of at most 64 characters")
        p.pack_ext_type(EXT_POINTER, v.id.encode("utf-8"))

    def write_datetime(self, p: msgpack.Packer, v: _dt.datetime, depth: int) -> None:
        offset = v.utcoffset()
        off_us = None if offset is None else offset // _dt.timedelta(microseconds=1)
        fields = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond]
        p.pack_ext_type(EXT_DATETIME, self.payload([*fields, v.fold, off_us], depth))

    def write_date(self, p: msgpack.Packer, v: _dt.date, depth: int) -> None:
        p.pack_ext_type(EXT_DATE, self.payload([v.year, v.month, v.day], depth))

    def write_timedelta(self, p: msgpack.Packer, v: _dt.timedelta, depth: int) -> None:
        p.pack_ext_type(EXT_TIMEDELTA, self.payload([v.days, v.seconds, v.microseconds], depth))

    def write_ndarray(self, p: msgpack.Packer, v: np.ndarray[Any, Any], depth: int) -> None:
        dtype, shape, view = _array_buffer(v)
        index = self.add_buffer(view)
        p.pack_ext_type(EXT_NDARRAY, self.payload([dtype, shape, index], depth))

    def write_other(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        if isinstance(v, np.generic):
            wire = _wire_dtype(v.dtype)
            if wire is None:
                name = _type_name(type(v))
                raise UnsupportedType(
                    f"cannot send a numpy scalar of type {name!r} (dtype {str(v.dtype)!r}); "
                    f"supported dtypes: {_NP_SUPPORTED}",
                    type=name,
                )
            raw = np.asarray(v).astype(wire).tobytes()
            p.pack_ext_type(EXT_NPSCALAR, self.payload([wire.str, raw], depth))
            return
        if isinstance(v, tuple) and hasattr(type(v), "_fields"):  # namedtuple -> tuple
            self.write_tuple(p, tuple(v), depth)
            return
        torch = sys.modules.get("torch")  # a tensor implies torch is already imported
        if torch is not None and isinstance(v, torch.Tensor):
            self.write_tensor(p, v, depth)
            return
        pd = sys.modules.get("pandas")
        if pd is not None:
            if type(v) is pd.DataFrame:
                self.write_dataframe(p, v, depth)
                return
            if type(v) is pd.Series:
                self.write_series(p, v, depth)
                return
        raise _unsupported(v)

    def write_tensor(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        import torch

        if v.layout != torch.strided or v.is_sparse:
            raise UnsupportedType(
                f"cannot send a tensor with layout {v.layout}; call .to_dense() first",
                type="torch.Tensor",
            )
        if v.is_quantized:
            raise UnsupportedType(
                "cannot send a quantized tensor; call .dequantize() first", type="torch.Tensor"
            )
        if getattr(v, "is_nested", False):
            raise UnsupportedType("cannot send a nested tensor", type="torch.Tensor")
        if v.device.type == "meta":
            raise UnsupportedType(
                "cannot send a tensor on the 'meta' device: it holds no data",
                type="torch.Tensor",
            )
        name = str(v.dtype).removeprefix("torch.")
        if name not in _TORCH_DTYPES:
            raise UnsupportedType(
                f"cannot send a tensor of dtype {name!r}; supported dtypes: "
                + ", ".join(_TORCH_DTYPES),
                type="torch.Tensor",
                dtype=name,
            )
        t = v.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        # contiguous() is a no-op on a contiguous tensor, so the buffer aliases its storage.
        t = t.resolve_conj().resolve_neg().contiguous()
        if name == "bfloat16":
            t = t.view(torch.int16)  # numpy has no bfloat16: send the raw bits
        _, shape, view = _array_buffer(t.numpy())
        index = self.add_buffer(view)
        fields = [name, shape, index, bool(v.requires_grad)]
        p.pack_ext_type(EXT_TENSOR, self.payload(fields, depth))

    def write_dataframe(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        import pandas as pd

        labels: list[Any] | None = None
        names: list[Any] | None = None
        cols = v.columns
        if isinstance(cols, pd.MultiIndex) or not (
            cols.is_unique and all(type(c) is str for c in cols)
        ):
            # Arrow field names are unique strings: send the real labels beside the table.
            labels = list(cols)
            names = list(cols.names)
            v = v.set_axis([f"__col{i}__" for i in range(len(cols))], axis=1)
        index = self.add_buffer(_to_arrow_ipc(v, "DataFrame"))
        p.pack_ext_type(EXT_DATAFRAME, self.payload([index, labels, names], depth))

    def write_series(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        index = self.add_buffer(_to_arrow_ipc(v.to_frame(name=_SERIES_COLUMN), "Series"))
        p.pack_ext_type(EXT_SERIES, self.payload([index, v.name], depth))


_SERIES_COLUMN = "__series_values__"

_HANDLERS: dict[type, Callable[[_Encoder, msgpack.Packer, Any, int], None]] = {
    bytes: _Encoder.write_bytes,
    bytearray: _Encoder.write_bytes,
    memoryview: _Encoder.write_bytes,
    tuple: _Encoder.write_tuple,
    set: _Encoder.write_set,
    frozenset: _Encoder.write_frozenset,
    complex: _Encoder.write_complex,
    slice: _Encoder.write_slice,
    _ELLIPSIS_TYPE: _Encoder.write_ellipsis,
    PointerRef: _Encoder.write_pointer,
    _dt.datetime: _Encoder.write_datetime,
    _dt.date: _Encoder.write_date,
    _dt.timedelta: _Encoder.write_timedelta,
    np.ndarray: _Encoder.write_ndarray,
    np.memmap: _Encoder.write_ndarray,
}


def _to_arrow_ipc(df: Any, what: str) -> memoryview:
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(df, preserve_index=True)
    except Exception as exc:
        # Arrow's message may quote cell values; keep them out of an error that may travel.
        raise UnsupportedType(
            f"cannot send this {what}: Arrow cannot convert one of its columns or its index "
            f"({type(exc).__name__}); convert object columns to str or numbers first",
            type=f"pandas.{what}",
        ) from exc
    bad = _unsafe_fields(table.schema)
    if bad:
        raise UnsupportedType(
            f"cannot send this {what}: unsupported column type(s) {', '.join(bad)}",
            type=f"pandas.{what}",
        )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        if table.num_rows:
            writer.write_table(table)
        else:
            # An empty table has no batches, and without one no dictionary is written:
            # send an empty batch so categorical columns keep their categories.
            arrays = [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in table.columns]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=table.schema))
    return memoryview(sink.getvalue())


def _safe_arrow_field(field: Any, depth: int = 0) -> bool:
    meta = field.metadata
    if meta and any(k.startswith(b"ARROW:extension") for k in meta):
        return False  # an extension type the reader did not know, kept as its storage
    return _safe_arrow_type(field.type, depth)


def _safe_arrow_type(tp: Any, depth: int = 0) -> bool:
    """Whether an Arrow type is in the safe set the codec accepts.

    The safe set: null, bool, ints, uints, floats, decimal, string/large_string,
    binary/large_binary, date, time, timestamp, duration, dictionaries of those
    (integer indices), and list/large_list/struct of safe types. Extension types
    and everything else (map, union, views, run-end encoded...) are refused.
    """
    import pyarrow as pa

    types = pa.types
    if depth > MAX_DEPTH or isinstance(tp, pa.BaseExtensionType):
        return False
    if (
        types.is_null(tp)
        or types.is_boolean(tp)
        or types.is_integer(tp)
        or types.is_floating(tp)
        or types.is_decimal(tp)
        or types.is_string(tp)
        or types.is_large_string(tp)
        or types.is_binary(tp)
        or types.is_large_binary(tp)
        or types.is_date(tp)
        or types.is_time(tp)
        or types.is_timestamp(tp)
        or types.is_duration(tp)
    ):
        return True
    if types.is_dictionary(tp):
        return bool(types.is_integer(tp.index_type)) and _safe_arrow_type(tp.value_type, depth + 1)
    if types.is_list(tp) or types.is_large_list(tp):
        return _safe_arrow_field(tp.value_field, depth + 1)
    if types.is_struct(tp):
        return all(_safe_arrow_field(tp.field(i), depth + 1) for i in range(tp.num_fields))
    return False


def _unsafe_fields(schema: Any) -> list[str]:
    return [f"{f.name!r}: {f.type}" for f in schema if not _safe_arrow_field(f)]


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
    enc = _Encoder()
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


# ---------------------------------------------------------------------------------------
# decoding


def _bad(what: str) -> CodecError:
    return CodecError(f"malformed value: {what}")


def _as_view(buf: Any) -> memoryview:
    view = memoryview(buf)
    if view.ndim == 1 and view.format == "B":
        return view
    if not view.c_contiguous:
        raise _bad("a buffer is not contiguous")
    return view.cast("B")


def _is_int(x: Any) -> bool:
    return type(x) is int


def _shape(obj: Any) -> tuple[int, ...]:
    if type(obj) is not list or len(obj) > MAX_NDIM:
        raise _bad(f"shape must be a list of at most {MAX_NDIM} ints")
    for n in obj:
        if type(n) is not int or n < 0:
            raise _bad("shape entries must be non-negative ints")
    return tuple(obj)


def _array_from(buf: memoryview, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    """A numpy view of ``buf``; copied only when misaligned (writability kept)."""
    if math.prod(shape) * dtype.itemsize != buf.nbytes:
        raise _bad(
            f"array of shape {list(shape)} and dtype {dtype.str} needs "
            f"{math.prod(shape) * dtype.itemsize} bytes, its buffer has {buf.nbytes}"
        )
    arr = np.frombuffer(buf, dtype=dtype)
    if not arr.flags.aligned:
        copy = arr.copy()
        copy.flags.writeable = not buf.readonly
        arr = copy
    return arr.reshape(shape)


def _check_collisions(keys: list[Any]) -> None:
    """Refuse keys crafted to share one hash, which would make building a dict quadratic.

    int, float and tuple hashes are not randomised (str and bytes hashes are), so a
    peer can send e.g. many big ints that are multiples of 2**61 - 1, all hashing to 0.
    """
    if len(keys) < _HASH_CHECK_MIN:
        return
    counts: dict[int, int] = {}
    for key in keys:
        t = type(key)
        if t is str or t is bytes:
            continue
        h = hash(key)  # also rejects unhashable keys
        n = counts.get(h, 0) + 1
        if n > _MAX_SAME_HASH:
            raise _bad("too many dict keys or set elements share one hash")
        counts[h] = n


class _Decoder:
    def __init__(self, buffers: Sequence[Any]) -> None:
        if len(buffers) > frames.MAX_BUFFERS:
            raise _bad(f"more than {frames.MAX_BUFFERS} buffers")
        self.buffers = [_as_view(b) for b in buffers]
        self.used = [False] * len(self.buffers)
        self.items = 0

    def unpack(self, data: Any) -> Any:
        if len(data) > _STREAM_ABOVE and _costly_bytes(data) > _STREAM_ABOVE:
            return _stream_unpack(bytes(data))
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            object_pairs_hook=_Pairs,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
        )

    def fields(self, data: bytes, n: int, what: str) -> list[Any]:
        obj = self.unpack(data)
        if type(obj) is not list or len(obj) != n:
            raise _bad(f"{what} payload must be a list of {n} fields")
        return obj

    def take(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise _bad(f"buffer index {index!r} out of range ({len(self.buffers)} buffers)")
        if self.used[index]:
            raise _bad(f"buffer {index} is referenced twice")
        self.used[index] = True
        return self.buffers[index]

    def enter(self, n: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CodecError(f"value nests containers more than {MAX_DEPTH} deep")
        self.items += n
        if self.items > MAX_ITEMS:
            raise CodecError(f"value holds more than {MAX_ITEMS} container items")

    def value(self, obj: Any, depth: int) -> Any:
        t = type(obj)
        if t is str or t is int or t is float or t is bool or t is bytes or t is _NoneType:
            return obj
        if t is list:
            self.enter(len(obj), depth)
            if all(type(x) in _NATIVE for x in obj):
                return obj
            return [self.value(x, depth + 1) for x in obj]
        if t is _Pairs:
            self.enter(len(obj), depth)
            if not all(type(k) in _NATIVE and type(x) in _NATIVE for k, x in obj):
                obj = [(self.value(k, depth + 1), self.value(x, depth + 1)) for k, x in obj]
            _check_collisions([k for k, _ in obj])
            return dict(obj)
        if t is msgpack.ExtType:
            handler = _EXT_DECODERS.get(obj.code)
            if handler is None:
                raise CodecError(f"malformed value: unknown extension type code {obj.code}")
            return handler(self, obj.data, depth)
        raise _bad(f"unexpected msgpack object of type {t.__name__}")

    def items_of(self, data: bytes, depth: int, what: str) -> list[Any]:
        obj = self.unpack(data)
        if type(obj) is not list:
            raise _bad(f"{what} payload must be a list")
        self.enter(len(obj), depth)
        if all(type(x) in _NATIVE for x in obj):
            return obj
        return [self.value(x, depth + 1) for x in obj]

    # -- extension types
    def ext_tuple(self, data: bytes, depth: int) -> Any:
        return tuple(self.items_of(data, depth, "tuple"))

    def ext_set(self, data: bytes, depth: int) -> Any:
        items = self.items_of(data, depth, "set")
        _check_collisions(items)
        return set(items)

    def ext_frozenset(self, data: bytes, depth: int) -> Any:
        items = self.items_of(data, depth, "frozenset")
        _check_collisions(items)
        return frozenset(items)

    def ext_bigint(self, data: bytes, depth: int) -> Any:
        if not _BIGINT_RE.fullmatch(data):
            raise _bad(f"big int must be at most {MAX_BIGINT_DIGITS} ASCII decimal digits")
        return int(data)

    def ext_complex(self, data: bytes, depth: int) -> Any:
        if len(data) != _COMPLEX.size:
            raise _bad("complex payload must be 16 bytes")
        real, imag = _COMPLEX.unpack(data)
        return complex(real, imag)

    def ext_slice(self, data: bytes, depth: int) -> Any:
        items = self.items_of(data, depth, "slice")
        if len(items) != 3:
            raise _bad("slice payload must hold start, stop and step")
        return slice(*items)

    def ext_ellipsis(self, data: bytes, depth: int) -> Any:
        if data:
            raise _bad("Ellipsis payload must be empty")
        return Ellipsis

    def ext_pointer(self, data: bytes, depth: int) -> Any:
        if len(data) > 4 * MAX_POINTER_ID_LEN:
            raise _bad("pointer id too long")
        return PointerRef(data.decode("utf-8"))

    def ext_ndarray(self, data: bytes, depth: int) -> Any:
        dtype_str, shape, index = self.fields(data, 3, "ndarray")
        dtype = _NP_DTYPES.get(dtype_str) if type(dtype_str) is str else None
        if dtype is None:
            raise _bad(f"array dtype {dtype_str!r} is not allowed; allowed: {_NP_SUPPORTED}")
        return _array_from(self.take(index), dtype, _shape(shape))

    def ext_npscalar(self, data: bytes, depth: int) -> Any:
        dtype_str, raw = self.fields(data, 2, "numpy scalar")
        dtype = _NP_DTYPES.get(dtype_str) if type(dtype_str) is str else None
        if dtype is None:
            raise _bad(f"scalar dtype {dtype_str!r} is not allowed; allowed: {_NP_SUPPORTED}")
        if type(raw) is not bytes or len(raw) != dtype.itemsize:
            raise _bad("numpy scalar payload has the wrong size")
        return np.frombuffer(raw, dtype=dtype)[0]

    def ext_tensor(self, data: bytes, depth: int) -> Any:
        name, shape, index, requires_grad = self.fields(data, 4, "tensor")
        np_dtype = _TORCH_DTYPES.get(name) if type(name) is str else None
        if np_dtype is None:
            raise _bad(f"tensor dtype {name!r} is not allowed")
        if type(requires_grad) is not bool:
            raise _bad("tensor requires_grad must be a bool")
        arr = _array_from(self.take(index), _NP_DTYPES[np_dtype], _shape(shape))
        if not arr.flags.writeable:
            arr = arr.copy()  # torch has no read-only tensors
        import torch

        tensor = torch.from_numpy(arr)
        if name == "bfloat16":
            tensor = tensor.view(torch.bfloat16)
        if requires_grad:
            if not (tensor.is_floating_point() or tensor.is_complex()):
                raise _bad("only float and complex tensors can require grad")
            tensor.requires_grad_(True)
        return tensor

    def ext_datetime(self, data: bytes, depth: int) -> Any:
        fields = self.fields(data, 9, "datetime")
        *parts, fold, off_us = fields
        if not all(_is_int(x) for x in parts) or fold not in (0, 1) or type(fold) is not int:
            raise _bad("datetime fields must be ints")
        tz = None
        if off_us is not None:
            if type(off_us) is not int or abs(off_us) >= _MAX_UTC_OFFSET_US:
                raise _bad("datetime UTC offset out of range")
            tz = _dt.timezone(_dt.timedelta(microseconds=off_us))
        year, month, day, hour, minute, second, micro = parts
        return _dt.datetime(year, month, day, hour, minute, second, micro, tz, fold=fold)

    def ext_date(self, data: bytes, depth: int) -> Any:
        parts = self.fields(data, 3, "date")
        if not all(_is_int(x) for x in parts):
            raise _bad("date fields must be ints")
        return _dt.date(*parts)

    def ext_timedelta(self, data: bytes, depth: int) -> Any:
        parts = self.fields(data, 3, "timedelta")
        if not all(_is_int(x) for x in parts):
            raise _bad("timedelta fields must be ints")
        days, seconds, micros = parts
        if not (0 <= seconds < 86_400 and 0 <= micros < 10**6):
            raise _bad("timedelta seconds or microseconds out of range")
        return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)

    def ext_bytes(self, data: bytes, depth: int) -> Any:
        (index,) = self.fields(data, 1, "bytes")
        return self.take(index).tobytes()

    def ext_dataframe(self, data: bytes, depth: int) -> Any:
        index, labels, names = self.fields(data, 3, "DataFrame")
        df = _from_arrow_ipc(self.take(index))
        if labels is not None:
            import pandas as pd

            if type(labels) is not list or (names is not None and type(names) is not list):
                raise _bad("DataFrame column labels must be lists")
            labels = self.value(labels, depth + 1)
            cols = pd.Index(labels)
            if names is not None:
                names = self.value(names, depth + 1)
                if len(names) != cols.nlevels:
                    raise _bad("DataFrame column level names do not match the labels")
                cols.names = names
            df = df.set_axis(cols, axis=1)
        return df

    def ext_series(self, data: bytes, depth: int) -> Any:
        index, name = self.fields(data, 2, "Series")
        df = _from_arrow_ipc(self.take(index))
        if df.shape[1] != 1:
            raise _bad("a Series stream must hold exactly one column")
        series = df.iloc[:, 0]
        series.name = self.value(name, depth + 1)
        return series


_NATIVE = frozenset({str, int, float, bool, bytes, _NoneType})

_EXT_DECODERS: dict[int, Callable[[_Decoder, bytes, int], Any]] = {
    EXT_TUPLE: _Decoder.ext_tuple,
    EXT_SET: _Decoder.ext_set,
    EXT_FROZENSET: _Decoder.ext_frozenset,
    EXT_BIGINT: _Decoder.ext_bigint,
    EXT_COMPLEX: _Decoder.ext_complex,
    EXT_SLICE: _Decoder.ext_slice,
    EXT_ELLIPSIS: _Decoder.ext_ellipsis,
    EXT_POINTER: _Decoder.ext_pointer,
    EXT_NDARRAY: _Decoder.ext_ndarray,
    EXT_NPSCALAR: _Decoder.ext_npscalar,
    EXT_TENSOR: _Decoder.ext_tensor,
    EXT_DATAFRAME: _Decoder.ext_dataframe,
    EXT_SERIES: _Decoder.ext_series,
    EXT_DATETIME: _Decoder.ext_datetime,
    EXT_DATE: _Decoder.ext_date,
    EXT_TIMEDELTA: _Decoder.ext_timedelta,
    EXT_BYTES: _Decoder.ext_bytes,
}


def _fb_read(fmt: str, data: bytes, pos: int) -> int:
    size = struct.calcsize(fmt)
    if not 0 <= pos <= len(data) - size:
        raise _bad("Arrow message metadata out of bounds")
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
        raise _bad("Arrow message metadata lacks a required table")
    return pos + _fb_read("<I", data, pos)


def _refuse_compressed(buf: memoryview) -> None:
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
            raise _bad(f"unexpected Arrow message of type {kind!r}")
        meta = message.metadata.to_pybytes()
        batch = _fb_subtable(meta, _fb_read("<I", meta, 0), 2)  # Message.header
        if kind == "dictionary":
            batch = _fb_subtable(meta, batch, 1)  # DictionaryBatch.data
        if _fb_field(meta, batch, 3) is not None:  # RecordBatch.compression
            raise _bad("compressed Arrow streams are not accepted")


def _from_arrow_ipc(buf: memoryview) -> Any:
    import pyarrow as pa

    _refuse_compressed(buf)
    reader = pa.ipc.open_stream(pa.py_buffer(buf))
    bad = _unsafe_fields(reader.schema)
    if bad:
        raise CodecError(f"malformed value: unsupported Arrow column type(s) {', '.join(bad)}")
    table = reader.read_all()
    table.validate(full=True)
    return table.to_pandas()


def decode(header: bytes | memoryview, buffers: Sequence[bytes | bytearray | memoryview]) -> Any:
    """Rebuild a value from its header and buffers; the input is treated as hostile.

    Parameters
    ----------
    header : bytes or memoryview
        The msgpack header made by :func:`encode`.
    buffers : sequence of bytes, bytearray or memoryview
        The buffers, in index order. Each must be referenced exactly once.
        Decoded numpy arrays view these buffers when aligned, and are writable
        only when the buffer is (see the module docstring).

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
        dec = _Decoder(buffers)
        value = dec.value(dec.unpack(header), 1)
        if not all(dec.used):
            raise _bad(f"{dec.used.count(False)} buffer(s) are not referenced by the header")
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


# ---------------------------------------------------------------------------------------
# decoding cost

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
        return _count_containers(data, max_containers, 0)
    except CodecError:
        raise
    except Exception as exc:
        raise _bad(f"header cannot be walked ({type(exc).__name__})") from exc


def _costly_bytes(data: bytes | bytearray | memoryview) -> int:
    """How many bytes of ``data`` could start a container or extension (an upper bound)."""
    return int(np.count_nonzero(_COSTLY_FIRST[np.frombuffer(data, dtype=np.uint8)]))


#: msgpack data with more possible containers than this is built piecewise.
_STREAM_ABOVE = 2048


def _stream_unpack(data: bytes) -> Any:
    """What ``msgpack.unpackb`` (with :class:`_Pairs` for maps) gives, built one
    container at a time, so that other threads run in between: ``unpackb`` holds
    the interpreter for its whole call, about a microsecond per container."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                                object_pairs_hook=_Pairs, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    end = len(data)

    def read(depth: int) -> Any:
        if depth > MAX_DEPTH + 1:
            raise CodecError(f"value nests containers more than {MAX_DEPTH} deep")
        pos = unpacker.tell()
        if pos >= end:
            raise _bad("header truncated")
        first = data[pos]
        if first in _ARRAY_FIRST:
            n = unpacker.read_array_header()
            if n > MAX_ITEMS:
                raise CodecError(f"value holds more than {MAX_ITEMS} container items")
            return [read(depth + 1) for _ in range(n)]
        if first in _MAP_FIRST:
            n = unpacker.read_map_header()
            if n > MAX_ITEMS:
                raise CodecError(f"value holds more than {MAX_ITEMS} container items")
            return _Pairs([(read(depth + 1), read(depth + 1)) for _ in range(n)])
        return unpacker.unpack()

    value = read(0)
    if unpacker.tell() != end:
        raise _bad("extra bytes after the value")
    return value


def _count_containers(data: bytes, limit: int, depth: int) -> int:
    if depth > MAX_DEPTH:
        raise CodecError(f"value nests containers more than {MAX_DEPTH} deep")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    count, pending = 0, 1
    while pending:
        pos = unpacker.tell()
        if pos >= len(data):
            raise _bad("header truncated")
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
                count += _count_containers(ext_obj.data, limit - count, depth + 1)
        else:
            unpacker.skip()
        if count > limit:
            raise CodecError(
                f"message holds more than {limit} containers (lists, dicts, tuples...); "
                "send arrays or DataFrames instead, or split it",
                limit=limit,
            )
    return count


def loads(data: bytes | bytearray | memoryview, limit: int | None = None) -> Any:
    """Decode one frame made by :func:`dumps`.

    Parameters
    ----------
    data : bytes, bytearray or memoryview
        Exactly one frame. Pass a ``bytearray`` to get writable arrays without a copy.
    limit : int or None, optional
        Largest frame accepted, in bytes; ``None`` (the default) accepts any size.

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
    return decode(header, buffers)
