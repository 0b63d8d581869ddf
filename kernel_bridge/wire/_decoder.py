"""The codec's decoder: rebuilds a value from a msgpack header and raw buffers,
treating both as hostile. Every extension payload is checked (arrays via
:mod:`._arrays`, DataFrames via :mod:`._arrow`), each buffer must be used exactly
once, and container depth, item count and dict-key hash collisions are bounded."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from kernel_bridge.errors import CodecError
from kernel_bridge.wire import _arrays, _arrow, frames
from kernel_bridge.wire._codes import (
    COMPLEX,
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
    NoneType,
    Pairs,
    bad,
)
from kernel_bridge.wire._cost import STREAM_ABOVE, costly_bytes, stream_unpack
from kernel_bridge.wire.refs import MAX_POINTER_ID_LEN, PointerRef
from kernel_bridge.wire.sealed import HEContextBytes, HEVectorBytes

_HASH_CHECK_MIN = 64
_MAX_SAME_HASH = 16
_BIGINT_RE = re.compile(rb"-?[0-9]{1,%d}" % MAX_BIGINT_DIGITS)
_MAX_UTC_OFFSET_US = 86_400 * 10**6  # timezone() needs |offset| < 24 h
_NATIVE = frozenset({str, int, float, bool, bytes, NoneType})


def _as_view(buf: Any) -> memoryview:
    view = memoryview(buf)
    if view.ndim == 1 and view.format == "B":
        return view
    if not view.c_contiguous:
        raise bad("a buffer is not contiguous")
    return view.cast("B")


def _is_int(x: Any) -> bool:
    return type(x) is int


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
            raise bad("too many dict keys or set elements share one hash")
        counts[h] = n


class Decoder:
    """One decoding: the received buffers, which are used, and the items counted.

    Parameters
    ----------
    buffers : sequence of bytes-like
        The received buffers, in index order.
    max_depth, max_items : int
        Most nested containers, and most container items in all, accepted.
    """

    def __init__(self, buffers: Sequence[Any], max_depth: int, max_items: int,
                 torch_tensors: bool = True) -> None:
        self.torch_tensors = torch_tensors
        if len(buffers) > frames.MAX_BUFFERS:
            raise bad(f"more than {frames.MAX_BUFFERS} buffers")
        self.max_depth = max_depth
        self.max_items = max_items
        self.buffers = [_as_view(b) for b in buffers]
        self.used = [False] * len(self.buffers)
        self.items = 0

    def unpack(self, data: Any) -> Any:
        if len(data) > STREAM_ABOVE and costly_bytes(data) > STREAM_ABOVE:
            return stream_unpack(bytes(data), self.max_depth, self.max_items)
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            object_pairs_hook=Pairs,
            max_array_len=self.max_items,
            max_map_len=self.max_items,
        )

    def fields(self, data: bytes, n: int, what: str) -> list[Any]:
        obj = self.unpack(data)
        if type(obj) is not list or len(obj) != n:
            raise bad(f"{what} payload must be a list of {n} fields")
        return obj

    def take(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise bad(f"buffer index {index!r} out of range ({len(self.buffers)} buffers)")
        if self.used[index]:
            raise bad(f"buffer {index} is referenced twice")
        self.used[index] = True
        return self.buffers[index]

    def enter(self, n: int, depth: int) -> None:
        if depth > self.max_depth:
            raise CodecError(f"value nests containers more than {self.max_depth} deep")
        self.items += n
        if self.items > self.max_items:
            raise CodecError(f"value holds more than {self.max_items} container items")

    def value(self, obj: Any, depth: int) -> Any:
        t = type(obj)
        if t is str or t is int or t is float or t is bool or t is bytes or t is NoneType:
            return obj
        if t is list:
            self.enter(len(obj), depth)
            if all(type(x) in _NATIVE for x in obj):
                return obj
            return [self.value(x, depth + 1) for x in obj]
        if t is Pairs:
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
        raise bad(f"unexpected msgpack object of type {t.__name__}")

    def items_of(self, data: bytes, depth: int, what: str) -> list[Any]:
        obj = self.unpack(data)
        if type(obj) is not list:
            raise bad(f"{what} payload must be a list")
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
            raise bad(f"big int must be at most {MAX_BIGINT_DIGITS} ASCII decimal digits")
        return int(data)

    def ext_complex(self, data: bytes, depth: int) -> Any:
        if len(data) != COMPLEX.size:
            raise bad("complex payload must be 16 bytes")
        real, imag = COMPLEX.unpack(data)
        return complex(real, imag)

    def ext_slice(self, data: bytes, depth: int) -> Any:
        items = self.items_of(data, depth, "slice")
        if len(items) != 3:
            raise bad("slice payload must hold start, stop and step")
        return slice(*items)

    def ext_ellipsis(self, data: bytes, depth: int) -> Any:
        if data:
            raise bad("Ellipsis payload must be empty")
        return Ellipsis

    def ext_pointer(self, data: bytes, depth: int) -> Any:
        if len(data) > 4 * MAX_POINTER_ID_LEN:
            raise bad("pointer id too long")
        return PointerRef(data.decode("utf-8"))

    def ext_ndarray(self, data: bytes, depth: int) -> Any:
        dtype_str, shape, index = self.fields(data, 3, "ndarray")
        dtype = _arrays.array_dtype(dtype_str)
        return _arrays.array_from(self.take(index), dtype, _arrays.shape_of(shape))

    def ext_npscalar(self, data: bytes, depth: int) -> Any:
        dtype_str, raw = self.fields(data, 2, "numpy scalar")
        return _arrays.scalar_from(dtype_str, raw)

    def ext_tensor(self, data: bytes, depth: int) -> Any:
        name, shape, index, requires_grad = self.fields(data, 4, "tensor")
        np_dtype = _arrays.check_tensor_fields(name, requires_grad)
        return _arrays.tensor_from(name, np_dtype, shape, self.take(index), requires_grad,
                                   as_torch=self.torch_tensors)

    def ext_datetime(self, data: bytes, depth: int) -> Any:
        fields = self.fields(data, 9, "datetime")
        *parts, fold, off_us = fields
        if not all(_is_int(x) for x in parts) or fold not in (0, 1) or type(fold) is not int:
            raise bad("datetime fields must be ints")
        tz = None
        if off_us is not None:
            if type(off_us) is not int or abs(off_us) >= _MAX_UTC_OFFSET_US:
                raise bad("datetime UTC offset out of range")
            tz = _dt.timezone(_dt.timedelta(microseconds=off_us))
        year, month, day, hour, minute, second, micro = parts
        return _dt.datetime(year, month, day, hour, minute, second, micro, tz, fold=fold)

    def ext_date(self, data: bytes, depth: int) -> Any:
        parts = self.fields(data, 3, "date")
        if not all(_is_int(x) for x in parts):
            raise bad("date fields must be ints")
        return _dt.date(*parts)

    def ext_timedelta(self, data: bytes, depth: int) -> Any:
        parts = self.fields(data, 3, "timedelta")
        if not all(_is_int(x) for x in parts):
            raise bad("timedelta fields must be ints")
        days, seconds, micros = parts
        if not (0 <= seconds < 86_400 and 0 <= micros < 10**6):
            raise bad("timedelta seconds or microseconds out of range")
        return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)

    def ext_bytes(self, data: bytes, depth: int) -> Any:
        (index,) = self.fields(data, 1, "bytes")
        return self.take(index).tobytes()

    def ext_dataframe(self, data: bytes, depth: int) -> Any:
        index, labels, names = self.fields(data, 3, "DataFrame")
        df = _arrow.from_arrow_ipc(self.take(index))
        if labels is not None:
            import pandas as pd

            if type(labels) is not list or (names is not None and type(names) is not list):
                raise bad("DataFrame column labels must be lists")
            labels = self.value(labels, depth + 1)
            cols = pd.Index(labels)
            if names is not None:
                names = self.value(names, depth + 1)
                if len(names) != cols.nlevels:
                    raise bad("DataFrame column level names do not match the labels")
                cols.names = names
            df = df.set_axis(cols, axis=1)
        return df

    def ext_series(self, data: bytes, depth: int) -> Any:
        index, name = self.fields(data, 2, "Series")
        df = _arrow.from_arrow_ipc(self.take(index))
        if df.shape[1] != 1:
            raise bad("a Series stream must hold exactly one column")
        series = df.iloc[:, 0]
        series.name = self.value(name, depth + 1)
        return series

    def ext_he_context(self, data: bytes, depth: int) -> Any:
        (index,) = self.fields(data, 1, "HE context")
        return HEContextBytes(self.take(index).tobytes())

    def ext_he_vector(self, data: bytes, depth: int) -> Any:
        (index,) = self.fields(data, 1, "HE vector")
        return HEVectorBytes(self.take(index).tobytes())


_EXT_DECODERS: dict[int, Callable[[Decoder, bytes, int], Any]] = {
    EXT_TUPLE: Decoder.ext_tuple,
    EXT_SET: Decoder.ext_set,
    EXT_FROZENSET: Decoder.ext_frozenset,
    EXT_BIGINT: Decoder.ext_bigint,
    EXT_COMPLEX: Decoder.ext_complex,
    EXT_SLICE: Decoder.ext_slice,
    EXT_ELLIPSIS: Decoder.ext_ellipsis,
    EXT_POINTER: Decoder.ext_pointer,
    EXT_NDARRAY: Decoder.ext_ndarray,
    EXT_NPSCALAR: Decoder.ext_npscalar,
    EXT_TENSOR: Decoder.ext_tensor,
    EXT_DATAFRAME: Decoder.ext_dataframe,
    EXT_SERIES: Decoder.ext_series,
    EXT_DATETIME: Decoder.ext_datetime,
    EXT_DATE: Decoder.ext_date,
    EXT_TIMEDELTA: Decoder.ext_timedelta,
    EXT_BYTES: Decoder.ext_bytes,
    EXT_HE_CONTEXT: Decoder.ext_he_context,
    EXT_HE_VECTOR: Decoder.ext_he_vector,
}
