"""The FL training plan: the code every worker runs each round, and its policy.

:func:`training_plan` writes a plan document (the contract of
:mod:`kernel_bridge.owner.plans`): self-contained Python source defining
``run(data, weights, round=0, **args) -> dict`` with

* its data already encoded by the worker: the plan's ``inputs.encoding`` holds
  the merged public column declarations, and each worker's trusted code runs
  :func:`~.encoding.encode_table` by them once per plan kernel, so every worker
  encodes its table identically and the sandboxed kernel gets ``{"X", "y"}``
  arrays (no pandas there, no re-encoding each round);
* the model's structure as code (:mod:`.model_code`), loaded with the global
  weights the scientist sends as tensors;
* the local loop: ``local_epochs`` of minibatch SGD (plus FedProx's proximal
  term when ``prox_mu`` > 0), or, with ``dp``, Opacus's DP-SGD
  (``PrivacyEngine.make_private``: Poisson sampling, per-sample clipping to
  ``max_grad_norm``, Gaussian noise ``noise_multiplier * max_grad_norm``);

and returning ``update`` (the new weights times the local sample count, so that
a sum of updates divided by the sum of counts is FedAvg's weighted mean; a
secure aggregate reveals only those sums), ``num_examples``, and, without DP,
the received global model's ``loss`` (summed) and ``correct`` on the local data.
With DP those two are not released: DP-SGD's guarantee covers the weights only.
"""

from __future__ import annotations

import hashlib
import pprint
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InvalidQuery
from .encoding import ColumnDecl, encoding_decls, input_width, n_classes
from .model_code import model_source, param_shapes


@dataclass(frozen=True)
class DP:
    """DP-SGD settings of a training plan (Opacus), per owner.

    Parameters
    ----------
    noise_multiplier : float
        Gaussian noise std as a multiple of ``max_grad_norm``.
    max_grad_norm : float
        Per-sample gradient clipping norm.
    delta : float
        The δ of the (ε, δ) reported by the RDP accountant.
    epsilon_total : float, optional
        The most ε the plan may spend on each owner's asset (the policy's cap); by
        default the job's rounds decide it.
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    epsilon_total: float | None = None

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not self.max_grad_norm > 0:
            raise InvalidQuery("noise_multiplier and max_grad_norm must be positive")
        if not 0 < self.delta < 1:
            raise InvalidQuery("delta must lie in (0, 1)")


@dataclass(frozen=True)
class TrainingConfig:
    """What each worker's local training does (all of it is in the plan's code)."""

    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    prox_mu: float = 0.0
    seed: int = 0


OUTPUTS_PLAIN = ("update", "num_examples", "loss", "correct")
OUTPUTS_DP = ("update", "num_examples")


def training_plan(model: Any, *, name: str, asset: str, spec: Sequence[ColumnDecl],
                  features: Sequence[str], target: str, rounds: int,
                  config: TrainingConfig, dp: DP | None = None, secure_agg: bool = False,
                  min_workers: int = 1, epsilon_total: float | None = None
                  ) -> dict[str, Any]:
    """The plan document for one owner (the same code for every owner of a job).

    Parameters
    ----------
    model : torch.nn.Sequential
        The global model (its structure becomes code; see :mod:`.model_code`).
    name : str
        The plan's name.
    asset : str
        The table asset trained on.
    spec : list of dict
        The merged public declarations of ``features`` and ``target``
        (:func:`~.encoding.merge_specs`).
    features, target : list of str, str
        Feature columns and the class column.
    rounds : int
        The most runs the policy allows.
    config : TrainingConfig
        Local training settings.
    dp : DP, optional
        DP-SGD settings; ``epsilon_total`` caps the ε over all rounds.
    secure_agg : bool
        Whether the outputs are released only as a secure aggregate.
    min_workers : int
        The fewest workers an aggregate may combine.
    epsilon_total : float, optional
        With ``dp``: the policy's ε cap (defaults to ``dp.epsilon_total``).

    Returns
    -------
    dict
        ``{"name", "code", "entry", "inputs", "policy"}``.
    """
    width = input_width(spec, features)
    classes = n_classes(spec, target)
    _check_widths(model, width, classes)
    shapes = param_shapes(model)
    code = plan_code(model, config=config, dp=dp)
    outputs: dict[str, Any] = {
        "update": {"kind": "tensors", "shapes": shapes, "dtype": "float32"},
        "num_examples": {"kind": "count"},
    }
    if dp is None:
        outputs["loss"] = {"kind": "scalar"}
        outputs["correct"] = {"kind": "count"}
    policy: dict[str, Any] = {
        "max_runs": int(rounds),
        "outputs": outputs,
        "aggregate": {"secure": True, "min_workers": int(min_workers)} if secure_agg else None,
        "dp": None,
    }
    if dp is not None:
        cap = epsilon_total if epsilon_total is not None else dp.epsilon_total
        policy["dp"] = {"noise_multiplier": dp.noise_multiplier,
                        "max_grad_norm": dp.max_grad_norm, "delta": dp.delta,
                        "batch_size": config.batch_size, "local_epochs": config.local_epochs,
                        "epsilon_total": cap}
    return {"name": name, "code": code, "entry": "run",
            "inputs": {"asset": asset, "columns": list(features), "target": target,
                       "encoding": encoding_decls(spec, [*features, target])},
            "policy": policy}


def _check_widths(model: Any, width: int, classes: int) -> None:
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears and linears[0].in_features != width:
        raise InvalidQuery(f"the model's first layer takes {linears[0].in_features} inputs but "
                           f"the declared features encode to {width}")
    if linears and linears[-1].out_features != classes:
        raise InvalidQuery(f"the model's last layer gives {linears[-1].out_features} outputs but "
                           f"the target declares {classes} classes")


def plan_code(model: Any, *, config: TrainingConfig, dp: DP | None) -> str:
    """The plan's Python source (what the owner reads and approves by hash)."""
    settings = {**asdict(config), "dp": None if dp is None else {
        "noise_multiplier": dp.noise_multiplier, "max_grad_norm": dp.max_grad_norm}}
    return _TEMPLATE.format(model=model_source(model, indent="        "),
                            settings=_pretty(settings))


