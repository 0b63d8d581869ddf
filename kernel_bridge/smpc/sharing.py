"""Additive (mod 2^64) and binary (XOR) secret sharing among ``n`` parties.

``share(s, n)`` draws ``n - 1`` uniform ring elements as the shares of parties
``1..n-1`` and gives party 0 ``s`` minus their sum: any ``n - 1`` shares are
uniform and independent of ``s``. The XOR form does the same with XOR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .prng import Stream


def _check(secret: torch.Tensor, n: int) -> None:
    if secret.dtype != torch.int64:
        raise TypeError("shares are int64 ring elements; encode reals with fixed.encode")
    if n < 2:
        raise ValueError("secret sharing needs at least two parties")


def share(secret: torch.Tensor, n: int, stream: Stream | None = None) -> list[torch.Tensor]:
    """Additive shares of ``secret`` (``int64``) for ``n`` parties.

    Parameters
    ----------
    secret : torch.Tensor
        ``int64`` ring elements.
    n : int
        Number of parties (``>= 2``).
    stream : Stream, optional
        Randomness (a fresh CSPRNG key when omitted).

    Returns
    -------
    list of torch.Tensor
        ``n`` tensors whose sum mod 2^64 is ``secret``.
    """
    _check(secret, n)
    stream = stream or Stream()
    rest = [stream.ring(secret.shape) for _ in range(n - 1)]
    first = secret.clone()
    for r in rest:
        first -= r
    return [first, *rest]


def reconstruct(shares: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum mod 2^64 of additive shares."""
    out = shares[0].clone()
    for s in shares[1:]:
        out += s
    return out


def share_xor(secret: torch.Tensor, n: int, stream: Stream | None = None) -> list[torch.Tensor]:
    """Binary (XOR) shares of ``secret`` (``int64`` bit vectors) for ``n`` parties."""
    _check(secret, n)
    stream = stream or Stream()
    rest = [stream.ring(secret.shape) for _ in range(n - 1)]
    first = secret.clone()
    for r in rest:
        first ^= r
    return [first, *rest]


def reconstruct_xor(shares: Sequence[torch.Tensor]) -> torch.Tensor:
    """The XOR of binary shares."""
    out = shares[0].clone()
    for s in shares[1:]:
        out ^= s
    return out
