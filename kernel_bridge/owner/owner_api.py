"""``kb.Owner``: the data owner's side, in Python.

It opens the worker's state directory directly (the owner runs on the
worker's machine), so it works whether or not the worker is running. The CLI,
the approval panel and the widgets all go through this class.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._format import human_size
from .._render import is_outputs, outputs_text
from ..errors import AlreadyDecided
from ..wire import codec
from . import lineage
from .ledger import Ledger
from .plans import PlanStore
from .store import RequestRow, Store


@dataclass(frozen=True)
class PendingRequest:
    """A request as the owner sees it (the value is loaded on demand)."""

    id: int
    scientist: str
    reason: str
    kind: str
    value_type: str
    size: int
    sha256: str
    status: str
    deny_reason: str | None
    created: float
    decided: float | None
    lineage: list[dict[str, Any]]
    object_id: str
    #: True when an approve/deny call found the request decided that way already (a no-op).
    already_decided: bool = False

    @classmethod
    def from_row(cls, row: RequestRow, already_decided: bool = False) -> PendingRequest:
        return cls(id=row.id, scientist=row.scientist, reason=row.reason, kind=row.kind,
                   value_type=row.value_type, size=row.size, sha256=row.sha256,
                   status=row.status, deny_reason=row.deny_reason, created=row.created,
                   decided=row.decided, lineage=row.lineage, object_id=row.object_id,
                   already_decided=already_decided)

    def __str__(self) -> str:
        """One line for people: ``request #2 (ana): approved`` or ``... already approved``."""
        what = f"already {self.status}" if self.already_decided else self.status
        if self.already_decided and self.decided:
            what += f" (at {time.strftime('%H:%M:%S', time.localtime(self.decided))})"
        if self.deny_reason:
            what += f": {self.deny_reason}"
        return f"request #{self.id} ({self.scientist}): {what}"

    def code(self, full: bool = False) -> str:
        """The lineage as code: the step that produced the value first, then the
        private steps that led to it; later steps and mock cells are folded
        (``full=True`` lists them too). See :mod:`kernel_bridge.owner.lineage`."""
        return lineage.render(self.lineage, full=full)

    def summary(self) -> dict[str, Any]:
        """The request as one row of a list (CLI, approval panel, widget): no lineage.

        Plain fields plus ``size_text``; each view formats dates its own way.
        """
        d = {k: v for k, v in asdict(self).items() if k != "lineage"}
        d["size_text"] = human_size(self.size)
        return d

    def lineage_view(self) -> dict[str, Any]:
        """``{"target", "leading", "rest"}``: the lineage arranged for review."""
        return lineage.arrange(self.lineage)


