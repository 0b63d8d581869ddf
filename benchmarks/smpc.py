"""SMPC over real workers: 2PC (alice, bob) with an independent dealer (dave), next to CrypTen.

Each op runs on clean inputs the scientist shared; the dealer makes and sends
the material first (its *offline* time, reported in the detail line), then the
two parties run the op. *Online* is the slowest party's own time for its part
(from the ``smpc_run`` it got to its output share, with its material at hand: a
wait for the tail of the dealer's material is preprocessing, reported apart),
the way CrypTen's anchor times rank 0 between barriers; the scientist's round
trip to both workers comes on top and is reported too. The anchor is
:func:`benchmarks.smpc_anchor.crypten_times` (CrypTen 0.4.1, two processes,
one thread each, trusted-first-party provider), measured in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from .core import Config, Goal, Result, benchmark, result

#: op key -> (label, timed repetitions, quick repetitions)
OPS: dict[str, tuple[str, int, int]] = {
    "matmul100": ("2PC matmul 100x100", 30, 5),
    "matmul1000": ("2PC matmul 1000x1000", 5, 2),
    "mul1m": ("2PC mul of 1M", 10, 3),
    "relu10k": ("2PC ReLU of 10k", 20, 5),
    "add100": ("2PC add 100x100", 100, 10),
}
GOAL = Goal("<=", 0.5)


class _Bench:
    """The three workers and the CrypTen times, made once for all the SMPC lines."""

    def __init__(self) -> None:
        import kernel_bridge as kb

        root = Path(tempfile.mkdtemp(prefix="syftlab-bench-smpc-"))
        self.alice = kb.launch("alice", state=root / "alice", threads=1)
        self.bob = kb.launch("bob", state=root / "bob", threads=1)
        self.dave = kb.launch("dave", dealer=True, state=root / "dave", threads=1)
        self.done: set[str] = set()
        self._crypten: dict[str, float] | None = None

    def crypten(self) -> dict[str, float]:
        if self._crypten is None:
            from .smpc_anchor import crypten_times

            self._crypten = crypten_times(list(OPS))
        return self._crypten

    def inputs(self, key: str) -> tuple[Any, Any | None, str, dict[str, Any]]:
        import kernel_bridge as kb

        parties = [self.alice, self.bob]
        torch.manual_seed(0)

        def sh(t: torch.Tensor) -> Any:
            return kb.smpc.share(t, parties=parties, dealer=self.dave)

        if key.startswith("matmul"):
            n = int(key[len("matmul"):])
            return sh(torch.randn(n, n)), sh(torch.randn(n, n)), "matmul", {}
        if key == "mul1m":
            return sh(torch.randn(1_000_000)), sh(torch.randn(1_000_000)), "mul", {}
        if key == "relu10k":
            return sh(torch.randn(10_000)), None, "relu", {}
        return sh(torch.randn(100, 100)), sh(torch.randn(100, 100)), "add", {}

    def close(self) -> None:
        for w in (self.alice, self.bob, self.dave):
            w.close()


_state: dict[str, _Bench] = {}


def _measure(key: str, cfg: Config) -> Result:
    label, reps, quick_reps = OPS[key]
    bench = _state.get("b")
    if bench is None:
        bench = _state["b"] = _Bench()
    try:
        x, y, op, params = bench.inputs(key)
        others = [y] if y is not None else []
        core = bench.alice.core
        online, offline, client, material = [], [], [], []
        for i in range(2 + (quick_reps if cfg.quick else reps)):
            out = core.blocking(x._arun(op, others, params, sequential=True))
            if i >= 2:  # two warm-up runs
                online.append(out.timings["party_online_s"])
                offline.append(out.timings.get("offline_s", 0.0))
                client.append(out.timings["online_s"])
                material.append(out.timings.get("material_s", 0.0))
            out.free()
        anchor = bench.crypten()[key]
        ours = statistics.median(online)
        detail = (f"online (slowest party) median {ours * 1e3:.2f} ms; with the scientist's "
                  f"round trip {statistics.median(client) * 1e3:.2f} ms; dealer offline "
                  f"{statistics.median(offline) * 1e3:.2f} ms and a party's wait for the "
                  f"rest of its material {statistics.median(material) * 1e3:.2f} ms "
                  "(not in the ratio)")
        return result(f"smpc {label}", ours, "s", "CrypTen 0.4.1", anchor, GOAL, detail)
    finally:
        bench.done.add(key)
        if bench.done >= set(OPS):
            bench.close()
            _state.pop("b", None)


def _register(key: str) -> None:
    def fn(cfg: Config) -> Result:
        return _measure(key, cfg)

    fn.__doc__ = f"SMPC {OPS[key][0]} over real workers with a dealer, online vs CrypTen"
    benchmark(f"smpc_{key}")(fn)


for _key in OPS:
    _register(_key)
