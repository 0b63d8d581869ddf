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

    def he_services(self) -> list[dict[str, Any]]:
        """HE services and each scientist's use of them (:func:`..owner.he_counter.overview`)."""
        from ..owner.he_counter import overview

        return overview(self.owner.store)

    def ledger(self) -> list[dict[str, Any]]:
        """The privacy-budget ledger per scientist and asset."""
        return [dict(row) for row in self.owner.budget()]
