"""The registry, the result type, the settings and the table printer.

A benchmark is a function ``fn(cfg: Config) -> Result`` registered with
:func:`benchmark`. It measures one figure of ours and, in the same call, the
anchor it is compared with, and cleans up every process it started, even when
it fails. :func:`run` runs the selected ones and :func:`table` prints them.
"""

from __future__ import annotations

import math
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Goal:
    """What the ratio ours/anchor should be: ``<= 1.3`` or ``>= 0.5``."""

    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"a goal is '<=' or '>=', not {self.op!r}")

    def met(self, ratio: float) -> bool:
        if math.isnan(ratio):
            return False
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}x"


class Result(NamedTuple):
    """One line of the table: our figure, its anchor, their ratio and the goal."""

    name: str
    ours: float
    unit: str
    anchor_name: str
    anchor: float
    ratio: float  # ours / anchor
    goal: Goal
    detail: str = ""  # spread, checks, breakdown: printed under the table

    @property
    def ok(self) -> bool:
        return self.goal.met(self.ratio)


def result(name: str, ours: float, unit: str, anchor_name: str, anchor: float, goal: Goal,
           detail: str = "") -> Result:
    """A :class:`Result` with the ratio computed (ours / anchor)."""
    ratio = ours / anchor if anchor else math.nan
    return Result(name, ours, unit, anchor_name, anchor, ratio, goal, detail)


@dataclass(frozen=True)
class Config:
    """Sizes and counts shared by all benchmarks (``--quick`` shrinks them)."""

    quick: bool = False
    #: Timed iterations of a latency figure, and untimed warm-up iterations before them.
    iterations: int = 300
    warmup: int = 30
    #: Size of a bulk transfer, and how many timed transfers (after one warm-up).
    transfer_bytes: int = 256 << 20
    transfers: int = 5
    #: The hostile-load benchmark: scientists, and seconds of each phase (calm, attacked).
    hostile_scientists: int = 20
    hostile_seconds: float = 60.0

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, iterations=50, warmup=10, transfer_bytes=32 << 20,
                       transfers=3, hostile_scientists=5, hostile_seconds=10.0)
        return cls()


@dataclass(frozen=True)
class Benchmark:
    key: str
    fn: Callable[[Config], Result]
    doc: str = ""


#: Registered benchmarks, in the order they run and print.
REGISTRY: dict[str, Benchmark] = {}


def benchmark(key: str) -> Callable[[Callable[[Config], Result]], Callable[[Config], Result]]:
    """Register ``fn(cfg) -> Result`` under ``key`` (what ``--only`` selects)."""

    def register(fn: Callable[[Config], Result]) -> Callable[[Config], Result]:
        if key in REGISTRY:
            raise ValueError(f"benchmark {key!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        REGISTRY[key] = Benchmark(key, fn, doc[0] if doc else "")
        return fn

    return register


def select(only: Sequence[str] | None) -> list[Benchmark]:
    """The benchmarks named by ``--only`` (keys, or prefixes of keys); all by default."""
    if not only:
        return list(REGISTRY.values())
    chosen: list[Benchmark] = []
    for name in only:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            hits = [b for k, b in REGISTRY.items() if k == part] or \
                [b for k, b in REGISTRY.items() if k.startswith(part)]
            if not hits:
                raise SystemExit(f"no benchmark named {part!r}; known: {', '.join(REGISTRY)}")
            chosen += [b for b in hits if b not in chosen]
    return chosen


class Failure(NamedTuple):
    key: str
    error: str


def run(benchmarks: Iterable[Benchmark], cfg: Config,
        progress: Callable[[str], None] | None = None) -> tuple[list[Result], list[Failure]]:
    """Run benchmarks one after another; a failing one is reported, not fatal."""
    results: list[Result] = []
    failures: list[Failure] = []
    for b in benchmarks:
        if progress:
            progress(f"running {b.key}: {b.doc}")
        t0 = time.perf_counter()
        try:
            results.append(b.fn(cfg))
        except Exception as exc:  # the others still run; the exit status says it failed
            failures.append(Failure(b.key, f"{type(exc).__name__}: {exc}"))
            if progress:
                progress(traceback.format_exc())
        if progress:
            progress(f"  {b.key} took {time.perf_counter() - t0:.1f}s")
    return results, failures


# -- statistics ------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), by linear interpolation."""
    s = sorted(xs)
    if not s:
        return math.nan
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def spread_ms(xs: Sequence[float]) -> str:
    """``median/p10/p90/min`` of durations in seconds, as milliseconds."""
    return (f"median {median(xs) * 1e3:.3f} ms (p10 {percentile(xs, 10) * 1e3:.3f}, "
            f"p90 {percentile(xs, 90) * 1e3:.3f}, min {min(xs) * 1e3:.3f}; n={len(xs)})")


# -- printing --------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return f"- {unit}"
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    return f"{value:.{digits}f} {unit}"


def table(results: Sequence[Result], failures: Sequence[Failure] = ()) -> str:
    """The aligned table of figures, then details and failures."""
    header = ("figure", "ours", "anchor", "ratio", "goal", "")
    rows = [header]
    for r in results:
        rows.append((r.name, fmt(r.ours, r.unit), f"{r.anchor_name} {fmt(r.anchor, r.unit)}",
                     "-" if math.isnan(r.ratio) else f"{r.ratio:.2f}x", str(r.goal),
                     "ok" if r.ok else "MISSED"))
    for f in failures:
        rows.append((f.key, "FAILED", "", "", "", "ERROR"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    details = [f"  {r.name}: {r.detail}" for r in results if r.detail]
    if details:
        lines += ["", "details:", *details]
    if failures:
        lines += ["", "failures:", *(f"  {f.key}: {f.error}" for f in failures)]
    return "\n".join(lines)
