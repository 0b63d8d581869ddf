"""Our strategies against Flower 1.42's definitions (same formulas, same defaults)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernel_bridge.fl import strategies as st


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


def test_weighted_mean_is_fedavg_by_sample_counts() -> None:
    ws, ns = [_weights(i) for i in range(3)], [10, 30, 60]
    summed = {k: sum(n * w[k].double() for w, n in zip(ws, ns, strict=True)) for k in ws[0]}
    mean = st.weighted_mean(summed, float(sum(ns)))
    expect = {k: sum(n / 100 * w[k] for w, n in zip(ws, ns, strict=True)) for k in ws[0]}
    for k in mean:
        torch.testing.assert_close(mean[k], expect[k])
    assert st.FedAvg().aggregate(ws[0], mean, 1)["w"].data_ptr() != mean["w"].data_ptr()
    with pytest.raises(ValueError):
        st.weighted_mean(summed, 0.0)


def _flower_fedopt(kind: str, current: dict, means: list[dict]) -> dict:
    """Flower 1.42's FedAdam/FedYogi/FedAdagrad aggregate_train, transcribed in numpy."""
    eta, b1, b2, tau = {"adam": (0.1, 0.9, 0.99, 1e-3), "yogi": (1e-2, 0.9, 0.99, 1e-3),
                        "adagrad": (0.1, 0.0, 0.0, 1e-3)}[kind]
    x = {k: v.numpy().astype(np.float64) for k, v in current.items()}
    m = v = None
    for t, mean in enumerate(means, start=1):
        agg = {k: a.numpy().astype(np.float64) for k, a in mean.items()}
        d = {k: agg[k] - x[k] for k in x}
        m = {k: b1 * (m[k] if m else 0) + (1 - b1) * d[k] for k in x}
        if kind == "adam":
            v = {k: b2 * (v[k] if v else 0) + (1 - b2) * d[k] ** 2 for k in x}
            e = eta * np.sqrt(1 - b2 ** (t + 1.0)) / (1 - b1 ** (t + 1.0))
        elif kind == "yogi":
            v0 = v or {k: np.zeros_like(x[k]) for k in x}
            v = {k: v0[k] - (1 - b2) * d[k] ** 2 * np.sign(v0[k] - d[k] ** 2) for k in x}
            e = eta
        else:
            v = {k: (v[k] if v else 0) + d[k] ** 2 for k in x}
            e = eta
        x = {k: x[k] + e * m[k] / (np.sqrt(v[k]) + tau) for k in x}
    return x


@pytest.mark.parametrize("kind,cls", [("adam", st.FedAdam), ("yogi", st.FedYogi),
                                      ("adagrad", st.FedAdagrad)])
def test_fedopt_family_follows_flower(kind: str, cls: type) -> None:
    current = _weights(0)
    means = [_weights(i) for i in range(1, 5)]
    strategy = cls()
    x = current
    for t, mean in enumerate(means, start=1):
        x = strategy.aggregate(x, mean, t)
    expect = _flower_fedopt(kind, current, means)
    for k in x:
        np.testing.assert_allclose(x[k].numpy(), expect[k], rtol=1e-5, atol=1e-6)


def test_fedprox_aggregates_like_fedavg_and_sets_the_workers_mu() -> None:
    mean = _weights(3)
    assert st.FedProx(0.1).prox_mu == 0.1 and st.FedAvg.prox_mu == 0.0
    torch.testing.assert_close(st.FedProx(0.1).aggregate(_weights(0), mean, 1)["w"], mean["w"])
