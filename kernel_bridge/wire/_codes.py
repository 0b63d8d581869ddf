"""Extension type codes, limits and error helpers shared by the codec's modules.

The codes and the payload each one carries are documented in
:mod:`kernel_bridge.wire.codec`, the codec's public face.
"""

from __future__ import annotations

import struct
from typing import Any

from kernel_bridge.errors import CodecError, UnsupportedType

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
# HE (kernel_bridge.wire.sealed)
EXT_HE_CONTEXT = 18
EXT_HE_VECTOR = 19

#: Most nested containers (list, tuple, dict, set, frozenset, slice) in one value.
MAX_DEPTH = 64
#: Most container items (elements plus dict entries) in one value.
MAX_ITEMS = 1 << 24
#: Most containers and extension values in one header accepted by ``check_cost``.
MAX_CONTAINERS = 1 << 16
#: Most dimensions of an array or tensor.
MAX_NDIM = 32
#: Bytes values at least this long are sent as a buffer instead of in the header.
OOB_BYTES_MIN = 64 * 1024
#: Most decimal digits of a big int (Python's default int/str conversion limit).
MAX_BIGINT_DIGITS = 4300

NoneType = type(None)
#: A complex number's payload: real and imaginary parts, little-endian doubles.
COMPLEX = struct.Struct("<dd")

_SUPPORTED = (
    "None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset, "
    "slice, Ellipsis, PointerRef, numpy arrays and scalars (bool, int, uint, float, complex), "
    "torch tensors (dense), pandas DataFrame and Series, datetime, date, timedelta, "
    "HE public contexts and CKKS vectors (kernel_bridge.wire.sealed)"
)


class Pairs(list[tuple[Any, Any]]):
    """A decoded msgpack map, as its (key, value) pairs; keys are hashed only later."""


def bad(what: str) -> CodecError:
    """The error for malformed input: ``what`` must not quote private values."""
    return CodecError(f"malformed value: {what}")


def type_name(tp: type) -> str:
    """``module.QualName`` of a type (just the name for builtins)."""
    module = getattr(tp, "__module__", None)
    qual = getattr(tp, "__qualname__", tp.__name__)
    return qual if module in (None, "builtins") else f"{module}.{qual}"


def unsupported(value: Any) -> UnsupportedType:
    """The error for a value whose type is outside the closed set."""
    name = type_name(type(value))
    return UnsupportedType(
        f"cannot send a value of type {name!r}; supported: {_SUPPORTED}", type=name
    )
