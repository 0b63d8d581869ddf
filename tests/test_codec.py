"""Tests of the wire codec (kernel_bridge.wire.codec) and frame layout (.frames)."""

from __future__ import annotations

import datetime as dt
import math
import pathlib
import re
import struct
import subprocess
import sys
import types
from collections import Counter, OrderedDict, defaultdict, namedtuple
from typing import Any

import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernel_bridge.errors import (
    CodecError,
    FrameTooLarge,
    MalformedFrame,
    ProtocolError,
    UnsupportedType,
    VersionMismatch,
)
from kernel_bridge.wire import (
    DEFAULT_FRAME_LIMIT,
    MAGIC,
    PRELUDE_MIN,
    SUPPORTED_VERSIONS,
    WIRE_VERSION,
    PointerRef,
    codec,
    decode,
    dumps,
    encode,
    frame_size,
    frames,
    loads,
    pack,
    pack_bytes,
    parse_prelude,
    unpack,
)

WIRE_DIR = pathlib.Path(codec.__file__).parent
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NP_DTYPES = [
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
]
TORCH_FROM_NUMPY = [d for d in NP_DTYPES if d not in ("uint16", "uint32", "uint64")]


# --------------------------------------------------------------------------------------
# helpers


def assert_same(a: Any, b: Any) -> None:
    """Exact, nan-aware equality that also checks types (b is the decoded value)."""
    ta = type(a)
    if ta in (OrderedDict, defaultdict):
        ta = dict
    elif isinstance(a, tuple) and hasattr(ta, "_fields"):
        ta = tuple
    elif ta in (bytearray, memoryview):
        ta = bytes
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray
        assert b.shape == a.shape
        assert b.dtype == a.dtype.newbyteorder("<")
        want = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
        assert b.tobytes() == want.tobytes()
        return
    if isinstance(a, np.generic):
        assert type(b) is type(a)
        assert b.tobytes() == a.tobytes()
        return
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert b.dtype == a.dtype and b.shape == a.shape and b.device.type == "cpu"
        assert b.requires_grad == a.requires_grad
        torch.testing.assert_close(b, a.detach().cpu(), rtol=0, atol=0, equal_nan=True)
        return
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(b, a)
        return
    if isinstance(a, pd.Series):
        pd.testing.assert_series_equal(b, a)
        return
    assert type(b) is ta, (type(a), type(b))
    if ta is float:
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    elif ta is complex:
        assert_same(a.real, b.real)
        assert_same(a.imag, b.imag)
    elif ta in (list, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif ta is dict:
        assert len(a) == len(b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            assert_same(ka, kb)
            assert_same(va, vb)
    elif ta is slice:
        assert_same((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    elif ta is dt.datetime:
        assert a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    elif ta is bytes:
        assert bytes(a) == b
    else:
        assert a == b


def roundtrip(value: Any) -> None:
    header, buffers = encode(value)
    assert isinstance(header, bytes)
    assert all(isinstance(b, memoryview) for b in buffers)
    assert_same(value, decode(header, buffers))
    frame = dumps(value)
    assert len(frame) == frame_size(header, buffers)
    assert_same(value, loads(frame))
    assert_same(value, loads(bytearray(frame)))


def ext(code: int, payload: Any) -> msgpack.ExtType:
    data = payload if isinstance(payload, bytes) else msgpack.packb(payload, use_bin_type=True)
    return msgpack.ExtType(code, data)


def header_of(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------------------
# strategies

offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
datetimes = st.datetimes(timezones=st.none() | offsets)
pointers = st.text(max_size=64).map(PointerRef)
hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=20)
    | st.dates()
    | datetimes
    | st.timedeltas()
    | pointers
    | st.just(Ellipsis)
)
hashables = st.recursive(
    hashable_leaves,
    lambda kids: st.tuples(kids, kids) | st.frozensets(kids, max_size=3),
    max_leaves=6,
)
leaves = (
    hashable_leaves
    | st.floats()
    | st.complex_numbers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.binary()
)
values = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.lists(kids, max_size=5).map(tuple)
        | st.dictionaries(hashables, kids, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
        | st.builds(slice, kids, kids, kids)
    ),
    max_leaves=30,
)


@st.composite
def np_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(NP_DTYPES)))
    if dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder(">")
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    arr = draw(hnp.arrays(dtype, shape))
    if arr.ndim and draw(st.booleans()):
        arr = arr[::-1]  # not C-contiguous
    if arr.ndim >= 2 and draw(st.booleans()):
        arr = arr.T
    return arr


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    name = draw(st.sampled_from([*TORCH_FROM_NUMPY, "bfloat16"]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if name == "bfloat16":
        base = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32)))
        t = torch.from_numpy(base).to(torch.bfloat16)
    else:
        t = torch.from_numpy(draw(hnp.arrays(np.dtype(name), shape)))
    if t.ndim >= 2 and draw(st.booleans()):
        t = t.transpose(0, 1)
    if (t.is_floating_point() or t.is_complex()) and draw(st.booleans()):
        t = t.clone().requires_grad_(True)
    return t


