"""Plans on a worker: their documents, the owner's decisions, their runs, in SQLite.

The tables live in the worker's state file (:class:`~.store.Store`), next to
requests and the ledger, so the worker process and the owner's tools (CLI,
:class:`~.owner_api.Owner`, the Lab panel) see the same state, and a plan
approved before a crash is approved after it.

Counting runs: a run is *reserved* (a row with status ``running``) in one
``BEGIN IMMEDIATE`` transaction that checks the plan is approved, that fewer
than ``max_runs`` runs are reserved or done, and that the plan's ε so far plus
this run's stays within ``policy.dp.epsilon_total``. So concurrent runs, from
any number of connections, can never pass ``max_runs``. A reserved run ends as
``released`` (outputs sent in the clear), ``held`` (kept for secure aggregation),
``aggregated`` (its masked form left through ``PlanService.release_masked``),
``dropped`` (held, then abandoned without release),
``failed`` (the code raised; only the error type leaves), ``rejected`` (outputs
of the wrong form, nothing leaves) or ``refused`` (the ledger refused the ε;
nothing leaves). Every status but ``refused`` counts against ``max_runs``;
a run still ``running`` when the worker stops is marked ``interrupted`` at the
next start and still counts (with its ε: the debit may have committed).
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from ..errors import (
    AlreadyDecided,
    InvalidPlan,
    PermissionDenied,
    PlanDenied,
    PlanPending,
    PlanRunsExhausted,
)
from ..plan_document import check, plan_hash, policy_words
from .store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scientist TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    document TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    deny_reason TEXT,
    created REAL NOT NULL,
    decided REAL
);
CREATE TABLE IF NOT EXISTS plan_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id INTEGER NOT NULL REFERENCES plans(id),
    scientist TEXT NOT NULL,
    status TEXT NOT NULL,
    epsilon REAL NOT NULL DEFAULT 0,
    delta REAL NOT NULL DEFAULT 0,
    started REAL NOT NULL,
    ended REAL,
    error_type TEXT,
    released TEXT
);
CREATE INDEX IF NOT EXISTS plan_runs_by_plan ON plan_runs(plan_id);
"""

#: Run statuses that use up one of the plan's runs (all but ``refused``).
COUNTED = ("running", "released", "held", "aggregated", "dropped", "failed", "rejected",
           "interrupted")


@dataclass(frozen=True)
class PlanRow:
    """One plan as stored, with its progress (runs used, ε spent)."""

    id: int
    scientist: str
    name: str
    hash: str
    document: dict[str, Any]
    reason: str
    status: str  # pending | approved | denied | revoked
    deny_reason: str | None
    created: float
    decided: float | None
    runs_used: int
    epsilon_spent: float

    @property
    def policy(self) -> dict[str, Any]:
        return dict(self.document["policy"])

    @property
    def max_runs(self) -> int:
        return int(self.document["policy"]["max_runs"])

    @property
    def epsilon_total(self) -> float | None:
        dp = self.document["policy"].get("dp")
        return None if dp is None else float(dp["epsilon_total"])

    @property
    def secure(self) -> bool:
        agg = self.document["policy"].get("aggregate")
        return bool(agg and agg["secure"])

    def public(self) -> dict[str, Any]:
        """What the scientist (and every UI) sees: the plan, its state and progress."""
        return {"id": self.id, "name": self.name, "hash": self.hash, "status": self.status,
                "deny_reason": self.deny_reason, "reason": self.reason,
                "created": self.created, "decided": self.decided,
                "runs_used": self.runs_used, "max_runs": self.max_runs,
                "epsilon_spent": self.epsilon_spent, "epsilon_total": self.epsilon_total,
                "asset": self.document["inputs"]["asset"], "scientist": self.scientist}

    def review(self) -> dict[str, Any]:
        """What the owner reviews: :meth:`public` plus the document and the policy in words."""
        return {**self.public(), "document": self.document,
                "policy_words": policy_words(self.document)}


