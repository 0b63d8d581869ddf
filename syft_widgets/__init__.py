"""Live notebook widgets for syftlab: watch workers, approvals and privacy budgets.

::

    from syft_widgets import WorkerGraph, Approvals, Budget
    WorkerGraph([alice, bob])                  # scientist and workers as a live graph
    Budget(alice)                              # ε spent / remaining per asset, as bars
    Approvals(kb.Owner("./state/alice"))       # owner: pending requests, approve / deny

Each widget refreshes itself from a background thread (every second by
default) without blocking the kernel, stops when closed (``w.close()``), and
prints as plain text where no widget front end runs (consoles, nbconvert).
"""

from __future__ import annotations

from ._approvals import Approvals
from ._budget import Budget
from ._worker_graph import WorkerGraph

__all__ = ["Approvals", "Budget", "WorkerGraph"]
