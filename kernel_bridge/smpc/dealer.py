"""The dealer: correlated randomness made from public recipes, before the online phase.

The dealer (an independent worker that holds no data of the computation) turns
each :class:`~.engine.Recipe` into one :data:`~.engine.Material` per party. A
recipe carries only public shapes and parameters, so the dealer never sees a
share of the data. All randomness comes from :mod:`.prng` (ChaCha20).

Kinds (``Recipe.kind``), their shapes and the named tensors of each party's part:

``mul``     ``(sx, sy)``: Beaver triple ``a``, ``b``, ``c = a * b`` (broadcast).
``matmul``  ``(sx, sy)``: ``a``, ``b``, ``c = a @ b`` (mod 2^64).
``conv2d``  ``(sx, sw)`` + ``stride/padding/dilation``: ``a``, ``b``, ``c = conv2d(a, b)``.
``trunc``   ``(s,)`` + ``bits``: for a uniform ``r``, ``r - 2^62`` (as ``r``),
            ``(r >>> bits) + 1 - 2^(62 - bits)`` (as ``hi``; ``>>>`` is the logical
            shift of ``r`` read unsigned) and ``msb(r) * 2^(64 - bits)`` (as
            ``wrap``), all additively shared (see :func:`.arith.truncate`: the
            public offsets ride on the material, so the online phase adds none).
``and``     ``(s,)``: binary (XOR-shared) 64-bit triples ``a``, ``b``, ``c = a & b``.
``dabit``   ``(s,)``: a random bit ``r`` shared twice: ``bin`` (XOR) and ``arith`` (additive).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import ring
from .engine import Material, Recipe
from .errors import UnsupportedOp
from .prng import Stream
from .sharing import share, share_xor

Maker = Callable[[Recipe, int, Stream], list[Material]]

#: What truncation adds to its input before opening it (``x + 2^62`` is in
#: ``[0, 2^63)`` for every ``|x| < 2^62``, see :func:`.arith.truncate`).
TRUNC_OFFSET = 1 << 62

_MAKERS: dict[str, Maker] = {}


def _maker(kind: str) -> Callable[[Maker], Maker]:
    def register(fn: Maker) -> Maker:
        _MAKERS[kind] = fn
        return fn
    return register


def _split(named: dict[str, torch.Tensor], n: int, stream: Stream,
           xor: frozenset[str] = frozenset()) -> list[Material]:
    parts: list[Material] = [{} for _ in range(n)]
    for name, value in named.items():
        shares = (share_xor if name in xor else share)(value, n, stream)
        for p in range(n):
            parts[p][name] = shares[p]
    return parts


@_maker("mul")
def _mul(recipe: Recipe, n: int, stream: Stream) -> list[Material]:
    sx, sy = recipe.shapes
    a, b = stream.ring(sx), stream.ring(sy)
    return _split({"a": a, "b": b, "c": a * b}, n, stream)


@_maker("matmul")
def _matmul(recipe: Recipe, n: int, stream: Stream) -> list[Material]:
    sx, sy = recipe.shapes
    a, b = stream.ring(sx), stream.ring(sy)
    return _split({"a": a, "b": b, "c": ring.ring_matmul(a, b)}, n, stream)


@_maker("conv2d")
def _conv2d(recipe: Recipe, n: int, stream: Stream) -> list[Material]:
    sx, sw = recipe.shapes
    p = recipe.params
    a, b = stream.ring(sx), stream.ring(sw)
    c = ring.ring_conv2d(a, b, p.get("stride", 1), p.get("padding", 0), p.get("dilation", 1))
    return _split({"a": a, "b": b, "c": c}, n, stream)


@_maker("trunc")
def _trunc(recipe: Recipe, n: int, stream: Stream) -> list[Material]:
    (s,) = recipe.shapes
    bits = int(recipe.params["bits"])
    if not 0 < bits < 63:
        raise UnsupportedOp(f"truncation by {bits} bits (1 to 62 are possible)", bits=bits)
    r = stream.ring(s)
    hi = ((r >> bits) & ((1 << (64 - bits)) - 1)) + (1 - (1 << (62 - bits)))
    wrap = ((r >> 63) & 1) << (64 - bits)
    return _split({"r": r - TRUNC_OFFSET, "hi": hi, "wrap": wrap}, n, stream)


@_maker("and")
def _and(recipe: Recipe, n: int, stream: Stream) -> list[Material]:
    (s,) = recipe.shapes
    a, b = stream.ring(s), stream.ring(s)
    return _split({"a": a, "b": b, "c": a & b}, n, stream, xor=frozenset("abc"))


@_maker("dabit")
def _dabit(recipe: Recipe, n: int, stream: Stream) -> list[Material]:
    (s,) = recipe.shapes
    r = stream.bits(s)
    return _split({"bin": r, "arith": r}, n, stream, xor=frozenset({"bin"}))


KINDS = tuple(_MAKERS)


def make(recipe: Recipe, n_parties: int, stream: Stream | None = None) -> list[Material]:
    """Make the material of one recipe: one :data:`Material` per party.

    Parameters
    ----------
    recipe : Recipe
        Public kind, shapes and parameters (see the module docstring).
    n_parties : int
        Number of computing parties (``>= 2``).
    stream : Stream, optional
        Randomness; a fresh ChaCha20 key from ``os.urandom`` when omitted.

    Returns
    -------
    list of Material
        Party ``p``'s part at index ``p``.

    Raises
    ------
    UnsupportedOp
        The recipe's kind is not one the dealer knows.
    """
    maker = _MAKERS.get(recipe.kind)
    if maker is None:
        raise UnsupportedOp(f"the dealer makes no material of kind {recipe.kind!r}",
                            kind=recipe.kind)
    if n_parties < 2:
        raise UnsupportedOp("SMPC needs at least two computing parties", n=n_parties)
    return maker(recipe, n_parties, stream or Stream())


def make_all(recipes: list[Recipe], n_parties: int,
             stream: Stream | None = None) -> list[list[Material]]:
    """Material of several recipes, grouped per party: ``out[party][recipe_index]``."""
    stream = stream or Stream()
    per_recipe = [make(r, n_parties, stream) for r in recipes]
    return [[m[p] for m in per_recipe] for p in range(n_parties)]
