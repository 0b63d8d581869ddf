"""The generated training plan: model as code, local training, DP-SGD noise as Opacus claims."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from kernel_bridge.errors import InvalidPlan, InvalidQuery
from kernel_bridge.fl.encoding import encode_inputs
from kernel_bridge.fl.model_code import build_model, model_source
from kernel_bridge.fl.training_plan import DP, TrainingConfig, training_plan
from kernel_bridge.plan_document import check as check_plan

SPEC = [*({"name": f"p{i}", "kind": "int", "lower": 0, "upper": 16} for i in range(4)),
        {"name": "label", "kind": "int", "lower": 0, "upper": 2}]
FEATURES = [f"p{i}" for i in range(4)]


def load(doc: dict[str, Any]) -> Any:
    ns: dict[str, Any] = {}
    exec(compile(doc["code"], "<plan>", "exec"), ns)  # our own generated code
    return ns["run"]


def test_model_travels_as_code_and_rebuilds_the_same_parameters() -> None:
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.1),
                          nn.Sequential(nn.Linear(32, 8, bias=False), nn.Tanh()),
                          nn.Linear(8, 2), nn.LogSoftmax(dim=1))
    src = model_source(model)
    assert "pickle" not in src and src.startswith("nn.Sequential(")
    rebuilt = build_model(src)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(InvalidQuery, match="BatchNorm1d is not supported"):
        model_source(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    with pytest.raises(InvalidQuery, match="must be an nn.Sequential"):
        model_source(nn.Linear(3, 3))


def test_plan_document_and_widths_are_checked() -> None:
    doc = training_plan(nn.Sequential(nn.Linear(4, 3)), name="t", asset="digits", spec=SPEC,
                        features=FEATURES, target="label", rounds=3, config=TrainingConfig(),
                        secure_agg=True, min_workers=2)
    assert doc["inputs"] == {"asset": "digits", "columns": FEATURES, "target": "label",
                             "encoding": SPEC}
    assert "encode_table" not in doc["code"] and "SPEC" not in doc["code"]  # the worker encodes
    check_plan(doc)
    for bad, why in [(SPEC[:-1], "one declaration per column"),
                     ([*SPEC[:-1], {"name": "label", "kind": "float"}], "the target is a"),
                     ([{**SPEC[0], "kind": "text"}, *SPEC[1:]], "kind is one of"),
                     ([{**SPEC[0], "categories": ["a"]}, *SPEC[1:]], "only for category"),
                     ([{**SPEC[0], "lower": "0"}, *SPEC[1:]], "a finite number")]:
        with pytest.raises(InvalidPlan, match=why):
            check_plan({**doc, "inputs": {**doc["inputs"], "encoding": bad}})
    assert doc["policy"]["aggregate"] == {"secure": True, "min_workers": 2}
    assert doc["policy"]["outputs"]["update"]["shapes"] == {"0.weight": [4, 3][::-1],
                                                            "0.bias": [3]}
    with pytest.raises(InvalidQuery, match="takes 5 inputs but the declared features encode"):
        training_plan(nn.Sequential(nn.Linear(5, 3)), name="t", asset="d", spec=SPEC,
                      features=FEATURES, target="label", rounds=1, config=TrainingConfig())


def _frame(n: int, zero: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    cols = {f: (np.zeros(n, int) if zero else rng.integers(0, 17, n)) for f in FEATURES}
    return pd.DataFrame({**cols, "label": rng.integers(0, 3, n)})


def data(doc: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """What the worker hands a run: the frame encoded by the plan's inputs.encoding."""
    return encode_inputs(frame, doc["inputs"])


def test_local_training_returns_weighted_weights_and_metrics() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    doc = training_plan(model, name="t", asset="d", spec=SPEC, features=FEATURES,
                        target="label", rounds=3, config=TrainingConfig(lr=0.5))
    out = load(doc)(data(doc, _frame(100)), weights=model.state_dict(), round=0, spec={})
    assert out["num_examples"] == 100 and set(out) == {"update", "num_examples", "loss",
                                                         "correct"}
    assert out["update"]["0.weight"].shape == (3, 4)
    assert not torch.allclose(out["update"]["0.weight"] / 100, model[0].weight)
    assert 0 <= out["correct"] <= 100 and out["loss"] > 0


