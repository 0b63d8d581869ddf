"""Every SMPC op against plaintext torch, within the documented fixed-point error."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernel_bridge.smpc import fixed, local, protocols, sharing
from kernel_bridge.smpc.errors import PrecisionError, ShapeError, UnsupportedOp

from .helpers import quantized, run

ULP = fixed.ULP
SETTINGS = settings(max_examples=15, deadline=None)
parties = st.sampled_from([2, 3])


def arrays(shape: tuple[int, ...] | st.SearchStrategy, bound: float = 1000.0) -> st.SearchStrategy:
    return hnp.arrays(float, shape, elements=st.floats(-bound, bound, allow_nan=False))


shapes = hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)


@SETTINGS
@given(st.data(), parties)
def test_linear_ops_exact(data: st.DataObject, n: int) -> None:
    shape = data.draw(shapes)
    x = torch.from_numpy(data.draw(arrays(shape, 1e9)))
    y = torch.from_numpy(data.draw(arrays(shape, 1e9)))
    qx, qy = quantized(x), quantized(y)
    assert torch.equal(run("add", [x, y], n=n), qx + qy)
    assert torch.equal(run("sub", [x, y], n=n), qx - qy)
    assert torch.equal(run("neg", [x], n=n), -qx)
    assert torch.equal(run("add_public", [x], {"value": 2.5}, n=n), qx + 2.5)
    assert torch.equal(run("mul_public", [x], {"value": -3}, n=n), qx * -3)
    assert torch.allclose(run("sum", [x], n=n), qx.sum(), rtol=0, atol=1e-6)
    assert torch.allclose(run("sum", [x], {"dim": -1, "keepdim": True}, n=n),
                          qx.sum(-1, keepdim=True), rtol=0, atol=1e-6)


@SETTINGS
@given(st.data(), parties)
def test_mul_within_one_ulp(data: st.DataObject, n: int) -> None:
    shape = data.draw(shapes)
    x = torch.from_numpy(data.draw(arrays(shape, 3e4)))
    y = torch.from_numpy(data.draw(arrays(shape, 3e4)))
    got = run("mul", [x, y], n=n)
    assert float((got - quantized(x) * quantized(y)).abs().max()) <= ULP
    # broadcasting against a scalar-like shape
    z = torch.from_numpy(data.draw(arrays((1,) * len(shape), 100.0)))
    got = run("mul", [x, z], n=n)
    assert float((got - quantized(x) * quantized(z)).abs().max()) <= ULP


@SETTINGS
@given(st.data(), parties)
def test_public_products_and_division(data: st.DataObject, n: int) -> None:
    x = torch.from_numpy(data.draw(arrays((6,), 3e7)))
    c = data.draw(st.floats(-1e6, 1e6).filter(lambda v: abs(v) > 1e-3))
    qx = quantized(x)
    got = run("mul_public", [x / 1e5], {"value": c}, n=n)  # |x c| < 2^30
    assert float((got - quantized(x / 1e5) * quantized(c)).abs().max()) <= ULP
    if abs(c) <= 1:  # a product by 1/c: keep |x / c| < 2^30 (the documented range)
        x = x * abs(c) / 64
        qx = quantized(x)
    got = run("div_public", [x], {"value": c}, n=n)
    exact = qx / c
    bound = exact.abs() * 2.0 ** -(fixed.DIV_BITS + 1) + ULP if abs(c) > 1 else \
        qx.abs() * ULP / 2 + ULP  # |c| <= 1: multiply by 1/c encoded to half an ulp
    assert bool(((got - exact).abs() <= bound + 1e-12).all())


def test_pooled_mean_example() -> None:
    """The issue's example: (x + y) / 600 for two hospital sums."""
    x, y = torch.tensor(71_234.0), torch.tensor(68_765.5)
    shares = [sharing.share(fixed.encode(v), 2) for v in (x, y)]
    total = local.run_local("add", shares)
    mean = fixed.decode(sharing.reconstruct(local.run_local("div_public", [total],
                                                            {"value": 600})))
    exact = (71_234.0 + 68_765.5) / 600
    assert abs(float(mean) - exact) <= exact * 2.0 ** -(fixed.DIV_BITS + 1) + ULP


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 12), st.integers(1, 6), parties, st.data())
def test_matmul_within_one_ulp(m: int, k: int, p: int, n: int, data: st.DataObject) -> None:
    x = torch.from_numpy(data.draw(arrays((m, k), 100.0)))
    w = torch.from_numpy(data.draw(arrays((k, p), 100.0)))
    got = run("matmul", [x, w], n=n)
    assert got.shape == (m, p)
    assert float((got - quantized(x) @ quantized(w)).abs().max()) <= ULP
    v = torch.from_numpy(data.draw(arrays((k,), 100.0)))
    assert float((run("matmul", [x, v], n=n) - quantized(x) @ quantized(v)).abs().max()) <= ULP


