"""The data owner's side: what the approval panel shows and does.

Everything goes through :class:`~kernel_bridge.owner.owner_api.Owner` on the
worker's state directory, so the panel works whether or not the worker runs.
Calls run on one thread (the handlers' executor), in order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..owner.owner_api import Owner
from .preview import preview

#: Statuses the history tab shows.
DECIDED = ("approved", "denied")


class OwnerSide:
    """The approval panel's backend for one worker's state directory.

    Parameters
    ----------
    state : str
        The worker's ``--state`` directory.
    """

    side = "owner"

    def __init__(self, state: str) -> None:
        self.state = state
        self.owner = Owner(state)
        # One thread: the SQLite handle is used by one thread at a time, in order.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syftlab-owner")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.owner.close()

    def requests(self, which: str) -> list[dict[str, Any]]:
        """``pending``, ``history`` (approved and denied, newest first) or ``all``."""
        if which == "pending":
            rows = self.owner.requests("pending")
        elif which == "history":
            rows = [r for r in self.owner.requests(None) if r.status in DECIDED]
            rows.sort(key=lambda r: r.decided or r.created, reverse=True)
        elif which == "all":
            rows = self.owner.requests(None)
        else:
            raise ValueError(f"unknown request list {which!r}: pending, history or all")
        return [r.summary() for r in rows]

    def request(self, request_id: int) -> dict[str, Any]:
        """One request with its lineage, code listing and a preview of the snapshot."""
        r = self.owner.request(request_id)
        d = r.summary()
        d["lineage"] = r.lineage_view()  # target first, what led to it, the rest folded
        d["code"] = r.code()
        d["preview"] = preview(self.owner.value(request_id))
        return d

    def approve(self, request_id: int) -> dict[str, Any]:
        return self.owner.approve(request_id).summary()

    def deny(self, request_id: int, reason: str) -> dict[str, Any]:
        return self.owner.deny(request_id, reason).summary()

    def ledger(self) -> list[dict[str, Any]]:
        """The privacy-budget ledger per scientist and asset."""
        return [dict(row) for row in self.owner.budget()]

    # plans
    def plans(self, which: str) -> list[dict[str, Any]]:
        """``pending`` or ``all`` (newest first): plans with their policy in words."""
        if which not in ("pending", "all"):
            raise ValueError(f"unknown plan list {which!r}: pending or all")
        rows = self.owner.plans("pending" if which == "pending" else None)
        if which == "all":
            rows.reverse()
        return rows

    def plan(self, plan_id: int) -> dict[str, Any]:
        """One plan for review: document (code, inputs, policy), policy in words, runs."""
        return self.owner.plan(plan_id)

    def approve_plan(self, plan_id: int, plan_hash: str | None) -> dict[str, Any]:
        """Approve the plan whose hash the reviewer saw (refused if it differs)."""
        return self.owner.approve_plan(plan_id, plan_hash)

    def deny_plan(self, plan_id: int, reason: str) -> dict[str, Any]:
        return self.owner.deny_plan(plan_id, reason)

    def revoke_plan(self, plan_id: int, reason: str) -> dict[str, Any]:
        """Stop an approved plan: no further run starts."""
        return self.owner.revoke_plan(plan_id, reason)
