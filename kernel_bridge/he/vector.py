"""Encrypted vectors on the scientist's side: ``kb.he.encrypt`` and ``kb.he.decrypt``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..wire.sealed import HEVectorBytes
from .context import Context
from .linear import period_of

__all__ = ["EncryptedVector", "decrypt", "encrypt"]


class EncryptedVector:
    """A CKKS-encrypted vector and the context (with secret key) that decrypts it.

    Attributes
    ----------
    context : Context
        The scientist's context.
    size : int
        Values it holds.
    """

    def __init__(self, context: Context, vector: Any, size: int) -> None:
        self.context = context
        self.vector = vector
        self.size = size

    def __repr__(self) -> str:
        n = self.context.params.poly_modulus_degree
        return f"<EncryptedVector of {self.size} values (CKKS, N={n})>"

    def __len__(self) -> int:
        return self.size

    def to_wire(self) -> HEVectorBytes:
        """The ciphertext as it travels (no key in it)."""
        return HEVectorBytes(self.vector.serialize())

    @classmethod
    def from_wire(cls, context: Context, value: HEVectorBytes, size: int | None = None
                  ) -> EncryptedVector:
        """A vector a worker sent back, linked to the context that decrypts it."""
        import tenseal as ts

        vec = ts.ckks_vector_from(context.tenseal, value.data)
        return cls(context, vec, vec.size() if size is None else size)

    def decrypt(self) -> np.ndarray:
        """The plaintext values (float64)."""
        return np.asarray(self.vector.decrypt(), dtype=float)[:self.size]


def encrypt(ctx: Context, x: Any, pad: bool = True) -> EncryptedVector:
    """Encrypt a vector under ``ctx``'s public key.

    Parameters
    ----------
    ctx : Context
        From :func:`kernel_bridge.he.context`.
    x : array-like of float, 1-d (or anything ``numpy.ravel`` flattens)
        The values.
    pad : bool
        Pad with zeros to a power of two: the layout the worker's evaluation
        expects (the vector is then repeated over all slots).

    Returns
    -------
    EncryptedVector
    """
    import tenseal as ts

    values = np.ravel(np.asarray(x, dtype=float))
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot encrypt nan or inf")
    n = len(values)
    if n == 0 or n > ctx.slots:
        raise ValueError(f"a vector of 1 to {ctx.slots} values fits one ciphertext")
    if pad:
        padded = np.zeros(period_of(n))
        padded[:n] = values
        values = padded
    return EncryptedVector(ctx, ts.ckks_vector(ctx.tenseal, values.tolist()), n)


def decrypt(enc: EncryptedVector) -> np.ndarray:
    """Decrypt with the secret key of the context ``enc`` was made under.

    Parameters
    ----------
    enc : EncryptedVector
        Or anything holding one as ``.ciphertext`` (an encrypted evaluation's result).

    Returns
    -------
    numpy.ndarray
        The values (float64), ``enc.size`` of them.
    """
    vec = getattr(enc, "ciphertext", enc)
    if not isinstance(vec, EncryptedVector):
        raise TypeError("kb.he.decrypt takes an encrypted vector")
    return vec.decrypt()