def test_one_local_step_equals_plain_torch_and_leaves_the_sent_weights_alone() -> None:
    """The plan builds its model without init and takes this round's weights as its own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    sent = {k: v.clone().numpy() for k, v in model.state_dict().items()}
    before = {k: v.copy() for k, v in sent.items()}
    frame = _frame(50)
    doc = training_plan(model, name="t", asset="d", spec=SPEC, features=FEATURES,
                        target="label", rounds=1,
                        config=TrainingConfig(lr=0.3, batch_size=50))  # one full batch
    out = load(doc)(data(doc, frame), weights=sent, round=0, spec={})
    x = torch.tensor(frame[FEATURES].to_numpy() / 16.0, dtype=torch.float32)
    y = torch.tensor(frame["label"].to_numpy())
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    for k, v in model.state_dict().items():
        assert torch.allclose(out["update"][k] / 50, v, atol=1e-6), k
        assert np.array_equal(sent[k], before[k])  # the run trained its own copy


@pytest.mark.parametrize("rows, batch", [(50, 50), (50, 64), (50, 16)])
def test_released_metrics_are_the_global_models_on_the_local_data(rows: int,
                                                                  batch: int) -> None:
    """Loss and hits of the weights *sent*: read off the training pass when its one batch
    is the whole data, else from an evaluation pass of their own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    frame = _frame(rows)
    doc = training_plan(model, name="t", asset="d", spec=SPEC, features=FEATURES,
                        target="label", rounds=1,
                        config=TrainingConfig(lr=0.3, batch_size=batch, local_epochs=2))
    out = load(doc)(data(doc, frame), weights=model.state_dict(), round=0, spec={})
    x = torch.tensor(frame[FEATURES].to_numpy() / 16.0, dtype=torch.float32)
    y = torch.tensor(frame["label"].to_numpy())
    with torch.no_grad():
        logits = model(x)
    assert out["loss"] == pytest.approx(
        float(nn.functional.cross_entropy(logits, y, reduction="sum")), rel=1e-5)
    assert out["correct"] == int((logits.argmax(dim=1) == y).sum())


def test_dp_noise_scale_matches_opacus_claim() -> None:
    """Zero inputs and no bias: every per-sample gradient is 0, so the weights move only by
    Opacus's noise, N(0, (noise_multiplier * max_grad_norm)^2) per step, divided by the
    expected batch size and scaled by lr: the measured std must be that."""
    n, batch, sigma, clip, lr = 320, 32, 1.3, 0.7, 1.0
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    # Many outputs to measure a std: 4 -> 300 inputs would need more columns; use width 4
    # over several independent runs instead (each run: 12 weights, 10 steps).
    doc = training_plan(model, name="t", asset="d", spec=SPEC, features=FEATURES,
                        target="label", rounds=1,
                        config=TrainingConfig(batch_size=batch, lr=lr),
                        dp=DP(noise_multiplier=sigma, max_grad_norm=clip, delta=1e-5,
                              epsilon_total=100.0))
    assert set(doc["policy"]["outputs"]) == {"update", "num_examples"}  # no clear metrics
    run = load(doc)
    w0 = model.state_dict()
    moves = []
    for r in range(60):
        out = run(data(doc, _frame(n, zero=True)), weights=w0, round=r, spec={})
        moves.append((out["update"]["0.weight"] / out["num_examples"] - w0["0.weight"]).ravel())
    steps = math.ceil(n / batch)
    expected = lr * sigma * clip * math.sqrt(steps) / batch
    measured = float(torch.cat(moves).std())
    assert measured == pytest.approx(expected, rel=0.1), (measured, expected)


def test_a_plain_run_does_not_import_torch_dynamo() -> None:
    """Without DP the plan steps SGD by hand: torch.optim's first optimizer imports
    torch._dynamo, about 70 MB more in every plan kernel. A fresh interpreter runs one
    round of the generated code and reports what it imported."""
    import json
    import subprocess
    import sys

    doc = training_plan(nn.Sequential(nn.Linear(4, 3)), name="t", asset="d", spec=SPEC,
                        features=FEATURES, target="label", rounds=1, config=TrainingConfig())
    script = (
        "import json, sys\n"
        "import numpy as np, torch\n"
        "ns = {}\n"
        "exec(compile(sys.stdin.read(), '<plan>', 'exec'), ns)\n"
        "w = {'0.weight': np.zeros((3, 4), 'float32'), '0.bias': np.zeros(3, 'float32')}\n"
        "data = {'X': np.ones((8, 4), 'float32'), 'y': np.arange(8) % 3}\n"
        "out = ns['run'](data, weights=w, round=0, spec={})\n"
        "print(json.dumps({'dynamo': 'torch._dynamo' in sys.modules,\n"
        "                  'moved': bool(out['update']['0.bias'].abs().sum() > 0)}))\n")
    proc = subprocess.run([sys.executable, "-c", script], input=doc["code"], text=True,
                          capture_output=True, timeout=120, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"dynamo": False, "moved": True}
