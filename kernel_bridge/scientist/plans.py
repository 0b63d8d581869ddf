"""Plans, the scientist's side: submit a plan once, run it many times under its policy.

A plan (:mod:`kernel_bridge.plan_document`) is code plus declared inputs plus an
output policy. Each worker's owner approves its exact hash; each run executes
on the worker in a fresh sandboxed kernel and returns only what the policy
declares::

    plan = alice.submit_plan(doc, reason="risk model for the joint study")
    plan.wait()                     # until the owner decides
    result = plan.run(weights=w, round=0)
    result.outputs["update"]        # {param: tensor}, as declared

With secure aggregation the outputs stay on the worker (``result.held``), for
the aggregation protocol to combine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import PlanDenied, PlanPending, ProtocolError
from ..plan_document import check, plan_hash
from ..wire.protocol import Op
from ._session import Handle, Session, blocking


@dataclass(frozen=True)
class PlanRun:
    """One run of a plan on one worker.

    Attributes
    ----------
    run : dict
        ``id``, ``plan``, ``status`` (``released`` or ``held``), ``epsilon`` and
        ``delta`` of this run, ``runs_used``, ``max_runs``, ``epsilon_spent``,
        ``epsilon_total`` of the plan after it.
    outputs : dict or None
        The outputs in the declared form; None when held for secure aggregation.
    worker : str
        The worker's name.
    """

    run: dict[str, Any]
    outputs: dict[str, Any] | None
    worker: str

    @property
    def id(self) -> int:
        return int(self.run["id"])

    @property
    def held(self) -> bool:
        """True when the outputs stay on the worker for secure aggregation."""
        return bool(self.run["status"] == "held")

    @property
    def epsilon(self) -> float:
        """ε this run cost on the worker's ledger (0 without DP)."""
        return float(self.run["epsilon"])


class Plan:
    """A plan submitted to one worker: its id, hash and state there.

    Parameters
    ----------
    worker : Worker or AsyncWorker
    info : dict
        The worker's description (``plan_status``).
    """

    def __init__(self, worker: Handle, info: dict[str, Any]) -> None:
        self._session: Session = worker.core
        self._info = info

    @property
    def worker(self) -> Any:
        return self._session.handle

    @property
    def id(self) -> int:
        """The plan's number on its worker (``worker.plan_by_id`` finds it again)."""
        return int(self._info["id"])

    @property
    def hash(self) -> str:
        """The SHA-256 the owner approves (:func:`~kernel_bridge.plan_document.plan_hash`)."""
        return str(self._info["hash"])

    @property
    def status(self) -> str:
        """``pending``, ``approved``, ``denied`` or ``revoked`` (as last seen; :meth:`refresh`)."""
        return str(self._info["status"])

    @property
    def info(self) -> dict[str, Any]:
        """Everything the worker says about the plan: status, runs used, ε spent..."""
        return dict(self._info)

    @property
    def runs_used(self) -> int:
        return int(self._info["runs_used"])

    @property
    def epsilon_spent(self) -> float:
        return float(self._info["epsilon_spent"])

    def __repr__(self) -> str:
        eps = (f", ε {self._info['epsilon_spent']:.3g}/{self._info['epsilon_total']:g}"
               if self._info.get("epsilon_total") is not None else "")
        deny = f" ({self._info['deny_reason']})" if self._info.get("deny_reason") else ""
        return (f"<Plan #{self.id} {self._info.get('name')!r} on {self._session.name}: "
                f"{self.status}{deny}, runs {self._info['runs_used']}/"
                f"{self._info['max_runs']}{eps}>")

    async def _arefresh(self) -> Plan:
        """Ask the worker for the plan's status and progress now; returns self."""
        self._info = (await self._session.call(Op.PLAN_STATUS, plan=self.id))["plan"]
        return self

    async def _await(self, timeout: float | None = 600.0, poll: float = 30.0) -> Plan:
        """Wait until the owner decides (or ``timeout`` seconds pass); returns self."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            self._info = (await self._session.call(Op.WAIT_PLAN, plan=self.id,
                                                   timeout=left))["plan"]
            if self.status != "pending":
                return self
            if deadline is not None and time.monotonic() >= deadline:
                return self

    async def _arun(self, **args: Any) -> PlanRun:
        """One run under the plan's policy (see :meth:`run`)."""
        reply = await self._session.send_value(Op.PLAN_RUN, args, plan=self.id, hash=self.hash)
        outputs = None
        if "frame" in reply or "download" in reply:
            outputs = await self._session.fetch_value(reply)
        run = reply["run"]
        self._info.update(runs_used=run["runs_used"], epsilon_spent=run["epsilon_spent"])
        return PlanRun(run=run, outputs=outputs, worker=self._session.name)

    async def _await_approved(self, timeout: float | None = 600.0) -> Plan:
        """Wait for the owner's decision; returns self once approved.

        Raises PlanDenied (with the owner's reason) or PlanPending after ``timeout``.
        """
        await self._await(timeout)
        if self.status in ("denied", "revoked"):
            raise PlanDenied(f"plan {self.id} was {self.status} on {self._session.name}: "
                             f"{self._info.get('deny_reason') or ''}", plan=self.id,
                             reason=self._info.get("deny_reason") or "")
        if self.status == "pending":
            raise PlanPending(f"plan {self.id} is still pending on {self._session.name}",
                              plan=self.id)
        return self

    refresh = blocking(_arefresh)
    wait = blocking(_await)
    wait_approved = blocking(_await_approved)

    def run(self, **args: Any) -> PlanRun:
        """Run the plan once on the worker with ``args`` (tensors, numbers, strings).

        The worker calls ``run(data, spec=spec, **args)`` in a fresh sandboxed
        kernel and releases the outputs in the declared form (or holds them for
        secure aggregation). Raises PlanPending/PlanDenied, PlanRunsExhausted,
        BudgetExhausted (nothing spent), PlanOutputRejected, RemoteError.
        """
        return self._session.blocking(self._arun(**args))


async def submit(session: Session, doc: dict[str, Any], reason: str = "") -> Plan:
    """Check ``doc`` locally (same checks as the worker) and submit it for approval."""
    checked = check(doc)
    reply = await session.call(Op.PLAN_SUBMIT, plan=checked, reason=reason)
    plan = Plan(session.handle, reply["plan"])
    if plan.hash != plan_hash(checked):
        raise ProtocolError("the worker stored the plan under another hash")
    return plan
