"""The privacy-budget ledger, in the worker's SQLite file.

Composition rule: **basic (sequential) composition of pure ε-DP**. Every
mechanism the worker offers (Laplace, integer Laplace, the exponential
mechanism) is pure ε-DP, and for pure DP, k adaptively chosen releases with
losses ε₁…ε_k are together (Σεᵢ)-DP. So the ledger adds up ε per (scientist,
asset) and per asset over all scientists (scientists could pool their results,
hence the total). δ is tracked the same way (Σδᵢ) but stays 0 until a mechanism
needs it. Why not zCDP: it would only pay off after many hundreds of queries
per scientist, needs Gaussian noise and brings a δ into every guarantee, while
"ε spent out of ε allowed" is what an owner can read and set directly.

Crash safety: :meth:`Ledger.debit` checks both budgets and records the spend
in one ``BEGIN IMMEDIATE`` transaction (so concurrent queries, from this
process or another, cannot both pass the check), together with the audit entry,
and it commits (WAL, ``synchronous=FULL``) before the value is computed or sent.
A crash after the commit leaves ε spent; nothing is released without it.

Limits: the TOML's ``[assets.NAME.dp]`` gives each asset's defaults (written to
the ``dp_assets`` table when the worker starts); the owner's changes
(:meth:`Ledger.set_budget`, ``syftlab budget set``) are stored in ``dp_limits``
and take precedence.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ..errors import BudgetExhausted
from .config import DPSpec
from .store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS dp_assets (
    asset TEXT PRIMARY KEY,
    epsilon_per_scientist REAL NOT NULL,
    delta_per_scientist REAL NOT NULL,
    epsilon_total REAL NOT NULL,
    delta_total REAL NOT NULL,
    unit TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dp_limits (
    scientist TEXT NOT NULL,          -- '' is the asset's total over all scientists
    asset TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (scientist, asset)
);
CREATE TABLE IF NOT EXISTS dp_spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    scientist TEXT NOT NULL,
    asset TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    query TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dp_spend_by ON dp_spend(asset, scientist);
"""

#: Float slack when comparing sums of ε (0.1 + 0.2 > 0.3 in binary floating point).
SLACK = 1e-9
_TOTAL = ""


