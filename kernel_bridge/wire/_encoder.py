"""The codec's encoder: walks a value, packs what msgpack carries natively in one
C call where it can, and writes everything else as the extension types documented
in :mod:`kernel_bridge.wire.codec` (arrays via :mod:`._arrays`, DataFrames via
:mod:`._arrow`), collecting raw buffers on the side."""

from __future__ import annotations

import datetime as _dt
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

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
    OOB_BYTES_MIN,
    NoneType,
    unsupported,
)
from kernel_bridge.wire.refs import MAX_POINTER_ID_LEN, PointerRef
from kernel_bridge.wire.sealed import HEContextBytes, HEVectorBytes, check_context, check_vector

I64_MIN = -(2**63)
U64_MAX = 2**64 - 1
_ELLIPSIS_TYPE = type(Ellipsis)


def _plain(items: Any) -> bool:
    """True when every item packs natively, so a whole container packs in one C call."""
    for x in items:
        t = type(x)
        if t is int:
            if not I64_MIN <= x <= U64_MAX:
                return False
        elif t is str or t is float or t is bool or t is NoneType:
            continue
        elif t is bytes:
            if len(x) >= OOB_BYTES_MIN:
                return False
        else:
            return False
    return True


class Encoder:
    """One encoding: the buffers collected so far and the container items counted.

    Parameters
    ----------
    max_depth, max_items : int
        Most nested containers, and most container items in all, of the value.
    """

    def __init__(self, max_depth: int, max_items: int) -> None:
        self.max_depth = max_depth
        self.max_items = max_items
        self.buffers: list[memoryview] = []
        self.items = 0

    # -- bookkeeping
    def enter(self, n: int, depth: int) -> None:
        if depth > self.max_depth:
            raise CodecError(
                f"value nests containers more than {self.max_depth} deep", limit=self.max_depth
            )
        self.items += n
        if self.items > self.max_items:
            raise CodecError(
                f"value holds more than {self.max_items} container items; send an array instead",
                limit=self.max_items,
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
        if t is str or t is float or t is bool or t is NoneType:
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
        if I64_MIN <= v <= U64_MAX:
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
        p.pack_ext_type(EXT_COMPLEX, COMPLEX.pack(v.real, v.imag))

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
        dtype, shape, view = _arrays.array_buffer(v)
        index = self.add_buffer(view)
        p.pack_ext_type(EXT_NDARRAY, self.payload([dtype, shape, index], depth))

    def write_he(self, p: msgpack.Packer, v: HEContextBytes | HEVectorBytes, depth: int) -> None:
        # Re-checked: a frozen dataclass can still be forged with object.__setattr__.
        if type(v) is HEContextBytes:
            check_context(v.data)
            code = EXT_HE_CONTEXT
        else:
            check_vector(v.data)
            code = EXT_HE_VECTOR
        index = self.add_buffer(memoryview(v.data))
        p.pack_ext_type(code, self.payload([index], depth))

    def write_other(self, p: msgpack.Packer, v: Any, depth: int) -> None:
        if isinstance(v, np.generic):
            p.pack_ext_type(EXT_NPSCALAR, self.payload(_arrays.scalar_fields(v), depth))
            return
        if isinstance(v, tuple) and hasattr(type(v), "_fields"):  # namedtuple -> tuple
            self.write_tuple(p, tuple(v), depth)
            return
        torch = sys.modules.get("torch")  # a tensor implies torch is already imported
        wire = isinstance(v, _arrays.WireTensor)  # a tensor a worker forwards, as it came
        if wire or (torch is not None and isinstance(v, torch.Tensor)):
            name, shape, view = (_arrays.wire_tensor_buffer(v) if wire
                                 else _arrays.tensor_buffer(v))
            index = self.add_buffer(view)
            fields = [name, shape, index, bool(v.requires_grad)]
            p.pack_ext_type(EXT_TENSOR, self.payload(fields, depth))
            return
        pd = sys.modules.get("pandas")
        if pd is not None:
            if type(v) is pd.DataFrame:
                view, labels, names = _arrow.dataframe_ipc(v)
                index = self.add_buffer(view)
                p.pack_ext_type(EXT_DATAFRAME, self.payload([index, labels, names], depth))
                return
            if type(v) is pd.Series:
                index = self.add_buffer(_arrow.series_ipc(v))
                p.pack_ext_type(EXT_SERIES, self.payload([index, v.name], depth))
                return
        raise unsupported(v)


_HANDLERS: dict[type, Callable[[Encoder, msgpack.Packer, Any, int], None]] = {
    bytes: Encoder.write_bytes,
    bytearray: Encoder.write_bytes,
    memoryview: Encoder.write_bytes,
    tuple: Encoder.write_tuple,
    set: Encoder.write_set,
    frozenset: Encoder.write_frozenset,
    complex: Encoder.write_complex,
    slice: Encoder.write_slice,
    _ELLIPSIS_TYPE: Encoder.write_ellipsis,
    PointerRef: Encoder.write_pointer,
    _dt.datetime: Encoder.write_datetime,
    _dt.date: Encoder.write_date,
    _dt.timedelta: Encoder.write_timedelta,
    np.ndarray: Encoder.write_ndarray,
    np.memmap: Encoder.write_ndarray,
    HEContextBytes: Encoder.write_he,
    HEVectorBytes: Encoder.write_he,
}
