"""Arithmetic protocols over additive shares in Z_2^64 (SPDZ-style, with a dealer).

* Linear operations (``add``, ``sub``, ``neg``, ``sum``, ``add_public``, and
  ``mul_public`` by integers) are local: no communication, exact.
* ``mul``, ``matmul``, ``conv2d``: Beaver's multiplication (Beaver, CRYPTO
  1991) with dealer triples ``(a, b, c = a*b)`` of the same bilinear map: the
  parties open ``d = x - a`` and ``e = y - b`` (uniform, they hide ``x`` and
  ``y``) and party ``i`` computes ``c_i + d*b_i + a_i*e`` (+ ``d*e`` for party
  0). One round; works for any ``n >= 2``.
* Fixed-point products are then truncated by :func:`truncate`, a dealer-assisted
  truncation with an exact wrap correction (one round, any ``n >= 2``): the
  dealer shares a uniform ``r``, ``r >>> f`` and ``msb(r)`` (the public constants
  below already applied, see :mod:`.dealer`); the parties open
  ``c = x + 2^62 - r`` (uniform, hides ``x``); since ``x + 2^62`` is in
  ``[0, 2^63)``, the wrap of ``c + r`` is ``msb(c) OR msb(r)``, which is
  linear in the shared ``msb(r)`` once ``c`` is public. The only error left is
  the carry out of the ``f`` low bits, a bit whose expectation is corrected:

  **Error bound**: the result is ``floor(x / 2^f)`` or ``floor(x / 2^f) + 1``
  (never anything else), i.e. within one ulp of the exact quotient, unbiased
  over the dealer's randomness, for every ``|x| < 2^62`` -- deterministic, no
  failure probability (unlike local SecureML truncation). For a fixed-point
  product this is ``|result| < 2^30`` (:data:`.fixed.MAX_PRODUCT`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import torch

from . import elementwise, fixed, ring
from .engine import Material, Open, Recipe
from .errors import PrecisionError, ShapeError
from .spec import Inputs, OpSpec, Params, Shape, Shapes, local_program

Gen = Generator[Open, tuple[torch.Tensor, ...], torch.Tensor]
Bilinear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# -- sub-protocols (used with ``yield from``) -------------------------------------------------


def masked(*pairs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``x - m`` for each ``(x, m)`` pair of equal shapes, back to back in one buffer.

    Opened together, they leave as one message without being copied into one first
    (:func:`kernel_bridge.owner.smpc_values.pack`).
    """
    flat = torch.empty(sum(x.numel() for x, _ in pairs), dtype=torch.int64)
    out, at = [], 0
    for x, m in pairs:
        if x.shape != m.shape:
            raise ShapeError(f"material of shape {tuple(m.shape)} for a share of shape "
                             f"{tuple(x.shape)}")
        view = flat[at:at + x.numel()].view(x.shape)
        out.append(elementwise.sub(x, m, out=view))
        at += x.numel()
    return tuple(out)


def beaver(party: int, x: torch.Tensor, y: torch.Tensor, m: Material, op: Bilinear) -> Gen:
    """Shares of ``op(x, y)`` for a bilinear ``op``, from a triple of the same ``op``. 1 round.

    The party's own material is used up in place (each triple serves one product);
    opened values are the parties' common answer and are only read.
    """
    d, e = yield Open(masked((x, m["a"]), (y, m["b"])))
    b = elementwise.add_(m["b"], e) if party == 0 else m["b"]
    if op is ring.ring_matmul and d.dim() == 2 and e.dim() == 2:
        # d @ b + a @ e as one product with a twice longer inner dimension.
        return m["c"].add_(ring.ring_matmul(torch.cat((d, m["a"]), 1), torch.cat((b, e), 0)))
    if op is torch.mul and d.shape == b.shape == m["a"].shape == e.shape == m["c"].shape:
        # c + d*b + a*e with no new memory: the products go into b and a (used up).
        return elementwise.add_(elementwise.add_(m["c"], elementwise.mul_(b, d)),
                                elementwise.mul_(m["a"], e))
    return m["c"] + op(d, b) + op(m["a"], e)


