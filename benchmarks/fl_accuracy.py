"""FL accuracy figures for the README: ``python -m benchmarks.fl_accuracy``.

* Heart: FedAvg over alice, bob and carol vs the same model trained centrally on the
  three tables pooled, for the same number of epochs (accuracy on the pooled data).
* Digits: DP-FedAvg at a total ε of 1, 3 and 8 per owner (the most any owner spends),
  accuracy on the public held-out test set, next to the same job without DP.

Each worker's part runs the plan code :mod:`kernel_bridge.fl` generates (the code the
owners approve), executed here in-process on each owner's table; ε is what each
worker's ledger debits: :func:`kernel_bridge.owner.plans.run_epsilon` (Opacus's RDP
accountant per run) times the rounds. Secure aggregation does not change the result
(the sum is exact to 2^-24), so it is left out here; the live tests cover it.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
import torch
from torch import nn

from kernel_bridge.fl.encoding import encode_inputs, encode_table, merge_specs
from kernel_bridge.fl.training_plan import DP, TrainingConfig, training_plan
from kernel_bridge.owner.assets import load_assets
from kernel_bridge.owner.config import WorkerConfig
from kernel_bridge.owner.plans import run_epsilon

from . import fl as _fl  # noqa: F401  (the package's thread settings come with it)

ROOT = _fl.ROOT
WORKERS = ("alice", "bob", "carol")
HEART = ["age", "sex", "cp", "trestbps", "chol", "thalach", "exang", "oldpeak"]
PIXELS = [f"p{i}" for i in range(64)]


def tables(asset: str, columns: list[str]) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    specs, frames = [], []
    for w in WORKERS:
        a = load_assets(WorkerConfig.from_toml(ROOT / "datasets" / f"{w}.toml"))[asset]
        specs.append(a.describe()["schema"]["columns"])
        frames.append(a.private()[columns])
    return merge_specs(specs, columns), frames


def fedavg(model: nn.Module, spec: list[dict[str, Any]], frames: list[pd.DataFrame],
           features: list[str], target: str, rounds: int, config: TrainingConfig,
           dp: DP | None = None) -> nn.Module:
    doc = training_plan(model, name="acc", asset="a", spec=spec, features=features,
                        target=target, rounds=rounds, config=config, dp=dp)
    ns: dict[str, Any] = {}
    exec(compile(doc["code"], "<plan>", "exec"), ns)  # our own generated code
    w = {k: v.clone() for k, v in model.state_dict().items()}
    data = [encode_inputs(f, doc["inputs"]) for f in frames]  # as each worker binds it
    for r in range(rounds):
        outs = [ns["run"]({k: v.copy() for k, v in d.items()}, weights=w, round=r, spec={})
                for d in data]
        total = sum(o["num_examples"] for o in outs)
        w = {k: sum(o["update"][k].double() for o in outs).float() / total for k in w}
    model.load_state_dict(w)
    return model


def heart() -> tuple[float, float]:
    spec, frames = tables("heart", [*HEART, "target"])
    rounds, epochs, lr = 6, 5, 0.2
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 2))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    fed = fedavg(model, spec, frames, HEART, "target", rounds,
                 TrainingConfig(local_epochs=epochs, lr=lr))
    X, y = (torch.from_numpy(a) for a in encode_table(pd.concat(frames), spec, HEART, "target"))
    central = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 2))
    central.load_state_dict(init)
    opt = torch.optim.SGD(central.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32,
                                         shuffle=True)
    for _ in range(rounds * epochs):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(central(xb), yb).backward()
            opt.step()
    with torch.no_grad():
        return (float((fed(X).argmax(1) == y).float().mean()),
                float((central(X).argmax(1) == y).float().mean()))


def sigma_for(target: float, rows: list[int], rounds: int, batch: int, delta: float) -> float:
    """The smallest noise multiplier whose ε over ``rounds`` stays within ``target`` for all."""
    lo, hi = 0.3, 50.0
    for _ in range(40):
        mid = (lo + hi) / 2
        eps = max(run_epsilon({"noise_multiplier": mid, "batch_size": batch,
                               "local_epochs": 1, "delta": delta}, n, rounds) for n in rows)
        lo, hi = (mid, hi) if eps > target else (lo, mid)
    return hi


def digits(targets: tuple[float, ...] = (1.0, 3.0, 8.0), rounds: int = 5, batch: int = 64,
           lr: float = 1.0, delta: float = 1e-5) -> dict[str, tuple[float, float]]:
    spec, frames = tables("digits", [*PIXELS, "label"])
    test = pd.read_csv(ROOT / "datasets" / "digits" / "test.csv")
    Xt, yt = (torch.from_numpy(a) for a in encode_table(test, spec, PIXELS, "label"))
    rows = [len(f) for f in frames]
    out = {}
    for target in (None, *targets):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        dp = None
        sigma = 0.0
        if target is not None:
            sigma = sigma_for(target, rows, rounds, batch, delta)
            dp = DP(noise_multiplier=sigma, max_grad_norm=1.0, delta=delta,
                    epsilon_total=target)
        trained = fedavg(model, spec, frames, PIXELS, "label", rounds,
                         TrainingConfig(batch_size=batch, lr=lr), dp)
        with torch.no_grad():
            acc = float((trained(Xt).argmax(1) == yt).float().mean())
        out["no DP" if target is None else f"ε = {target:g}"] = (acc, sigma)
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    fed, central = heart()
    print(f"heart: FedAvg {fed:.3f}, central {central:.3f}, "
          f"difference {100 * (central - fed):+.1f} points")
    print("| digits, 5 rounds, 3 owners (non-IID) | noise multiplier | test accuracy |")
    print("|---|---|---|")
    for name, (acc, sigma) in digits().items():
        print(f"| {name} | {sigma:.2f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
