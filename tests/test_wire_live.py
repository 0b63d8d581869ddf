"""Hostile frames against a live worker: each gets a typed error (or, above the frame
limit, a close with code 1009), and the worker keeps serving that peer's session where
the protocol allows and every other session regardless."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator

import msgpack
import pytest
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import kernel_bridge as kb
from kernel_bridge.wire import codec, frames

LIMIT_MB = 1


@pytest.fixture
def small_limit(fresh_worker: Callable[..., kb.Worker]) -> kb.Worker:
    """A worker of the test's own with a 1 MiB frame limit."""
    return fresh_worker("dave", extra_args=["--frame-limit-mb", str(LIMIT_MB)])


@pytest.fixture
def raw(small_limit: kb.Worker) -> Iterator[Callable[[], ClientConnection]]:
    """Authenticated raw websocket connections, as a hostile client would open them."""
    stack = contextlib.ExitStack()

    def open_raw() -> ClientConnection:
        ws = stack.enter_context(connect(small_limit.process.url, max_size=None,
                                         compression=None))
        ws.send(codec.dumps({"op": "hello", "#": 0, "token": small_limit.token,  # type: ignore[attr-defined]
                             "versions": [frames.WIRE_VERSION]}))
        reply = codec.loads(ws.recv(timeout=30))
        assert reply.get("ok") is True, reply
        return ws

    with stack:
        yield open_raw


def reply_to(ws: ClientConnection, data: bytes | str) -> dict[str, object]:
    ws.send(data)
    msg = codec.loads(ws.recv(timeout=30))
    assert isinstance(msg, dict)
    return msg


def error_type(msg: dict[str, object]) -> str:
    err = msg.get("error")
    assert isinstance(err, dict), msg
    return str(err["type"])


def ping(ws: ClientConnection, mid: int = 99) -> None:
    msg = reply_to(ws, codec.dumps({"op": "ping", "#": mid}))
    assert msg.get("ok") is True and msg.get("re") == mid, msg


def good_header() -> bytes:
    return codec.dumps({"op": "ping", "#": 1})


HOSTILE: dict[str, Callable[[], bytes | str]] = {
    "text frame": lambda: '{"op": "ping"}',
    "empty": lambda: b"",
    "random bytes": lambda: os.urandom(200),
    "bad magic": lambda: b"JUNK" + good_header()[4:],
    "unknown wire version": lambda: good_header()[:4] + bytes([9]) + good_header()[5:],
    "truncated": lambda: good_header()[:-3],
    "trailing garbage": lambda: good_header() + b"xx",
    "header length lies": lambda: good_header()[:5] + struct.pack("<I", 2**31)
    + good_header()[9:],
    "buffer count lies": lambda: good_header()[:9] + struct.pack("<I", 2**20 + 1)
    + good_header()[13:],
    "header not msgpack": lambda: frames.pack_bytes(b"\xc1\xc1\xc1", []),
    "unknown extension type": lambda: frames.pack_bytes(
        msgpack.packb({"op": msgpack.ExtType(77, b"x"), "#": 1}), []),
    "pickle in a buffer": lambda: frames.pack_bytes(
        msgpack.packb({"op": "send", "#": 1, "value": msgpack.ExtType(1, b"\x80\x04")}),
        [b"\x80\x04\x95"]),
    "not a map": lambda: codec.dumps([1, 2, 3]),
    "op not a string": lambda: codec.dumps({"op": 5, "#": 1}),
    "unknown op": lambda: codec.dumps({"op": "approve_my_request", "#": 1}),
    "hello again": lambda: codec.dumps({"op": "hello", "#": 1, "token": "x"}),
    "deep nesting": lambda: frames.pack_bytes(b"\x91" * 5000 + b"\x00", []),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_frame_gets_typed_error_and_session_survives(
        raw: Callable[[], ClientConnection], small_limit: kb.Worker, case: str) -> None:
    ws = raw()
    msg = reply_to(ws, HOSTILE[case]())
    assert error_type(msg) in {"MalformedFrame", "CodecError", "UnsupportedType",
                               "VersionMismatch", "ProtocolError", "FrameTooLarge"}, msg
    err = msg["error"]
    assert isinstance(err, dict) and err["message"], msg
    ping(ws)  # the same connection still works
    assert small_limit.ping() > 0  # and so do other sessions


def test_oversized_frame_closes_only_that_connection(raw: Callable[[], ClientConnection],
                                                     small_limit: kb.Worker) -> None:
    ws = raw()
    other = raw()
    with pytest.raises(ConnectionClosed) as info:
        ws.send(codec.dumps({"op": "send", "#": 1, "value": b"x" * (LIMIT_MB << 21)}))
        ws.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    ping(other)
    assert small_limit.ping() > 0
    assert torch.equal((small_limit.send(torch.ones(2)) + 1).get(), torch.full((2,), 2.0))


def test_client_refuses_to_send_oversized_values_inline(small_limit: kb.Worker) -> None:
    """The client's own check: a typed error before a byte is sent (values above the
    bulk threshold take the bulk path instead, which has its own limit)."""
    with pytest.raises(kb.FrameTooLarge, match="frame limit"):
        small_limit._call("ping", padding=b"x" * (LIMIT_MB << 21))
    assert small_limit.ping() > 0


def test_unauthenticated_hostile_frames_get_no_session(small_limit: kb.Worker) -> None:
    with connect(small_limit.process.url, max_size=None) as ws:
        ws.send(os.urandom(64))
        msg = codec.loads(ws.recv(timeout=30))
        assert error_type(msg) in {"MalformedFrame", "VersionMismatch", "CodecError"}
        with pytest.raises(ConnectionClosed):
            ws.send(codec.dumps({"op": "ping", "#": 1}))
            ws.recv(timeout=30)
    with connect(small_limit.process.url, max_size=None) as ws:
        ws.send(codec.dumps({"op": "ping", "#": 1}))
        assert error_type(codec.loads(ws.recv(timeout=30))) == "ProtocolError"
