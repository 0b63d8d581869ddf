"""The protocol core as the networked engine uses it (one place to adapt to it)."""

from __future__ import annotations

from ._standin import FRAC_BITS, OPS, decode, encode, make, reconstruct, share

__all__ = ["FRAC_BITS", "OPS", "decode", "encode", "make", "reconstruct", "share"]
