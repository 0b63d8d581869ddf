"""DP queries from the scientist's side: ``heart.dp.mean("age", epsilon=0.2)``.

Building a query sends nothing; it is a small document (aggregate, column,
bounds, group-by column, ε) that the worker checks against the owner's
declarations and runs with trusted code on the original asset.
:meth:`DPQuery.accuracy` previews the error bar for free (for a mean: the
mean's, from its noisy sum's and count's and the row count);
:meth:`DPQuery.release` spends ε from your budget and returns a
:class:`DPResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .._format import format_epsilon
from ..errors import InvalidQuery
from ..wire.protocol import Op
from ._session import RemoteObject, Session, blocking


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items()) + "}"
    return repr(x)


@dataclass(frozen=True)
class DPResult:
    """A released DP value.

    Attributes
    ----------
    value : float, int or dict
        The noisy aggregate; grouped queries give ``{key: value}`` in the declared key order.
    epsilon, delta : float
        What this release cost.
    mechanism : str
        OpenDP's noise distribution(s), e.g. ``"Integer Laplace"``.
    accuracy : float, dict or None
        The half-width of the ``1 - alpha`` interval around ``value`` (per key for
        grouped means; ``{"rank": ±}`` in rows of rank for quantiles).
    alpha : float
        Significance of ``accuracy``.
    query : dict
        The query as the worker ran it.
    budget : dict
        Your budget on the asset after this release.
    """

    value: Any
    epsilon: float
    delta: float
    mechanism: str
    accuracy: Any
    alpha: float
    query: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        q = self.query
        what = q.get("aggregate", "?") + (f"({q['column']})" if q.get("column") else "()")
        if q.get("by"):
            what += f" by {q['by']}"
        acc = "" if self.accuracy is None else \
            f" ± {_fmt(self.accuracy)} ({(1 - self.alpha) * 100:g}% interval)"
        left = self.budget.get("epsilon_remaining")
        tail = f"; ε left {format_epsilon(left)}" if isinstance(left, int | float) else ""
        return (f"<DPResult {what} = {_fmt(self.value)}{acc}; ε={format_epsilon(self.epsilon)}, "
                f"δ={self.delta:g}, {self.mechanism}{tail}>")


class DPQuery:
    """A DP query, not yet run. ``accuracy()`` is free; ``release()`` spends ε."""

    def __init__(self, pointer: RemoteObject, doc: dict[str, Any]) -> None:
        self._pointer = pointer
        self._session: Session = pointer._session
        self.doc = {k: v for k, v in doc.items() if v is not None}

    def __repr__(self) -> str:
        return f"<DPQuery {self.doc} on {self._session.name}>"

    async def _call(self, preview: bool, alpha: float) -> dict[str, Any]:
        return await self._session.call(Op.DP_QUERY, pointer=self._pointer.id, query=self.doc,
                                        preview=preview, alpha=alpha)

    async def _aaccuracy(self, alpha: float = 0.05, rows: int | None = None) -> Any:
        """The ± of the ``1 - alpha`` interval a release would have; spends nothing.

        Parameters
        ----------
        alpha : float
            The interval holds with probability ``1 - alpha``.
        rows : int, optional
            For a mean only: the number of rows it averages. Defaults to the
            asset's row count where the owner makes it public; a grouped mean
            (whose groups' sizes are private) needs it: the size of a group.

        Returns
        -------
        float or dict
            A ± in the value's units (count, sum, histogram, grouped count/sum, and
            the mean: see :func:`mean_accuracy`); ``{"rank": ±}`` for a quantile
            (in rows of rank around ``q * n``).

        Raises
        ------
        InvalidQuery
            A mean whose row count is not public, without ``rows``.
        """
        preview = (await self._call(True, alpha))["preview"]
        acc = preview["accuracy"]
        query = preview.get("query") or self.doc
        if query.get("aggregate") != "mean" or not isinstance(acc, dict) or "sum" not in acc:
            return acc
        if rows is None:
            rows = None if query.get("by") else await self._public_rows()
        if rows is None:
            what = "each group's size" if query.get("by") else "its row count"
            raise InvalidQuery(f"a mean's error bar depends on {what}, which the owner does "
                               "not publish: pass rows=N (an estimate, e.g. from a DP count)",
                               field="rows")
        lo, hi = (float(b) for b in query["bounds"])
        return mean_accuracy(float(acc["sum"]), float(acc["count"]), max(abs(lo), abs(hi)),
                             int(rows))

    async def _public_rows(self) -> int | None:
        taint = self._pointer.taint
        for d in (await self._session.call(Op.DATASETS))["datasets"]:
            if d["name"] in taint and len(taint) == 1:
                return None if d.get("rows") is None else int(d["rows"])
        return None

    async def _arelease(self, alpha: float = 0.05) -> DPResult:
        """Run the query on the worker, spending its ε (refused once the budget is spent).

        Raises
        ------
        BudgetExhausted
            Your (or the asset's total) budget would be exceeded; nothing was spent.
        InvalidQuery
            The worker refused the query; nothing was spent.
        """
        reply = await self._call(False, alpha)
        r = reply["result"]
        return DPResult(value=r["value"], epsilon=r["epsilon"], delta=r["delta"],
                        mechanism=r["mechanism"], accuracy=r["accuracy"], alpha=r["alpha"],
                        query=r["query"], budget=reply.get("budget") or {})

    accuracy = blocking(_aaccuracy)
    release = blocking(_arelease)


def mean_accuracy(sum_acc: float, count_acc: float, bound: float, rows: int) -> float:
    """The ± of a DP mean (a noisy sum over a noisy count) before it is released.

    With the sum within ``sum_acc`` and the count within ``count_acc`` of their
    true values (each with probability ``1 - alpha/2``), the mean ``s/c`` is
    within ``(sum_acc + |m| count_acc) / (rows - count_acc)`` of the true mean
    ``m``, with probability at least ``1 - alpha``; ``|m| <= bound`` (the larger
    magnitude of the clipping bounds) since every value is clipped into them.

    Parameters
    ----------
    sum_acc, count_acc : float
        The noisy sum's and count's ± (each at ``alpha/2``), from the worker.
    bound : float
        ``max(|lower|, |upper|)`` of the column's bounds.
    rows : int
        How many rows the mean averages.

    Returns
    -------
    float
        ``inf`` when the count's noise could reach zero rows.
    """
    if rows - count_acc <= 0:
        return math.inf
    return (sum_acc + bound * count_acc) / (rows - count_acc)


class GroupedDP:
    """``asset.dp.group_by(col)``: count, sum and mean per declared category of ``col``."""

    def __init__(self, dp: DP, by: str) -> None:
        self._dp, self._by = dp, by

    def count(self, epsilon: float) -> DPQuery:
        return self._dp._q("count", epsilon, by=self._by)

    def sum(self, column: str, epsilon: float,
            bounds: tuple[float, float] | None = None) -> DPQuery:
        return self._dp._q("sum", epsilon, column=column, bounds=bounds, by=self._by)

    def mean(self, column: str, epsilon: float,
             bounds: tuple[float, float] | None = None) -> DPQuery:
        return self._dp._q("mean", epsilon, column=column, bounds=bounds, by=self._by)


class DP:
    """``asset.dp``: build DP queries on a registered asset.

    Bounds default to the owner's declared bounds; tighter ones (inside the
    declaration) give less noise on a sum or mean but clip values outside them.
    """

    def __init__(self, pointer: RemoteObject) -> None:
        self._pointer = pointer

    def _q(self, aggregate: str, epsilon: float, **fields: Any) -> DPQuery:
        bounds = fields.get("bounds")
        if bounds is not None:
            fields["bounds"] = list(bounds)
        return DPQuery(self._pointer, {"aggregate": aggregate, "epsilon": epsilon, **fields})

    def count(self, epsilon: float) -> DPQuery:
        """Number of rows."""
        return self._q("count", epsilon)

    def sum(self, column: str, epsilon: float,
            bounds: tuple[float, float] | None = None) -> DPQuery:
        """Sum of a numeric column, values clipped to ``bounds``."""
        return self._q("sum", epsilon, column=column, bounds=bounds)

    def mean(self, column: str, epsilon: float,
             bounds: tuple[float, float] | None = None) -> DPQuery:
        """Mean of a numeric column (a noisy sum over a noisy count)."""
        return self._q("mean", epsilon, column=column, bounds=bounds)

    def histogram(self, column: str, epsilon: float) -> DPQuery:
        """Counts per declared category of ``column``."""
        return self._q("histogram", epsilon, column=column)

    def quantile(self, column: str, q: float, epsilon: float,
                 bounds: tuple[float, float] | None = None) -> DPQuery:
        """The ``q`` quantile, chosen among values spread over ``bounds``."""
        return self._q("quantile", epsilon, column=column, q=q, bounds=bounds)

    def group_by(self, column: str) -> GroupedDP:
        """Group by a category column; the keys are the owner's declared categories."""
        return GroupedDP(self, column)
