"""Cryptographically secure random ring elements: ChaCha20 keystreams.

Every share, mask, triple and bit of the SMPC layer comes from here: the
keystream of ChaCha20 (RFC 7539, via ``cryptography``) under a 256-bit key read
from ``os.urandom``, never from torch's or numpy's generators. The module-level
functions draw a fresh key per call (so a forked process never replays its
parent's stream); :class:`Stream` with an explicit seed gives a reproducible
stream for tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

Shape = Sequence[int]


class Stream:
    """A ChaCha20 keystream cut into ring elements and bits.

    Parameters
    ----------
    seed : bytes, optional
        32-byte key; a fresh one from ``os.urandom`` when omitted. With a seed
        the stream is reproducible (tests); without, it is a CSPRNG.
    """

    def __init__(self, seed: bytes | None = None) -> None:
        key = os.urandom(32) if seed is None else bytes(seed)
        if len(key) != 32:
            raise ValueError("a ChaCha20 seed is 32 bytes")
        # 16-byte nonce for cryptography's ChaCha20: counter 0 then a zero nonce
        # (each key is used for one stream only).
        self._enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the keystream."""
        return self._enc.update(bytes(n))

    def ring(self, shape: Shape) -> torch.Tensor:
        """Uniform elements of Z_2^64 as an ``int64`` tensor of ``shape``."""
        count = math.prod(shape)
        if count == 0:
            return torch.zeros(tuple(shape), dtype=torch.int64)
        buf = bytearray(self.bytes(8 * count))
        return torch.frombuffer(buf, dtype=torch.int64).reshape(tuple(shape))

    def bits(self, shape: Shape) -> torch.Tensor:
        """Uniform bits (0 or 1) as an ``int64`` tensor of ``shape``."""
        count = math.prod(shape)
        if count == 0:
            return torch.zeros(tuple(shape), dtype=torch.int64)
        buf = bytearray(self.bytes(count))
        return (torch.frombuffer(buf, dtype=torch.uint8).reshape(tuple(shape)) & 1).to(
            torch.int64)


def random_ring(shape: Shape, stream: Stream | None = None) -> torch.Tensor:
    """Uniform ring elements (``int64``) from ``stream`` or a fresh CSPRNG key."""
    return (stream or Stream()).ring(shape)


def random_bits(shape: Shape, stream: Stream | None = None) -> torch.Tensor:
    """Uniform bits (``int64`` 0/1) from ``stream`` or a fresh CSPRNG key."""
    return (stream or Stream()).bits(shape)
