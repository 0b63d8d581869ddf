"""Plan documents the plan tests share (built the way a scientist's library would)."""

from __future__ import annotations

import copy
from typing import Any

#: A plan whose entry function can misbehave on request (``mode``), so one approved
#: plan covers every wrong form of output.
MEANS_CODE = '''
import builtins
import numpy as np


def run(data, spec, scale=1.0, mode="ok"):
    x = data[spec["features"]].to_numpy(dtype="float32")
    mean = (x.mean(axis=0) * scale).astype("float32")
    out = {"mean": {"m": mean}, "n": len(data), "loss": float(scale)}
    if mode == "shape":
        out["mean"] = {"m": np.zeros(3, dtype="float32")}
    elif mode == "float64":
        out["mean"] = {"m": mean.astype("float64")}
    elif mode == "nan":
        out["mean"] = {"m": np.array([np.nan, 1.0], dtype="float32")}
    elif mode == "extra":
        out["rows"] = data.to_numpy()
    elif mode == "extra_tensor":
        out["mean"] = {"m": mean, "raw": x[:, 0].copy()}
    elif mode == "missing":
        del out["n"]
    elif mode == "bool_count":
        out["n"] = True
    elif mode == "negative_count":
        out["n"] = -1
    elif mode == "string":
        out["loss"] = str(data.iloc[0, 0])
    elif mode == "not_a_dict":
        out = [mean]
    elif mode == "spec":
        # The approved DP-SGD settings and the declared column kinds come from the worker.
        kinds = {c["name"]: c["kind"] for c in spec["columns"]}
        ok = kinds == {"age": "int", "chol": "int"} and "m" in spec["outputs"]["mean"]["shapes"]
        out["n"] = int(spec["dp"]["batch_size"]) if spec["dp"] and ok else 0
    elif mode == "stash":
        # A run that tries to leave something for the next run of the plan.
        globals()["STASHED"] = x
        builtins.STASHED = x
    elif mode == "slow":
        import time
        time.sleep(60)
    elif mode == "raise":
        raise ValueError(str(data.iloc[0, 0]))
    elif mode == "mark":
        # Counts this plan's runs in its kernel through a module attribute (state a
        # run's own code may keep: the plan kernel is kept per plan hash and scientist).
        np._syft_test_mark = getattr(np, "_syft_test_mark", 0) + 1
        out["n"] = np._syft_test_mark
    elif mode == "runtime":
        # What the worker set up in this kernel: glibc's malloc keeps freed memory for the
        # next run (2), and the kernel's imports are frozen out of the collector's way (1).
        import gc
        import os
        tuned = "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
        out["n"] = 2 * int(tuned) + int(gc.get_freeze_count() > 0)
    elif mode == "probe":
        # What did this kernel see before the plan? Nothing of the scientist's session.
        seen = [n for n in ("leak", "LEAK_FROM_SESSION", "STASHED") if n in globals()]
        seen += [n for n in ("LEAK_FROM_SESSION", "STASHED") if hasattr(builtins, n)]
        out["n"] = len(seen)
    return out
'''


def means_plan(max_runs: int = 50, **policy: Any) -> dict[str, Any]:
    """Column means of heart's age and chol, as one float32 tensor, plus counts."""
    return {
        "name": "heart means",
        "code": MEANS_CODE,
        "entry": "run",
        "inputs": {"asset": "heart", "columns": ["age", "chol"], "target": None},
        "policy": {
            "max_runs": max_runs,
            "outputs": {"mean": {"kind": "tensors", "shapes": {"m": [2]}, "dtype": "float32"},
                        "n": {"kind": "count"}, "loss": {"kind": "scalar"}},
            "aggregate": None, "dp": None, **policy,
        },
    }


DP = {"noise_multiplier": 1.1, "max_grad_norm": 1.0, "delta": 1e-5, "batch_size": 30,
      "local_epochs": 1, "epsilon_total": 2.5}


def dp_plan(max_runs: int = 50, **dp: Any) -> dict[str, Any]:
    return means_plan(max_runs, dp={**DP, **dp})


def secure_plan(min_workers: int = 3) -> dict[str, Any]:
    return means_plan(10, aggregate={"secure": True, "min_workers": min_workers})


def with_code(doc: dict[str, Any], code: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["code"] = code
    return out


#: A plan on encoded inputs: it reports the column means of the X it got, whether its
#: kernel has pandas loaded, and then zeroes X in place (its own copy, not the next run's).
ENCODED_CODE = '''
import sys
import numpy as np


def run(data, spec):
    X, y = data["X"], data["y"]
    out = {"mean": {"m": X.mean(axis=0).astype("float32")}, "n": len(y),
           "loss": float("pandas" in sys.modules)}
    X[:] = 0
    y[:] = 0
    return out
'''


def encoded_plan(encoding: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of heart's age and chol as the worker encodes them (scaled to [0, 1])."""
    doc = means_plan(max_runs=5)
    doc.update(name="heart encoded means", code=ENCODED_CODE)
    doc["inputs"] = {"asset": "heart", "columns": ["age", "chol"], "target": "sex",
                     "encoding": encoding}
    return doc
