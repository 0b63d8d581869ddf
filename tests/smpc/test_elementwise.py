"""The protocols' in-place ring arithmetic (numpy on the CPU) equals torch's, wrap included."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_bridge.smpc import elementwise

EDGES = [-(1 << 63), (1 << 63) - 1, -1, 0, 1, 1 << 62, -(1 << 62)]
ring = st.lists(st.one_of(st.sampled_from(EDGES), st.integers(-(1 << 63), (1 << 63) - 1)),
                min_size=1, max_size=64)


@settings(max_examples=60, deadline=None)
@given(ring, st.data())
def test_add_sub_mul_wrap_as_torch_does(xs: list[int], data: st.DataObject) -> None:
    ys = data.draw(st.lists(st.sampled_from(EDGES) | st.integers(-(1 << 63), (1 << 63) - 1),
                            min_size=len(xs), max_size=len(xs)))
    x, y = torch.tensor(xs, dtype=torch.int64), torch.tensor(ys, dtype=torch.int64)
    assert torch.equal(elementwise.add_(x.clone(), y), x + y)
    assert torch.equal(elementwise.mul_(x.clone(), y), x * y)
    assert torch.equal(elementwise.sub(x, y, out=torch.empty_like(x)), x - y)
    # out may be either operand (the protocols write into material they use up)
    assert torch.equal(elementwise.sub(x, y, out=y.clone()), x - y)
    a = x.clone()
    assert torch.equal(elementwise.sub(a, y, out=a), x - y)


def test_in_place_on_views_and_broadcast() -> None:
    flat = torch.zeros(12, dtype=torch.int64)
    view = flat[4:10].view(2, 3)  # a slice of a larger buffer, as masked() writes
    x = torch.arange(6, dtype=torch.int64).view(2, 3)
    row = torch.tensor([[1 << 62, -(1 << 63), 7]], dtype=torch.int64)
    elementwise.sub(x, row, out=view)
    assert torch.equal(view, x - row) and flat[:4].eq(0).all() and flat[10:].eq(0).all()
    assert torch.equal(elementwise.add_(view, row), x)


def test_tensors_off_the_cpu_take_torchs_path() -> None:
    m = torch.empty(5, dtype=torch.int64, device="meta")
    assert elementwise.add_(m, m).device.type == "meta"
    assert elementwise.mul_(m, m).device.type == "meta"
    assert elementwise.sub(m, m, out=torch.empty_like(m)).device.type == "meta"