@st.composite
def frames_of_pandas(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 6))
    cols: dict[Any, Any] = {}
    kinds = draw(
        st.lists(
            st.sampled_from(["int", "float", "str", "bool", "cat", "datetime"]),
            min_size=1,
            max_size=5,
        )
    )
    for i, kind in enumerate(kinds):
        name = f"{kind}{i}"
        if kind == "int":
            cols[name] = np.array(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
                dtype=np.int64,
            )
        elif kind == "float":
            cols[name] = np.array(
                draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype=np.float64
            )
        elif kind == "str":
            cols[name] = pd.array(
                draw(st.lists(st.text(max_size=5), min_size=n, max_size=n)), dtype="str"
            )
        elif kind == "bool":
            cols[name] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        elif kind == "cat":
            cats = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
            cols[name] = pd.Categorical(cats, categories=["a", "b", "c"])
        else:
            stamps = draw(
                st.lists(
                    st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1)),
                    min_size=n,
                    max_size=n,
                )
            )
            cols[name] = pd.to_datetime(pd.Series(stamps, dtype="datetime64[us]"))
            cols[name] = cols[name].to_numpy()
    index_kind = draw(st.sampled_from(["range", "int", "str"]))
    if index_kind == "range":
        index = pd.RangeIndex(n)
    elif index_kind == "int":
        labels = draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n))
        index = pd.Index(np.array(labels, dtype=np.int64), name="key")
    else:
        labels = draw(st.lists(st.text(max_size=4), min_size=n, max_size=n))
        index = pd.Index(labels, dtype="str", name="label")
    return pd.DataFrame(cols, index=index)


# --------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        10**300,
        -(10**4299),
        1.5,
        -0.0,
        float("nan"),
        float("inf"),
        float("-inf"),
        3 - 4j,
        complex(float("nan"), float("inf")),
        "",
        "héllo ☃",
        b"",
        b"\x00\xff",
        b"x" * 200_000,
        [],
        [1, [2, [3]]],
        (),
        (1,),
        (1, (2, "a")),
        {},
        {"a": 1, 2: "b", (1, 2): [3], None: None, 1.5: b"", frozenset({1}): ()},
        {"z": 1, "a": 2, "m": 3},
        set(),
        {1, "a", (2, 3)},
        frozenset({1, 2}),
        slice(None),
        slice(1, 10, 2),
        slice("a", (1, 2), None),
        Ellipsis,
        PointerRef("abc"),
        PointerRef("x" * 64),
        PointerRef(""),
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2024, 11, 3, 1, 30, fold=1),
        dt.datetime.min,
        dt.datetime.max,
        dt.date(1, 1, 1),
        dt.date(2024, 5, 17),
        dt.timedelta(0),
        dt.timedelta(days=-3, seconds=5, microseconds=7),
        dt.timedelta.max,
        dt.timedelta.min,
        np.float64(1.25),
        np.float16(-0.5),
        np.int8(-3),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.complex64(1 + 2j),
        np.array(3.5),
        np.zeros((0, 3)),
        np.arange(10, dtype=">i8"),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        [np.arange(3), np.arange(4.0), {"k": np.ones(2, bool)}],
        torch.zeros(()),
        torch.arange(6).reshape(2, 3).T,
        torch.randn(4, 3, dtype=torch.complex64).conj(),
        torch.randn(3, requires_grad=True),
        torch.nn.Parameter(torch.ones(2)),
        torch.randn(5).to(torch.bfloat16),
    ],
    ids=repr,
)
def test_roundtrip_examples(value: Any) -> None:
    roundtrip(value)


def test_bytes_like_decode_as_bytes() -> None:
    for value in (bytearray(b"abc"), memoryview(b"abcd"), bytearray(100_000)):
        out = loads(dumps(value))
        assert type(out) is bytes and out == bytes(value)
    strided = memoryview(bytes(range(10)))[::2]
    assert loads(dumps(strided)) == bytes(range(0, 10, 2))


def test_container_subclasses_documented_mapping() -> None:
    point = namedtuple("point", "x y")
    counts = defaultdict(int, {"a": 1})
    out = loads(dumps([point(1, 2), OrderedDict(b=1, a=2), counts]))
    assert out == [(1, 2), {"b": 1, "a": 2}, {"a": 1}]
    assert [type(x) for x in out] == [tuple, dict, dict]
    assert list(out[1]) == ["b", "a"]


def test_dict_order_and_key_types_preserved() -> None:
    d = {3: "a", "3": "b", 3.5: "c", b"3": "d", (3,): "e", True: "f", None: "g"}
    out = loads(dumps(d))
    assert list(out.items()) == list(d.items())
    assert [type(k) for k in out] == [type(k) for k in d]


@SETTINGS
@given(values)
def test_roundtrip_nested_values(value: Any) -> None:
    roundtrip(value)


@SETTINGS
@given(st.integers())
def test_roundtrip_ints(value: int) -> None:
    roundtrip(value)


@SETTINGS
@given(np_arrays())
def test_roundtrip_numpy_arrays(arr: np.ndarray) -> None:
    roundtrip(arr)


@SETTINGS
@given(st.sampled_from(NP_DTYPES).flatmap(lambda d: hnp.from_dtype(np.dtype(d))))
def test_roundtrip_numpy_scalars(value: np.generic) -> None:
    roundtrip(value)


@SETTINGS
@given(tensors())
def test_roundtrip_tensors(t: torch.Tensor) -> None:
    roundtrip(t)


@SETTINGS
@given(frames_of_pandas())
def test_roundtrip_dataframes(df: pd.DataFrame) -> None:
    roundtrip(df)


