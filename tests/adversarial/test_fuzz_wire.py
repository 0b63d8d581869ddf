"""Fuzzing the codec and the handshake (hypothesis).

Every input either decodes to a value that survives a round trip, or raises a
typed :class:`~kernel_bridge.errors.ProtocolError`; nothing crashes, and no
claimed length (of a buffer, a header, a string, an array) is allocated before
the bytes behind it were seen. The handshake fuzz sends hostile hellos to a live
worker, which answers each with a typed error or a close and keeps serving.

Run size: ``SYFTLAB_FUZZ_EXAMPLES`` inputs per test (default 300; the suite
stays fast). A long run: ``SYFTLAB_FUZZ_EXAMPLES=20000 python -m pytest
tests/adversarial/test_fuzz_wire.py``.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as ws_connect

import kernel_bridge as kb
from kernel_bridge.errors import WIRE_ERRORS, ProtocolError, SyftError
from kernel_bridge.wire import codec, frames

from ..test_codec import assert_same

EXAMPLES = int(os.environ.get("SYFTLAB_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
#: Peak bytes allocated while decoding, beyond a fixed allowance, per input byte.
PER_BYTE = 128
ALLOWANCE = 1 << 20

SEEDS: list[Any] = [
    None, True, 3, -(2**70), 1.5, "text", b"bytes", [1, [2, {"a": 3}]], (1, 2), {1, 2},
    frozenset({"x"}), 1 + 2j, slice(1, 5, 2), Ellipsis, {"op": "hello", "#": 0, "token": "t",
                                                         "versions": [1]},
    np.arange(6, dtype=np.int32).reshape(2, 3), np.float32(2.5), b"\x00" * 70_000,
]
SEED_FRAMES = [codec.dumps(v) for v in SEEDS]


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(SEED_FRAMES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(0, len(frame) - 1)))
        if kind == 0 and frame:
            frame[pos] = draw(st.integers(0, 255))
        elif kind == 1:
            frame[pos:pos] = draw(st.binary(max_size=16))
        elif kind == 2:
            del frame[pos:pos + draw(st.integers(1, 16))]
        else:  # a length field claiming something huge
            field = draw(st.sampled_from([(5, "<I"), (9, "<I"), (13, "<Q")]))
            if field[0] + struct.calcsize(field[1]) <= len(frame):
                struct.pack_into(field[1], frame, field[0],
                                 draw(st.sampled_from([2**31, 2**32 - 1, 2**40, 2**63]))
                                 % (2 ** (8 * struct.calcsize(field[1]))))
    return bytes(frame)


leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
          | st.text(max_size=6) | st.binary(max_size=12))
trees = st.recursive(
    leaves,
    lambda kids: (st.lists(kids, max_size=4)
                  | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), kids, max_size=3)
                  | st.builds(lambda c, b: msgpack.ExtType(c, msgpack.packb(b, use_bin_type=True)),
                              st.integers(0, 20), kids)
                  | st.builds(msgpack.ExtType, st.integers(0, 20), st.binary(max_size=20))),
    max_leaves=10,
)


def _claim(prefix: bytes, n: int, tail: bytes) -> bytes:
    width = 4 if prefix[0] in (0xC6, 0xDB, 0xDD, 0xDF, 0xC9) else 2
    return prefix + (n % (1 << (8 * width))).to_bytes(width, "big") + tail


def claimed_length_headers() -> st.SearchStrategy[bytes]:
    """msgpack headers whose length prefixes claim up to 4 GiB that are not there
    (bin, str, array, map and ext, 16 and 32 bit)."""
    prefixes = [b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9", b"\xc5", b"\xda", b"\xdc",
                b"\xde", b"\xc8"]
    return st.builds(_claim, st.sampled_from(prefixes), st.integers(2**15, 2**32 - 1),
                     st.binary(max_size=8))


inputs = (st.binary(max_size=300)
          | mutated_frames()
          | st.builds(lambda t, bufs: frames.pack_bytes(msgpack.packb(t, use_bin_type=True), bufs),
                      trees, st.lists(st.binary(max_size=40), max_size=3))
          | st.builds(lambda h: frames.pack_bytes(h, []), claimed_length_headers()))


def decode_bounded(data: bytes) -> tuple[Any, BaseException | None, int]:
    """Decode under tracemalloc: the value (or the error) and the peak bytes allocated."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        value, err = codec.loads(data, limit=frames.DEFAULT_FRAME_LIMIT), None
    except BaseException as exc:  # judged by the caller
        value, err = None, exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, err, peak


