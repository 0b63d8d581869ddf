"""The ``%%remote`` magic's figure: a trivial cell's round trip from a notebook shell.

Ours is what a notebook user waits for: ``%%remote w`` in a real IPython shell
(argument parsing, the worker's gate and receipt, the receipt object), against
a bare ``jupyter_client`` execute of the same cell on a plain local kernel.
"""

from __future__ import annotations

import time

from .anchors import BareKernel
from .bridge import _blocks, launched
from .core import Config, Goal, Result, benchmark, median, result, spread_ms


@benchmark("magic")
def remote_cell_roundtrip(cfg: Config) -> Result:
    """Round trip of a trivial %%remote cell vs a bare jupyter_client execute."""
    from IPython.core.interactiveshell import InteractiveShell

    code = "y = x + 1"
    with launched("bench") as w, BareKernel() as bare:
        ip = InteractiveShell.instance()
        ip.extension_manager.load_extension("kernel_bridge")
        ip.user_ns["w"] = w
        bare.run("x = 1")
        first = ip.run_cell_magic("remote", "w", "x = 1")
        if not first.ok:
            raise RuntimeError(f"setup cell failed: {first!r}")

        def ours_once() -> float:
            t0 = time.perf_counter()
            receipt = ip.run_cell_magic("remote", "w", code)
            dt = time.perf_counter() - t0
            if not receipt.ok or receipt.names[0]["name"] != "y":
                raise RuntimeError(f"%%remote cell came back as {receipt!r}")
            return dt

        for _ in range(cfg.warmup):
            ours_once()
        bare.time_execute(code, cfg.warmup)
        def direct_once() -> float:
            t0 = time.perf_counter()
            w.run(code)
            return time.perf_counter() - t0

        ours: list[float] = []
        anchor: list[float] = []
        direct: list[float] = []
        for n in _blocks(cfg.iterations):  # interleaved, so drift hits all alike
            ours += [ours_once() for _ in range(n)]
            anchor += bare.time_execute(code, n)
            direct += [direct_once() for _ in range(max(1, n // 3))]
        # Not a no-op: the remote kernel computed y (a clean int: its pointer is fetchable).
        if w.vars["y"].type_name != "int":
            raise RuntimeError("the remote cell did not bind y")
        bare.run("assert y == 2")
        ip.user_ns.pop("w", None)

    detail = (f"ours {spread_ms(ours)}; anchor {spread_ms(anchor)}; the same cell through "
              f"Worker.run without the magic: median {median(direct) * 1e3:.3f} ms"
              f"{w.sandboxed_note}")
    return result("%%remote cell round trip (y = x + 1)", median(ours) * 1e3, "ms",
                  "bare jupyter_client execute", median(anchor) * 1e3, Goal("<=", 1.3), detail)
