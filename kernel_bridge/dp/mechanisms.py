"""Trusted execution of DP queries with OpenDP's polars API.

Runs in the worker process, on the original asset (never on a value from a
scientist's kernel). Each :class:`~kernel_bridge.dp.query.Query` becomes one
``dp.Context.compositor`` over the asset's ``pl.LazyFrame`` with a privacy loss
of exactly the query's ε (``split_evenly_over=1``), so OpenDP calibrates the
noise and the ledger debits that same ε.

Mechanisms (all pure ε-DP, so δ stays 0): counts and sums get (integer or
float) Laplace noise, a mean is a noisy sum over a noisy count, a quantile is
OpenDP's exponential mechanism over public candidates, and grouped results are
keyed by the owner's declared category set (``with_keys``), never by keys found
in the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Not opendp.prelude (it imports opendp.extras.sklearn, i.e. scikit-learn, which
# cost every worker ~1.2 s at start for nothing): the modules themselves.
import opendp.measurements as dp_m
import pandas as pd
import polars as pl
from opendp.accuracy import summarize_polars_measurement
from opendp.context import Context, loss_of, unit_of
from opendp.extras.polars import Margin, dp_len
from opendp.mod import enable_features

from ..specs import AssetSpec, ColumnSpec
from .query import Query

# OpenDP gates its polars integration and several mechanisms behind "contrib":
# code that is implemented and tested but whose proofs are not yet vetted by
# OpenDP's review. We rely on it deliberately (it is the only polars path, and
# what OpenDP's own tutorials use); see the README section "Differential privacy".
enable_features("contrib")

#: Most candidates a quantile chooses among (an int range or an even grid).
MAX_CANDIDATES = 2001


def frame_of(value: pd.DataFrame, spec: AssetSpec) -> pl.LazyFrame:
    """The asset as a polars LazyFrame with declared types (categories become ``Enum``).

    Parameters
    ----------
    value : DataFrame
        The private table, as :meth:`Asset.private` loads it.
    spec : AssetSpec
        Its declarations.

    Returns
    -------
    LazyFrame
    """
    df = pl.from_pandas(value)
    casts = []
    for col in spec.columns:
        if col.kind == "category":
            casts.append(pl.col(col.name).cast(pl.Utf8).cast(pl.Enum(col.categories or [])))
        elif col.kind == "float":
            casts.append(pl.col(col.name).cast(pl.Float64))
        elif col.kind == "int":
            casts.append(pl.col(col.name).cast(pl.Int64))
    return (df.with_columns(casts) if casts else df).lazy()


@dataclass
class Plan:
    """A query bound to its data: an OpenDP measurement ready to summarize or release."""

    query: Query
    spec: AssetSpec
    frame: pl.LazyFrame
    measurement: Any  # dp.Measurement, private for exactly query.epsilon
    keys: list[Any] | None  # declared group keys, in order
    candidates: int = 0  # how many values a quantile chooses among

    def summary(self, alpha: float) -> list[dict[str, Any]]:
        """OpenDP's summary: one row per noisy statistic (distribution, scale, accuracy)."""
        return list(summarize_polars_measurement(self.measurement, alpha).to_dicts())


def calibrate(make: Any, d_in: Any, epsilon: float) -> Any:
    """The measurement ``make(scale)`` whose privacy loss is at most ``epsilon``.

    OpenDP's own ``resolve`` finds the scale by a binary search (about a thousand
    measurement builds, seconds per query). Every mechanism here has a loss
    inversely proportional to its scale (ε = Δ / scale), so one probe at
    scale 1 gives the answer; OpenDP's ``map`` then confirms it, and the scale is
    nudged up if rounding left it a hair too small.
    """
    probe = make(1.0).map(d_in)
    if probe == 0:
        return make(0.0)
    scale = float(probe) / epsilon
    for _ in range(64):
        m = make(scale)
        if m.map(d_in) <= epsilon:
            return m
        scale = math.nextafter(scale, math.inf) * (1 + 1e-12)
    raise RuntimeError("could not calibrate the mechanism's scale")  # pragma: no cover


def _columns(spec: AssetSpec) -> dict[str, ColumnSpec]:
    return {c.name: c for c in spec.columns}


def _key_values(col: ColumnSpec) -> list[Any]:
    return list(col.categories or []) if col.kind == "category" else [False, True]


def _typed(col: ColumnSpec, x: float) -> int | float:
    return int(x) if col.kind == "int" else float(x)


