"""HE values on the wire: closed types, structural checks, size limits, bounded inflate."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import kernel_bridge as kb
from kernel_bridge.errors import CodecError, HEError
from kernel_bridge.he import validate
from kernel_bridge.wire import codec, sealed
from kernel_bridge.wire.sealed import HEContextBytes, HEVectorBytes


@pytest.fixture(scope="module")
def ctx() -> kb.he.Context:
    return kb.he.context(depth=2, measure=False)


def _seal_blob(body: bytes, compression: int = 0) -> bytes:
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 0, compression, 0, 16 + len(body)) + body


def _vector(blob: bytes, size: int = 4) -> bytes:
    from kernel_bridge.he.seal import vector_proto

    return vector_proto(size, [blob], 2.0**40)


def test_round_trip_keeps_bytes(ctx: kb.he.Context) -> None:
    enc = kb.he.encrypt(ctx, [1.0, 2.0, 3.0])
    value = {"c": ctx.public(), "x": enc.to_wire()}
    back = codec.loads(codec.dumps(value))
    assert type(back["c"]) is HEContextBytes and back["c"].data == ctx.public().data
    assert type(back["x"]) is HEVectorBytes and back["x"].data == enc.to_wire().data
    np.testing.assert_allclose(
        kb.he.EncryptedVector.from_wire(ctx, back["x"], 3).decrypt(), [1, 2, 3], atol=1e-6)


def test_a_context_with_its_secret_key_never_leaves_or_enters(ctx: kb.he.Context) -> None:
    full = ctx.tenseal.serialize(save_secret_key=True)
    with pytest.raises(CodecError, match="secret key"):
        HEContextBytes(full)
    forged = object.__new__(HEContextBytes)
    object.__setattr__(forged, "data", full)
    with pytest.raises(CodecError, match="secret key"):
        codec.dumps(forged)
    # A frame built by hand with the secret key in it is refused by the decoder.
    import msgpack

    from kernel_bridge.wire import frames

    header = msgpack.packb(msgpack.ExtType(codec.EXT_HE_CONTEXT, msgpack.packb([0])))
    with pytest.raises(CodecError, match="secret key"):
        codec.loads(frames.pack_bytes(header, [memoryview(full)]))


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x0a\xff", b"\x12\x05abc", b"\x0b\x01",
                                  _vector(b"not a seal object"),
                                  _vector(_seal_blob(b"x")[:-1] + b"")])
def test_malformed_vectors_are_typed_errors(data: bytes) -> None:
    with pytest.raises(CodecError):
        HEVectorBytes(data)


def test_oversized_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealed, "MAX_VECTOR_BYTES", 1000)
    with pytest.raises(CodecError, match="at most 1000"):
        HEVectorBytes(_vector(_seal_blob(b"\x00" * 2000)))


def test_decompression_bombs_are_refused_before_seal_sees_them() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (80 * 1024 * 1024))
    assert len(bomb) < 100_000
    blob = _seal_blob(bomb, compression=2)
    with pytest.raises(HEError, match="inflates past"):
        validate.inflated_size(blob, 64 * 1024 * 1024)
    with pytest.raises(HEError):
        validate.inflated_size(_seal_blob(b"garbage", compression=2), 1 << 20)


def test_the_worker_loader_refuses_secret_keys_and_shallow_contexts(ctx: kb.he.Context) -> None:
    forged = object.__new__(HEContextBytes)
    object.__setattr__(forged, "data", ctx.tenseal.serialize(save_secret_key=True))
    with pytest.raises(HEError, match="secret key"):
        validate.load_context(forged)
    with pytest.raises(HEError, match="depth 3"):
        validate.load_context(ctx.public(), min_depth=3)
    assert not validate.load_context(ctx.public(), min_depth=2).has_secret_key()