def _check_amount(value: Any, what: str, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    if below_one and value >= 1:
        raise ValueError(f"{what} must be below 1, got {value!r}")
    return float(value)


class Ledger:
    """Budgets and spends, over a :class:`~kernel_bridge.owner.store.Store`'s connection.

    Parameters
    ----------
    store : Store
        The worker's state (its SQLite connection and audit log are reused).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.db.executescript(SCHEMA)

    # -- declarations -----------------------------------------------------------
    def declare(self, declarations: dict[str, DPSpec]) -> None:
        """Record the assets' DP defaults from the worker's config (at startup)."""
        now = time.time()
        with self.store._tx():
            for asset, d in declarations.items():
                unit = {"privacy_unit": d.privacy_unit, "max_rows_per_id": d.max_rows_per_id}
                self.db.execute(
                    "INSERT INTO dp_assets VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(asset) DO "
                    "UPDATE SET epsilon_per_scientist=excluded.epsilon_per_scientist, "
                    "delta_per_scientist=excluded.delta_per_scientist, "
                    "epsilon_total=excluded.epsilon_total, delta_total=excluded.delta_total, "
                    "unit=excluded.unit, updated=excluded.updated",
                    (asset, d.epsilon_per_scientist, d.delta_per_scientist, d.epsilon_total,
                     d.delta_total, json.dumps(unit), now))

    def assets(self) -> list[str]:
        """Assets with a DP declaration, by name."""
        return [r[0] for r in self.db.execute("SELECT asset FROM dp_assets ORDER BY asset")]

    # -- reading ----------------------------------------------------------------
    def _limits(self, scientist: str | None, asset: str) -> tuple[float, float]:
        row = self.db.execute("SELECT * FROM dp_assets WHERE asset=?", (asset,)).fetchone()
        if row is None:
            return 0.0, 0.0
        if scientist is None:
            eps, delta = row["epsilon_total"], row["delta_total"]
        else:
            eps, delta = row["epsilon_per_scientist"], row["delta_per_scientist"]
        over = self.db.execute("SELECT epsilon, delta FROM dp_limits WHERE scientist=? AND "
                               "asset=?", (scientist or _TOTAL, asset)).fetchone()
        if over is not None:
            eps = over["epsilon"]
            delta = over["delta"] if over["delta"] is not None else delta
        return float(eps), float(delta)

    def _spent(self, scientist: str | None, asset: str) -> tuple[float, float]:
        sql = "SELECT epsilon, delta FROM dp_spend WHERE asset=?"
        args: list[Any] = [asset]
        if scientist is not None:
            sql += " AND scientist=?"
            args.append(scientist)
        rows = self.db.execute(sql, args).fetchall()
        return math.fsum(r[0] for r in rows), math.fsum(r[1] for r in rows)

    def status(self, scientist: str | None, asset: str) -> dict[str, Any]:
        """One budget: ``epsilon_spent``, ``epsilon_limit``, ``epsilon_remaining``,
        ``delta_spent``, ``delta_limit`` (``scientist=None``: the asset's total)."""
        eps_limit, delta_limit = self._limits(scientist, asset)
        eps, delta = self._spent(scientist, asset)
        return {"epsilon_spent": eps, "epsilon_limit": eps_limit,
                "epsilon_remaining": max(0.0, eps_limit - eps), "delta_spent": delta,
                "delta_limit": delta_limit}

    def scientist_budget(self, scientist: str) -> dict[str, dict[str, Any]]:
        """What :meth:`Worker.budget` returns: per DP asset, this scientist's budget."""
        return {a: self.status(scientist, a) for a in self.assets()}

    def rows(self) -> list[dict[str, Any]]:
        """Every budget, for the owner: per asset its total (``scientist`` None), then
        one row per scientist with a token, a spend or a limit of their own."""
        names = {r[0] for r in self.db.execute("SELECT name FROM tokens")}
        names |= {r[0] for r in self.db.execute("SELECT DISTINCT scientist FROM dp_spend")}
        names |= {r[0] for r in self.db.execute(
            "SELECT scientist FROM dp_limits WHERE scientist != ''")}
        out = []
        for asset in self.assets():
            for who in [None, *sorted(names)]:
                out.append({"scientist": who, "asset": asset, **self.status(who, asset)})
        return out

    def spends(self, asset: str | None = None) -> list[dict[str, Any]]:
        """Every debit, oldest first (``query`` decoded)."""
        sql, args = "SELECT * FROM dp_spend", []
        if asset is not None:
            sql += " WHERE asset=?"
            args.append(asset)
        out = [dict(r) for r in self.db.execute(sql + " ORDER BY id", args)]
        for r in out:
            r["query"] = json.loads(r["query"])
        return out

    # -- writing ----------------------------------------------------------------
    def debit(self, scientist: str, asset: str, epsilon: float, delta: float,
              query: dict[str, Any]) -> int:
        """Check both budgets and record the spend, atomically; call before releasing.

        Parameters
        ----------
        scientist, asset : str
        epsilon, delta : float
            What the release costs.
        query : dict
            The query document (kept with the spend and in the audit log).

        Returns
        -------
        int
            The spend's id.

        Raises
        ------
        BudgetExhausted
            The scientist's or the asset's total budget would be exceeded; nothing
            is recorded, and the error says what was asked and what remains.
        """
        with self.store._tx():
            for who, scope in ((scientist, "scientist"), (None, "total")):
                eps_limit, delta_limit = self._limits(who, asset)
                eps_spent, delta_spent = self._spent(who, asset)
                if eps_spent + epsilon > eps_limit + SLACK or \
                        delta_spent + delta > delta_limit + SLACK:
                    eps_left = max(0.0, eps_limit - eps_spent)
                    delta_left = max(0.0, delta_limit - delta_spent)
                    whose = f"your budget on {asset!r}" if scope == "scientist" else \
                        f"the total budget of {asset!r} (all scientists)"
                    raise BudgetExhausted(
                        f"this query asks for epsilon={epsilon:g}"
                        + (f", delta={delta:g}" if delta else "")
                        + f" but {whose} has epsilon={eps_left:g} left"
                        + (f" and delta={delta_left:g}" if delta_limit else "")
                        + "; nothing was spent", asset=asset, scope=scope, epsilon=epsilon,
                        delta=delta, epsilon_remaining=eps_left, delta_remaining=delta_left)
            cur = self.db.execute(
                "INSERT INTO dp_spend(ts, scientist, asset, epsilon, delta, query) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), scientist, asset, float(epsilon), float(delta), json.dumps(query)))
            spend = int(cur.lastrowid or 0)
            self.store._audit(scientist, "dp_release", {
                "spend": spend, "asset": asset, "epsilon": epsilon, "delta": delta,
                "query": query})
        return spend

    def set_budget(self, scientist: str | None, asset: str, epsilon: float,
                   delta: float | None = None, actor: str = "owner") -> dict[str, Any]:
        """Set a scientist's allowance on an asset (``scientist=None``: the asset's total).

        Returns the budget's new status. Recorded in the audit log.
        """
        if asset not in self.assets():
            raise KeyError(f"no DP asset {asset!r} (known: {', '.join(self.assets()) or 'none'};"
                           " a worker records its assets' declarations when it starts)")
        eps = _check_amount(epsilon, "epsilon")
        dl = None if delta is None else _check_amount(delta, "delta", below_one=True)
        with self.store._tx():
            self.db.execute(
                "INSERT INTO dp_limits VALUES (?, ?, ?, ?, ?) ON CONFLICT(scientist, asset) "
                "DO UPDATE SET epsilon=excluded.epsilon, delta=excluded.delta, "
                "updated=excluded.updated", (scientist or _TOTAL, asset, eps, dl, time.time()))
            self.store._audit(actor, "budget_set", {"scientist": scientist, "asset": asset,
                                                    "epsilon": eps, "delta": dl})
        return self.status(scientist, asset)
