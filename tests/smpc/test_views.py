"""View independence: what one party sees is statistically independent of the secret.

A party's *view* of an operation is its input shares, its dealer material,
every message it received (each other party's contribution to each opening) and
every value opened to it. For two different secrets, each component of the
view (mapped to [0, 1)) must have the same distribution, which a two-sample
Kolmogorov-Smirnov test checks over many runs. A control runs the same test on
an unmasked sharing (one party's share is the secret) and must detect it, so
the test is shown able to fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from scipy import stats

from kernel_bridge.smpc import fixed, local, sharing

RUNS = 12
SIZE = 256
#: Per-test false-alarm rate (Bonferroni over the view's components): CI must not flake.
ALPHA = 1e-5

Sharer = Callable[[torch.Tensor, int], list[torch.Tensor]]


def unmasked(secret: torch.Tensor, n: int) -> list[torch.Tensor]:
    """A broken sharing: party 0 holds the secret itself (the control)."""
    return [secret.clone(), *[torch.zeros_like(secret) for _ in range(n - 1)]]


def _uniform(v: torch.Tensor) -> torch.Tensor:
    """A ring element (or bit) as a float in [0, 1)."""
    v = v.reshape(-1)
    if bool(((v == 0) | (v == 1)).all()):
        return v.double()
    return (v.double() / 2.0 ** 64) % 1.0


def views(op: str, secrets: Sequence[torch.Tensor], party: int, n: int, share: Sharer,
          params: dict[str, Any]) -> list[torch.Tensor]:
    """Each component of ``party``'s view, concatenated over RUNS runs."""
    parts: list[list[torch.Tensor]] = []
    for _ in range(RUNS):
        shares = [share(fixed.encode(s), n) for s in secrets]
        run = local.execute(op, shares, params, n, record=True)
        assert run.views is not None
        v = run.views[party]
        comps = [*v.inputs, *[t for m in v.material for t in m.values()], *v.received,
                 *v.opened]
        if not parts:
            parts = [[] for _ in comps]
        for acc, c in zip(parts, comps, strict=True):
            acc.append(_uniform(c))
    return [torch.cat(p) for p in parts]


def worst_p(op: str, arity: int, party: int, n: int, share: Sharer = sharing.share,
            shape: tuple[int, ...] = (SIZE,), params: dict[str, Any] | None = None) -> tuple[
        float, int]:
    """The smallest KS p-value over the view's components, and how many there are."""
    g = torch.Generator().manual_seed(3)  # the secrets themselves need not be random
    one = [torch.randn(shape, generator=g, dtype=torch.float64) * 100 for _ in range(arity)]
    two = [torch.zeros(shape, dtype=torch.float64) for _ in range(arity)]
    va = views(op, one, party, n, share, params or {})
    vb = views(op, two, party, n, share, params or {})
    ps = [float(stats.ks_2samp(a.numpy(), b.numpy(), method="asymp").pvalue)
          for a, b in zip(va, vb, strict=True)]
    return min(ps), len(ps)


@pytest.mark.parametrize("op,arity,shape,params", [
    ("mul", 2, (SIZE,), {}), ("matmul", 2, (16, 16), {}), ("relu", 1, (SIZE,), {}),
    ("gt", 2, (SIZE,), {}), ("max", 1, (SIZE,), {}), ("div_public", 1, (SIZE,), {"value": 7.0}),
    ("conv2d", 2, (1, 1, 16, 16), {"padding": 1})])
@pytest.mark.parametrize("party", [0, 1])
def test_view_independent_of_secret(op: str, arity: int, shape: tuple[int, ...],
                                    params: dict[str, Any], party: int) -> None:
    p, k = worst_p(op, arity, party, 2, shape=shape, params=params)
    assert p > ALPHA / k, f"{op}: party {party}'s view depends on the secret (p={p:.2e})"


def test_three_party_comparison_view() -> None:
    p, k = worst_p("relu", 1, 2, 3)
    assert p > ALPHA / k


def test_control_unmasked_sharing_is_detected() -> None:
    """The same test on a sharing without the mask fails: the test can fail."""
    p, k = worst_p("mul", 2, 0, 2, share=unmasked)
    assert p < 1e-12
    p, k = worst_p("relu", 1, 0, 2, share=unmasked)
    assert p < 1e-12
