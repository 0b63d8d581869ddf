"""Fixed-point encoding, the ChaCha20 stream and secret sharing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_bridge.smpc import fixed, prng, sharing
from kernel_bridge.smpc.errors import PrecisionError

reals = st.floats(min_value=-fixed.MAX_ABS, max_value=fixed.MAX_ABS, exclude_max=True,
                  exclude_min=True, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(reals, min_size=1, max_size=20))
def test_encode_decode_within_half_ulp(xs: list[float]) -> None:
    x = torch.tensor(xs, dtype=torch.float64)
    back = fixed.decode(fixed.encode(x))
    # rounding to the nearest ulp; float64 itself has ~2^-52 relative resolution.
    assert bool(((back - x).abs() <= fixed.ULP / 2 + x.abs() * 2 ** -52).all())


def test_range_edges() -> None:
    edge = fixed.MAX_ABS - 1.0
    assert float(fixed.decode(fixed.encode(edge))) == edge
    assert float(fixed.decode(fixed.encode(-edge))) == -edge
    for bad in (fixed.MAX_ABS, -fixed.MAX_ABS, math.inf, math.nan, [1.0, 1e300]):
        with pytest.raises(PrecisionError):
            fixed.encode(bad)
    # the error carries the bound, never the value
    with pytest.raises(PrecisionError) as info:
        fixed.encode(123456789012345678.0)
    assert "123456789012345678" not in str(info.value)
    assert fixed.ULP == 2 ** -16


def test_stream_seeded_reproducible_and_distinct() -> None:
    a = prng.Stream(b"k" * 32).ring((100,))
    assert torch.equal(a, prng.Stream(b"k" * 32).ring((100,)))
    assert not torch.equal(a, prng.Stream(b"j" * 32).ring((100,)))
    # unseeded: a fresh key per call
    assert not torch.equal(prng.random_ring((4,)), prng.random_ring((4,)))
    with pytest.raises(ValueError):
        prng.Stream(b"short")


def test_stream_is_uniform() -> None:
    """Chi-square of the byte histogram of 2^20 keystream bytes (255 dof)."""
    r = prng.Stream(b"u" * 32).ring((1 << 17,))
    counts = torch.bincount(r.view(torch.uint8).to(torch.int64), minlength=256).double()
    expected = counts.sum() / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert 180 < chi2 < 340  # 255 dof: mean 255, sd ~22.6
    bits = prng.Stream(b"b" * 32).bits((100_000,))
    assert set(bits.unique().tolist()) == {0, 1}
    assert abs(float(bits.double().mean()) - 0.5) < 0.01
    assert prng.random_bits((0,)).shape == (0,)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 5), st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=10))
def test_share_reconstruct(n: int, values: list[int]) -> None:
    secret = torch.tensor(values, dtype=torch.int64)
    shares = sharing.share(secret, n)
    assert len(shares) == n
    assert torch.equal(sharing.reconstruct(shares), secret)
    assert torch.equal(sharing.reconstruct_xor(sharing.share_xor(secret, n)), secret)
    # no share is the secret (with overwhelming probability for 64-bit masks)
    assert all(not torch.equal(s, secret) for s in shares[1:])


def test_share_rejects() -> None:
    with pytest.raises(TypeError):
        sharing.share(torch.ones(3), 2)
    with pytest.raises(ValueError):
        sharing.share(torch.ones(3, dtype=torch.int64), 1)
