"""The noise matches the claim: spread, centre and interval coverage.

Thousands of releases run in-process through the worker's own trusted
functions (:mod:`kernel_bridge.dp.mechanisms`) on a synthetic table, and a
smaller number end to end through a live worker. Tolerances are a few standard
errors, so a scale off by 25 % (or ε confused with 2ε) fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kernel_bridge as kb
from kernel_bridge.dp import mechanisms
from kernel_bridge.dp.query import parse_query
from kernel_bridge.owner.config import AssetSpec, ColumnSpec, DPSpec
from kernel_bridge.scientist.dp import mean_accuracy

N = 3000
TRUE_ROWS = 1000


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[AssetSpec, object, pd.DataFrame]:
    d = tmp_path_factory.mktemp("dp-stats")
    (d / "t.csv").write_text("x\n1\n")
    spec = AssetSpec(
        name="t", path=d / "t.csv", mock=d / "t.csv",
        columns=[ColumnSpec("x", "int", 0, 10), ColumnSpec("y", "float", 0.0, 1.0),
                 ColumnSpec("g", "category", categories=["a", "b", "c"])],
        dp=DPSpec(max_rows=10_000))
    rng = np.random.default_rng(7)
    df = pd.DataFrame({
        "x": rng.integers(0, 11, TRUE_ROWS), "y": rng.random(TRUE_ROWS),
        "g": pd.Categorical(rng.choice(["a", "b"], TRUE_ROWS), categories=["a", "b", "c"])})
    return spec, mechanisms.frame_of(df, spec), df


def _plan(table: tuple[AssetSpec, object, pd.DataFrame], **doc: object) -> mechanisms.Plan:
    spec, frame, _ = table
    return mechanisms.build(parse_query(doc, spec), frame, spec)  # type: ignore[arg-type]


def discrete_laplace_var(scale: float) -> float:
    t = math.exp(-1 / scale)
    return 2 * t / (1 - t) ** 2


def discrete_laplace_coverage(scale: float, acc: float) -> float:
    """P(|Z| <= acc) for Z discrete-Laplace: P(Z >= k) = t^k / (1 + t), k >= 1."""
    t = math.exp(-1 / scale)
    k = math.floor(acc) + 1
    return 1 - 2 * t**k / (1 + t)


def test_count_noise_has_the_claimed_scale(table: tuple[AssetSpec, object, pd.DataFrame]
                                           ) -> None:
    eps = 0.5
    plan = _plan(table, aggregate="count", epsilon=eps)
    info = mechanisms.accuracy(plan, 0.05)
    assert info["scale"] == [pytest.approx(1 / eps)]  # count: sensitivity 1, scale 1/ε
    assert info["mechanism"] == "Integer Laplace"
    noise = np.array([mechanisms.release(plan)["value"] - TRUE_ROWS for _ in range(N)], float)
    want = discrete_laplace_var(1 / eps)
    # Laplace has kurtosis 6: the sample variance's relative SE is sqrt(5/N) ~ 4 %.
    assert abs(noise.var() / want - 1) < 5 * math.sqrt(5 / N)
    assert abs(noise.mean()) < 5 * math.sqrt(want / N)  # unbiased (signed counts)
    # Wrong scales would be far outside: 1.25x the scale is ~56 % more variance.
    assert abs(discrete_laplace_var(1.25 / eps) / want - 1) > 5 * math.sqrt(5 / N)


def test_float_sum_noise_has_the_claimed_scale(table: tuple[AssetSpec, object, pd.DataFrame]
                                               ) -> None:
    _, _, df = table
    eps = 1.0
    plan = _plan(table, aggregate="sum", column="y", epsilon=eps, bounds=[0.0, 1.0])
    info = mechanisms.accuracy(plan, 0.05)
    (scale,) = info["scale"]
    assert info["mechanism"] == "Float Laplace"
    assert scale == pytest.approx(1 / eps, rel=1e-3)  # sensitivity 1 (bounds 0..1)
    noise = np.array([mechanisms.release(plan)["value"] for _ in range(N)]) - df["y"].sum()
    assert abs(noise.var() / (2 * scale**2) - 1) < 5 * math.sqrt(5 / N)


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_count_interval_covers_at_its_rate(table: tuple[AssetSpec, object, pd.DataFrame],
                                           alpha: float) -> None:
    eps = 0.05  # scale 20: the integer grid barely matters
    plan = _plan(table, aggregate="count", epsilon=eps)
    acc = mechanisms.accuracy(plan, alpha)["accuracy"]
    expected = discrete_laplace_coverage(1 / eps, acc)
    assert expected >= 1 - alpha  # OpenDP's ± is a valid (1 - alpha) interval ...
    assert expected < 1 - alpha + 0.01  # ... and not a needlessly wide one
    hits = [abs(mechanisms.release(plan, alpha)["value"] - TRUE_ROWS) <= acc for _ in range(N)]
    se = math.sqrt(alpha * (1 - alpha) / N)
    assert abs(np.mean(hits) - expected) < 4 * se


def test_histogram_covers_every_declared_key(table: tuple[AssetSpec, object, pd.DataFrame]
                                             ) -> None:
    _, _, df = table
    plan = _plan(table, aggregate="histogram", column="g", epsilon=0.2)
    true = {k: int((df["g"] == k).sum()) for k in ["a", "b", "c"]}
    assert true["c"] == 0  # declared but absent from the data: still released (noise only)
    hits, n = 0, 600
    for _ in range(n):
        r = mechanisms.release(plan, 0.1)
        assert list(r["value"]) == ["a", "b", "c"]
        hits += sum(abs(r["value"][k] - true[k]) <= r["accuracy"] for k in true)
    expected = discrete_laplace_coverage(1 / 0.2, mechanisms.accuracy(plan, 0.1)["accuracy"])
    assert abs(hits / (3 * n) - expected) < 4 * math.sqrt(0.1 * 0.9 / (3 * n))


def test_mean_interval_covers_at_least_its_rate(
        table: tuple[AssetSpec, object, pd.DataFrame]) -> None:
    _, _, df = table
    plan = _plan(table, aggregate="mean", column="x", epsilon=0.5)
    true = df["x"].mean()
    alpha = 0.2
    rs = [mechanisms.release(plan, alpha) for _ in range(1500)]
    cover = np.mean([abs(r["value"] - true) <= r["accuracy"] for r in rs])
    # Sum and count each hold with 1 - alpha/2, so the ratio's interval holds with >= 1 - alpha.
    assert cover >= 1 - alpha - 4 * math.sqrt(alpha * (1 - alpha) / 1500)
    assert abs(np.mean([r["value"] for r in rs]) - true) < 0.05  # about unbiased


def test_previewed_mean_interval_covers_at_least_its_rate(
        table: tuple[AssetSpec, object, pd.DataFrame]) -> None:
    """accuracy() of a mean is the mean's ± (from the sum's and count's), not theirs."""
    _, _, df = table
    plan = _plan(table, aggregate="mean", column="x", epsilon=0.05)
    true = df["x"].mean()
    alpha = 0.2
    parts = mechanisms.accuracy(plan, alpha)["accuracy"]
    acc = mean_accuracy(parts["sum"], parts["count"], 10, TRUE_ROWS)
    assert acc < parts["sum"] / 100  # in the mean's units, not the sum's
    rs = [mechanisms.release(plan, alpha)["value"] for _ in range(1500)]
    cover = np.mean([abs(v - true) <= acc for v in rs])
    assert cover >= 1 - alpha - 4 * math.sqrt(alpha * (1 - alpha) / 1500)
    # ... and not much wider than it needs: the 1 - alpha quantile of the error is close.
    assert np.quantile([abs(v - true) for v in rs], 1 - alpha) > acc / 4