@SETTINGS
@given(
    frames_of_pandas(),
    st.none() | st.text(max_size=5) | st.integers() | st.tuples(st.text(max_size=3), st.integers()),
)
def test_roundtrip_series(df: pd.DataFrame, name: Any) -> None:
    series = df.iloc[:, 0].rename(name)
    out = loads(dumps(series))
    assert type(out) is pd.Series
    pd.testing.assert_series_equal(out, series)
    assert_same(name, out.name)


def test_dataframe_labels_and_index() -> None:
    df = pd.DataFrame(
        {0: [1, 2], "b": ["x", None], (1, 2): [1.5, float("nan")], 2.5: [True, False]},
        index=pd.Index(["r1", "r2"], name="row"),
    )
    df.columns.name = "cols"
    out = loads(dumps(df))
    pd.testing.assert_frame_equal(out, df)
    assert list(out.columns) == [0, "b", (1, 2), 2.5]
    assert out.columns.name == "cols"

    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    pd.testing.assert_frame_equal(loads(dumps(dup)), dup)

    multi = pd.DataFrame(
        np.arange(4).reshape(2, 2),
        columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["l0", "l1"]),
        index=pd.MultiIndex.from_tuples([("x", 1), ("y", 2)], names=["i0", "i1"]),
    )
    pd.testing.assert_frame_equal(loads(dumps(multi)), multi)

    dates = pd.DataFrame(
        {
            "t": pd.date_range("2020-01-01", periods=3, tz="UTC"),
            "d": pd.to_timedelta([1, 2, 3], unit="s"),
        },
        index=pd.date_range("2021-01-01", periods=3, name="when"),
    )
    # Arrow does not keep a DatetimeIndex's freq.
    pd.testing.assert_frame_equal(loads(dumps(dates)), dates, check_freq=False)

    nullable = pd.DataFrame({"i": pd.array([1, None, 3], dtype="Int64")})
    pd.testing.assert_frame_equal(loads(dumps(nullable)), nullable)


def test_series_roundtrip_keeps_name_and_index() -> None:
    s = pd.Series([1.0, 2.0, float("nan")], index=pd.Index(["a", "b", "c"], name="k"), name="v")
    out = loads(dumps(s))
    pd.testing.assert_series_equal(out, s)
    cat = pd.Series(pd.Categorical(["x", "y", "x"]), name=7)
    pd.testing.assert_series_equal(loads(dumps(cat)), cat)


def test_datetime_with_zoneinfo_keeps_instant_and_offset() -> None:
    import zoneinfo  # the tz database comes with pandas' tzdata dependency where the OS lacks it

    tz = zoneinfo.ZoneInfo("Europe/Paris")
    value = dt.datetime(2024, 7, 1, 12, tzinfo=tz)
    out = loads(dumps(value))
    assert out == value and out.utcoffset() == value.utcoffset()
    assert type(out.tzinfo) is dt.timezone


# --------------------------------------------------------------------------------------
# zero copy and buffer ownership


def test_encode_numpy_is_zero_copy() -> None:
    arr = np.random.default_rng(0).random(2**20)  # 8 MiB
    header, buffers = encode(arr)
    assert len(buffers) == 1 and buffers[0].nbytes == arr.nbytes
    view = np.frombuffer(buffers[0], np.uint8)
    assert np.shares_memory(view, arr)
    assert view.ctypes.data == arr.ctypes.data
    # The frame pieces are the same views, so writing them copies nothing either.
    pieces = pack(header, buffers)
    assert np.frombuffer(pieces[-1], np.uint8).ctypes.data == arr.ctypes.data


def test_encode_large_tensor_is_zero_copy() -> None:
    t = torch.empty(2**26)  # 256 MiB, left uninitialised: only the pointer matters
    _, buffers = encode(t)
    assert buffers[0].nbytes == 2**28
    assert np.frombuffer(buffers[0], np.uint8).ctypes.data == t.data_ptr()

    bf = torch.empty(2**20, dtype=torch.bfloat16)
    _, buffers = encode(bf)
    assert np.frombuffer(buffers[0], np.uint8).ctypes.data == bf.data_ptr()

    grad = torch.ones(1000, requires_grad=True)
    _, buffers = encode(grad)
    assert np.frombuffer(buffers[0], np.uint8).ctypes.data == grad.data_ptr()


def test_encode_large_bytes_out_of_band() -> None:
    data = bytearray(b"z" * 2**20)
    header, buffers = encode(data)
    assert len(header) < 100 and len(buffers) == 1
    assert (
        np.frombuffer(buffers[0], np.uint8).ctypes.data == np.frombuffer(data, np.uint8).ctypes.data
    )


def test_decode_writable_buffer_gives_writable_zero_copy_array() -> None:
    arr = np.arange(1000, dtype=np.float64)
    frame = dumps(arr)
    for pad in range(8):
        holder = bytearray(pad) + bytearray(frame)
        view = memoryview(holder)[pad:]
        out = loads(view)
        assert out.flags.writeable
        np.testing.assert_array_equal(out, arr)
        if out.flags.aligned and np.shares_memory(out, np.frombuffer(holder, np.uint8)):
            break
    else:
        raise AssertionError("an aligned placement never gave a zero-copy view")
    out[0] = 42.0  # mutates the frame's memory, not a copy
    assert np.frombuffer(view[-arr.nbytes :], np.float64)[0] == 42.0