class Owner:
    """The owner's handle on a worker's state directory.

    Parameters
    ----------
    state : str or Path
        The worker's ``--state`` directory.

    Examples
    --------
    >>> owner = Owner("./state/alice")            # doctest: +SKIP
    >>> for r in owner.requests(): print(r.id, r.scientist, r.reason)  # doctest: +SKIP
    >>> owner.approve(3)                          # doctest: +SKIP
    """

    def __init__(self, state: str | Path) -> None:
        self.store = Store(state)
        self._ledger: Ledger | None = None
        self._plans: PlanStore | None = None

    def __repr__(self) -> str:
        return f"Owner({str(self.store.dir)!r})"

    def close(self) -> None:
        self.store.close()

    # requests
    def requests(self, status: str | None = "pending") -> list[PendingRequest]:
        """Requests with the given status (``None`` for all), oldest first."""
        return [PendingRequest.from_row(r) for r in self.store.requests(status=status)]

    def request(self, request_id: int) -> PendingRequest:
        row = self.store.request(request_id)
        if row is None:
            raise KeyError(f"no request {request_id}")
        return PendingRequest.from_row(row)

    def value(self, request_id: int) -> Any:
        """The exact snapshot the scientist asked for (decoded), for review."""
        row = self.store.request(request_id)
        if row is None:
            raise KeyError(f"no request {request_id}")
        return codec.loads(self.store.snapshot_bytes(row), limit=None)

    def approve(self, request_id: int) -> PendingRequest:
        """Release the snapshot to its requester.

        Approving a request that is approved already is a no-op: the returned
        request says so (``already_decided``). Approving a denied one raises
        :class:`~kernel_bridge.errors.AlreadyDecided`.
        """
        return self._decide(request_id, True, None)

    def deny(self, request_id: int, reason: str) -> PendingRequest:
        """Refuse the request; ``reason`` is shown to the scientist.

        Denying a request that is denied already is a no-op (the first reason
        stays); denying an approved one raises :class:`~kernel_bridge.errors.AlreadyDecided`.
        """
        if not reason or not reason.strip():
            raise ValueError("a denial needs a reason the scientist can act on")
        return self._decide(request_id, False, reason)

    def _decide(self, request_id: int, approve: bool, reason: str | None) -> PendingRequest:
        try:
            return PendingRequest.from_row(self.store.decide(request_id, approve, reason))
        except AlreadyDecided as exc:
            if exc.data.get("status") != ("approved" if approve else "denied"):
                raise
            return PendingRequest.from_row(
                self.store.request(request_id), already_decided=True)  # type: ignore[arg-type]

    # tokens
    def add_token(self, scientist: str) -> str:
        """Create a token for ``scientist`` (replacing an old one); shown only now."""
        return self.store.add_token(scientist)

    def revoke_token(self, scientist: str) -> bool:
        return self.store.revoke_token(scientist)

    def tokens(self) -> list[dict[str, Any]]:
        return self.store.tokens()

    # privacy budgets
    @property
    def ledger(self) -> Ledger:
        """The DP ledger (budgets and spends) in this state directory."""
        if self._ledger is None:
            self._ledger = Ledger(self.store)
        return self._ledger

    def budget(self) -> list[dict[str, Any]]:
        """Every DP budget: per asset its total (``scientist`` None) and each scientist's.

        Rows hold ``scientist``, ``asset``, ``epsilon_spent``, ``epsilon_limit``,
        ``epsilon_remaining``, ``delta_spent`` and ``delta_limit``.
        """
        return self.ledger.rows()

    def set_budget(self, scientist: str | None, asset: str, epsilon: float,
                   delta: float | None = None) -> dict[str, Any]:
        """Set ``scientist``'s ε (and δ) allowance on ``asset`` (None: the asset's total).

        Takes effect at once, also on a running worker; recorded in the audit log.
        """
        return self.ledger.set_budget(scientist, asset, epsilon, delta)

    # plans
    @property
    def plan_store(self) -> PlanStore:
        """Plans, decisions and runs in this state directory."""
        if self._plans is None:
            self._plans = PlanStore(self.store)
        return self._plans

    def plans(self, status: str | None = None) -> list[dict[str, Any]]:
        """Plans with the given status (``None``: all), oldest first, for review.

        Each is a dict: ``id``, ``name``, ``scientist``, ``hash``, ``status``,
        ``reason``, ``asset``, ``runs_used``/``max_runs``, ``epsilon_spent``/
        ``epsilon_total``, ``document`` (code, inputs, policy) and ``policy_words``
        (the output policy in sentences).
        """
        return [p.review() for p in self.plan_store.plans(status=status)]

    def plan(self, plan_id: int) -> dict[str, Any]:
        """One plan for review (as in :meth:`plans`) with its ``runs``."""
        row = self.plan_store.plan(plan_id)
        if row is None:
            raise KeyError(f"no plan {plan_id}")
        return {**row.review(), "runs": self.plan_store.runs(plan_id)}

    def approve_plan(self, plan_id: int, plan_hash: str | None = None) -> dict[str, Any]:
        """Approve a pending plan: its exact hash may then run under its policy.

        ``plan_hash`` (what you reviewed; the panel sends it) must match the stored
        plan's. Approving an approved plan is a no-op (``already_decided``);
        approving a denied one raises :class:`~kernel_bridge.errors.AlreadyDecided`.
        """
        return self._decide_plan(plan_id, True, None, plan_hash)

    def deny_plan(self, plan_id: int, reason: str) -> dict[str, Any]:
        """Deny a pending plan; ``reason`` is shown to the scientist. It never runs."""
        if not reason or not reason.strip():
            raise ValueError("a denial needs a reason the scientist can act on")
        return self._decide_plan(plan_id, False, reason, None)

    def revoke_plan(self, plan_id: int, reason: str) -> dict[str, Any]:
        """Stop an approved plan: no further run starts; ``reason`` reaches the scientist."""
        if not reason or not reason.strip():
            raise ValueError("a revocation needs a reason the scientist can act on")
        return {**self.plan_store.revoke(plan_id, reason).review(), "already_decided": False}

    def _decide_plan(self, plan_id: int, approve: bool, reason: str | None,
                     plan_hash: str | None) -> dict[str, Any]:
        try:
            row = self.plan_store.decide(plan_id, approve, reason, expected_hash=plan_hash)
            return {**row.review(), "already_decided": False}
        except AlreadyDecided as exc:
            if exc.data.get("status") != ("approved" if approve else "denied"):
                raise
            return {**self.plan(plan_id), "already_decided": True}

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` audit entries, oldest first."""
        return self.store.audit_log(limit)


def render_value(value: Any, max_chars: int = 4000) -> str:
    """A plain-text rendering of a snapshot for terminals (CLI ``requests show``)."""
    if is_outputs(value):
        return render_outputs(value, max_chars)
    try:
        import torch

        if isinstance(value, torch.Tensor):
            head = f"tensor shape={tuple(value.shape)} dtype={value.dtype}"
            if value.numel() and value.dtype.is_floating_point:
                v = value.detach().double()
                head += (f" min={v.min().item():.6g} max={v.max().item():.6g} "
                         f"mean={v.mean().item():.6g}")
            return f"{head}\n{value!r}"[:max_chars]
    except ImportError:  # pragma: no cover
        pass
    text = value.to_string(max_rows=40) if hasattr(value, "to_string") else repr(value)
    return text if len(text) <= max_chars else text[:max_chars] + "\n... (truncated)"


def render_outputs(outputs: list[dict[str, Any]], max_chars: int = 4000) -> str:
    """Held cell outputs as text, in order (see :func:`kernel_bridge._render.outputs_text`)."""
    return outputs_text(outputs, max_chars)