def test_quantile_lands_near_the_true_quantile(
        table: tuple[AssetSpec, object, pd.DataFrame]) -> None:
    _, _, df = table
    plan = _plan(table, aggregate="quantile", column="x", q=0.5, epsilon=2.0)
    values = [mechanisms.release(plan)["value"] for _ in range(200)]
    assert all(isinstance(v, int) and 0 <= v <= 10 for v in values)
    assert abs(np.median(values) - df["x"].median()) <= 1


def test_quantile_rank_interval_covers_at_its_rate(
        table: tuple[AssetSpec, object, pd.DataFrame]) -> None:
    _, _, df = table
    y = np.sort(df["y"].to_numpy())  # distinct values: a value's rank is well defined
    for q, eps in ((0.5, 0.5), (0.25, 1.0)):
        plan = _plan(table, aggregate="quantile", column="y", q=q, epsilon=eps)
        alpha = 0.05
        r = mechanisms.accuracy(plan, alpha)["accuracy"]["rank"]
        # 2001 candidates over 1000 rows: the best candidate is within a row of rank q*n.
        errors = [abs(np.searchsorted(y, mechanisms.release(plan)["value"]) - q * len(y))
                  for _ in range(300)]
        assert np.mean(np.array(errors) <= r + 1) >= 1 - alpha - 4 * math.sqrt(
            alpha * (1 - alpha) / 300)
        assert max(errors) > 0  # it is noisy at all


