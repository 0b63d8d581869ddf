"""The scientist's CKKS context: keys made locally, only the public part ever sent.

:func:`context` picks parameters for a computation's multiplicative depth
(:mod:`.params`), generates the keys (secret, public, relinearisation and Galois
keys) and measures the precision those parameters give: it encrypts random
values in [-1, 1], runs ``depth`` plaintext products through the same code the
worker uses (:class:`~.seal.Evaluator`) and decrypts. :attr:`Context.precision`
reports the largest absolute error seen and ``-log2`` of it in bits.

:meth:`Context.public` serializes the context *without its secret key*; that is
the only form that leaves the scientist's process.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from ..wire.sealed import HEContextBytes
from .params import HEParameters, for_depth

__all__ = ["Context", "context"]


class Context:
    """A CKKS context holding the scientist's secret key (it never leaves this object).

    Made by :func:`context`. Attributes: ``params`` (:class:`~.params.HEParameters`)
    and ``precision`` (``{"max_abs_error", "bits", "depth"}``).
    """

    def __init__(self, tenseal_context: Any, params: HEParameters) -> None:
        self.tenseal = tenseal_context
        self.params = params
        self.precision: dict[str, float] = {}
        self._public: HEContextBytes | None = None
        self._id: str | None = None

    def __repr__(self) -> str:
        p = self.params
        bits = self.precision.get("bits")
        prec = f", ~{bits:.0f} bits" if bits is not None else ""
        return (f"<HE context CKKS N={p.poly_modulus_degree} moduli={list(p.coeff_mod_bit_sizes)} "
                f"scale=2^{p.scale_bits} depth={p.depth}{prec}>")

    @property
    def slots(self) -> int:
        """Values one ciphertext holds."""
        return self.params.slots

    def public(self) -> HEContextBytes:
        """The context without its secret key (public, relinearisation and Galois keys)."""
        if self._public is None:
            data = self.tenseal.serialize(save_public_key=True, save_secret_key=False,
                                          save_galois_keys=True, save_relin_keys=True)
            self._public = HEContextBytes(data)
        return self._public

    @property
    def id(self) -> str:
        """A short digest of the public context (how a worker names it)."""
        if self._id is None:
            self._id = context_id(self.public().data)
        return self._id


def context_id(public: bytes) -> str:
    """The id a worker and a client both give a public context: its SHA-256, 32 hex digits."""
    return hashlib.sha256(public).hexdigest()[:32]


def context(depth: int = 3, min_slots: int = 0, scale_bits: int | None = None,
            measure: bool = True) -> Context:
    """Make a CKKS context (and its keys) for a computation of multiplicative depth ``depth``.

    Parameters
    ----------
    depth : int
        Multiplications on the longest path of what will be computed: a linear
        model's dot product is 1, a two-layer MLP with a square activation 3
        (two plaintext products and one square), an encrypted evaluation 3.
    min_slots : int, optional
        Fewest values one ciphertext must hold.
    scale_bits : int, optional
        Force the encoding scale (bits); by default the largest that fits.
    measure : bool
        Measure the precision the parameters give (about 20 ms).

    Returns
    -------
    Context
    """
    import tenseal as ts

    params = for_depth(depth, min_slots, scale_bits)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    ctx.global_scale = 2.0 ** params.scale_bits
    ctx.generate_galois_keys()
    out = Context(ctx, params)
    if measure:
        out.precision = measure_precision(out)
    return out


def measure_precision(ctx: Context, seed: int = 0) -> dict[str, float]:
    """Largest absolute error of ``depth`` plaintext products on values in [-1, 1]."""
    import tenseal as ts

    from .seal import Evaluator

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, ctx.slots)
    ev = Evaluator(ctx.tenseal)
    ct, _ = ev.load(ts.ckks_vector(ctx.tenseal, x.tolist()).serialize())
    expected = x.copy()
    for _ in range(ctx.params.depth):
        factor = rng.uniform(-1, 1, ctx.slots)
        ct = ev.mul_plain(ct, factor)
        expected *= factor
    got = np.asarray(ts.ckks_vector_from(ctx.tenseal, ev.dump(ct, ctx.slots)).decrypt())
    err = float(np.max(np.abs(got - expected)))
    return {"max_abs_error": err, "bits": -math.log2(max(err, 2.0**-60)),
            "depth": float(ctx.params.depth)}
