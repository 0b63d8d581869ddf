"""Shared helpers of the SMPC tests: share reals, run an op in process, reconstruct."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kernel_bridge.smpc import fixed, local, sharing


def quantized(x: Any) -> torch.Tensor:
    """The real a value becomes after fixed-point encoding (what the protocols compute on)."""
    return fixed.decode(fixed.encode(x))


def run(op: str, xs: Sequence[Any], params: dict[str, Any] | None = None,
        n: int = 2) -> torch.Tensor:
    """Share each real input among ``n`` parties, run ``op`` locally, decode the result."""
    shares = [sharing.share(fixed.encode(x), n) for x in xs]
    out = local.run_local(op, shares, params, n)
    return fixed.decode(sharing.reconstruct(out))