def _write_config(tmp_path: Path, rows: int = 400, **dp: object) -> Path:
    rng = np.random.default_rng(3)
    data = tmp_path / "people.csv"
    lines = ["id,age,sex"] + [f"{i},{rng.integers(20, 80)},{rng.choice(['F', 'M'])}"
                              for i in range(rows)]
    data.write_text("\n".join(lines) + "\n")
    mock = tmp_path / "people_mock.csv"
    mock.write_text("id,age,sex\n1,30,F\n2,40,M\n")
    settings = {"privacy_unit": '"id"', "epsilon_per_scientist": 1000.0, "epsilon_total": 1e6,
                **{k: v for k, v in dp.items()}}
    cfg = tmp_path / "worker.toml"
    cfg.write_text(
        '[worker]\nname = "dpw"\nport = 0\nstate = "state"\n\n'
        '[assets.people]\npath = "people.csv"\nmock = "people_mock.csv"\n\n'
        '[assets.people.dp]\n' + "".join(f"{k} = {v}\n" for k, v in settings.items()) +
        '\n[assets.people.columns.id]\ntype = "int"\nlower = 0\nupper = 100000\n'
        '[assets.people.columns.age]\ntype = "int"\nlower = 18\nupper = 90\n'
        '[assets.people.columns.sex]\ntype = "category"\ncategories = ["F", "M"]\n')
    return cfg


def test_end_to_end_count_noise_through_a_live_worker(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker]) -> None:
    cfg = _write_config(tmp_path)
    w = fresh_worker("dpw", config=cfg, assets={}, mocks={}, scientist="ana")
    people = w.asset("people")
    q = people.dp.count(epsilon=0.5)
    acc = q.accuracy(alpha=0.2)
    n = 200
    results = [q.release(alpha=0.2) for _ in range(n)]
    noise = np.array([r.value for r in results], float) - 400
    assert all(r.epsilon == 0.5 and r.accuracy == acc for r in results)
    # Relative SE of the variance with n=200 is ~16 %; a doubled scale (4x variance) fails.
    assert abs(noise.var() / discrete_laplace_var(2.0) - 1) < 0.6
    cover = np.mean(np.abs(noise) <= acc)
    assert abs(cover - discrete_laplace_coverage(2.0, acc)) < 4 * math.sqrt(0.2 * 0.8 / n)
    assert w.budget()["people"]["epsilon_spent"] == pytest.approx(0.5 * n)
