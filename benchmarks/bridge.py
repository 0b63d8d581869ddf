"""The bridge's own figures: a remote op's round trip and ``.get()`` throughput.

Each starts a real worker with :func:`kernel_bridge.launch` (its own process,
sandboxed kernels, a fresh state directory) and stops it on the way out.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .anchors import BareKernel, TcpLoopback
from .core import Config, Goal, Result, benchmark, median, percentile, result, spread_ms


def _torch() -> Any:
    import torch

    torch.set_num_threads(1)
    return torch


@contextlib.contextmanager
def launched(name: str = "bench", **kwargs: Any) -> Iterator[Any]:
    """A worker from ``kb.launch`` in a temporary state directory, stopped and removed after.

    Kernels are sandboxed as in production; where bubblewrap cannot run, they
    are not, and the worker says so in ``worker.sandboxed_note``.
    """
    import kernel_bridge as kb
    from kernel_bridge.owner import sandbox

    sandboxed = sandbox.bwrap_path() is not None
    state = Path(tempfile.mkdtemp(prefix=f"syftlab-{name}-"))
    worker = None
    ok = False
    try:
        worker = kb.launch(name, state=state, sandbox=sandboxed, threads=1, **kwargs)
        worker.sandboxed_note = "" if sandboxed else " (UNSANDBOXED: bwrap unavailable)"
        yield worker
        ok = True
    finally:
        try:
            if worker is not None:
                try:
                    worker.close()
                finally:
                    if worker.process is not None:
                        worker.process.stop()
        finally:
            log = state / "worker.log"
            if not ok and log.exists():
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print(f"--- last lines of {name}'s worker.log ---", *tail, sep="\n",
                      file=sys.stderr)
            shutil.rmtree(state, ignore_errors=True)


def _blocks(total: int, parts: int = 6) -> list[int]:
    """Split ``total`` iterations into ``parts`` interleaved blocks."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts) if base + (i < extra)]


@benchmark("roundtrip")
def remote_op_roundtrip(cfg: Config) -> Result:
    """Round trip of a trivial remote op (ptr + 1) vs a bare jupyter_client execute."""
    torch = _torch()
    with launched("bench") as w, BareKernel() as bare:
        p = w.send(torch.tensor([1.0]))
        # The anchor computes the same torch op and, like ours, keeps the result
        # without displaying it (``x + 1`` alone would add an execute_result and
        # a tensor repr to the anchor's time).
        bare.run("import torch; torch.set_num_threads(1); x = torch.tensor([1.0])")
        code = "y = x + 1"

        def ours_once() -> float:
            t0 = time.perf_counter()
            q = p + 1
            dt = time.perf_counter() - t0
            if q.shape != (1,):
                raise RuntimeError(f"remote p + 1 came back as {q!r}")
            return dt

        for _ in range(cfg.warmup):
            ours_once()
        bare.time_execute(code, cfg.warmup)
        ours: list[float] = []
        anchor: list[float] = []
        for n in _blocks(cfg.iterations):  # interleaved, so drift hits both alike
            ours += [ours_once() for _ in range(n)]
            anchor += bare.time_execute(code, n)

        # Not a no-op: the remote result is right, and so is the anchor's.
        got = (p + 1).get()
        if not torch.equal(got, torch.tensor([2.0])):
            raise RuntimeError(f"remote p + 1 gave {got!r}")
        bare.run("assert float(y) == 2.0")
        pings = []
        for _ in range(max(20, cfg.iterations // 3)):
            pings.append(w.ping())

    detail = (f"ours {spread_ms(ours)}; anchor {spread_ms(anchor)}; "
              f"websocket ping alone (client<->worker, no kernel) median "
              f"{median(pings) * 1e3:.3f} ms{w.sandboxed_note}")
    return result("remote op round trip (ptr + 1)", median(ours) * 1e3, "ms",
                  "bare jupyter_client execute", median(anchor) * 1e3, Goal("<=", 1.3), detail)


@benchmark("get")
def get_throughput(cfg: Config) -> Result:
    """.get() of a clean float32 tensor made remotely vs raw TCP loopback throughput."""
    torch = _torch()
    nbytes = cfg.transfer_bytes
    numel = nbytes // 4
    period = 1024  # the tensor repeats arange(period): every element can be checked
    base = torch.arange(period, dtype=torch.float32)
    expected = base.expand(numel // period, period)

    def check(v: Any) -> None:
        if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or \
                tuple(v.shape) != (numel,):
            raise RuntimeError(f".get() returned {type(v).__name__} "
                               f"{getattr(v, 'dtype', '')} {tuple(getattr(v, 'shape', ()))}")
        if not torch.equal(v.view(-1, period), expected):
            raise RuntimeError(".get() returned the right shape but the wrong values")

    with TcpLoopback(nbytes) as tcp, launched("bench") as w:
        # Made on the worker by an allow-listed op: 4 KiB up, nbytes back.
        big = w.send(base).repeat(numel // period)
        if big.taint or big.shape != (numel,):
            raise RuntimeError(f"expected a clean tensor of {numel} floats, got {big!r}")

        # One untimed transfer each first: it grows the shared-memory arena and
        # touches fresh memory on every side (reported, not counted).
        t0 = time.perf_counter()
        v = big.get()
        cold = time.perf_counter() - t0
        check(v)
        del v
        tcp_cold = tcp.transfer()

        ours: list[float] = []
        anchor: list[float] = []
        for _ in range(cfg.transfers):  # interleaved
            anchor.append(tcp.transfer())
            t0 = time.perf_counter()
            v = big.get()
            ours.append(time.perf_counter() - t0)
            check(v)
            del v

    def gbps(seconds: float) -> float:
        return nbytes / seconds / 1e9

    size = f"{nbytes >> 20} MiB"
    detail = (f"best of {cfg.transfers}; medians: ours {gbps(median(ours)):.3f} GB/s, "
              f"anchor {gbps(median(anchor)):.3f} GB/s (ratio "
              f"{median(anchor) / median(ours):.2f}x); worst ours "
              f"{gbps(max(ours)):.3f} GB/s (p90 {percentile(ours, 90):.3f} s); first (cold) "
              f".get() {cold:.3f} s = {gbps(cold):.3f} GB/s, first TCP {gbps(tcp_cold):.3f} "
              f"GB/s; verified: shape, dtype and every element{w.sandboxed_note}")
    return result(f".get() of a clean {size} tensor", gbps(min(ours)), "GB/s",
                  "raw TCP loopback", gbps(min(anchor)), Goal(">=", 0.5), detail)
