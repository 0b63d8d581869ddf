"""The data owner's side: what the approval panel shows and does.

Everything goes through :class:`~kernel_bridge.owner.owner_api.Owner` on the
worker's state directory, so the panel works whether or not the worker runs.
Calls run on one thread (the handlers' executor), in order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from .._format import human_size
from ..owner.owner_api import Owner, PendingRequest
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

    @staticmethod
    def _summary(r: PendingRequest) -> dict[str, Any]:
        d = asdict(r)
        d.pop("lineage")
        d["size_text"] = human_size(r.size)
        return d

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
        return [self._summary(r) for r in rows]

    def request(self, request_id: int) -> dict[str, Any]:
        """One request with its lineage, code listing and a preview of the snapshot."""
        r = self.owner.request(request_id)
        d = self._summary(r)
        d["lineage"] = r.lineage_view()  # target first, what led to it, the rest folded
        d["code"] = r.code()
        d["preview"] = preview(self.owner.value(request_id))
        return d

    def approve(self, request_id: int) -> dict[str, Any]:
        return self._summary(self.owner.approve(request_id))

    def deny(self, request_id: int, reason: str) -> dict[str, Any]:
        return self._summary(self.owner.deny(request_id, reason))

    def ledger(self) -> list[dict[str, Any]] | None:
        """The privacy-budget ledger per scientist and asset (None before DP exists)."""
        fn = getattr(self.owner, "budget", None)
        return None if fn is None else [dict(row) for row in fn()]
