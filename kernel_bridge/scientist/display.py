"""Showing remote results in a notebook: mock outputs and released values.

(A receipt renders itself: :mod:`kernel_bridge.scientist.receipt`.)

Outputs that may be shown (a mock run's, or a held output the owner
approved) come back as the kernel's iopub messages; :func:`republish` sends
them through IPython's display machinery so they look like ordinary outputs,
under a marker saying where they came from (``alice · MOCK`` or
``alice · approved``). Everything that came from a worker is HTML-escaped.
"""

from __future__ import annotations

import html
import sys
from typing import Any

from .._render import is_outputs, read_outputs

#: Marker colours: mock runs (free, not the real data) and approved releases.
_COLORS = {"MOCK": "#6a1b9a", "approved": "#1565c0"}

#: MIME types republished as they are; anything else is shown by its text/plain.
_SAFE_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png",
              "image/jpeg", "image/svg+xml", "application/json")


def marker(worker: str, label: str) -> dict[str, str]:
    """A small display bundle saying whose output follows, and why it may be shown."""
    color = _COLORS.get(label, "#555")
    text = f"── {worker} · {label} ──"
    return {
        "text/plain": text,
        "text/html": (f'<div class="syftlab-marker" style="font-family:monospace;'
                      f'font-size:85%;color:{color}">{html.escape(text)}</div>'),
    }


def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Publish a display bundle through IPython (or print its text outside IPython)."""
    from IPython.core.getipython import get_ipython

    if get_ipython() is None:
        print(data.get("text/plain", ""))
        return
    from IPython.display import publish_display_data

    publish_display_data(data=data, metadata=metadata or {})


def republish(outputs: list[dict[str, Any]], worker: str, label: str) -> None:
    """Show a remote cell's iopub messages as this kernel's own outputs.

    Parameters
    ----------
    outputs : list of dict
        ``{"msg_type", "content", "buffers"}`` messages, as a mock receipt or an
        approved request carries them.
    worker, label : str
        Shown in the marker above the outputs (``"MOCK"`` or ``"approved"``).
    """
    publish(marker(worker, label))
    for o in read_outputs(outputs):
        if o.kind == "stream":
            stream = sys.stderr if o.name == "stderr" else sys.stdout
            stream.write(o.text)
            stream.flush()
        elif o.kind == "data":
            data = {k: v for k, v in o.data.items() if k in _SAFE_MIME}
            if data:
                publish(data, o.metadata)
        elif o.kind == "error":
            sys.stderr.write("\n".join(o.traceback or [o.text]) + "\n")
            sys.stderr.flush()


def show_value(value: Any, worker: str, label: str = "approved") -> None:
    """Show a released value under its marker (a held cell output is republished)."""
    if is_outputs(value):
        republish(value, worker, label)
        return
    publish(marker(worker, label))
    from IPython.core.getipython import get_ipython

    if get_ipython() is None:
        print(repr(value))
        return
    from IPython.display import display

    display(value)