@pytest.mark.parametrize("n", [2, 3])
def test_conv2d_within_one_ulp(n: int) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 8, 7, generator=g, dtype=torch.float64) * 10
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    for params in ({}, {"stride": 2, "padding": 1}, {"dilation": 2, "padding": (1, 2)}):
        got = run("conv2d", [x, w], params, n=n)
        expect = torch.nn.functional.conv2d(quantized(x), quantized(w), **params)  # type: ignore[arg-type]
        assert got.shape == expect.shape
        assert float((got - expect).abs().max()) <= ULP + 1e-9


@SETTINGS
@given(st.data(), parties)
def test_comparisons_relu_exact(data: st.DataObject, n: int) -> None:
    shape = data.draw(shapes)
    x = torch.from_numpy(data.draw(arrays(shape, 1e12)))
    y = torch.from_numpy(data.draw(arrays(shape, 1e12)))
    qx, qy = quantized(x), quantized(y)
    assert torch.equal(run("ltz", [x], n=n), (qx < 0).double())
    assert torch.equal(run("gtz", [x], n=n), (qx > 0).double())
    assert torch.equal(run("gt", [x, y], n=n), (qx > qy).double())
    assert torch.equal(run("lt", [x, y], n=n), (qx < qy).double())
    assert torch.equal(run("relu", [x], n=n), qx.relu())


@SETTINGS
@given(st.data(), parties)
def test_max_argmax(data: st.DataObject, n: int) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=7))
    x = torch.from_numpy(data.draw(arrays(shape, 1e6)))
    qx = quantized(x)
    assert torch.equal(run("max", [x], n=n), qx.max())
    idx = run("argmax", [x], n=n)
    assert float(qx.reshape(-1)[int(idx)]) == float(qx.max())  # any maximal index on ties
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert torch.equal(run("max", [x], {"dim": dim}, n=n), qx.max(dim=dim).values)
    idx = run("argmax", [x], {"dim": dim}, n=n)
    assert idx.shape == qx.max(dim=dim).values.shape
    picked = qx.gather(dim, idx.long().unsqueeze(dim)).squeeze(dim)
    assert torch.equal(picked, qx.max(dim=dim).values)


# -- edges of the documented ranges -----------------------------------------------------------


def test_product_range_edge() -> None:
    """Products are exact (1 ulp) just below MAX_PRODUCT, garbage well beyond it."""
    x = torch.tensor([2.0 ** 15, -(2.0 ** 15), 30000.0])
    y = torch.tensor([2.0 ** 15 - 0.5, 2.0 ** 15 - 0.5, -35000.0])  # |xy| < 2^30
    assert float((run("mul", [x, y]) - x.double() * y.double()).abs().max()) <= ULP
    big = torch.tensor([2.0 ** 17])  # 2^34 >= MAX_PRODUCT: the ring wraps
    assert float((run("mul", [big, big]) - 2.0 ** 34).abs()) > 1.0


def test_comparison_range_edge() -> None:
    edge = fixed.MAX_ABS - 1
    x = torch.tensor([edge, -edge, 2 * ULP, -ULP, 0.0], dtype=torch.float64)
    assert run("ltz", [x]).tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert run("gtz", [x]).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    # a sum beyond 2^47 wraps and flips the sign: documented, not detected
    shares = sharing.share(fixed.encode(torch.tensor([edge], dtype=torch.float64)), 2)
    doubled = [s * 4 for s in shares]
    assert run_shares("ltz", [doubled]) == [1.0]