def test_decode_readonly_buffer_gives_readonly_array() -> None:
    for pad in range(8):
        frame = bytes(pad) + dumps(np.arange(100, dtype=np.int64))
        out = loads(memoryview(frame)[pad:])
        assert not out.flags.writeable
        assert out.flags.aligned
        np.testing.assert_array_equal(out, np.arange(100))


def test_decoded_tensors_are_always_writable() -> None:
    t = torch.arange(100, dtype=torch.float32)
    for pad in range(4):
        for data in (bytes(pad) + dumps(t), bytearray(pad) + dumps(t)):
            out = loads(memoryview(data)[pad:])
            out[0] = 7.0
            assert out[0] == 7.0


def test_codec_import_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "before = {m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules}\n"
        "import kernel_bridge.wire.codec as c\n"
        "c.loads(c.dumps([1, (2, 3.0), {'a': b'x'}]))\n"
        "after = {m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules}\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=WIRE_DIR.parent.parent,
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------
# frames


def test_frame_layout() -> None:
    header = b"hdr"
    buffers = [b"abc", bytearray(b""), memoryview(b"12345678")]
    frame = pack_bytes(header, buffers)
    assert frame[:4] == MAGIC == b"SYFT"
    assert frame[4] == WIRE_VERSION == 1
    assert SUPPORTED_VERSIONS == (1,)
    assert DEFAULT_FRAME_LIMIT == 64 * 2**20
    assert struct.unpack_from("<II", frame, 5) == (3, 3)
    assert struct.unpack_from("<3Q", frame, PRELUDE_MIN) == (3, 0, 8)
    assert len(frame) == frame_size(header, buffers) == 13 + 24 + 3 + 11
    h, bufs = unpack(frame)
    assert bytes(h) == header and [bytes(b) for b in bufs] == [b"abc", b"", b"12345678"]
    assert all(isinstance(b, memoryview) for b in bufs)
    pieces = pack(header, buffers)
    assert b"".join(pieces) == frame


def test_parse_prelude_tells_frame_length() -> None:
    frame = dumps([np.zeros(3), np.ones(2), b"x"])
    with pytest.raises(MalformedFrame) as info:
        parse_prelude(frame[:5])
    assert info.value.data["needed"] == PRELUDE_MIN
    with pytest.raises(MalformedFrame) as info:
        parse_prelude(frame[:PRELUDE_MIN])
    needed = info.value.data["needed"]
    assert needed == PRELUDE_MIN + 8 * 2
    version, header_len, lengths, prelude = parse_prelude(frame[:needed])
    assert version == 1 and prelude == needed and lengths == [24, 16]
    assert prelude + header_len + sum(lengths) == len(frame)
    with pytest.raises(FrameTooLarge):
        parse_prelude(frame, limit=len(frame) - 1)
    parse_prelude(frame, limit=len(frame))


def test_frame_too_large() -> None:
    frame = dumps(np.zeros(1000))
    with pytest.raises(FrameTooLarge) as info:
        loads(frame, limit=1000)
    assert info.value.data == {"size": len(frame), "limit": 1000}
    assert str(len(frame)) in str(info.value) and "1000" in str(info.value)
    with pytest.raises(FrameTooLarge):
        unpack(frame, limit=100)
    assert loads(frame, limit=len(frame)).shape == (1000,)
    with pytest.raises(FrameTooLarge):
        unpack(bytes(DEFAULT_FRAME_LIMIT + 1))


def test_bad_magic_version_and_lengths() -> None:
    frame = bytearray(dumps([1, np.arange(4)]))
    with pytest.raises(MalformedFrame, match="magic"):
        loads(b"PICK" + frame[4:])
    bad_version = bytearray(frame)
    bad_version[4] = 2
    with pytest.raises(VersionMismatch) as info:
        loads(bad_version)
    assert info.value.data["version"] == 2
    with pytest.raises(MalformedFrame, match="truncated"):
        loads(frame[:-1])
    with pytest.raises(MalformedFrame, match="trailing"):
        loads(frame + b"\x00")
    with pytest.raises(MalformedFrame):
        loads(b"")
    with pytest.raises(MalformedFrame):
        loads(frame[: PRELUDE_MIN + 3])
    # A header length lying about the sizes.
    lying = bytearray(frame)
    struct.pack_into("<I", lying, 5, struct.unpack_from("<I", frame, 5)[0] + 5)
    with pytest.raises(MalformedFrame):
        loads(lying)
    # A buffer length lying about the sizes, made up for by the header length.
    lying = bytearray(frame)
    hlen = struct.unpack_from("<I", frame, 5)[0]
    blen = struct.unpack_from("<Q", frame, PRELUDE_MIN)[0]
    struct.pack_into("<I", lying, 5, hlen + 8)
    struct.pack_into("<Q", lying, PRELUDE_MIN, blen - 8)
    with pytest.raises(CodecError):
        loads(lying)
    # An absurd buffer count.
    absurd = MAGIC + struct.pack("<BII", 1, 0, 2**32 - 1)
    with pytest.raises(MalformedFrame, match="buffers"):
        loads(absurd)
    with pytest.raises(MalformedFrame):
        loads("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# hostile input


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for candidate in (data, MAGIC + bytes([1]) + data):
        try:
            value = loads(candidate)
        except ProtocolError:
            continue
        roundtrip(value)  # what decodes must survive its own round trip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.binary(max_size=40), max_size=3))
def test_random_headers_raise_only_codec_errors(header: bytes, buffers: list[bytes]) -> None:
    try:
        value = loads(pack_bytes(header, buffers))
    except CodecError:
        return
    roundtrip(value)


msgpack_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=20)
    | st.sampled_from(["<f8", "|b1", "|u1", "<i2", "float32", "bfloat16", "int64", "|O"])
    | st.lists(st.integers(-2, 5), max_size=4)
)
hostile_trees = st.recursive(
    msgpack_leaves,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), kids, max_size=3)
        | st.builds(
            lambda code, body: msgpack.ExtType(code, header_of(body)),
            st.integers(0, 20),
            kids,
        )
        | st.builds(msgpack.ExtType, st.integers(0, 20), st.binary(max_size=24))
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(hostile_trees, st.lists(st.binary(max_size=40), max_size=3))
def test_structured_hostile_headers_raise_only_codec_errors(
    tree: Any, buffers: list[bytes]
) -> None:
    try:
        value = decode(header_of(tree), buffers)
    except CodecError:
        return
    roundtrip(value)


