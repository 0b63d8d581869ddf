"""The SMPC anchor: CrypTen 0.4.1, two processes over loopback, one thread each.

CrypTen pins an old torch, so it gets its own virtual environment, made here on
first use under ``.bench-venvs/crypten`` (gitignored): ``pip install --no-deps
crypten==0.4.1`` plus ``omegaconf onnx scikit-learn torch==2.13.0`` (the
torch the project uses). With torch 2.x, ``crypten.nn.onnx_converter`` fails to
import; the benchmark's own process replaces that one module with a stub in
``sys.modules`` before importing crypten (nothing is patched on disk).

:func:`crypten_times` runs ``crypten.mpc.run_multiprocess(world_size=2)`` (gloo
over 127.0.0.1, ``OMP_NUM_THREADS=1``, CrypTen's default trusted-first-party
provider, whose triples are made inside each timed op) and returns the median
seconds of each op, timed on rank 0 between barriers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .anchors import one_thread_env

#: The ops both sides measure: name -> (what, timed repetitions).
OPS: dict[str, tuple[str, int]] = {
    "matmul100": ("2PC matmul 100x100 @ 100x100", 30),
    "matmul1000": ("2PC matmul 1000x1000 @ 1000x1000", 5),
    "mul1m": ("2PC elementwise mul of 1M", 10),
    "relu10k": ("2PC ReLU of 10k", 20),
    "add100": ("2PC add 100x100", 100),
}

VENV = Path(__file__).resolve().parent.parent / ".bench-venvs" / "crypten"
PACKAGES = ("omegaconf", "onnx", "scikit-learn", "torch==2.13.0")

_SCRIPT = r'''
import json, statistics, sys, time, types

stub = types.ModuleType("crypten.nn.onnx_converter")


def _stubbed(*args, **kwargs):
    raise RuntimeError("crypten's onnx converter is stubbed in this benchmark")


stub.from_onnx = stub.from_pytorch = stub.from_tensorflow = _stubbed
stub.TF_AND_TF2ONNX = False
sys.modules["crypten.nn.onnx_converter"] = stub

import torch
import crypten
import crypten.communicator as comm
import crypten.mpc as mpc

OPS = json.loads(sys.argv[1])
OUT = sys.argv[2]


@mpc.run_multiprocess(world_size=2)
def bench():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = {}
    for name, reps in OPS.items():
        if name.startswith("matmul"):
            n = int(name[len("matmul"):])
            x = crypten.cryptensor(torch.randn(n, n))
            y = crypten.cryptensor(torch.randn(n, n))
            fn = lambda: x.matmul(y)
        elif name == "mul1m":
            x = crypten.cryptensor(torch.randn(1_000_000))
            y = crypten.cryptensor(torch.randn(1_000_000))
            fn = lambda: x * y
        elif name == "relu10k":
            x = crypten.cryptensor(torch.randn(10_000))
            fn = lambda: x.relu()
        elif name == "add100":
            x = crypten.cryptensor(torch.randn(100, 100))
            y = crypten.cryptensor(torch.randn(100, 100))
            fn = lambda: x + y
        else:
            raise ValueError(name)
        for _ in range(2):
            fn()
        times = []
        for _ in range(reps):
            comm.get().barrier()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    if comm.get().get_rank() == 0:
        with open(OUT, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    bench()
'''


def ensure_venv() -> Path:
    """The CrypTen venv's python, creating the venv on first use."""
    py = VENV / "bin" / "python"
    marker = VENV / ".ready"
    if marker.exists() and py.exists():
        return py
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "crypten==0.4.1"], check=True)
    subprocess.run([*pip, *PACKAGES], check=True)
    marker.write_text("crypten==0.4.1 " + " ".join(PACKAGES) + "\n")
    return py


def crypten_times(ops: Iterable[str] = tuple(OPS), timeout: float = 900.0) -> dict[str, float]:
    """Median seconds per op of CrypTen 0.4.1 (2 processes, 1 thread each, TFP provider).

    Parameters
    ----------
    ops : iterable of str
        Keys of :data:`OPS` (``matmul100``, ``matmul1000``, ``mul1m``, ``relu10k``,
        ``add100``).
    timeout : float
        Seconds before the CrypTen processes are killed.

    Returns
    -------
    dict
        ``{op: median seconds}``.
    """
    wanted = {name: OPS[name][1] for name in ops}
    py = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="crypten-bench-") as tmp:
        script = Path(tmp) / "crypten_bench.py"
        script.write_text(_SCRIPT)
        out = Path(tmp) / "times.json"
        env = {**one_thread_env(), "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([str(py), str(script), json.dumps(wanted), str(out)], env=env,
                              cwd=tmp, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"CrypTen benchmark failed (exit {proc.returncode}): "
                               f"{proc.stderr[-2000:]}")
        times: dict[str, float] = json.loads(out.read_text())
    return times


if __name__ == "__main__":  # python -m benchmarks.smpc_anchor [op ...]
    print(json.dumps(crypten_times(sys.argv[1:] or tuple(OPS)), indent=2))
    os._exit(0)
