"""Encrypted vector × plain matrix by the diagonal method with baby-step giant-step.

The input ciphertext is made *periodic* first: its first ``P_in`` slots are
repeated over all slots (``log2(slots / P_in)`` rotations). For an ``m × n``
matrix ``M`` padded to ``P_out × Q`` (``P_out`` the output period and ``Q`` the
larger of the periods, both powers of two), the hybrid diagonal method of
Halevi and Shoup ("Algorithms in HElib", CRYPTO 2014, section 4.3; Juvekar et
al., "GAZELLE", USENIX Security 2018) computes::

    z = sum_{k < P_out} d_k ⊙ rot(x, k),   d_k[j] = M[j mod P_out, (j + k) mod Q]
    y = sum_{t < Q / P_out} rot(z, t P_out)            (log2(Q / P_out) rotations)

and every slot ``j`` of ``y`` holds ``(M x)[j mod P_out]``: the output is periodic
again (rows past ``m`` are zero), so layers chain without masks, and no slot
holds a partial sum that would tell the scientist more than ``M x``.
Baby-step giant-step (``k = g i + b``) needs ``g - 1`` baby and
``P_out / g - 1`` giant rotations instead of ``P_out - 1``, with the giant
rotations folded into the (pre-rotated) diagonals. A 784 × 10 matrix costs
2 + 3 + 3 + 6 = 14 rotations and 16 plaintext products at N = 8192.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .seal import Evaluator

__all__ = ["PlainLinear", "period_of"]


def period_of(n: int) -> int:
    """The power of two at least ``n`` (the period a length-``n`` vector is packed in)."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


class PlainLinear:
    """A plain affine map ``x ↦ W x + b`` applied to a periodic encrypted vector.

    Parameters
    ----------
    weight : array of shape (m, n)
        The matrix (rows are outputs, as ``torch.nn.Linear.weight``).
    bias : array of shape (m,), optional
        Added to the output.
    slots : int
        Slots per ciphertext of the context it will run under.
    input_factor : float, optional
        Multiplies the weights (not the bias): ``1 / copies`` undoes the
        periodisation of an input that already repeated ``copies`` times.

    Raises
    ------
    ValueError
        The padded matrix does not fit in one ciphertext.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, slots: int,
                 input_factor: float = 1.0) -> None:
        w = np.asarray(weight, dtype=float) * input_factor
        if w.ndim != 2:
            raise ValueError("a linear map needs a 2-d weight")
        self.m, self.n = w.shape
        self.p_in, self.p_out = period_of(self.n), period_of(self.m)
        self.q = max(self.p_in, self.p_out)
        if self.q > slots:
            raise ValueError(f"a {self.m}x{self.n} map needs {self.q} slots; "
                             f"the context has {slots}")
        self.slots = slots
        padded = np.zeros((self.p_out, self.q))
        padded[:self.m, :self.n] = w
        self.g = 1 << (int(math.log2(self.p_out)) // 2)  # baby steps: about sqrt(P_out)
        reps = slots // self.q
        j = np.arange(self.q)
        self.diagonals: list[np.ndarray] = []
        for k in range(self.p_out):
            d = np.tile(padded[j % self.p_out, (j + k) % self.q], reps)
            giant = (k // self.g) * self.g
            self.diagonals.append(np.roll(d, giant))  # pre-rotated by -giant
        b = np.zeros(self.p_out)
        if bias is not None:
            b[:self.m] = np.asarray(bias, dtype=float)
        self.bias = np.tile(b, slots // self.p_out) if bias is not None else None
        self._plains: dict[tuple[Any, ...], list[Any]] = {}

    @property
    def rotations(self) -> int:
        """Rotations one application costs (input already periodic)."""
        giants = self.p_out // self.g - 1
        return (self.g - 1) + giants + int(math.log2(self.q // self.p_out))

    def _encoded(self, ev: Evaluator, ct: Any, scale: float) -> list[Any]:
        key = (id(ev), tuple(ct.parms_id()), scale)
        plains = self._plains.get(key)
        if plains is None:
            plains = [ev.encode(d, ct, scale) if d.any() else None for d in self.diagonals]
            if len(self._plains) > 8:
                self._plains.clear()
            self._plains[key] = plains
        return plains

    def apply(self, ev: Evaluator, x: Any) -> Any:
        """``W x + b`` for ``x`` periodic with period ``P_in``; the result has period ``P_out``.

        Consumes one level; keeps ``x``'s scale.
        """
        scale = float(x.scale)
        q_drop = ev.last_prime(x)
        plains = self._encoded(ev, x, q_drop)
        babies = [x] + [ev.rotate(x, b) for b in range(1, self.g)]
        total = None
        for giant in range(0, self.p_out, self.g):
            inner = None
            for b in range(self.g):
                if plains[giant + b] is None:
                    continue  # a zero diagonal (SEAL refuses products that are all zero)
                term = ev.mul_encoded(babies[b], plains[giant + b])
                inner = term if inner is None else ev.sum(inner, term)
            if inner is None:
                continue
            rotated = ev.rotate(inner, giant)
            total = rotated if total is None else ev.sum(total, rotated)
        if total is None:
            raise ValueError("the matrix is zero")
        z = ev.rescale(total, scale)
        y = ev.fold(z, self.p_out, self.q)
        if self.bias is not None:
            y = ev.add_plain(y, self.bias)
        return y