@settings(max_examples=200, deadline=None)
@given(values | np_arrays(), st.data())
def test_corrupted_frames_raise_only_protocol_errors(value: Any, data: st.DataObject) -> None:
    frame = bytearray(dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = loads(frame)
    except ProtocolError:
        return
    roundtrip(decoded)


def test_corrupted_dataframe_frames_raise_only_protocol_errors() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": pd.Categorical(["u", "v", "u"])})
    frame = dumps(df)
    rng = np.random.default_rng(1)
    for _ in range(300):
        corrupt = bytearray(frame)
        for pos in rng.integers(0, len(frame), size=3):
            corrupt[pos] = int(rng.integers(0, 256))
        try:
            decoded = loads(corrupt)
        except ProtocolError:
            continue
        roundtrip(decoded)


def test_ndarray_shape_must_match_buffer() -> None:
    header = header_of(ext(codec.EXT_NDARRAY, ["<f8", [3], 0]))
    with pytest.raises(CodecError, match="shape"):
        decode(header, [bytes(16)])
    with pytest.raises(CodecError):
        decode(header_of(ext(codec.EXT_NDARRAY, ["<f8", [-2], 0])), [bytes(16)])
    with pytest.raises(CodecError):
        decode(header_of(ext(codec.EXT_NDARRAY, ["<f8", [True, 2], 0])), [bytes(16)])
    with pytest.raises(CodecError):
        decode(header_of(ext(codec.EXT_NDARRAY, ["<f8", [0, 2**62, 2**62], 0])), [b""])
    with pytest.raises(CodecError):
        decode(header_of(ext(codec.EXT_NDARRAY, ["<f8", [1] * 40, 0])), [bytes(8)])
    assert decode(header_of(ext(codec.EXT_NDARRAY, ["<f8", [2], 0])), [bytes(16)]).shape == (2,)


@pytest.mark.parametrize("dtype", ["|O", "<U3", "|V8", "<M8[ns]", ">f8", "f8", "<f16", 7, None])
def test_ndarray_dtype_allow_list(dtype: Any) -> None:
    header = header_of(ext(codec.EXT_NDARRAY, [dtype, [1], 0]))
    with pytest.raises(CodecError):
        decode(header, [bytes(8)])


@pytest.mark.parametrize(
    "payload, buffers",
    [
        ([["<f8", [1], 1]], [bytes(8)]),  # index out of range
        ([["<f8", [1], -1]], [bytes(8)]),
        ([["<f8", [1], "0"]], [bytes(8)]),
        ([["<f8", [1], 0], ["<f8", [1], 0]], [bytes(8)]),  # one buffer used twice
        ([["<f8", [1], 0]], [bytes(8), bytes(8)]),  # a buffer never used
        ([["<f8", [1]]], [bytes(8)]),  # missing field
    ],
)
def test_buffer_references_are_checked(payload: list[Any], buffers: list[bytes]) -> None:
    header = header_of([ext(codec.EXT_NDARRAY, p) for p in payload])
    with pytest.raises(CodecError):
        decode(header, buffers)


BUF8 = [bytes(8)]


@pytest.mark.parametrize(
    "obj, buffers",
    [
        (msgpack.ExtType(99, b""), []),
        (msgpack.ExtType(0, b""), []),
        (msgpack.Timestamp(1, 0), []),  # ext code -1
        (ext(codec.EXT_BIGINT, b"12a"), []),
        (ext(codec.EXT_BIGINT, b""), []),
        (ext(codec.EXT_BIGINT, b"1" * 5000), []),
        (ext(codec.EXT_COMPLEX, b"\x00" * 15), []),
        (ext(codec.EXT_ELLIPSIS, b"x"), []),
        (ext(codec.EXT_POINTER, b"\xff\xfe"), []),
        (ext(codec.EXT_POINTER, b"x" * 65), []),
        (ext(codec.EXT_TUPLE, b"\xc1"), []),
        (ext(codec.EXT_TUPLE, {"a": 1}), []),
        (ext(codec.EXT_SET, [[1, 2]]), []),  # unhashable element
        (ext(codec.EXT_SLICE, [1, 2]), []),
        (ext(codec.EXT_NPSCALAR, ["<f8", b"\x00"]), []),
        (ext(codec.EXT_NPSCALAR, ["|O", b"\x00" * 8]), []),
        (ext(codec.EXT_TENSOR, ["float128", [1], 0, False]), BUF8),
        (ext(codec.EXT_TENSOR, ["int64", [1], 0, True]), BUF8),  # ints cannot require grad
        (ext(codec.EXT_TENSOR, ["int64", [1], 0, 1]), BUF8),
        (ext(codec.EXT_TENSOR, ["int64", [2], 0, False]), BUF8),
        (ext(codec.EXT_DATETIME, [2020, 13, 1, 0, 0, 0, 0, 0, None]), []),
        (ext(codec.EXT_DATETIME, [2020, 1, 1, 0, 0, 0, 0, 2, None]), []),
        (ext(codec.EXT_DATETIME, [2020, 1, 1, 0, 0, 0, 0, 0, 86_400 * 10**6]), []),
        (ext(codec.EXT_DATETIME, [2020, 1, 1, 0, 0, 0.5, 0, 0, None]), []),
        (ext(codec.EXT_DATE, [2020, 2, 30]), []),
        (ext(codec.EXT_DATE, [True, 1, 1]), []),
        (ext(codec.EXT_TIMEDELTA, [10**10, 0, 0]), []),
        (ext(codec.EXT_TIMEDELTA, [0, 86_400, 0]), []),
        (ext(codec.EXT_DATAFRAME, [0, None]), BUF8),
        (ext(codec.EXT_BYTES, [5]), []),
        ({"k": ext(99, b"")}, []),
        ([1, ext(codec.EXT_TUPLE, [ext(99, b"")])], []),
    ],
    ids=repr,
)
def test_bad_ext_payloads(obj: Any, buffers: list[bytes]) -> None:
    with pytest.raises(CodecError):
        decode(header_of(obj), buffers)


def test_tensor_payload_needs_its_buffer() -> None:
    header = header_of(ext(codec.EXT_TENSOR, ["float32", [2], 0, False]))
    with pytest.raises(CodecError):
        decode(header, [bytes(7)])
    out = decode(header, [bytes(8)])
    assert out.dtype == torch.float32 and out.shape == (2,)


def test_hostile_headers() -> None:
    bad_headers = [
        b"",
        b"\x92\x01",  # truncated array
        header_of(1) + b"\x00",  # trailing bytes
        b"\xa2\xff\xfe",  # invalid utf-8 str
        b"\x81\x91\x01\x02",  # map with a list key (unhashable)
        b"\xdd\xff\xff\xff\xff",  # array claiming 4G items
        b"\xdf\xff\xff\xff\xff",  # map claiming 4G entries
        b"\xd4\xfb\x00",  # negative (reserved) ext code
    ]
    for header in bad_headers:
        with pytest.raises(CodecError):
            decode(header, [])


def test_deep_nesting_is_refused() -> None:
    deep_list = b"\x91" * 10_000 + b"\xc0"
    with pytest.raises(CodecError):
        decode(deep_list, [])
    deep_map = b"\x81\x01" * 10_000 + b"\xc0"
    with pytest.raises(CodecError):
        decode(deep_map, [])
    # 10k tuples nested through extension payloads.
    obj: Any = None
    for _ in range(10_000):
        obj = ext(codec.EXT_TUPLE, [obj])
    with pytest.raises(CodecError, match="deep"):
        decode(header_of(obj), [])
    with pytest.raises(CodecError, match="deep"):
        loads(pack_bytes(header_of(obj), []))
    # Encoding refuses too, with a CodecError rather than a RecursionError.
    value: Any = []
    for _ in range(10_000):
        value = [value]
    with pytest.raises(CodecError, match="deep"):
        encode(value)
    tup: Any = ()
    for _ in range(10_000):
        tup = (tup,)
    with pytest.raises(CodecError, match="deep"):
        encode(tup)
    # The limit itself round-trips.
    ok: Any = 1
    for _ in range(codec.MAX_DEPTH):
        ok = [ok]
    assert loads(dumps(ok)) == ok
    with pytest.raises(CodecError):
        encode([ok])


def test_hash_flooding_is_refused() -> None:
    # Big ints that are multiples of 2**61 - 1 all hash to 0: a dict of them would
    # take quadratic time to build.
    p = 2**61 - 1
    keys = [ext(codec.EXT_BIGINT, str(p * (2**10 + k)).encode()) for k in range(5000)]
    assert len({hash(p * (2**10 + k)) for k in range(100)}) == 1
    for header in (header_of({k: 1 for k in keys}), header_of(ext(codec.EXT_SET, keys))):
        with pytest.raises(CodecError, match="hash"):
            decode(header, [])
    # Ordinary big dicts and sets are fine.
    big = {i: str(i) for i in range(10_000)} | {float(i) + 0.5: i for i in range(1000)}
    assert loads(dumps(big)) == big
    assert loads(dumps(set(range(-5000, 5000)))) == set(range(-5000, 5000))


def test_item_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_ITEMS", 100)
    with pytest.raises(CodecError, match="items"):
        encode([[0] * 60, [0] * 60])
    header = header_of([[0] * 60, (0,) * 0, [0] * 60])
    with pytest.raises(CodecError, match="items"):
        decode(header, [])


def test_arrow_stream_with_extension_type_is_refused() -> None:
    storage = pa.array([b"0123456789abcdef"], pa.binary(16))
    uuid_table = pa.table({"u": pa.ExtensionArray.from_storage(pa.uuid(), storage)})

    class Secret(pa.ExtensionType):
        def __init__(self) -> None:
            super().__init__(pa.int64(), "evil.secret")

        def __arrow_ext_serialize__(self) -> bytes:
            return b""

        @classmethod
        def __arrow_ext_deserialize__(cls, storage_type: Any, serialized: bytes) -> Secret:
            return cls()

    unregistered = pa.table({"m": pa.ExtensionArray.from_storage(Secret(), pa.array([1, 2]))})
    nested = pa.table(
        {
            "s": pa.array(
                [{"x": 1}],
                pa.struct([pa.field("x", pa.int64(), metadata={"ARROW:extension:name": "e"})]),
            )
        }
    )
    for table in (uuid_table, unregistered, nested):
        stream = arrow_stream(table)
        for header in (
            header_of(ext(codec.EXT_DATAFRAME, [0, None, None])),
            header_of(ext(codec.EXT_SERIES, [0, None])),
        ):
            with pytest.raises(CodecError, match="unsupported Arrow"):
                decode(header, [stream])


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_compressed_arrow_stream_is_refused(compression: str) -> None:
    table = pa.Table.from_pandas(pd.DataFrame({"a": np.zeros(100_000)}))
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    stream = sink.getvalue().to_pybytes()
    assert len(stream) < 100_000  # a small stream that would expand to 800 kB
    header = header_of(ext(codec.EXT_DATAFRAME, [0, None, None]))
    with pytest.raises(CodecError, match="compressed"):
        decode(header, [stream])


def test_arrow_unsafe_types_and_garbage() -> None:
    header = header_of(ext(codec.EXT_DATAFRAME, [0, None, None]))
    unsafe = [
        pa.table({"m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))}),
        pa.table({"v": pa.array(["a"], pa.string_view())}),
    ]
    for table in unsafe:
        with pytest.raises(CodecError, match="unsupported Arrow"):
            decode(header, [arrow_stream(table)])
    for garbage in (b"", b"\xff" * 64, arrow_stream(pa.table({"a": [1, 2]}))[:-20]):
        with pytest.raises(CodecError):
            decode(header, [garbage])
    # A Series stream with two columns.
    two = arrow_stream(pa.table({"a": [1], "b": [2]}))
    with pytest.raises(CodecError):
        decode(header_of(ext(codec.EXT_SERIES, [0, None])), [two])
    # Column labels that do not match the table.
    with pytest.raises(CodecError):
        decode(header_of(ext(codec.EXT_DATAFRAME, [0, [1, 2, 3], [None]])), [two])
    safe = pa.table(
        {
            "l": pa.array([[1, 2]], pa.list_(pa.int32())),
            "s": pa.array([{"x": 1.5, "y": "a"}]),
            "d": pa.array([1], pa.decimal128(5, 2)),
            "dict": pa.array(["a"]).dictionary_encode(),
            "n": pa.array([None], pa.null()),
        }
    )
    assert decode(header, [arrow_stream(safe)]).shape == (1, 5)


# --------------------------------------------------------------------------------------
# unsupported values


def _gen() -> Any:
    yield 1


class _Custom:
    pass


@pytest.mark.parametrize(
    "value, name",
    [
        (lambda: 1, "function"),
        (len, "builtin_function_or_method"),
        (_Custom, "type"),
        (_Custom(), "_Custom"),
        (object(), "object"),
        (types, "module"),
        (_gen(), "generator"),
        (Counter("ab"), "Counter"),
        (np.str_("x"), "str_"),
        (np.datetime64("2020-01-01"), "datetime64"),
        (pd.Timestamp("2020-01-01"), "Timestamp"),
        ([1, {"a": (2, {3, open})}], "builtin_function_or_method"),
        ({print: 1}, "builtin_function_or_method"),
    ],
    ids=lambda x: type(x).__name__,
)
def test_unsupported_values_name_their_type(value: Any, name: str) -> None:
    with pytest.raises(UnsupportedType, match=re.escape(name)) as info:
        encode(value)
    assert "supported" in str(info.value) or "dtype" in str(info.value)
    with pytest.raises(UnsupportedType):
        dumps(value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unsupported_numpy_and_torch_values() -> None:
    with pytest.raises(UnsupportedType, match="object"):
        encode(np.array([1, "a"], dtype=object))
    with pytest.raises(UnsupportedType, match="<U"):
        encode(np.array(["a", "b"]))
    with pytest.raises(UnsupportedType):
        encode(np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]))
    with pytest.raises(UnsupportedType):
        encode(np.zeros(2, dtype="datetime64[ns]"))
    with pytest.raises(UnsupportedType):
        encode(np.ma.masked_array([1, 2], mask=[0, 1]))
    sparse = torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (3,))
    with pytest.raises(UnsupportedType, match="sparse"):
        encode(sparse)
    with pytest.raises(UnsupportedType, match="sparse"):
        encode(torch.eye(3).to_sparse_csr())
    with pytest.raises(UnsupportedType, match="quantized"):
        encode(torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8))
    with pytest.raises(UnsupportedType, match="meta"):
        encode(torch.empty(2, device="meta"))
    with pytest.raises(UnsupportedType, match="uint16"):
        encode(torch.zeros(2, dtype=torch.uint16))