def truncate(party: int, x: torch.Tensor, m: Material, bits: int = fixed.FRAC_BITS) -> Gen:
    """Shares of ``x / 2^bits`` (within one ulp, see the module docstring). 1 round.

    Uses up the party's material in place; ``x`` and the opened value are only read.
    The dealer folded the public constants into the material (``r`` is shared as
    ``r - 2^62``, ``hi`` carries the ``+ 1 - 2^(62 - bits)`` and ``wrap`` is
    ``msb(r)`` already shifted), so no party adds anything of its own here.
    """
    u = elementwise.sub(x, m["r"], out=m["r"])  # shares of c = x + 2^62 - r
    (c,) = yield Open((u,))
    # out = hi - wrap * 2^(64 - bits) (+ c >>> bits for party 0), with the wrap of c + r
    # = msb(c) OR msb(r) and c public. Where msb(c) = 1 party 0's wrap share is 1 and
    # cancels the top bits an arithmetic shift of c sets, so for every party:
    #   out = hi - (msb(c) ? 0 : wrap share)  (+ (c >> bits), party 0)
    wrap = m["wrap"]
    # New memory for the result (it outlives the material's buffer), first used as scratch.
    out = torch.empty_like(c)
    torch.bitwise_right_shift(c, 63, out=out).bitwise_not_()  # all ones where msb(c) = 0
    wrap &= out  # (4x faster than masked_fill_)
    if party == 0:
        elementwise.add_(torch.bitwise_right_shift(c, bits, out=out), m["hi"])
        return elementwise.sub(out, wrap, out=out)
    return elementwise.sub(m["hi"], wrap, out=out)


def trunc_recipe(shape: Shape, bits: int = fixed.FRAC_BITS) -> Recipe:
    """The dealer recipe :func:`truncate` needs for a tensor of ``shape``."""
    return Recipe("trunc", (tuple(shape),), {"bits": int(bits)})


# -- shapes -----------------------------------------------------------------------------------


def _same(shapes: Shapes, params: Params) -> Shape:
    return shapes[0]


def _broadcast(shapes: Shapes, params: Params) -> Shape:
    try:
        return tuple(torch.broadcast_shapes(*shapes))  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        raise ShapeError(f"shapes {shapes} do not broadcast") from exc


def _matmul_shape(shapes: Shapes, params: Params) -> Shape:
    sx, sy = shapes
    if not sx or not sy:
        raise ShapeError("matmul needs at least 1-D operands")
    kx = sx[-1]
    ky = sy[0] if len(sy) == 1 else sy[-2]
    if kx != ky:
        raise ShapeError(f"matmul inner dimensions differ: {sx} @ {sy}")
    return tuple(torch.empty(sx, device="meta").matmul(torch.empty(sy, device="meta")).shape)


def _conv_shape(shapes: Shapes, params: Params) -> Shape:
    if int(params.get("groups", 1)) != 1:
        raise ShapeError("conv2d supports groups=1 only")
    try:
        return ring.conv2d_out_shape(shapes[0], shapes[1], params.get("stride", 1),
                                     params.get("padding", 0), params.get("dilation", 1))
    except ValueError as exc:
        raise ShapeError(str(exc)) from exc


def _sum_shape(shapes: Shapes, params: Params) -> Shape:
    dim, keep = params.get("dim"), bool(params.get("keepdim", False))
    t = torch.empty(shapes[0], device="meta")
    out = t.sum() if dim is None else t.sum(dim=dim, keepdim=keep)
    return tuple(out.shape)


# -- public operands --------------------------------------------------------------------------


def _public(value: Any) -> torch.Tensor:
    return fixed.as_float64(value)


def _is_integral(value: Any) -> bool:
    v = _public(value)
    return bool(torch.all(v == torch.round(v))) and (v.numel() == 0 or
                                                        float(v.abs().max()) < fixed.MAX_ABS)


def _div_plan(value: Any) -> tuple[str, int, int]:
    """How to divide by the public scalar ``value``: (``"mul"`` | ``"shift"``, multiplier, bits)."""
    c = float(_public(value).reshape(-1)[0]) if _public(value).numel() == 1 else math.nan
    if not math.isfinite(c) or c == 0:
        raise PrecisionError("division needs one finite, non-zero public number (a scalar)")
    if abs(c) <= 1:
        return ("mul", 0, fixed.FRAC_BITS)
    e = math.ceil(math.log2(abs(c)))
    bits = fixed.DIV_BITS + e
    if bits > 62:
        raise PrecisionError("division by a public number of magnitude >= 2**42 is not supported")
    return ("shift", round((1 << bits) / c), bits)


# -- programs ---------------------------------------------------------------------------------


