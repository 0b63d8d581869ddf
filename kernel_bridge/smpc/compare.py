"""Comparison, ReLU, max and argmax: arithmetic-to-binary conversion with a Kogge-Stone adder.

Protocol (ABY, Demmler, Schneider, Zohner, NDSS 2015; as in CrypTen, Knott et
al., NeurIPS 2021, with a dealer in the role of CrypTen's trusted first party):

1. **A2B**: the arithmetic shares ``x_0, ..., x_{n-1}`` of ``x`` (``x = sum x_i
   mod 2^64``) are each a binary-shared 64-bit number held by one party
   (party ``i`` holds ``x_i``, the others 0). They are added with ``n - 1``
   Kogge-Stone carry-lookahead adders over binary shares: generate ``G = a & b``
   and propagate ``P = a ^ b``, then six prefix steps ``G ^= P & (G << k)``,
   ``P &= P << k`` (``k = 1, 2, ..., 32``), sum ``= a ^ b ^ (G << 1)``. Every
   AND is a Beaver AND on 64 packed bits with a dealer AND triple; XOR and
   shifts are local. 7 rounds per adder.
2. The sign bit ``msb(x)`` is ``[x < 0]`` for ``|x| < 2^63``.
3. **B2A** of that bit with a dealer *daBit* (a random bit ``r`` shared both
   XOR-wise and additively): open ``c = msb ^ r``, then ``b = c + r - 2cr``
   is linear in the additive shares of ``r``. 1 round.

``ltz`` therefore costs ``7(n - 1) + 1`` rounds and opens only values masked by
dealer randomness (uniform bits). It works for any ``n >= 2`` parties. ReLU is
``x * (1 - [x < 0])`` with one more Beaver round (the bit is an integer, no
truncation); ``max``/``argmax`` are a tree of comparisons (``ceil(log2 L)``
levels of one comparison and one Beaver multiplication each).

Outputs of ``ltz``/``gtz``/``gt``/``lt`` are fixed-point encoded 0.0/1.0;
``argmax`` returns the index as a fixed-point number (the first maximum's index
is not guaranteed on ties: any index of a maximal element may come out).
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from . import fixed
from .arith import _broadcast, beaver
from .engine import Material, Open, Recipe
from .errors import ShapeError
from .spec import Inputs, OpSpec, Params, Shape, Shapes

Gen = Generator[Open, tuple[torch.Tensor, ...], torch.Tensor]

#: AND slots of one Kogge-Stone adder: G, then 5 x (G, P), then G.
ANDS_PER_ADDER = 12
_STEPS = (1, 2, 4, 8, 16, 32)


class _Ands:
    """A party's AND triples, used slot by slot."""

    def __init__(self, m: Material, needed: int) -> None:
        if m["a"].shape[0] < needed:
            raise ShapeError("comparison material was made for another number of parties")
        self.m = m
        self.next = 0

    def take(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = slice(self.next, self.next + k)
        self.next += k
        return self.m["a"][s], self.m["b"][s], self.m["c"][s]


def _and(party: int, xs: list[torch.Tensor], ys: list[torch.Tensor], ands: _Ands) -> Generator[
        Open, tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """Beaver ANDs of XOR-shared 64-bit words, all in one round."""
    k = len(xs)
    a, b, c = ands.take(k)
    x, y = torch.stack(xs), torch.stack(ys)
    d, e = yield Open((x ^ a, y ^ b), "xor")
    z = c ^ (d & b) ^ (e & a)
    if party == 0:
        z = z ^ (d & e)
    return list(z.unbind(0))


def _adder(party: int, a: torch.Tensor, b: torch.Tensor, ands: _Ands) -> Gen:
    """Binary shares of ``a + b mod 2^64`` (Kogge-Stone). 7 rounds."""
    p0 = a ^ b
    (g,) = yield from _and(party, [a], [b], ands)
    p = p0
    for k in _STEPS:
        if k < 32:
            t_g, p = yield from _and(party, [p, p], [g << k, p << k], ands)
        else:
            (t_g,) = yield from _and(party, [p], [g << k], ands)
        g = g ^ t_g
    return p0 ^ (g << 1)


def ltz_bit(party: int, n: int, x: torch.Tensor, m_and: Material, m_dabit: Material) -> Gen:
    """Additive shares of the integer bit ``[x < 0]`` (0 or 1). ``7(n-1) + 1`` rounds."""
    ands = _Ands(m_and, ANDS_PER_ADDER * (n - 1))
    zero = torch.zeros_like(x)
    acc = x if party == 0 else zero
    for j in range(1, n):
        acc = yield from _adder(party, acc, x if party == j else zero, ands)
    msb = (acc >> 63) & 1
    (c,) = yield Open((msb ^ m_dabit["bin"],), "xor")
    c = c & 1
    r = m_dabit["arith"]
    bit = r - 2 * c * r
    return bit + c if party == 0 else bit


def ltz_recipes(shape: Shape, n: int) -> list[Recipe]:
    """Dealer recipes of one :func:`ltz_bit` over a tensor of ``shape`` among ``n`` parties."""
    return [Recipe("and", ((ANDS_PER_ADDER * (n - 1), *shape),)), Recipe("dabit", (shape,))]


def _check_n(n: int) -> None:
    if n < 2:
        raise ShapeError("comparison needs at least two parties")


# -- ops --------------------------------------------------------------------------------------


def _cmp_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    return ltz_recipes(_broadcast(shapes, p), n)


def _fixed_bit(bit: torch.Tensor) -> torch.Tensor:
    return bit << fixed.FRAC_BITS


def _ltz(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    _check_n(n)
    return _fixed_bit((yield from ltz_bit(party, n, xs[0], m[0], m[1])))


def _gtz(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    _check_n(n)
    return _fixed_bit((yield from ltz_bit(party, n, -xs[0], m[0], m[1])))


def _lt(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    _check_n(n)
    return _fixed_bit((yield from ltz_bit(party, n, xs[0] - xs[1], m[0], m[1])))


def _gt(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    _check_n(n)
    return _fixed_bit((yield from ltz_bit(party, n, xs[1] - xs[0], m[0], m[1])))


def _relu_recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
    s = shapes[0]
    return [*ltz_recipes(s, n), Recipe("mul", (s, s))]


def _relu(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
    _check_n(n)
    x = xs[0]
    neg = yield from ltz_bit(party, n, x, m[0], m[1])
    keep = (1 - neg) if party == 0 else -neg
    return (yield from beaver(party, x, keep, m[2], torch.mul))


# -- max / argmax: a tree of comparisons ------------------------------------------------------


def _flat_last(shape: Shape, p: Params) -> tuple[Shape, int]:
    """(shape of the batch, length of the reduced dim) after moving ``dim`` last."""
    dim = p.get("dim")
    if dim is None:
        return ((), max(1, int(torch.Size(shape).numel())))
    if not shape:
        raise ShapeError("max/argmax over a dim of a 0-d tensor")
    d = int(dim) % len(shape)
    if shape[d] == 0:
        raise ShapeError("max/argmax of an empty dimension")
    return (tuple(s for i, s in enumerate(shape) if i != d), shape[d])


def _levels(length: int) -> list[int]:
    """Pairs compared at each level of the tree, from ``length`` down to 1."""
    out = []
    while length > 1:
        out.append(length // 2)
        length = length // 2 + length % 2
    return out


def _move_last(x: torch.Tensor, p: Params) -> torch.Tensor:
    dim = p.get("dim")
    return x.reshape(-1) if dim is None else x.movedim(int(dim), -1)


def _tree_recipes(with_index: bool) -> object:
    def recipes(shapes: Shapes, p: Params, n: int) -> list[Recipe]:
        batch, length = _flat_last(shapes[0], p)
        out: list[Recipe] = []
        for h in _levels(length):
            s = (*batch, h)
            out += ltz_recipes(s, n)
            out.append(Recipe("mul", (((2, *s) if with_index else s), s)))
        return out
    return recipes


def _tree(with_index: bool) -> object:
    def program(party: int, n: int, xs: Inputs, m: list[Material], p: Params) -> Gen:
        _check_n(n)
        x = _move_last(xs[0], p)
        length = x.shape[-1]
        idx = torch.arange(length, dtype=torch.int64) << fixed.FRAC_BITS
        idx = (idx if party == 0 else torch.zeros_like(idx)).expand(x.shape).contiguous()
        k = 0
        for h in _levels(length):
            a, b = x[..., 0:2 * h:2], x[..., 1:2 * h:2]
            ia, ib = idx[..., 0:2 * h:2], idx[..., 1:2 * h:2]
            lt = yield from ltz_bit(party, n, a - b, m[k], m[k + 1])  # [a < b]
            if with_index:
                diff = torch.stack((b - a, ib - ia))
                t = yield from beaver(party, diff, lt, m[k + 2], torch.mul)
                x_new, i_new = a + t[0], ia + t[1]
            else:
                x_new = a + (yield from beaver(party, b - a, lt, m[k + 2], torch.mul))
                i_new = ia
            if length % 2:
                x_new = torch.cat((x_new, x[..., -1:]), -1)
                i_new = torch.cat((i_new, idx[..., -1:]), -1)
            x, idx, length = x_new, i_new, x_new.shape[-1]
            k += 3
        return (idx if with_index else x)[..., 0]
    return program


def _reduce_shape(shapes: Shapes, p: Params) -> Shape:
    return _flat_last(shapes[0], p)[0]


SPECS = (
    OpSpec("ltz", 1, _cmp_recipes, _ltz, _broadcast, "7(n-1)+1", "[x < 0] as 0.0/1.0"),
    OpSpec("gtz", 1, _cmp_recipes, _gtz, _broadcast, "7(n-1)+1", "[x > 0] as 0.0/1.0"),
    OpSpec("lt", 2, _cmp_recipes, _lt, _broadcast, "7(n-1)+1", "[x < y] as 0.0/1.0"),
    OpSpec("gt", 2, _cmp_recipes, _gt, _broadcast, "7(n-1)+1", "[x > y] as 0.0/1.0"),
    OpSpec("relu", 1, _relu_recipes, _relu, lambda s, p: s[0], "7(n-1)+2", "max(x, 0)"),
    OpSpec("max", 1, _tree_recipes(False), _tree(False), _reduce_shape,  # type: ignore[arg-type]
           "(7(n-1)+2) * ceil(log2 L)", "x.max(dim=None|int) (values)"),
    OpSpec("argmax", 1, _tree_recipes(True), _tree(True), _reduce_shape,  # type: ignore[arg-type]
           "(7(n-1)+2) * ceil(log2 L)", "x.argmax(dim=None|int) as a fixed-point index"),
)