def test_unsupported_dataframes() -> None:
    with pytest.raises(UnsupportedType):
        encode(pd.DataFrame({"o": [object(), object()]}))
    with pytest.raises(UnsupportedType, match="unsupported column"):
        encode(pd.DataFrame({"p": pd.period_range("2020-01", periods=2, freq="M")}))
    with pytest.raises(UnsupportedType) as info:
        encode(pd.DataFrame({"mixed": [1, "secret-value"]}))
    assert "secret-value" not in str(info.value)


def test_encode_limits() -> None:
    with pytest.raises(CodecError, match="digits"):
        encode(10**5000)
    with pytest.raises(CodecError):
        encode("\ud800")  # lone surrogate: not UTF-8


def test_pointer_ref_validation() -> None:
    assert PointerRef("a" * 64).id == "a" * 64
    with pytest.raises(ValueError):
        PointerRef("a" * 65)
    with pytest.raises(TypeError):
        PointerRef(5)  # type: ignore[arg-type]
    ref = PointerRef("abc")
    with pytest.raises(AttributeError):
        ref.id = "x"  # type: ignore[misc]
    assert {ref: 1}[PointerRef("abc")] == 1


def test_no_pickle_in_wire_package() -> None:
    pattern = re.compile(
        r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|marshal|shelve|joblib)\b"
        r"|\bpickle\.(loads?|dumps?|Unpickler|Pickler)\b|__reduce|torch\.load\b"
        r"|np\.load\b|allow_pickle\s*=\s*True",
        re.MULTILINE,
    )
    sources = sorted(WIRE_DIR.glob("*.py"))
    assert sources
    for path in sources:
        text = path.read_text()
        assert not pattern.search(text), f"{path.name} uses pickle-like loading"