def run_shares(op: str, shares: list[list[torch.Tensor]]) -> list[float]:
    out = local.run_local(op, shares)
    return fixed.decode(sharing.reconstruct(out)).tolist()


def test_division_range_edge() -> None:
    below = torch.tensor([2.0 ** 25 - 1, -(2.0 ** 25) + 1])
    got = run("div_public", [below], {"value": 3.0})
    assert float((got - below.double() / 3).abs().max()) <= 2 ** 25 / 3 * 2.0 ** -21 + ULP
    above = torch.tensor([2.0 ** 27])  # beyond the documented range: the ring wraps
    assert float((run("div_public", [above], {"value": 3.0}) - 2.0 ** 27 / 3).abs()) > 1.0
    with pytest.raises(PrecisionError):
        run("div_public", [below], {"value": 0})
    with pytest.raises(PrecisionError):
        run("div_public", [below], {"value": [2.0, 3.0]})  # a scalar only
    with pytest.raises(PrecisionError):
        run("div_public", [below], {"value": 2.0 ** 43})


def test_truncation_error_is_unbiased() -> None:
    """The one-ulp truncation error averages out (the +1 correction of the carry)."""
    x = torch.full((20000,), 1.2345)
    y = torch.full((20000,), 0.7531)
    err = (run("mul", [x, y]) - quantized(x) * quantized(y)) / ULP
    assert float(err.abs().max()) <= 1
    assert abs(float(err.mean())) < 0.05


def test_errors_are_typed() -> None:
    with pytest.raises(UnsupportedOp):
        protocols.get("sqrt")
    with pytest.raises(ShapeError):
        run("matmul", [torch.ones(2, 3), torch.ones(2, 3)])
    with pytest.raises(ShapeError):
        run("conv2d", [torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2)], {"groups": 2})
    with pytest.raises(ShapeError):
        local.run_local("add", [sharing.share(fixed.encode([1.0]), 2)])
    three = [sharing.share(fixed.encode([1.0]), 3)]
    spec = protocols.get("ltz")
    material = local.dealer.make_all(spec.recipes(((1,),), {}, 2), 3)  # made for n=2
    with pytest.raises(ShapeError):
        next(spec.program(0, 3, (three[0][0],), material[0], {}))


def test_reshape_transpose_and_a_small_network() -> None:
    """Local reshapes, then a conv + ReLU + linear layer on shared weights and input."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 1, 1, 32, generator=g, dtype=torch.float64)  # 4 ECG-like beats
    w1 = torch.randn(3, 1, 1, 5, generator=g, dtype=torch.float64)
    w2 = torch.randn(3 * 28, 2, generator=g, dtype=torch.float64)
    assert torch.equal(run("reshape", [x], {"shape": [4, 32]}), quantized(x).reshape(4, 32))
    assert torch.equal(run("transpose", [w2]), quantized(w2).t())
    sh = [sharing.share(fixed.encode(t), 2) for t in (x, w1, w2)]
    h = local.run_local("conv2d", [sh[0], sh[1]])
    h = local.run_local("relu", [h])
    h = local.run_local("reshape", [h], {"shape": [4, 3 * 28]})
    out = fixed.decode(sharing.reconstruct(local.run_local("matmul", [h, sh[2]])))
    ref = torch.nn.functional.conv2d(quantized(x), quantized(w1)).relu().reshape(4, -1) @ \
        quantized(w2)
    assert float((out - ref).abs().max()) < 1e-3
    assert torch.equal(out.argmax(1), ref.argmax(1)) or float((out - ref).abs().max()) < 1e-4
    with pytest.raises(ShapeError):
        run("reshape", [x], {"shape": [5, 5]})


def test_out_shapes_match() -> None:
    x = torch.ones(2, 3, 4)
    for op, params, expect in [("sum", {"dim": 1}, (2, 4)), ("max", {"dim": 2}, (2, 3)),
                               ("argmax", {}, ()), ("relu", {}, (2, 3, 4))]:
        assert protocols.get(op).out_shape((tuple(x.shape),), params) == expect
        assert tuple(run(op, [x], params).shape) == expect
