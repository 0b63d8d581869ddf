"""The registry of SMPC operations: ``OPS[name]`` is an :class:`~.spec.OpSpec`.

=============  =====  ========================================================
op             in     what (rounds; see :mod:`.arith`, :mod:`.compare`)
=============  =====  ========================================================
add, sub       2      x + y, x - y (local)
neg            1      -x (local)
sum            1      sum over ``dim`` (local); params ``dim``, ``keepdim``
reshape        1      x.reshape(``shape``) (local)
transpose      1      x.transpose(``dim0``, ``dim1``) (local)
add_public     1      x + ``value`` (local)
mul_public     1      x * ``value`` (local if integral, else 1 round)
div_public     1      x / ``value`` (public non-zero scalar; 1 round)
mul            2      x * y (Beaver + truncation; 2 rounds)
matmul         2      x @ y (2 rounds)
conv2d         2      conv2d(x, w; ``stride``, ``padding``, ``dilation``) (2 rounds)
ltz, gtz       1      [x < 0], [x > 0] as 0.0/1.0 (7(n-1)+1 rounds)
lt, gt         2      [x < y], [x > y] as 0.0/1.0
relu           1      max(x, 0) (7(n-1)+2 rounds)
max, argmax    1      over ``dim`` (None: all); argmax as a fixed-point index
=============  =====  ========================================================

Every op works for any number ``n >= 2`` of computing parties. Inputs and
outputs are fixed-point shares (:mod:`.fixed`).
"""

from __future__ import annotations

from . import arith, compare
from .errors import UnsupportedOp
from .spec import OpSpec

#: Every operation, by name.
OPS: dict[str, OpSpec] = {s.name: s for s in (*arith.SPECS, *compare.SPECS)}


def get(name: str) -> OpSpec:
    """The :class:`OpSpec` named ``name``; :class:`UnsupportedOp` when there is none."""
    spec = OPS.get(name)
    if spec is None:
        raise UnsupportedOp(f"no SMPC operation named {name!r}", op=name)
    return spec
