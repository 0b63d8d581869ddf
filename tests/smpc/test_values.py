"""A party's buffers: opened values leave without a copy, dealer material arrives without
one, and a stored share keeps only its own bytes alive."""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from kernel_bridge.owner import smpc_values
from kernel_bridge.smpc import arith


def _address(buf: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_values_laid_out_back_to_back_are_sent_from_where_they_lie() -> None:
    x, a = torch.arange(6).reshape(2, 3), torch.full((2, 3), 5)
    y, b = torch.arange(4), torch.ones(4, dtype=torch.int64)
    d, e = arith.masked((x, a), (y, b))
    assert torch.equal(d, x - a) and torch.equal(e, y - b)
    data = smpc_values.pack([d, e])
    assert data.ctypes.data == d.data_ptr() and data.nbytes == 10 * 8  # no copy
    back = smpc_values.unpack(bytearray(data.tobytes()), [d, e])
    assert torch.equal(back[0], d) and torch.equal(back[1], e)
    # apart in memory: concatenated into a new buffer, same bytes
    apart = smpc_values.pack([x - a, y - b])
    assert apart.tobytes() == data.tobytes()


def test_a_received_doc_decodes_its_tensors_in_place() -> None:
    material = {"a": torch.arange(1000), "c": torch.arange(1000) * 3}
    payload = smpc_values.aligned_doc({"recipes": [{"kind": "mul"}], "material": [material]})
    raw = np.empty(len(payload) + 64, dtype=np.uint8)  # the link puts payloads 64-aligned
    at = -raw.ctypes.data % 64
    raw[at:at + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    view = memoryview(raw.data)[at:at + len(payload)]
    assert _address(view) % 64 == 0
    doc = smpc_values.codec.loads(smpc_values.doc_frame(view))
    got = doc["material"][0]
    assert torch.equal(got["a"], material["a"]) and torch.equal(got["c"], material["c"])
    lo, hi = raw.ctypes.data, raw.ctypes.data + raw.nbytes
    assert all(lo <= t.data_ptr() < hi for t in got.values())  # views, not copies


def test_a_stored_share_keeps_only_its_own_bytes() -> None:
    frame = torch.arange(5000)
    part = frame[1000:2000]
    kept = smpc_values.compact(part)
    assert torch.equal(kept, part) and kept.untyped_storage().nbytes() == 1000 * 8
    own = torch.arange(10)
    assert smpc_values.compact(own) is own