@FUZZ
@given(inputs)
def test_fuzz_codec_typed_errors_round_trips_and_bounded_memory(data: bytes) -> None:
    value, err, peak = decode_bounded(data)
    assert peak <= ALLOWANCE + PER_BYTE * len(data), f"{peak} bytes for {len(data)} input bytes"
    if err is not None:
        assert isinstance(err, ProtocolError), f"{type(err).__name__}: {err}"
        assert type(err).__name__ in WIRE_ERRORS
        return
    # Decoded: the value must survive its own round trip.
    again = codec.loads(codec.dumps(value))
    assert_same(value, again)
    header, _ = frames.unpack(data)
    assert 0 <= codec.check_cost(header)


@FUZZ
@given(st.binary(max_size=400) | trees.map(lambda t: msgpack.packb(t, use_bin_type=True)))
def test_fuzz_cost_check_is_typed(header: bytes) -> None:
    try:
        n = codec.check_cost(header, max_containers=8)
    except ProtocolError:
        return
    assert n >= 0


def test_cost_check_refuses_container_bombs_quickly() -> None:
    bomb = b"\xdd" + struct.pack(">I", 1 << 22) + b"\x80" * (1 << 22)
    nested = msgpack.packb([msgpack.ExtType(1, b"\xdd" + struct.pack(">I", 1 << 20)
                                            + b"\x90" * (1 << 20))])
    for header in (bomb, nested):
        t = time.perf_counter()
        try:
            codec.check_cost(header)
        except ProtocolError as exc:
            assert "containers" in str(exc)
        else:
            raise AssertionError("a container bomb passed the cost check")
        assert time.perf_counter() - t < 2.0
    plain = codec.encode([float(i) for i in range(200_000)])[0]  # many bytes, few containers
    assert codec.check_cost(plain) <= 1


# -- the handshake against a live worker ----------------------------------------------------------

hello_fields = st.dictionaries(
    st.sampled_from(["op", "#", "token", "versions", "resume", "client"]) | st.text(max_size=4),
    leaves | st.lists(leaves, max_size=3) | st.dictionaries(st.text(max_size=4), leaves,
                                                            max_size=3),
    max_size=6)
hellos = (
    st.builds(lambda d: codec.dumps({"op": "hello", **d}), hello_fields)
    | hello_fields.map(lambda d: codec.dumps(d))
    | inputs
    | st.builds(lambda n: frames.pack_bytes(b"\xdd" + struct.pack(">I", n) + b"\x80" * n, []),
                st.integers(1, 70_000))
    | st.text(max_size=50)
)
KNOWN_CLOSES = {1002, 1003, 1007, 1008, 1009, 1011}


@FUZZ
@given(hellos)
def test_fuzz_handshake_gets_typed_errors_and_no_session(alice: kb.Worker, hello: bytes | str
                                                         ) -> None:
    t = time.perf_counter()
    try:
        with ws_connect(alice.process.url, max_size=None, compression=None,
                        open_timeout=30) as ws:
            ws.send(hello)
            reply = codec.loads(ws.recv(timeout=30))
            assert "error" in reply, reply  # a fuzzed hello never gets a session
            assert reply["error"]["type"] in WIRE_ERRORS
            assert WIRE_ERRORS[reply["error"]["type"]] is not SyftError, reply
    except ConnectionClosed as exc:
        assert exc.rcvd is None or exc.rcvd.code in KNOWN_CLOSES | {1000}, exc
    except InvalidHandshake as exc:  # pragma: no cover - the HTTP upgrade itself failed
        raise AssertionError(f"upgrade failed: {exc}") from exc
    assert time.perf_counter() - t < 10


def test_worker_serves_after_the_fuzz(alice: kb.Worker) -> None:
    assert alice.ping() < 1.0
    assert alice.send([1, 2]).get() == [1, 2]


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                           object_pairs_hook=codec._Pairs)


@FUZZ
@given(trees.map(lambda t: msgpack.packb(t, use_bin_type=True)) | st.binary(max_size=200))
def test_piecewise_unpack_matches_msgpack(data: bytes) -> None:
    """Container-heavy headers are built piecewise (other threads run meanwhile); the
    result must be what msgpack's one-call unpack gives, errors included."""
    try:
        want: Any = repr(_unpackb(data))
    except Exception:
        want = "error"
    try:
        got: Any = repr(codec._stream_unpack(data))
    except Exception:
        got = "error"
        if want != "error":  # only for what decoding refuses anyway (nesting too deep)
            try:
                codec.decode(data, [])
            except ProtocolError:
                return
    assert got == want


def test_container_heavy_headers_decode_piecewise() -> None:
    value = {"rows": [{"a": i, "b": [i, (i,)]} for i in range(5000)], "t": tuple([[]] * 3000)}
    header, buffers = codec.encode(value)
    assert codec._costly_bytes(header) > codec._STREAM_ABOVE
    assert codec.decode(header, buffers) == value
