"""Encrypted evaluation of a scientist's linear model on an owner's rows, with DP noise.

The scientist sends ``θ = (w_1, ..., w_d, b)`` encrypted. The owner's trusted
code holds rows ``x_i`` scaled into [0, 1]^d by the declared column bounds
(clipped), labels ``y_i`` in [0, 1], and computes, all under encryption::

    s_i = θ · (x_i, 1)                                   (one plaintext product, a fold)
    S   = Σ_i (s_i − y_i)²                               (a square, a masked fold)
    out = (S + (c ‖θ‖² + c0) · Z) / n̂,   c = 2 (d + 1), c0 = 2

``Z`` is Laplace noise of scale ``1 / ε_sum`` drawn by the worker (OpenDP) and
``n̂`` the row count (exact if the owner shows it, else a DP count). Why this is
ε-DP for any θ: with ``x_i ∈ [0, 1]^d``, ``|s_i| ≤ ‖θ‖₁ ≤ √(d+1) ‖θ‖₂``, so one
row adds at most ``(s_i − y_i)² ≤ 2 s_i² + 2 y_i² ≤ c ‖θ‖² + c0 = Δ_θ`` to ``S``.
For the θ the scientist chose (independently of the data), ``S + Δ_θ Z`` is the
Laplace mechanism with scale ``Δ_θ / ε_sum``: the noise grows with the weights,
so scaling θ up to amplify one row's features buys nothing. ``‖θ‖²`` is
computed under encryption; the worker never learns θ, nor Δ_θ.

Rows are packed ``P = period_of(d + 1)`` slots each (``slots / P`` rows per
ciphertext, more rows take more ciphertexts); the depth is 3 (the product, the
square, the mask that also divides by ``n̂`` and carries the noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .linear import period_of
from .seal import Evaluator

__all__ = ["DEPTH", "evaluate_mse", "row_bound"]

#: Levels an evaluation uses.
DEPTH = 3


def row_bound(norm_sq: float, d: int) -> float:
    """Δ_θ: the most one row adds to the sum of squared errors, for ``‖θ‖² = norm_sq``."""
    return 2.0 * (d + 1) * norm_sq + 2.0


def evaluate_mse(ev: Evaluator, theta: Any, x: np.ndarray, y: np.ndarray, noise: float,
                 n_hat: float) -> Any:
    """The noisy mean squared error of ``θ`` on ``(x, y)``, encrypted.

    Parameters
    ----------
    ev : Evaluator
        Under the scientist's public context (depth ≥ 3).
    theta : ciphertext
        ``(w, b)``: ``d + 1`` values, zero-padded to a power of two and repeated
        (as :func:`kernel_bridge.he.encrypt` packs them).
    x : array of shape (n, d)
        Rows scaled into [0, 1] (the caller clips).
    y : array of shape (n,)
        Labels in [0, 1].
    noise : float
        ``Z``, a Laplace draw of scale ``1 / ε_sum`` (from trusted code).
    n_hat : float
        The row count to divide by (at least 1).

    Returns
    -------
    ciphertext
        Every slot holds ``(S + Δ_θ Z) / n̂``.
    """
    n, d = x.shape
    p = period_of(d + 1)
    slots = ev.slots
    per = slots // p
    # θ repeated with period p; an input that already repeats is summed k = slots/p times,
    # which the plaintexts below undo.
    th = ev.periodize(theta, p)
    k = slots / p
    terms = []
    for start in range(0, n, per):
        xs, ys = x[start:start + per], y[start:start + per]
        rows = np.zeros((per, p))
        rows[:len(xs), :d] = xs
        rows[:len(xs), d] = 1.0
        prod = ev.mul_plain(th, rows.ravel() / k)          # s_i spread over the row's block
        s = ev.fold(prod, 1, p)                         # slot i p: s_i
        target = np.zeros((per, p))
        target[:len(ys), 0] = ys
        r = ev.square(ev.sub_plain(s, target.ravel()))  # slot i p: (s_i − y_i)²
        weights = np.zeros((per, p))
        weights[:len(ys), 0] = 1.0 / n_hat
        terms.append((r, weights.ravel()))
    out_scale = float(terms[0][0].scale)
    total = None
    for r, weight in terms:
        part = ev.mul_plain(r, weight, out_scale=out_scale)
        total = part if total is None else ev.add(total, part)
    # ‖θ‖² times c Z / n̂, in the first block only, at the same level and scale.
    # (θ/k)² at level 2: its spare level keeps the tiny factor k out of the encoded noise.
    sq = ev.square(ev.mul_plain(th, 1.0 / k)) if noise else None
    first = np.zeros(slots)
    first[:d + 1] = 2.0 * (d + 1) * noise / n_hat
    if noise:
        total = ev.add(total, ev.mul_plain(ev.to_level(sq, ev.level(terms[0][0])), first,
                                           out_scale=out_scale))
    total = ev.fold(total, 1, slots)
    total = ev.add_plain(total, 2.0 * noise / n_hat)
    return ev.rerandomize(total)
