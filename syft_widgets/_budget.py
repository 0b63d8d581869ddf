"""``Budget``: privacy budget (ε, δ) spent and remaining per asset, as bars."""

from __future__ import annotations

import time
from typing import Any

import traitlets

from kernel_bridge._format import format_epsilon
from kernel_bridge.owner.owner_api import Owner
from kernel_bridge.scientist.worker import Worker

from ._base import LiveWidget, static


def _row(label: str, b: dict[str, Any]) -> dict[str, Any]:
    spent, limit = float(b["epsilon_spent"]), float(b["epsilon_limit"])
    remaining = float(b.get("epsilon_remaining", max(0.0, limit - spent)))
    fraction = min(1.0, spent / limit) if limit > 0 else 1.0
    delta_limit = b.get("delta_limit")
    text = (f"ε {format_epsilon(spent)} of {format_epsilon(limit)} spent, "
            f"{format_epsilon(remaining)} left")
    if delta_limit:
        text += f"; δ {float(b.get('delta_spent') or 0.0):.2g} of {float(delta_limit):.2g}"
    return {"label": label, "asset": b.get("asset", label), "scientist": b.get("scientist", ""),
            "epsilon_spent": spent, "epsilon_limit": limit, "epsilon_remaining": remaining,
            "delta_spent": float(b.get("delta_spent") or 0.0),
            "delta_limit": None if delta_limit is None else float(delta_limit),
            "fraction": fraction, "text": text}


class Budget(LiveWidget):
    """Privacy budget per asset: ε spent and remaining as bars that move after each query.

    Parameters
    ----------
    source : Worker or kb.Owner
        A scientist's worker handle (your budget on each of its assets) or the
        data owner's handle (every scientist's budget on every asset).
    interval : float
        Seconds between refreshes.

    Examples
    --------
    >>> Budget(alice)                          # doctest: +SKIP
    >>> alice.asset("heart").dp.mean("age", epsilon=0.2).release()   # doctest: +SKIP
    """

    _esm = static("budget.js")
    _css = static("widgets.css")

    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    #: Why the last refresh failed ("" when it worked); the bars then show the last good values.
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, source: Worker | Owner, *, interval: float = 1.0,
                 start: bool = True) -> None:
        self.source = source
        if isinstance(source, Owner):
            # The poller reads through a database connection of its own.
            self._reader: Worker | Owner = Owner(source.store.dir)
            title = f"Privacy budget on {source.store.dir.name} (all scientists)"
        else:
            self._reader = source
            title = f"Privacy budget on {source.name} ({source.scientist})"
        super().__init__(interval=interval, title=title)
        if start:
            self.start()

    def _read(self) -> list[dict[str, Any]]:
        src = self._reader
        if isinstance(src, Owner):
            return [_row(f"{b['scientist']} · {b['asset']}", b) for b in src.budget()]
        if not src.connected:  # e.g. the worker restarted: one quick try, then wait
            src.reconnect(attempts=1, delay=0.0)
        return [_row(asset, {**b, "asset": asset}) for asset, b in sorted(src.budget().items())]

    def refresh(self) -> None:
        """Re-read the budget (the poller calls this)."""
        try:
            rows, error = self._read(), ""
        except Exception as exc:  # shown in the widget; the last good bars stay
            rows, error = list(self.rows), str(exc) or type(exc).__name__
        with self.hold_sync():
            if rows != self.rows:
                self.rows = rows
            self.error = error
            self.updated = time.time()

    def spent(self) -> dict[str, float]:
        """``{label: ε spent}`` as last published."""
        return {r["label"]: r["epsilon_spent"] for r in self.rows}

    def close(self) -> None:
        super().close()
        if isinstance(self._reader, Owner):
            self._reader.close()

    def text(self) -> str:
        lines = [self.title + ("" if self.live else " (stopped)")]
        for r in self.rows:
            filled = round(r["fraction"] * 20)
            lines.append(f"  {r['label']:<20} [{'#' * filled}{'.' * (20 - filled)}] {r['text']}")
        if not self.rows:
            lines.append("  (no budget read yet)")
        if self.error:
            lines.append(f"  last refresh failed: {self.error}")
        return "\n".join(lines)