# -- aligned receiving: decoded arrays view the one copy a receiver makes --------------------


def _frame_with_header_pad(pad: int) -> tuple[bytes, np.ndarray]:
    """A frame whose buffers start at a different offset for each ``pad`` (0-15)."""
    w = np.arange(4096, dtype=np.float64)
    header, buffers = codec.encode({"w": w, "note": "x" * pad})
    return frames.pack_bytes(header, buffers), w


def test_aligned_copy_lets_every_array_view_the_copy() -> None:
    for pad in range(16):
        data, w = _frame_with_header_pad(pad)
        view = frames.aligned_copy(data)
        assert bytes(view) == data and not view.readonly
        got = codec.loads(view, None, "wire")["w"]
        # a view of the copy (no second copy), aligned and writable
        assert np.shares_memory(got, np.frombuffer(view, np.uint8))
        assert got.flags.aligned and got.flags.writeable
        np.testing.assert_array_equal(got, w)
    copied = 0
    for pad in range(16):  # without it the decoder copies a misaligned array again
        plain = bytearray(_frame_with_header_pad(pad)[0])
        got = codec.loads(plain, None, "wire")["w"]
        copied += not np.shares_memory(got, np.frombuffer(plain, np.uint8))
    assert copied >= 8
    assert bytes(frames.aligned_copy(b"not a frame")) == b"not a frame"


