"""Secure aggregation (Bonawitz et al.): masks cancel, dropouts are handled, one update hides."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag

from kernel_bridge.errors import InvalidQuery, PermissionDenied
from kernel_bridge.fl import secagg


def setup(n: int, threshold: int, name: str = "job|1|0") -> tuple[dict, dict, bytes]:
    ctx = secagg.context_for(name)
    ps = {i: secagg.Participant(i, ctx) for i in range(1, n + 1)}
    keys = {i: p.advertise() for i, p in ps.items()}
    sealed = {i: p.share_keys(keys, threshold) for i, p in ps.items()}
    for j, p in ps.items():
        p.receive_shares({i: s[j] for i, s in sealed.items() if j in s})
    return ps, keys, ctx


def test_fixed_point_ring_round_trip() -> None:
    x = np.array([-3.25, 0.0, 1e-6, 12345.678])
    np.testing.assert_allclose(secagg.decode(secagg.encode(x)), x, atol=2**-24)
    total = secagg.encode(x) + secagg.encode(-2 * x)  # wraps mod 2^64
    np.testing.assert_allclose(secagg.decode(total), -x, atol=2**-23)


def test_shamir_threshold() -> None:
    secret = bytes(range(32))
    shares = secagg.shamir_split(secret, range(1, 6), 3)
    assert secagg.shamir_combine({k: shares[k] for k in (1, 4, 5)}) == secret
    with pytest.raises(InvalidQuery, match="do not reconstruct"):  # 2 < threshold shares
        secagg.shamir_combine({k: shares[k] for k in (2, 3)})


@pytest.mark.parametrize("dropped", [(), (2,), (1, 4)])
def test_sum_of_survivors_with_dropouts(dropped: tuple[int, ...]) -> None:
    ps, keys, ctx = setup(5, 3)
    rng = np.random.default_rng(0)
    xs = {i: rng.normal(size=1000) * 100 for i in ps}
    alive = [i for i in ps if i not in dropped]
    masked = {i: ps[i].mask(secagg.encode(xs[i])) for i in alive}
    for i in alive:  # a masked input tells nothing: it looks uniform, far from x_i
        assert np.corrcoef(secagg.decode(masked[i]), xs[i])[0, 1] < 0.2
    revealed = {i: ps[i].reveal(alive) for i in alive}
    total = secagg.unmask(masked, keys, revealed, 3, ctx)
    np.testing.assert_allclose(secagg.decode(total), sum(xs[i] for i in alive), atol=1e-5)


def test_reveal_refuses_what_would_unmask_one_worker() -> None:
    ps, _, _ = setup(4, 3)
    with pytest.raises(PermissionDenied, match="fewer than the threshold"):
        ps[1].reveal([1, 2])  # with 2 "survivors" the scientist could isolate one update
    ps[1].reveal([1, 2, 3])
    with pytest.raises(PermissionDenied, match="already revealed"):
        ps[1].reveal([1, 2, 3, 4])  # a second answer would give b_j AND s_j of worker 4
    with pytest.raises(PermissionDenied, match="unknown workers"):
        ps[2].reveal([2, 3, 9])


def test_a_tampered_share_fails_to_open() -> None:
    ctx = secagg.context_for("x")
    ps = {i: secagg.Participant(i, ctx) for i in (1, 2, 3)}
    keys = {i: p.advertise() for i, p in ps.items()}
    sealed = ps[1].share_keys(keys, 2)
    ps[2].share_keys(keys, 2)
    bad = bytearray(sealed[2])
    bad[-1] ^= 1
    with pytest.raises(InvalidTag):
        ps[2].receive_shares({1: bytes(bad)})
    ps[3].share_keys(keys, 2)
    with pytest.raises(InvalidTag):  # a share for 2 relayed to 3 does not open either
        ps[3].receive_shares({1: sealed[2]})
