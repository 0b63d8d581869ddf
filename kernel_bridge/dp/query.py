"""A DP query as data: the small JSON document a scientist sends, checked against
the owner's declarations.

A query names an aggregate, a column, optional bounds and a group-by column,
and the ε it may spend. It is never code: the worker runs it with trusted code
(:mod:`kernel_bridge.dp.mechanisms`). :func:`parse_query` is the only way a
document becomes a :class:`Query`; every problem is an
:class:`~kernel_bridge.errors.InvalidQuery` naming what to fix, and nothing is
spent on an invalid query.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InvalidQuery
from ..specs import AssetSpec, ColumnSpec

#: Aggregates a query may ask for. A histogram is a count grouped by a column.
AGGREGATES = ("count", "sum", "mean", "histogram", "quantile")
#: Aggregates that may be grouped by a declared category column.
GROUPABLE = ("count", "sum", "mean")
_KEYS = frozenset({"asset", "aggregate", "column", "by", "bounds", "q", "epsilon", "delta"})


@dataclass(frozen=True)
class Query:
    """A validated DP query on one asset.

    Attributes
    ----------
    asset : str
        The registered asset it runs on.
    aggregate : str
        One of :data:`AGGREGATES`.
    epsilon : float
        The ε it spends (finite, > 0).
    column : str or None
        The aggregated column (None for a count).
    by : str or None
        A category (or bool) column to group by; its declared values are the keys.
    bounds : tuple of float or None
        Clipping bounds (within the declared ones) for sum, mean and quantile.
    q : float or None
        The quantile, in (0, 1).
    delta : float
        Always 0: every mechanism offered is pure ε-DP.
    """

    asset: str
    aggregate: str
    epsilon: float
    column: str | None = None
    by: str | None = None
    bounds: tuple[float, float] | None = None
    q: float | None = None
    delta: float = 0.0

    def to_doc(self) -> dict[str, Any]:
        """The query as a JSON-friendly dict (for the ledger and the audit log)."""
        doc = asdict(self)
        doc["bounds"] = list(self.bounds) if self.bounds is not None else None
        return doc

    @property
    def keys(self) -> str | None:
        """The column whose declared values key the result (``by``, or a histogram's column)."""
        return self.column if self.aggregate == "histogram" else self.by


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidQuery(f"{what} must be a number, got {type(value).__name__}", field=what)
    if not math.isfinite(value):
        raise InvalidQuery(f"{what} must be finite, got {value!r}", field=what)
    return float(value)


def _column(spec: AssetSpec, name: Any, what: str) -> ColumnSpec:
    cols = {c.name: c for c in spec.columns}
    if not isinstance(name, str) or name not in cols:
        raise InvalidQuery(f"{what}: no column {str(name)[:80]!r} in asset {spec.name!r} "
                           f"(declared: {', '.join(cols)})", field=what)
    return cols[name]


def _bounds(col: ColumnSpec, raw: Any) -> tuple[float, float]:
    if col.kind not in ("int", "float"):
        raise InvalidQuery(f"column {col.name!r} is {col.kind}, not numeric", field="column")
    if not col.bounded:
        raise InvalidQuery(f"the owner declared no bounds for column {col.name!r}, so it "
                           "cannot be aggregated with DP", field="bounds")
    lo_decl, hi_decl = float(col.lower), float(col.upper)  # type: ignore[arg-type]
    if raw is None:
        lo, hi = lo_decl, hi_decl
    else:
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise InvalidQuery("bounds are a pair (lower, upper)", field="bounds")
        lo, hi = _number(raw[0], "bounds"), _number(raw[1], "bounds")
        if not lo < hi:
            raise InvalidQuery(f"bounds ({lo:g}, {hi:g}): lower must be below upper",
                               field="bounds")
        if lo < lo_decl or hi > hi_decl:
            raise InvalidQuery(
                f"bounds ({lo:g}, {hi:g}) for {col.name!r} lie outside the declared "
                f"({lo_decl:g}, {hi_decl:g})", field="bounds",
                declared=[lo_decl, hi_decl])
    if col.kind == "int":
        if lo != math.floor(lo) or hi != math.floor(hi):
            raise InvalidQuery(f"column {col.name!r} holds integers: give whole-number bounds",
                               field="bounds")
        if not lo < hi:
            raise InvalidQuery("bounds must contain more than one integer", field="bounds")
    return lo, hi


def _keys_column(spec: AssetSpec, name: Any, what: str) -> ColumnSpec:
    col = _column(spec, name, what)
    if col.kind not in ("category", "bool"):
        raise InvalidQuery(
            f"{what}: column {col.name!r} is {col.kind}; group keys must come from a declared "
            "category set (or a bool column), never from the data", field=what)
    if spec.dp is not None and col.name == spec.dp.id_column:
        raise InvalidQuery(f"{what}: {col.name!r} identifies people", field=what)
    return col


def parse_query(doc: Any, spec: AssetSpec) -> Query:
    """Check a query document against an asset's declarations.

    Parameters
    ----------
    doc : dict
        ``{"aggregate", "epsilon", "column"?, "by"?, "bounds"?, "q"?, "delta"?}``;
        ``asset`` (if present) must name ``spec``.
    spec : AssetSpec
        The asset, with its ``dp`` declaration.

    Returns
    -------
    Query

    Raises
    ------
    InvalidQuery
        Unknown keys or columns, bounds outside the declaration, ε that is not a
        finite positive number, δ other than 0, group keys that are not a declared
        category set, or an asset without a DP declaration.
    """
    if spec.dp is None:
        raise InvalidQuery(f"the owner declared no DP settings for asset {spec.name!r}",
                           field="asset")
    if not isinstance(doc, dict):
        raise InvalidQuery("a DP query is a map", field="query")
    extra = sorted(str(k)[:40] for k in doc if k not in _KEYS)
    if extra:
        raise InvalidQuery(f"unknown query key(s): {', '.join(extra)}", field=extra[0])
    if doc.get("asset") not in (None, spec.name):
        raise InvalidQuery("the query names another asset than its pointer", field="asset")
    aggregate = doc.get("aggregate")
    if aggregate not in AGGREGATES:
        raise InvalidQuery(f"aggregate must be one of {', '.join(AGGREGATES)}, got "
                           f"{str(aggregate)[:40]!r}", field="aggregate")
    epsilon = _number(doc.get("epsilon"), "epsilon")
    if not epsilon > 0:
        raise InvalidQuery(f"epsilon must be > 0, got {epsilon!r}", field="epsilon")
    delta = _number(doc.get("delta", 0.0), "delta")
    if delta != 0.0:
        raise InvalidQuery("every mechanism here is pure ε-DP: leave delta at 0", field="delta")
    column, by, bounds, q = doc.get("column"), doc.get("by"), None, None
    if by is not None:
        if aggregate not in GROUPABLE:
            raise InvalidQuery(f"{aggregate} cannot be grouped (grouped: "
                               f"{', '.join(GROUPABLE)})", field="by")
        by = _keys_column(spec, by, "by").name
    if aggregate == "count":
        if column is not None:
            raise InvalidQuery("a count counts rows: give no column", field="column")
    elif aggregate == "histogram":
        column = _keys_column(spec, column, "column").name
    else:
        col = _column(spec, column, "column")
        column = col.name
        if by is not None and by == column:
            raise InvalidQuery("cannot group a column by itself", field="by")
        bounds = _bounds(col, doc.get("bounds"))
    if aggregate != "quantile" and doc.get("q") is not None:
        raise InvalidQuery("q applies to quantiles only", field="q")
    if aggregate in ("count", "histogram") and doc.get("bounds") is not None:
        raise InvalidQuery("bounds apply to sum, mean and quantile", field="bounds")
    if aggregate == "quantile":
        q = _number(doc.get("q"), "q")
        if not 0 < q < 1:
            raise InvalidQuery(f"q must lie in (0, 1), got {q!r}", field="q")
    return Query(asset=spec.name, aggregate=str(aggregate), epsilon=epsilon, column=column,
                 by=by, bounds=bounds, q=q, delta=0.0)