class PlanStore:
    """Plans, decisions and runs over a :class:`~.store.Store`'s SQLite connection.

    Parameters
    ----------
    store : Store
        The worker's state (its connection and audit log are reused).
    shared_documents : bool
        Hand out one parsed document per stored text, shared between the rows that
        read it (the worker's run path reads its plan several times per run and only
        reads it); by default each row parses its own (what callers may change).
    """

    def __init__(self, store: Store, shared_documents: bool = False) -> None:
        self.store = store
        self.db = store.db
        self.db.executescript(SCHEMA)
        self._parse = _document if shared_documents else json.loads

    # -- plans -------------------------------------------------------------------
    def submit(self, scientist: str, doc: dict[str, Any], reason: str) -> PlanRow:
        """Store a checked plan as pending (the same hash twice gives the same plan back)."""
        doc = check(doc)
        digest = plan_hash(doc)
        with self.store._tx():
            row = self.db.execute("SELECT id FROM plans WHERE scientist=? AND hash=? AND "
                                  "status IN ('pending', 'approved') ORDER BY id DESC LIMIT 1",
                                  (scientist, digest)).fetchone()
            if row is not None:
                pid = int(row[0])
            else:
                cur = self.db.execute(
                    "INSERT INTO plans(scientist, name, hash, document, reason, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (scientist, doc["name"], digest, json.dumps(doc), reason, time.time()))
                pid = int(cur.lastrowid or 0)
                self.store._audit(scientist, "plan_submit", {
                    "plan": pid, "hash": digest, "name": doc["name"], "reason": reason})
        out = self.plan(pid)
        assert out is not None
        return out

    def plan(self, plan_id: int) -> PlanRow | None:
        r = self.db.execute("SELECT * FROM plans WHERE id=?", (int(plan_id),)).fetchone()
        return None if r is None else self._row(r)

    def plans(self, status: str | None = None, scientist: str | None = None) -> list[PlanRow]:
        sql, args = "SELECT * FROM plans WHERE 1=1", []
        if status:
            sql += " AND status=?"
            args.append(status)
        if scientist:
            sql += " AND scientist=?"
            args.append(scientist)
        return [self._row(r) for r in self.db.execute(sql + " ORDER BY id", args).fetchall()]

    def own(self, scientist: str, plan_id: Any) -> PlanRow:
        """A plan of ``scientist``'s; anyone else's (or none) is the same PermissionDenied."""
        row = self.plan(plan_id) if isinstance(plan_id, int) and not isinstance(
            plan_id, bool) else None
        if row is None or row.scientist != scientist:
            raise PermissionDenied(f"no plan {str(plan_id)[:20]} of yours on this worker",
                                   plan=str(plan_id)[:20])
        return row

    def decide(self, plan_id: int, approve: bool, reason: str | None = None,
               actor: str = "owner", expected_hash: str | None = None) -> PlanRow:
        """Approve or deny a pending plan (a decided one cannot change).

        ``expected_hash``: approve only if the stored plan has this hash (what the
        reviewer saw); otherwise :class:`~kernel_bridge.errors.InvalidPlan`.
        """
        status = "approved" if approve else "denied"
        with self.store._tx():
            row = self.db.execute("SELECT hash, status FROM plans WHERE id=?",
                                  (int(plan_id),)).fetchone()
            if row is None:
                raise KeyError(f"no plan {plan_id}")
            if expected_hash is not None and row["hash"] != expected_hash:
                raise InvalidPlan(f"plan {plan_id} has hash {row['hash'][:12]}…, not the "
                                  f"{expected_hash[:12]}… that was reviewed", plan=int(plan_id))
            if row["status"] != "pending":
                raise AlreadyDecided(f"plan {plan_id} is already {row['status']}",
                                     plan=int(plan_id), status=row["status"])
            self.db.execute("UPDATE plans SET status=?, deny_reason=?, decided=? WHERE id=?",
                            (status, None if approve else reason, time.time(), int(plan_id)))
            self.store._audit(actor, f"plan_{status}", {"plan": int(plan_id),
                                                        "hash": row["hash"], "reason": reason})
        out = self.plan(plan_id)
        assert out is not None
        return out

    def revoke(self, plan_id: int, reason: str, actor: str = "owner") -> PlanRow:
        """Stop an approved plan: no further run starts (runs under way finish).

        Its status becomes ``revoked``; it cannot be approved again (the scientist
        submits it anew). Raises AlreadyDecided for a plan that is not approved.
        """
        with self.store._tx():
            cur = self.db.execute("UPDATE plans SET status='revoked', deny_reason=?, decided=? "
                                  "WHERE id=? AND status='approved'",
                                  (reason, time.time(), int(plan_id)))
            if cur.rowcount != 1:
                row = self.db.execute("SELECT status FROM plans WHERE id=?",
                                      (int(plan_id),)).fetchone()
                if row is None:
                    raise KeyError(f"no plan {plan_id}")
                raise AlreadyDecided(f"plan {plan_id} is {row['status']}, not approved",
                                     plan=int(plan_id), status=row["status"])
            self.store._audit(actor, "plan_revoked", {"plan": int(plan_id), "reason": reason})
        out = self.plan(plan_id)
        assert out is not None
        return out

    # -- runs ----------------------------------------------------------------------
    def reserve(self, scientist: str, plan_id: int, plan_hash_: str, epsilon: float,
                delta: float) -> int:
        """Reserve one run (atomically: approved, runs and ε left); returns its id.

        Raises PlanPending, PlanDenied, PlanRunsExhausted, or BudgetExhausted when
        the plan's own ``epsilon_total`` would be passed; nothing is recorded then.
        """
        from ..errors import BudgetExhausted

        with self.store._tx():
            row = self.db.execute("SELECT * FROM plans WHERE id=?", (int(plan_id),)).fetchone()
            if row is None or row["scientist"] != scientist:
                raise PermissionDenied(f"no plan {plan_id} of yours on this worker",
                                       plan=plan_id)
            plan = self._row(row)
            if plan.hash != plan_hash_ or not _hash_matches(row["document"], plan.hash):
                raise PermissionDenied(f"plan {plan_id}'s stored document does not match the "
                                       "hash the owner decided on; it will not run",
                                       plan=plan_id)
            if plan.status == "pending":
                raise PlanPending(f"plan {plan_id} is waiting for the owner's approval",
                                  plan=plan_id)
            if plan.status in ("denied", "revoked"):
                raise PlanDenied(f"plan {plan_id} was {plan.status}: {plan.deny_reason or ''}",
                                 plan=plan_id, reason=plan.deny_reason or "")
            if plan.runs_used >= plan.max_runs:
                self.store._audit(scientist, "plan_run_refused", {
                    "plan": plan_id, "why": "max_runs", "runs_used": plan.runs_used})
                raise PlanRunsExhausted(
                    f"plan {plan_id} has used all {plan.max_runs} of its runs; nothing was "
                    "run or spent", plan=plan_id, max_runs=plan.max_runs)
            total = plan.epsilon_total
            if total is not None and plan.epsilon_spent + epsilon > total + 1e-9:
                self.store._audit(scientist, "plan_run_refused", {
                    "plan": plan_id, "why": "epsilon_total", "epsilon": epsilon})
                raise BudgetExhausted(
                    f"this run would cost epsilon={epsilon:.4g} but plan {plan_id} has "
                    f"epsilon={max(0.0, total - plan.epsilon_spent):.4g} left of its "
                    f"{total:g}; nothing was run or spent", asset=plan.document["inputs"]["asset"],
                    scope="plan", epsilon=epsilon, delta=delta,
                    epsilon_remaining=max(0.0, total - plan.epsilon_spent), delta_remaining=0.0)
            cur = self.db.execute(
                "INSERT INTO plan_runs(plan_id, scientist, status, epsilon, delta, started) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (int(plan_id), scientist, float(epsilon), float(delta), time.time()))
            rid = int(cur.lastrowid or 0)
            self.store._audit(scientist, "plan_run", {"plan": plan_id, "run": rid,
                                                      "hash": plan.hash, "epsilon": epsilon})
        return rid

    def finish(self, run_id: int, status: str, *, error_type: str | None = None,
               released: dict[str, Any] | None = None, spent: bool = True) -> None:
        """Record how a run ended (``spent=False``: its ε was not debited, so it is zeroed)."""
        with self.store._tx():
            sets = "status=?, ended=?, error_type=?, released=?"
            if not spent:
                sets += ", epsilon=0, delta=0"
            self.db.execute(f"UPDATE plan_runs SET {sets} WHERE id=?",
                            (status, time.time(), error_type,
                             None if released is None else json.dumps(released), int(run_id)))
            row = self.db.execute("SELECT plan_id, scientist FROM plan_runs WHERE id=?",
                                  (int(run_id),)).fetchone()
            self.store._audit(str(row["scientist"]), f"plan_run_{status}", {
                "plan": int(row["plan_id"]), "run": int(run_id), "error_type": error_type,
                "released": released})

    def run(self, run_id: int) -> dict[str, Any] | None:
        r = self.db.execute("SELECT * FROM plan_runs WHERE id=?", (int(run_id),)).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["released"] = None if d["released"] is None else json.loads(d["released"])
        return d

    def runs(self, plan_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id FROM plan_runs WHERE plan_id=? ORDER BY id",
                               (int(plan_id),)).fetchall()
        return [r for r in (self.run(int(x[0])) for x in rows) if r is not None]

    def interrupted(self) -> int:
        """Mark runs left ``running`` or ``held`` by a stopped worker ``interrupted`` (at
        startup). A run that was still running was never debited (its outputs never
        left), so its ε is zeroed; a held run's debit stays."""
        with self.store._tx():
            cur = self.db.execute(
                "UPDATE plan_runs SET status='interrupted', ended=?, "
                "epsilon=CASE WHEN status='running' THEN 0 ELSE epsilon END, "
                "delta=CASE WHEN status='running' THEN 0 ELSE delta END "
                "WHERE status='running' OR status='held'", (time.time(),))
        return cur.rowcount

    def debited(self, plan_id: int) -> tuple[int, float, float]:
        """The plan's runs whose ε was debited (outputs released or held): how many, and
        the ε and δ debited for them."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) "
            "FROM plan_runs WHERE plan_id=? AND epsilon > 0 AND status IN "
            "('released', 'held', 'aggregated', 'dropped', 'interrupted')",
            (int(plan_id),)).fetchone()
        return int(row[0]), float(row[1]), float(row[2])

    def set_cost(self, run_id: int, epsilon: float, delta: float) -> None:
        """Record what a run's debit actually was (its reservation held an estimate)."""
        with self.store._tx():
            self.db.execute("UPDATE plan_runs SET epsilon=?, delta=? WHERE id=?",
                            (float(epsilon), float(delta), int(run_id)))

    def _row(self, r: Any) -> PlanRow:
        d = dict(r)
        agg = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(epsilon), 0) FROM plan_runs WHERE plan_id=? AND "
            f"status IN ({','.join('?' * len(COUNTED))})", (d["id"], *COUNTED)).fetchone()
        d["document"] = self._parse(d["document"])
        return PlanRow(**d, runs_used=int(agg[0]), epsilon_spent=float(agg[1]))


