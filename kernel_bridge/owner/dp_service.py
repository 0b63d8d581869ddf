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
import re
from typing import Any

from ..dp import mechanisms
from ..dp.query import parse_query
from ..errors import BudgetExhausted, InvalidQuery, UnknownObject
from .assets import Asset
from .ledger import Ledger
from .session import Session
from .store import Store

_ASSET_ID = re.compile(r"asset_(\w+)_(private|mock)_(\d+)")


class DPService:
    """DP queries and budgets for one worker.

    Parameters
    ----------
    store : Store
        The worker's state (the ledger lives in its SQLite file).
    assets : dict of str to Asset
        The registered assets.
    """

    def __init__(self, store: Store, assets: dict[str, Asset]) -> None:
        self.ledger = Ledger(store)
        self.assets = assets
        self.ledger.declare({n: a.spec.dp for n, a in assets.items() if a.spec.dp is not None})
        self._frames: dict[str, Any] = {}
        self._frame_lock = asyncio.Lock()

    async def _frame(self, asset: Asset) -> Any:
        async with self._frame_lock:
            if asset.name not in self._frames:
                def load() -> Any:
                    return mechanisms.frame_of(asset.private(), asset.spec)
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
        m = _ASSET_ID.fullmatch(obj.id)
        if m is None or m.group(1) not in self.assets or obj.is_output:
            raise InvalidQuery(
                "DP queries run only on registered assets (worker.asset(name)), not on values "
                "computed in a kernel: those could hold anything", field="pointer")
        if m.group(2) != "private":
            raise InvalidQuery("this pointer is to a mock; run DP queries on the asset itself "
                               "(mock data needs no DP)", field="pointer")
        return self.assets[m.group(1)]

    async def op_dp_query(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Preview (accuracy only, spends nothing) or release a DP query."""
        asset = self._asset_of(session, msg.get("pointer"))
        query = parse_query(msg.get("query"), asset.spec)
        alpha = msg.get("alpha", 0.05)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or \
                not math.isfinite(alpha) or not 0 < alpha < 1:
            raise InvalidQuery("alpha must lie in (0, 1)", field="alpha")
        frame = await self._frame(asset)
        plan = await asyncio.to_thread(mechanisms.build, query, frame, asset.spec)
        if msg.get("preview"):
            info = await asyncio.to_thread(mechanisms.accuracy, plan, float(alpha))
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
        result = await asyncio.to_thread(mechanisms.release, plan, float(alpha))
        return {"result": {**result, "query": query.to_doc(), "spend": spend},
                "budget": self.ledger.status(session.scientist, asset.name)}

    async def op_budget(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The calling scientist's budget on every DP asset."""
        return {"budget": self.ledger.scientist_budget(session.scientist)}
