"""SMPC figures of the in-process engine, next to CrypTen 0.4.1 measured in the same run.

Ours: :func:`kernel_bridge.smpc.local.execute` runs both parties' programs and
the dealer in this process, one thread. The figure is the **online** time of
one party when the parties run side by side (per round, the slower party's
computation, summed: what two processes on two cores take with a free
network); the detail line adds the total online time of both parties run one
after the other, and the dealer's **offline** time (made before, separately).
The networked figure (real workers, encrypted channels) is the worker-side
benchmark's. Anchor: :func:`.smpc_anchor.crypten_times` (two processes over
loopback, one thread each, trusted-first-party provider, triples made inside
the timed op).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from .core import Config, Goal, Result, benchmark, median, result, spread_ms
from .smpc_anchor import OPS, crypten_times

GOAL = Goal("<=", 0.5)


@functools.cache
def _anchor() -> dict[str, float]:
    return crypten_times(tuple(OPS))


def _inputs(name: str) -> tuple[str, list[torch.Tensor], dict[str, Any]]:
    g = torch.Generator().manual_seed(0)  # benchmark inputs, not secrets
    if name.startswith("matmul"):
        n = int(name[len("matmul"):])
        return "matmul", [torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)], {}
    if name == "mul1m":
        return "mul", [torch.randn(1_000_000, generator=g),
                       torch.randn(1_000_000, generator=g)], {}
    if name == "relu10k":
        return "relu", [torch.randn(10_000, generator=g)], {}
    if name == "add100":
        return "add", [torch.randn(100, 100, generator=g), torch.randn(100, 100, generator=g)], {}
    raise ValueError(name)


def measure(name: str, reps: int) -> dict[str, float]:
    """Median online (parallel parties), online (sequential) and dealer seconds of one op."""
    from kernel_bridge.smpc import fixed, local, sharing

    op, xs, params = _inputs(name)
    shares = [sharing.share(fixed.encode(x), 2) for x in xs]
    runs = [local.execute(op, shares, params, 2) for _ in range(reps + 1)][1:]
    return {"critical": median([r.critical_s for r in runs]),
            "online": median([r.online_s for r in runs]),
            "offline": median([r.offline_s for r in runs]),
            "rounds": float(runs[0].rounds)}


def _figure(name: str, cfg: Config) -> Result:
    what, reps = OPS[name]
    ours = measure(name, max(3, reps // 3) if cfg.quick else reps)
    anchor = _anchor()[name]
    return result(f"smpc_local {name}", ours["critical"] * 1e3, "ms", "CrypTen 0.4.1",
                  anchor * 1e3, GOAL,
                  f"{what}: online per party {ours['critical'] * 1e3:.2f} ms "
                  f"({int(ours['rounds'])} rounds), both parties in one thread "
                  f"{ours['online'] * 1e3:.2f} ms, dealer offline "
                  f"{ours['offline'] * 1e3:.2f} ms; CrypTen {anchor * 1e3:.2f} ms")


def _register(name: str) -> None:
    def fn(cfg: Config) -> Result:
        return _figure(name, cfg)

    fn.__doc__ = f"SMPC in-process {OPS[name][0]} (online) vs CrypTen 0.4.1"
    benchmark(f"smpc_local_{name}")(fn)


for _name in OPS:
    _register(_name)
del _name


def _ring_figure(n: int, cfg: Config) -> Result:
    """Exact ring matmul n x n (ring_matmul, auto method) vs torch's int64 matmul, one thread."""
    import time

    from kernel_bridge.smpc import ring

    g = torch.Generator().manual_seed(1)  # benchmark inputs, not secrets
    a = torch.randint(-2**63, 2**63 - 1, (n, n), generator=g)
    b = torch.randint(-2**63, 2**63 - 1, (n, n), generator=g)
    reps = (3 if cfg.quick else 7) if n >= 500 else (20 if cfg.quick else 100)

    def timed(fn: Any) -> list[float]:
        fn()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    ours = timed(lambda: ring.ring_matmul(a, b))
    anchor = timed(lambda: a @ b)
    if not torch.equal(ring.ring_matmul(a, b), a @ b):
        raise AssertionError("ring_matmul differs from torch's int64 matmul")
    method = ring.choose(n, n, n)
    return result(f"smpc ring_matmul {n}x{n}", median(ours) * 1e3, "ms", "torch int64 @",
                  median(anchor) * 1e3, Goal("<=", 1.0),
                  f"ours (auto: {method}) {spread_ms(ours)}; "
                  f"torch int64 {spread_ms(anchor)}")


def _register_ring(n: int) -> None:
    def fn(cfg: Config) -> Result:
        return _ring_figure(n, cfg)

    fn.__doc__ = f"Exact ring matmul {n}x{n} (mod 2^64) vs torch's int64 matmul, one thread"
    benchmark(f"smpc_ring_{n}")(fn)


for _n in (100, 1000):
    _register_ring(_n)
del _n
