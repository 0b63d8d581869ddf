"""The worker's DP operations: ``dp_query`` (preview or release) and ``budget``.

A query arrives as a document plus the id of the scientist's pointer to an
asset. It runs on the original asset held by the worker (``Asset.private``),
never on anything in a kernel: the pointer only names the asset, and pointers
to anything else are refused. A release debits the ledger (committed) first,
then computes the noisy value, then replies.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from ...dp.query import parse_query
from ...errors import BudgetExhausted, InvalidQuery, UnknownObject
from ...wire.protocol import Op
from ..assets import Asset
from ..context import WorkerContext
from ..ledger import Ledger
from ..session import Session
from .base import Handler, Service


def _mechanisms() -> Any:
    """:mod:`kernel_bridge.dp.mechanisms`, imported on the first DP query (off the event
    loop): OpenDP's polars API costs a worker ~0.25 s at start, which ten workers started
    at once would wait for in their fork server, while many workers never answer one."""
    from ...dp import mechanisms

    return mechanisms


class DPService(Service):
    """DP queries and budgets for one worker (the ledger lives in its SQLite file)."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        store, assets = ctx.store, ctx.assets
        self.ledger = Ledger(store)
        self.assets = assets
        self.ledger.declare({n: a.spec.dp for n, a in assets.items() if a.spec.dp is not None})
        self._frames: dict[str, Any] = {}
        self._frame_lock = asyncio.Lock()

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.DP_QUERY: self.op_dp_query, Op.BUDGET: self.op_budget}

    async def _frame(self, asset: Asset) -> Any:
        async with self._frame_lock:
            if asset.name not in self._frames:
                def load() -> Any:
                    return _mechanisms().frame_of(asset.private(), asset.spec)
                self._frames[asset.name] = await asyncio.to_thread(load)
            return self._frames[asset.name]

    def _asset_of(self, session: Session, pointer: Any) -> Asset:
        """The registered asset a pointer names; anything else is an InvalidQuery."""
        try:
            obj = session.get(pointer)
        except UnknownObject:
            raise InvalidQuery("DP queries run on a pointer to a registered asset "
                               "(worker.asset(name)); this pointer is unknown",
                               field="pointer") from None
        if obj.asset is None or obj.asset not in self.assets or obj.is_output:
            raise InvalidQuery(
                "DP queries run only on registered assets (worker.asset(name)), not on values "
                "computed in a kernel: those could hold anything", field="pointer")
        if obj.kernel != "private":
            raise InvalidQuery("this pointer is to a mock; run DP queries on the asset itself "
                               "(mock data needs no DP)", field="pointer")
        return self.assets[obj.asset]

    async def op_dp_query(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Preview (accuracy only, spends nothing) or release a DP query.

        Takes ``pointer`` (to a registered asset), ``query`` (a document, never
        code), ``alpha`` and ``preview``. Releases a noisy aggregate computed on
        the original asset, after its ε is debited (committed) on the ledger;
        past the budget, :class:`BudgetExhausted` and nothing spent.
        """
        asset = self._asset_of(session, msg.get("pointer"))
        query = parse_query(msg.get("query"), asset.spec)
        alpha = msg.get("alpha", 0.05)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or \
                not math.isfinite(alpha) or not 0 < alpha < 1:
            raise InvalidQuery("alpha must lie in (0, 1)", field="alpha")
        frame = await self._frame(asset)
        plan = await asyncio.to_thread(_mechanisms().build, query, frame, asset.spec)
        if msg.get("preview"):
            info = await asyncio.to_thread(_mechanisms().accuracy, plan, float(alpha))
            return {"preview": {**info, "epsilon": query.epsilon, "delta": query.delta,
                                "query": query.to_doc()}}
        # Committed before the value exists, let alone leaves: a crash keeps ε spent.
        try:
            spend = self.ledger.debit(session.scientist, asset.name, query.epsilon,
                                      query.delta, query.to_doc())
        except BudgetExhausted as exc:
            self.ledger.store.audit(session.scientist, "dp_refused", {
                "asset": asset.name, "query": query.to_doc(), "scope": exc.data.get("scope")})
            raise
        result = await asyncio.to_thread(_mechanisms().release, plan, float(alpha))
        return {"result": {**result, "query": query.to_doc(), "spend": spend},
                "budget": self.ledger.status(session.scientist, asset.name)}

    async def op_budget(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The calling scientist's budget on every DP asset."""
        return {"budget": self.ledger.scientist_budget(session.scientist)}
