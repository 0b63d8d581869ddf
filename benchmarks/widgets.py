"""The widgets' cost to the scientist, and how fast the graph notices a crash.

A live :class:`syft_widgets.WorkerGraph` polls from background threads over
the scientist's own connection; the figure is a remote op's round trip with
the graph polling (its default 1 s interval) against the same op with the
graph stopped, interleaved in blocks on the same worker.
"""

from __future__ import annotations

import time

from .bridge import _blocks, _torch, launched
from .core import Config, Goal, Result, benchmark, median, result, spread_ms


def _until(pred: object, timeout: float) -> float:
    t0 = time.perf_counter()
    while not pred():  # type: ignore[operator]
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.perf_counter() - t0


@benchmark("widgets")
def graph_overhead(cfg: Config) -> Result:
    """Remote op round trip with a live WorkerGraph vs with the graph stopped."""
    from kernel_bridge.launch import relaunch
    from syft_widgets import WorkerGraph

    torch = _torch()
    with launched("bench") as w, launched("victim") as victim:
        p = w.send(torch.tensor([1.0]))
        graph = WorkerGraph([w, victim], start=False)
        try:
            def once() -> float:
                t0 = time.perf_counter()
                p + 1
                return time.perf_counter() - t0

            for _ in range(cfg.warmup):
                once()
            live: list[float] = []
            quiet: list[float] = []
            for n in _blocks(cfg.iterations * 2):
                graph.start()
                live += [once() for _ in range(n)]
                graph.stop()
                quiet += [once() for _ in range(n)]
            graph.start()
            _until(lambda: graph.ticks >= 1, 10)
            victim.process.kill()
            offline = _until(lambda: graph.status()["victim"] == "offline", 10)
            relaunch(victim)
            back = _until(lambda: graph.status()["victim"] == "online", 30)
            if graph.status()["bench"] != "online":
                raise RuntimeError(f"the healthy worker is shown {graph.status()['bench']}")
        finally:
            graph.close()
    detail = (f"with graph {spread_ms(live)}; without {spread_ms(quiet)}; a SIGKILLed worker "
              f"shown offline after {offline:.2f} s, online {back:.2f} s after relaunch "
              f"returned (1 s polling){w.sandboxed_note}")
    return result("remote op round trip, live WorkerGraph", median(live) * 1e3, "ms",
                  "same op, graph stopped", median(quiet) * 1e3, Goal("<=", 1.1), detail)
