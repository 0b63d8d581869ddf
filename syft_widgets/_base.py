"""What every live widget shares: the poller, closing, and plain-text fallbacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ._poller import Poller

STATIC = Path(__file__).resolve().parent / "static"


def static(name: str) -> Path:
    """A front-end file shipped in the package (no CDN at run time)."""
    return STATIC / name


class LiveWidget(anywidget.AnyWidget):
    """An anywidget refreshed by a background :class:`Poller` until :meth:`close`.

    Subclasses implement :meth:`refresh` (one round of reads, then trait
    updates) and :meth:`text` (the plain-text view).
    """

    interval = traitlets.Float(1.0).tag(sync=True)
    #: Wall-clock time (seconds since the epoch) of the last refresh.
    updated = traitlets.Float(0.0).tag(sync=True)
    #: True while the poller runs; the front end greys out a stopped widget.
    live = traitlets.Bool(False).tag(sync=True)

    _pollers: list[Poller] = []

    def _tasks(self) -> list[Callable[[], None]]:
        """What the pollers run, one thread each (a slow source never stalls another)."""
        return [self.refresh]

    def start(self) -> None:
        """Start the background updates (done by the constructor unless ``start=False``)."""
        if any(p.running for p in self._pollers):
            return
        name = f"syftlab-{type(self).__name__}"
        self._pollers = [Poller(task, self.interval, name) for task in self._tasks()]
        for p in self._pollers:
            p.start()
        self.live = True

    def stop(self) -> None:
        """Stop the background updates; the widget keeps showing its last state."""
        for p in self._pollers:
            p.stop()
        self.live = False

    @property
    def ticks(self) -> int:
        """Refresh rounds done by every poller (the slowest one's count)."""
        return min((p.ticks for p in self._pollers), default=0)

    def close(self) -> None:
        """Stop updating and close the widget (its front-end views go away)."""
        self.stop()
        super().close()

    def refresh(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def text(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- plain-text fallbacks ---------------------------------------------------
    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        # ipywidgets cuts text/plain at 110 characters; consoles and nbconvert get it whole.
        if isinstance(bundle, tuple):
            bundle[0]["text/plain"] = self.text()
        elif isinstance(bundle, dict):
            bundle["text/plain"] = self.text()
        return bundle
