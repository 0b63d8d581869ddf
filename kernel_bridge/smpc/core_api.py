"""The protocol core as the networked engine uses it (one place that names it)."""

from __future__ import annotations

from .dealer import make
from .fixed import FRAC_BITS, decode, encode
from .protocols import OPS
from .sharing import reconstruct, share

__all__ = ["FRAC_BITS", "OPS", "decode", "encode", "make", "reconstruct", "share"]
