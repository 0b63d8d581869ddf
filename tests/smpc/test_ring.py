"""Exact ring products mod 2^64: every method against an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_bridge.smpc import ring


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """numpy's uint64 matmul: wraps mod 2^64 by definition (no BLAS, no float)."""
    r = a.numpy().view(np.uint64) @ b.numpy().view(np.uint64)
    return torch.from_numpy(np.ascontiguousarray(r).view(np.int64))


def ring_elems(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)  # test inputs, not secrets
    return torch.randint(-2**63, 2**63 - 1, shape, generator=g)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 70), st.integers(1, 40), st.integers(0, 2**31))
def test_matmul_exact_all_methods(m: int, k: int, n: int, seed: int) -> None:
    a, b = ring_elems((m, k), seed), ring_elems((k, n), seed + 1)
    expect = reference(a, b)
    for method in ("int64", "int8", "float64", "auto"):
        assert torch.equal(ring.ring_matmul(a, b, method), expect), method
    # the CUDA code path (balanced 22-bit digits, float64 products) run on the CPU
    assert torch.equal(ring.ring_matmul(a, b, "float64", device="cpu"), expect)
    # wider digits need shorter inner-dimension chunks: still exact
    assert torch.equal(ring._mm_float64(a, b, 22), expect)
    assert torch.equal(ring._mm_float64(a, b, 26), expect)  # chunks of 2 products


def test_matmul_extremes_and_large_inner() -> None:
    big = torch.full((3, 20000), -2**63, dtype=torch.int64)
    other = torch.full((20000, 2), 2**63 - 1, dtype=torch.int64)
    expect = reference(big, other)
    for method in ("int8", "float64"):  # int8 chunks the inner dimension at 8192
        assert torch.equal(ring.ring_matmul(big, other, method), expect)
    a, b = ring_elems((300, 300), 1), ring_elems((300, 300), 2)
    assert torch.equal(ring.ring_matmul(a, b, "auto"), reference(a, b))


@pytest.mark.parametrize("sa,sb", [((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)),
                                   ((2, 3, 4, 5), (5, 6)), ((5, 6), (2, 6, 7)),
                                   ((2, 3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5))])
def test_matmul_shapes_like_torch(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    a, b = ring_elems(sa, 3), ring_elems(sb, 4)
    expect = torch.matmul(a, b)  # torch int64 wraps; shapes are what is tested here
    for method in ("int64", "int8", "float64"):
        got = ring.ring_matmul(a, b, method)
        assert got.shape == expect.shape and torch.equal(got, expect)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), ((1, 2), (2, 0), 2)])
def test_conv2d_exact(stride: object, padding: object, dilation: object) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-50, 50, (2, 3, 9, 10), generator=g)
    w = torch.randint(-50, 50, (4, 3, 3, 2), generator=g)
    expect = torch.nn.functional.conv2d(x.double(), w.double(), stride=stride, padding=padding,
                                        dilation=dilation)  # small integers: exact in float64
    got = ring.ring_conv2d(x, w, stride, padding, dilation)  # type: ignore[arg-type]
    assert got.shape == expect.shape and torch.equal(got, expect.to(torch.int64))
    # full-range elements: the unfolded product matches the reference matmul
    xb, wb = ring_elems((1, 3, 6, 6), 6), ring_elems((2, 3, 3, 3), 7)
    cols = ring.unfold(xb, (3, 3))
    expect_b = reference(cols, wb.reshape(2, -1).t().contiguous()).reshape(1, 4, 4, 2)
    assert torch.equal(ring.ring_conv2d(xb, wb), expect_b.permute(0, 3, 1, 2))


def test_rejects() -> None:
    with pytest.raises(TypeError):
        ring.ring_matmul(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError):
        ring.ring_matmul(ring_elems((2, 2), 0), ring_elems((2, 2), 1), "fast")
    with pytest.raises(ValueError):
        ring.conv2d_out_shape((1, 3, 2, 2), (1, 3, 5, 5))


def test_signed_digits_recompose_and_stay_small() -> None:
    x = torch.cat([ring_elems((2000,), 8), torch.tensor([-2**63, 2**63 - 1, 0, -1, 1])])
    for bits in (16, 22, 26):
        digits = ring.signed_digits(x, bits)
        assert len(digits) == -(-64 // bits)
        back = torch.zeros_like(x)
        for i, d in enumerate(digits):
            assert int(d.abs().max()) <= 1 << (bits - 1)
            back += d << (bits * i)
        assert torch.equal(back, x)


def test_auto_method_by_size() -> None:
    assert ring.choose(8, 8, 8) == "int64"
    assert ring.choose(100, 200, 100) in ("float64", "int8")
    assert ring.choose(2, 2, 2, device="cuda") == "float64"
