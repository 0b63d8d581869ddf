"""Encrypted predictions counted per scientist and model, in the worker's SQLite file.

The count is the model-extraction defence: each prediction is one query of the
owner's model, and the owner bounds how many a scientist may make. A
prediction is counted (and audited) in one ``BEGIN IMMEDIATE`` transaction
*before* it is computed, so concurrent requests can never pass the limit, and a
crash after counting keeps the prediction counted.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import PredictionLimitReached
from .store import Store

__all__ = ["PredictionCounter", "overview"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS he_predictions (
    scientist TEXT NOT NULL,
    asset TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (scientist, asset)
);
CREATE TABLE IF NOT EXISTS he_services (
    asset TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


class PredictionCounter:
    """Predictions used per (scientist, model asset).

    Parameters
    ----------
    store : Store
        The worker's state (its SQLite connection and audit log).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.db.executescript(SCHEMA)

    def declare(self, docs: list[dict[str, Any]]) -> None:
        """Record the worker's HE services (from its config, at startup) for the owner's tools."""
        with self.store._tx():
            self.db.execute("DELETE FROM he_services")
            for doc in docs:
                self.db.execute("INSERT INTO he_services VALUES (?, ?, ?, ?)",
                                (doc["asset"], doc["kind"], json.dumps(doc), time.time()))

    def services(self) -> list[dict[str, Any]]:
        """The HE services the worker declared when it last started."""
        return [json.loads(r["doc"]) for r in
                self.db.execute("SELECT doc FROM he_services ORDER BY asset")]

    def reset(self, scientist: str, asset: str, actor: str = "owner") -> int:
        """Forget ``scientist``'s predictions on ``asset`` (the owner's decision; audited).

        Returns how many were forgotten.
        """
        with self.store._tx():
            used = self.used(scientist, asset)
            self.db.execute("DELETE FROM he_predictions WHERE scientist=? AND asset=?",
                            (scientist, asset))
            self.store._audit(actor, "he_predictions_reset",
                              {"scientist": scientist, "asset": asset, "was": used})
        return used

    def used(self, scientist: str, asset: str) -> int:
        """Predictions ``scientist`` has made on ``asset``."""
        row = self.db.execute("SELECT used FROM he_predictions WHERE scientist=? AND asset=?",
                              (scientist, asset)).fetchone()
        return int(row["used"]) if row else 0

    def take(self, scientist: str, asset: str, limit: int, detail: dict[str, Any]) -> int:
        """Count one prediction, atomically with its audit record; returns how many remain.

        Raises
        ------
        PredictionLimitReached
            ``limit`` predictions were already made; nothing is counted (the refusal is audited).
        """
        with self.store._tx():
            used = self.used(scientist, asset)
            if used >= limit:
                self.store._audit(scientist, "he_predict_refused",
                                  {"asset": asset, "limit": limit, **detail})
                refused = True
            else:
                self.db.execute(
                    "INSERT INTO he_predictions VALUES (?, ?, 1, ?) ON CONFLICT(scientist, asset) "
                    "DO UPDATE SET used = used + 1, updated = excluded.updated",
                    (scientist, asset, time.time()))
                self.store._audit(scientist, "he_predict",
                                  {"asset": asset, "n": used + 1, "limit": limit, **detail})
                refused = False
        if refused:
            raise PredictionLimitReached(
                f"you have made all {limit} encrypted predictions the owner allows on "
                f"{asset!r}", asset=asset, limit=limit)
        return limit - used - 1

    def rows(self) -> list[dict[str, Any]]:
        """Every (scientist, asset, used, updated), for the owner."""
        return [dict(r) for r in self.db.execute(
            "SELECT scientist, asset, used, updated FROM he_predictions ORDER BY asset, scientist")]


def overview(store: Store) -> list[dict[str, Any]]:
    """One row per (HE service, scientist) with what was used and the limit: what the
    owner's CLI (``syftlab he services``) and approval panel show."""
    from .ledger import Ledger

    counter = PredictionCounter(store)
    budgets = Ledger(store).rows()
    used = counter.rows()
    out: list[dict[str, Any]] = []
    for svc in counter.services():
        if svc["kind"] == "predict":
            limit = svc["predictions_per_scientist"]
            mine = [u for u in used if u["asset"] == svc["asset"]]
            out.append({**svc, "scientist": None, "used": sum(u["used"] for u in mine),
                        "limit": None})
            out += [{**svc, "scientist": u["scientist"], "used": u["used"], "limit": limit}
                    for u in mine]
        else:
            out += [{**svc, "scientist": b["scientist"], "used": b["epsilon_spent"],
                     "limit": b["epsilon_limit"]} for b in budgets if b["asset"] == svc["asset"]]
    return out
