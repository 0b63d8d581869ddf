"""HE through real workers: the demo's bob (encrypted predictions) and alice (encrypted
evaluation), each started from its TOML with a state directory of this module's own."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kernel_bridge as kb
from kernel_bridge.errors import HEError, InvalidQuery

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
sys.path.insert(0, str(DATASETS))
import make_datasets  # noqa: E402


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    w = kb.launch("bob", config=DATASETS / "bob.toml",
                  state=tmp_path_factory.mktemp("he-bob"), scientist="hana")
    yield w
    w.close()


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    w = kb.launch("alice", config=DATASETS / "alice.toml",
                  state=tmp_path_factory.mktemp("he-alice"), scientist="hana")
    yield w
    w.close()


@pytest.fixture(scope="module")
def ctx() -> kb.he.Context:
    return kb.he.context(depth=3)


def _plain_model(x: np.ndarray) -> np.ndarray:
    import torch

    sd = {k: v.double().numpy() for k, v in
          torch.load(DATASETS / "risk_model" / "bob.pt", weights_only=True).items()}
    h = sd["fc1.weight"] @ x + sd["fc1.bias"]
    out: np.ndarray = sd["fc2.weight"] @ (h * h) + sd["fc2.bias"]
    return out


def test_encrypted_inference_matches_plaintext(bob: kb.Worker, ctx: kb.he.Context) -> None:
    table = pd.read_csv(DATASETS / "heart" / "alice_mock.csv").head(4)
    xs = make_datasets.risk_features({c: table[c].to_numpy() for c in table.columns})
    model = bob.asset("risk_model")
    for x in xs:
        enc_y = model.he_predict(kb.he.encrypt(ctx, x))
        assert isinstance(enc_y, kb.he.EncryptedVector) and enc_y.size == 1
        # The documented CKKS error of the tutorial model at depth 3: below 1e-3.
        np.testing.assert_allclose(kb.he.decrypt(enc_y), _plain_model(x), atol=1e-3)
    services = bob.he_services()
    row = next(s for s in services if s["asset"] == "risk_model")
    assert row["used"] == 4 and row["remaining"] == row["predictions_per_scientist"] - 4


def test_a_shallow_context_or_wrong_size_is_refused_and_not_counted(
        bob: kb.Worker, ctx: kb.he.Context) -> None:
    model = bob.asset("risk_model")
    before = next(s for s in bob.he_services() if s["asset"] == "risk_model")["used"]
    with pytest.raises(HEError, match="depth 3"):
        model.he_predict(kb.he.encrypt(kb.he.context(depth=2, measure=False), np.zeros(6)))
    with pytest.raises(HEError, match="takes 6 inputs"):
        model.he_predict(kb.he.encrypt(ctx, np.zeros(9)))
    with pytest.raises(InvalidQuery):
        bob.asset("heart").he_predict(kb.he.encrypt(ctx, np.zeros(6)))
    with pytest.raises(InvalidQuery):
        bob.asset("risk_model", mock=True).he_predict(kb.he.encrypt(ctx, np.zeros(6)))
    assert next(s for s in bob.he_services() if s["asset"] == "risk_model")["used"] == before


def test_encrypted_evaluation_is_within_the_dp_accuracy(alice: kb.Worker,
                                                        ctx: kb.he.Context) -> None:
    from kernel_bridge.he.evaluate import row_bound
    from kernel_bridge.scientist.he import plain_mse

    spec = next(s for s in alice.he_services() if s["asset"] == "heart")
    cols, eps = spec["columns"], spec["epsilon_per_evaluation"]
    df = pd.read_csv(DATASETS / "heart" / "alice.csv")
    x = make_datasets.risk_features({c: df[c].to_numpy() for c in df.columns})
    assert make_datasets.RISK_FEATURES == cols
    theta = np.array([0.3, -0.1, 0.2, -0.6, 0.5, 0.4, 0.2])
    truth = plain_mse(theta, x, df["target"].to_numpy())
    # Laplace of scale Δ_θ / (ε n): |noise| exceeds b ln(1/α) with probability α = 1e-6.
    b = row_bound(float(theta @ theta), len(cols)) / (eps * len(df))
    heart = alice.asset("heart")
    left = alice.budget()["heart"]["epsilon_remaining"]
    results = [heart.he_evaluate(kb.he.encrypt(ctx, theta)) for _ in range(2)]
    for r in results:
        assert r.epsilon == eps and r.rows_exact
        assert abs(r.decrypt() - truth) <= b * math.log(1e6) + 1e-3
        assert "mse" in repr(r) and str(round(truth, 3)) not in repr(r)
    assert results[0].decrypt() != results[1].decrypt()  # fresh noise each time
    assert alice.budget()["heart"]["epsilon_remaining"] == pytest.approx(left - 2 * eps)
    with pytest.raises(HEError, match="7 weights"):
        heart.he_evaluate(kb.he.encrypt(ctx, theta[:5]))
    assert alice.budget()["heart"]["epsilon_remaining"] == pytest.approx(left - 2 * eps)


def test_owner_cli_lists_services_and_counts(bob: kb.Worker, alice: kb.Worker,
                                             ctx: kb.he.Context,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from kernel_bridge.cli import main

    bob.asset("risk_model").he_predict(kb.he.encrypt(ctx, np.zeros(6)))
    used = next(s for s in bob.he_services() if s["asset"] == "risk_model")["used"]
    assert main(["he", "services", "--state", str(bob.process.state)]) == 0
    out = capsys.readouterr().out
    assert "risk_model" in out and "encrypted predictions" in out and "hana" in out
    assert f" {used} " in out
    assert main(["he", "services", "--state", str(alice.process.state)]) == 0
    assert "encrypted evaluation" in capsys.readouterr().out
    from kernel_bridge.lab.owner_side import OwnerSide

    side = OwnerSide(str(bob.process.state))  # what the approval panel's HE tab shows
    try:
        rows = side.he_services()
    finally:
        side.close()
    assert {"asset": "risk_model", "scientist": "hana", "used": used} in \
        [{k: r[k] for k in ("asset", "scientist", "used")} for r in rows]
    assert main(["he", "reset", "hana", "risk_model", "--state", str(bob.process.state)]) == 0
    assert next(s for s in bob.he_services() if s["asset"] == "risk_model")["used"] == 0