def _add(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    return local_program(xs[0] + xs[1])


def _sub(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    return local_program(xs[0] - xs[1])


def _neg(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    return local_program(-xs[0])


def _sum(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    dim = p.get("dim")
    x = xs[0]
    return local_program(x.sum() if dim is None else x.sum(dim=dim,
                                                           keepdim=bool(p.get("keepdim"))))


def _add_public(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    v = fixed.encode(p["value"])
    return local_program(xs[0] + v if party == 0 else xs[0] + torch.zeros_like(v))


def _mul_public_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    if _is_integral(p["value"]):
        return []
    return [trunc_recipe(_broadcast((shapes[0], tuple(_public(p["value"]).shape)), p))]


def _mul_public(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    if _is_integral(p["value"]):
        return local_program(xs[0] * _public(p["value"]).to(torch.int64))
    return truncate(party, xs[0] * fixed.encode(p["value"]), m[0])


def _div_public_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    kind, _, bits = _div_plan(p["value"])
    return [trunc_recipe(shapes[0], bits)]


def _div_public(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    kind, mult, bits = _div_plan(p["value"])
    if kind == "mul":
        return truncate(party, xs[0] * fixed.encode(1.0 / float(_public(p["value"]))), m[0])
    return truncate(party, xs[0] * mult, m[0], bits)


def _mul_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    return [Recipe("mul", shapes[:2]), trunc_recipe(_broadcast(shapes, p))]


def _fixed_product(op: Bilinear) -> Callable[[int, int, Inputs, list[Material], Params], Gen]:
    def program(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
        z = yield from beaver(party, xs[0], xs[1], m[0], op)
        return (yield from truncate(party, z, m[1]))
    return program


def _matmul_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    return [Recipe("matmul", shapes[:2]), trunc_recipe(_matmul_shape(shapes, p))]


def _conv_params(p: Params) -> dict[str, Any]:
    return {k: p[k] for k in ("stride", "padding", "dilation") if k in p}


def _conv_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    return [Recipe("conv2d", shapes[:2], _conv_params(p)), trunc_recipe(_conv_shape(shapes, p))]


def _conv_program(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    q = _conv_params(p)

    def conv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ring.ring_conv2d(a, b, q.get("stride", 1), q.get("padding", 0),
                                q.get("dilation", 1))

    return _fixed_product(conv)(party, n, xs, m, p)


def _reshape(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    shape = _reshape_shape((tuple(xs[0].shape),), p)
    return local_program(xs[0].reshape(shape).clone())


def _reshape_shape(shapes: Shapes, p: Params) -> Shape:
    try:
        return tuple(torch.empty(shapes[0], device="meta").reshape(tuple(p["shape"])).shape)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ShapeError(f"cannot reshape {shapes[0]} to {p.get('shape')}") from exc


def _transpose(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    _transpose_shape((tuple(xs[0].shape),), p)
    return local_program(xs[0].transpose(int(p.get("dim0", 0)),
                                         int(p.get("dim1", 1))).contiguous())


def _transpose_shape(shapes: Shapes, p: Params) -> Shape:
    try:
        t = torch.empty(shapes[0], device="meta")
        return tuple(t.transpose(int(p.get("dim0", 0)), int(p.get("dim1", 1))).shape)
    except (RuntimeError, IndexError) as exc:
        raise ShapeError(f"cannot transpose {shapes[0]} with {p}") from exc


def _none(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    return []


SPECS = (
    OpSpec("add", 2, _none, _add, _broadcast, "0", "x + y"),
    OpSpec("sub", 2, _none, _sub, _broadcast, "0", "x - y"),
    OpSpec("neg", 1, _none, _neg, _same, "0", "-x"),
    OpSpec("sum", 1, _none, _sum, _sum_shape, "0", "x.sum(dim=None|int, keepdim=False)"),
    OpSpec("reshape", 1, _none, _reshape, _reshape_shape, "0", "x.reshape(shape)"),
    OpSpec("transpose", 1, _none, _transpose, _transpose_shape, "0",
           "x.transpose(dim0=0, dim1=1)"),
    OpSpec("add_public", 1, _none, _add_public,
           lambda s, p: _broadcast((s[0], tuple(_public(p["value"]).shape)), p), "0",
           "x + value (public number or tensor)"),
    OpSpec("mul_public", 1, _mul_public_recipes, _mul_public,
           lambda s, p: _broadcast((s[0], tuple(_public(p["value"]).shape)), p), "0 or 1",
           "x * value (public; exact and local for integers, truncated otherwise)"),
    OpSpec("div_public", 1, _div_public_recipes, _div_public, _same, "1",
           "x / value (public non-zero scalar)"),
    OpSpec("mul", 2, _mul_recipes, _fixed_product(torch.mul), _broadcast, "2",
           "x * y elementwise (Beaver + truncation)"),
    OpSpec("matmul", 2, _matmul_recipes, _fixed_product(ring.ring_matmul), _matmul_shape, "2",
           "x @ y (Beaver matrix triple + truncation)"),
    OpSpec("conv2d", 2, _conv_recipes, _conv_program, _conv_shape, "2",
           "conv2d(x, w, stride, padding, dilation) (Beaver conv triple + truncation)"),
)