def _candidates(col: ColumnSpec, lo: float, hi: float) -> list[int | float]:
    if col.kind == "int" and hi - lo + 1 <= MAX_CANDIDATES:
        return list(range(int(lo), int(hi) + 1))
    step = (hi - lo) / (MAX_CANDIDATES - 1)
    grid = [lo + i * step for i in range(MAX_CANDIDATES)]
    if col.kind == "int":
        return sorted({int(round(x)) for x in grid})
    return grid


def build(query: Query, frame: pl.LazyFrame, spec: AssetSpec) -> Plan:
    """Turn a validated query into an OpenDP polars query over ``frame``.

    Parameters
    ----------
    query : Query
        From :func:`~kernel_bridge.dp.query.parse_query`.
    frame : LazyFrame
        From :func:`frame_of` (the original asset).
    spec : AssetSpec
        The asset's declarations (privacy unit, bounds, categories, row bound).

    Returns
    -------
    Plan
    """
    assert spec.dp is not None
    decl = spec.dp
    cols = _columns(spec)
    key_col = query.keys
    margins = [Margin(by=[], max_length=decl.max_rows)]
    if key_col is not None:
        margins.append(Margin(by=[key_col], max_length=decl.max_rows))
    if decl.id_column is None:
        unit = unit_of(contributions=1)
    else:
        unit = unit_of(contributions=1, identifier=decl.id_column)
    # The context only derives the input domain (with its margins) and metric;
    # the ledger, not OpenDP's compositor, keeps the budget.
    ctx = Context.compositor(
        data=frame, privacy_unit=unit, privacy_loss=loss_of(epsilon=query.epsilon),
        split_evenly_over=1, margins=margins)
    lazy = ctx.query()
    if decl.id_column is not None:
        # A person's rows beyond the declared bound are dropped, so the bound holds.
        lazy = lazy.truncate_per_group(decl.max_rows_per_id)
    exprs: list[Any]
    n_candidates = 0
    if query.aggregate in ("count", "histogram"):
        exprs = [dp_len(signed=True).alias("count")]
    else:
        col = cols[str(query.column)]
        assert query.bounds is not None
        lo, hi = (_typed(col, b) for b in query.bounds)
        mid = _typed(col, (lo + hi) / 2 if col.kind == "float" else (lo + hi) // 2)
        x: Any = pl.col(col.name).fill_null(mid)  # .dp is a namespace OpenDP registers
        if query.aggregate == "sum":
            exprs = [x.dp.sum(bounds=(lo, hi)).alias("sum")]
        elif query.aggregate == "mean":
            # What OpenDP's dp.mean does, kept as two outputs so that the
            # interval of the ratio can be derived from both noisy parts.
            exprs = [x.dp.sum(bounds=(lo, hi)).alias("sum"), dp_len(signed=True).alias("count")]
        else:
            cands = _candidates(col, lo, hi)
            n_candidates = len(cands)
            exprs = [x.dp.quantile(float(query.q or 0.5), cands).alias("quantile")]
    keys: list[Any] | None = None
    if key_col is None:
        lazy = lazy.select(*exprs)
    else:
        kc = cols[key_col]
        keys = _key_values(kc)
        dtype = pl.Enum(keys) if kc.kind == "category" else pl.Boolean
        lazy = lazy.group_by(key_col).agg(*exprs).with_keys(
            pl.LazyFrame({key_col: pl.Series(keys, dtype=dtype)}))
    acct = ctx.accountant
    # LazyFrameQuery hides its attributes behind __getattribute__; the plan is what
    # resolve() itself passes to make_private_lazyframe.
    polars_plan = object.__getattribute__(lazy, "polars_plan")

    def make(scale: float) -> Any:
        return dp_m.make_private_lazyframe(
            input_domain=acct.input_domain, input_metric=acct.input_metric,
            output_measure=acct.output_measure, lazyframe=polars_plan, global_scale=scale)

    measurement = calibrate(make, ctx.d_in, query.epsilon)
    return Plan(query=query, spec=spec, frame=frame, measurement=measurement, keys=keys,
                candidates=n_candidates)


def _mechanism(summary: list[dict[str, Any]]) -> str:
    names = []
    for row in summary:
        if row["distribution"] not in names:
            names.append(row["distribution"])
    return " + ".join(names)


def accuracy(plan: Plan, alpha: float) -> dict[str, Any]:
    """How accurate a release would be, from OpenDP's summary; spends nothing.

    Parameters
    ----------
    plan : Plan
    alpha : float
        The statistical significance: a ± holds with probability ``1 - alpha``.

    Returns
    -------
    dict
        ``accuracy`` (a ± in the value's units for count, sum, histogram and
        grouped count/sum; for a mean ``{"sum": ±, "count": ±}``, each at
        ``alpha/2`` so both hold together with ``1 - alpha``; for a quantile
        ``{"rank": ±}`` in rows of rank, see :func:`quantile_rank_accuracy`,
        since OpenDP reports none for the exponential mechanism), ``mechanism``,
        ``scale`` (per noisy statistic) and ``alpha``.
    """
    agg = plan.query.aggregate
    summary = plan.summary(alpha / 2 if agg == "mean" else alpha)
    acc: Any
    if agg == "quantile":
        acc = {"rank": quantile_rank_accuracy(plan, alpha)}
    elif agg == "mean":
        by_name = {r["aggregate"]: r["accuracy"] for r in summary}
        acc = {"sum": float(by_name["Sum"]), "count": float(by_name["Frame Length"])}
    else:
        acc = float(max(r["accuracy"] for r in summary))
    return {"accuracy": acc, "mechanism": _mechanism(summary), "alpha": alpha,
            "scale": [float(r["scale"]) for r in summary]}


def quantile_rank_accuracy(plan: Plan, alpha: float) -> float:
    """± in *rows of rank* of a released quantile, holding with probability ``1 - alpha``.

    OpenDP scores a candidate c by ``|(den - num) * #(x < c) - num * #(x > c)|``
    for q = num/den, with sensitivity ``k * max(num, den - num)`` (k rows per
    person) and picks the noisy minimum with Gumbel noise of scale
    ``2 * sensitivity / ε`` (the exponential mechanism). One row of rank moves a
    score by ``den``, and the exponential mechanism's utility bound (a score more
    than ``scale * ln(|C| / alpha)`` above the best has total probability at most
    alpha) becomes, in rows, ``2 k max(q, 1 - q) ln(|C| / alpha) / ε`` beyond
    the best candidate's own distance (at most the grid's spacing in rows).
    """
    q, eps = float(plan.query.q or 0.5), plan.query.epsilon
    assert plan.spec.dp is not None
    k = plan.spec.dp.max_rows_per_id if plan.spec.dp.id_column else 1
    return 2 * k * max(q, 1 - q) * math.log(plan.candidates / alpha) / eps


def _mean_interval(s: float, c: float, acc: dict[str, float]) -> float:
    """Half-width around ``s / c`` holding every mean with sum in s±a and count in c±b."""
    a, b = acc["sum"], acc["count"]
    if c - b <= 0:
        return math.inf
    centre = s / c
    return max(abs((s + da) / (c + db) - centre) for da in (-a, a) for db in (-b, b))


def _scalar(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, bool):
        return x
    if isinstance(x, int):
        return int(x)
    return float(x)


def release(plan: Plan, alpha: float = 0.05) -> dict[str, Any]:
    """Run the mechanism once and return the noisy value with its accuracy.

    Call this only after the ε was debited (the ledger commits first).

    Parameters
    ----------
    plan : Plan
    alpha : float
        Significance of the reported accuracy.

    Returns
    -------
    dict
        ``value`` (a number, or for grouped queries a dict from key to number,
        in the declared key order), ``accuracy`` (a ±; for grouped means a dict
        by key), ``mechanism``, ``scale``, ``alpha``, ``epsilon``, ``delta``.
    """
    info = accuracy(plan, alpha)
    out = plan.measurement(plan.frame).collect()
    agg = plan.query.aggregate
    column = {"histogram": "count"}.get(agg, agg)
    acc = info["accuracy"]

    def value_of(row: dict[str, Any]) -> Any:
        if agg == "mean":
            s, c = float(row["sum"]), float(row["count"])
            return (s / c if c > 0 else math.nan), _mean_interval(s, c, acc)
        return _scalar(row[column]), acc

    if plan.keys is None:
        value, acc = value_of(out.to_dicts()[0])
    else:
        key_col = str(plan.query.keys)
        rows = {r[key_col]: r for r in out.to_dicts()}
        value, per_key = {}, {}
        for k in plan.keys:
            value[str(k)], per_key[str(k)] = value_of(rows[k])
        if agg == "mean":
            acc = per_key
    return {**info, "value": value, "accuracy": acc, "epsilon": plan.query.epsilon,
            "delta": plan.query.delta}


def execute(query: Query, frame: pl.LazyFrame, spec: AssetSpec,
            alpha: float = 0.05) -> dict[str, Any]:
    """Build and release in one call (no ledger: for trusted callers that already debited)."""
    return release(build(query, frame, spec), alpha)