def test_bulk_uploads_are_received_aligned_in_any_chunking() -> None:
    import socket
    import threading
    import time

    from kernel_bridge.wire import bulk

    for pad, chunk in [(0, 7), (3, 13), (5, 100), (11, 1 << 20), (1, 1)]:
        data, w = _frame_with_header_pad(pad)
        a, b = socket.socketpair()

        def send(conn: socket.socket = a, data: bytes = data, chunk: int = chunk) -> None:
            for i in range(0, len(data), chunk):
                conn.sendall(data[i:i + chunk])
            conn.close()

        sender = threading.Thread(target=send)
        sender.start()
        ticket = bulk._Ticket("U", time.monotonic() + 60, limit=len(data))
        buf = bulk.BulkServer._receive(b, len(data), ticket)
        sender.join()
        b.close()
        assert bytes(buf) == data
        got = codec.loads(buf, None, "wire")["w"]
        assert np.shares_memory(got, np.frombuffer(buf, np.uint8)), (pad, chunk)
        np.testing.assert_array_equal(got, w)


def test_bulk_downloads_arrive_aligned() -> None:
    import time

    from kernel_bridge.wire import bulk

    server = bulk.BulkServer()
    try:
        for pad in range(16):
            data, w = _frame_with_header_pad(pad)
            pieces = frames.pack(*codec.encode({"w": w, "note": "x" * pad}))
            ticket, _ = server._add(bulk._Ticket("D", time.monotonic() + 60, source=pieces))
            buf = bulk.download("127.0.0.1", server.port, ticket)
            assert bytes(buf) == data
            got = codec.loads(buf, None, "wire")["w"]
            assert np.shares_memory(got, np.frombuffer(buf, np.uint8)), pad
        ticket, _ = server._add(bulk._Ticket("D", time.monotonic() + 60, source=[b"not a frame"]))
        assert bytes(bulk.download("127.0.0.1", server.port, ticket)) == b"not a frame"
    finally:
        server.close()