@functools.lru_cache(maxsize=64)
def _document(text: str) -> dict[str, Any]:
    """A stored plan document, parsed once (an FL plan's inputs.encoding holds a
    declaration per column, so parsing is not free). Shared: read it only."""
    doc: dict[str, Any] = json.loads(text)
    return doc


@functools.lru_cache(maxsize=64)
def _hash_matches(text: str, hash_: str) -> bool:
    """Whether a stored document is the one its hash names (checked once per text)."""
    return plan_hash(_document(text)) == hash_


def dp_steps(rows: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """Opacus's sample rate and step count for one run: ``q = batch_size / rows``
    (Poisson sampling), ``local_epochs * ceil(rows / batch_size)`` steps."""
    q = min(1.0, batch_size / max(rows, 1))
    return q, local_epochs * math.ceil(max(rows, 1) / batch_size)


def run_epsilon(dp: dict[str, Any], rows: int, runs: int = 1) -> float:
    """ε of ``runs`` runs of one plan together, by one Opacus RDP accountant.

    Computed by the worker from the declared ``noise_multiplier``, ``delta``,
    ``batch_size``, ``local_epochs`` and the asset's row count (which the worker
    knows and the scientist may not), never taken from the run itself. The runs
    of a plan are the same DP-SGD mechanism on the same rows, so they compose
    in RDP as the steps of one longer training would (as Opacus composes
    epochs): ``runs`` runs cost far less than ``runs`` times one run's ε.
    """
    q, steps = dp_steps(rows, int(dp["batch_size"]), int(dp["local_epochs"]))
    return _rdp_epsilon(float(dp["noise_multiplier"]), q, steps * max(int(runs), 0),
                        float(dp["delta"]))


@functools.lru_cache(maxsize=4096)
def _rdp_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    if steps == 0:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    return float(acc.get_epsilon(delta=delta))
