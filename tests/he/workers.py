"""A worker of the HE tests' own: a planted model and planted rows, both declared for HE.

The planted values (``PLANTED_WEIGHT`` in the model, ``PLANTED_CHOL`` in the rows)
are what the leak tests look for in logs, audit records and errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PLANTED_WEIGHT = 0.987654321
PLANTED_CHOL = 4321.987654
PREDICTIONS = 20
EPSILON_PER_SCIENTIST = 3.0
EPSILON_PER_EVALUATION = 0.5
COLUMNS = ["age", "chol", "flag"]
BOUNDS = {"age": (20.0, 80.0), "chol": (0.0, 5000.0)}


def model_state(seed: int = 7) -> dict[str, np.ndarray]:
    """A 5-3-2 model with one planted weight."""
    rng = np.random.default_rng(seed)
    state = {"fc1.weight": rng.normal(0, 0.5, (3, 5)), "fc1.bias": rng.normal(0, 0.1, 3),
             "fc2.weight": rng.normal(0, 0.5, (2, 3)), "fc2.bias": rng.normal(0, 0.1, 2)}
    state["fc1.weight"][1, 2] = PLANTED_WEIGHT
    return state


def rows(n: int = 6000, seed: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``age, chol, flag, target`` columns, one chol planted."""
    rng = np.random.default_rng(seed)
    age = rng.integers(25, 78, n).astype(float)
    chol = np.round(rng.uniform(150, 4500, n), 6)
    chol[5] = PLANTED_CHOL
    flag = (rng.random(n) < 0.4).astype(int)
    target = ((age / 80 + flag + rng.normal(0, 0.3, n)) > 1.0).astype(int)
    return age, chol, flag, target


def features(age: np.ndarray, chol: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """The rows as the worker scales them into [0, 1]."""
    a = (age - BOUNDS["age"][0]) / (BOUNDS["age"][1] - BOUNDS["age"][0])
    c = (chol - BOUNDS["chol"][0]) / (BOUNDS["chol"][1] - BOUNDS["chol"][0])
    return np.clip(np.stack([a, c, flag.astype(float)], axis=1), 0, 1)


def write_config(directory: Path) -> Path:
    """Files and a TOML for a worker serving both HE services; returns the TOML's path."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in model_state().items()}
    torch.save(state, directory / "model.pt")
    mock = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save(mock, directory / "model_mock.pt")
    age, chol, flag, target = rows()
    lines = ["id,age,chol,flag,target"]
    lines += [f"{i},{int(a)},{c:.6f},{f},{t}" for i, (a, c, f, t) in
              enumerate(zip(age, chol, flag, target, strict=True))]
    (directory / "rows.csv").write_text("\n".join(lines) + "\n")
    (directory / "worker.toml").write_text(f"""
[worker]
name = "hetest"
state = "state"

[assets.model]
path = "model.pt"
mock = "model_mock.pt"

[assets.model.he]
predictions_per_scientist = {PREDICTIONS}

[assets.rows]
path = "rows.csv"
show_row_count = true

[assets.rows.dp]
privacy_unit = "id"
max_rows_per_id = 1
epsilon_per_scientist = {EPSILON_PER_SCIENTIST}
epsilon_total = 100.0

[assets.rows.columns.id]
type = "int"
lower = 0
upper = 100000

[assets.rows.columns.age]
type = "int"
lower = {BOUNDS["age"][0]}
upper = {BOUNDS["age"][1]}

[assets.rows.columns.chol]
type = "float"
lower = {BOUNDS["chol"][0]}
upper = {BOUNDS["chol"][1]}

[assets.rows.columns.flag]
type = "bool"

[assets.rows.columns.target]
type = "int"
lower = 0
upper = 1

[assets.rows.he]
columns = {COLUMNS!r}
label = "target"
epsilon_per_evaluation = {EPSILON_PER_EVALUATION}
""".replace("'", '"'))
    return directory / "worker.toml"