def _pretty(value: Any) -> str:
    return pprint.pformat(value, indent=1, width=96, sort_dicts=False)


def code_digest(code: str) -> str:
    """SHA-256 of a plan's code (what an owner's approval binds, with the policy)."""
    return hashlib.sha256(code.encode()).hexdigest()


_TEMPLATE = '''"""Federated training plan (written by kernel_bridge.fl).

Each run: take the local data as the worker encoded it by the plan's
inputs.encoding (data["X"]: float32 features, data["y"]: int64 classes), load
the global weights sent for this round, train locally, and return the new
weights times the local sample count (plus the count, and without DP the global
model's loss and correct predictions on the local data).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

SETTINGS = {settings}


def make_model():
    return {model}


def _global_model(weights):
    # Built without initialising its weights (on the meta device), then given this
    # round's: the random init would be overwritten anyway.
    with torch.device("meta"):
        model = make_model()
    dtypes = {{k: t.dtype for k, t in model.state_dict().items()}}
    state = {{k: torch.tensor(np.asarray(v), dtype=dtypes.get(k, torch.float32))
             for k, v in weights.items()}}
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = make_model()  # a buffer the state does not hold: built the plain way
        model.load_state_dict(state)
    return model


class _SGD:
    """Plain SGD (no momentum, no weight decay): torch.optim.SGD's update, p -= lr * grad.

    Without DP the plan steps by hand: the first torch.optim optimizer a process makes
    imports torch._dynamo (about 70 MB more in each plan kernel). DP-SGD needs Opacus's
    wrapper around a real torch.optim.SGD.
    """

    def __init__(self, params, lr):
        self.params, self.lr = list(params), lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


def _shuffled(X, y, batch_size):
    """One epoch's minibatches in a fresh random order: DataLoader(shuffle=True)'s batches,
    sliced at once instead of gathered row by row and stacked."""
    return [(X[i], y[i]) for i in torch.randperm(len(y)).split(batch_size)]


def _metrics(logits, y):
    loss = nn.functional.cross_entropy(logits, y, reduction="sum")
    return float(loss), int((logits.argmax(dim=1) == y).sum())


def _evaluate(model, X, y):
    with torch.no_grad():
        return _metrics(model(X), y)


def run(data, weights, round=0, **args):
    # The CPU generator only: torch.manual_seed would also queue a CUDA seeding, with a
    # formatted stack each time, in a process that never uses CUDA.
    torch.default_generator.manual_seed(int(SETTINGS["seed"]) * 100003 + int(round))
    X, y = torch.from_numpy(data["X"]), torch.from_numpy(data["y"])
    n = int(len(y))
    model = _global_model(weights)
    out = {{}}
    batch_size = int(SETTINGS["batch_size"])
    # The global model's loss and hits on the local data: from the first training forward
    # when that batch is the whole data (one pass less), else by a pass of their own.
    whole = SETTINGS["dp"] is None and n <= batch_size
    if SETTINGS["dp"] is None and not whole:
        out["loss"], out["correct"] = _evaluate(model, X, y)
    mu = float(SETTINGS["prox_mu"])
    global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else []
    trained, loader = model, None
    if SETTINGS["dp"] is None:
        optimizer = _SGD(model.parameters(), float(SETTINGS["lr"]))
    else:
        from opacus import PrivacyEngine

        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                             batch_size=batch_size, shuffle=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(SETTINGS["lr"]))
        engine = PrivacyEngine(accountant="rdp")
        trained, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=float(SETTINGS["dp"]["noise_multiplier"]),
            max_grad_norm=float(SETTINGS["dp"]["max_grad_norm"]), poisson_sampling=True)
    trained.train()
    for _ in range(int(SETTINGS["local_epochs"])):
        for xb, yb in (loader if loader is not None else _shuffled(X, y, batch_size)):
            if len(yb) == 0:
                continue  # Poisson sampling can draw an empty batch
            optimizer.zero_grad()
            logits = trained(xb)
            if whole and "loss" not in out:
                out["loss"], out["correct"] = _metrics(logits.detach(), yb)
            loss = nn.functional.cross_entropy(logits, yb)
            if mu > 0:
                loss = loss + mu / 2 * sum(((p - g) ** 2).sum()
                                           for p, g in zip(model.parameters(), global_params))
            loss.backward()
            optimizer.step()
    if whole and "loss" not in out:  # no training pass ran (no rows)
        out["loss"], out["correct"] = _evaluate(model, X, y)
    # Scaled in place: the model is this run's own (built from a copy of the weights).
    state = model.state_dict()
    out["update"] = {{k: v.detach().float().mul_(n).contiguous() for k, v in state.items()}}
    out["num_examples"] = n
    return out
'''
