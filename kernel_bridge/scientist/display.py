"""Showing remote results in a notebook: receipts, mock outputs, released outputs.

Outputs that may be shown (a mock run's, or a held output the owner
approved) come back as the kernel's iopub messages; :func:`republish` sends
them through IPython's display machinery so they look like ordinary outputs,
under a marker saying where they came from (``alice · MOCK`` or
``alice · approved``). Everything that came from a worker is HTML-escaped.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .receipt import Receipt

#: Marker colours: mock runs (free, not the real data) and approved releases.
_COLORS = {"MOCK": "#6a1b9a", "approved": "#1565c0"}
_STATUS_COLORS = {"ok": "#2e7d32", "error": "#c62828"}

#: MIME types republished as they are; anything else is shown by its text/plain.
_SAFE_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png",
              "image/jpeg", "image/svg+xml", "application/json")


def receipt_html(receipt: Receipt) -> str:
    """A receipt as one line of HTML (every part from the worker escaped)."""
    color = _STATUS_COLORS.get(receipt.status, "#ef6c00")
    parts = [html.escape(p) for p in receipt._summary()]
    parts[1] = f'<b style="color:{color}">{parts[1]}</b>'
    hint = ""
    if receipt.held:
        # Plain text, not a fake button (JupyterLab with syftlab shows a real one).
        hint = (' <span class="syftlab-request-hint" style="color:#666">· '
                '<code>_.request(reason)</code> asks the owner to release it</span>')
    return ('<div class="syftlab-receipt" style="font-family:monospace;padding:2px 6px;'
            f'border-left:3px solid {color}">{" · ".join(parts)}{hint}'
            f'{_mock_rerun_html(receipt)}</div>')


def _mock_rerun_html(receipt: Receipt) -> str:
    """The mock re-run of a failed private cell, under the receipt, marked MOCK."""
    msg = receipt.mock_message()
    if msg is None:
        return ""
    color = _COLORS["MOCK"]
    tb = receipt.mock_traceback()
    details = (f'<details><summary>mock traceback</summary><pre style="margin:0">'
               f'{html.escape(tb)}</pre></details>') if tb else ""
    return (f'<div class="syftlab-mock-rerun" style="color:{color};margin-top:2px">'
            f'<b>{html.escape(receipt.worker.name)} · MOCK</b> re-run: {html.escape(msg)}'
            f'{details}</div>')


def receipt_parts(receipt: Receipt) -> dict[str, Any]:
    """A receipt as data for a front end to draw as text: summary parts, colour, mock re-run."""
    return {"worker": receipt.worker.name, "parts": receipt._summary(),
            "status": receipt.status, "color": _STATUS_COLORS.get(receipt.status, "#ef6c00"),
            "held": len(receipt.held), "mock_rerun": receipt.mock_message(),
            "mock_traceback": receipt.mock_traceback() if receipt.mock_rerun else ""}


def receipts_html(receipts: Iterable[Receipt]) -> str:
    return "".join(receipt_html(r) for r in receipts)


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
    for msg in outputs:
        if not isinstance(msg, dict):
            continue
        kind, content = msg.get("msg_type"), msg.get("content") or {}
        if kind == "stream":
            stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
            stream.write(str(content.get("text", "")))
            stream.flush()
        elif kind in ("display_data", "execute_result", "update_display_data"):
            data = {k: v for k, v in dict(content.get("data") or {}).items()
                    if k in _SAFE_MIME}
            if data:
                publish(data, dict(content.get("metadata") or {}))
        elif kind == "error":
            tb = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
            sys.stderr.write("\n".join(str(t) for t in tb) + "\n")
            sys.stderr.flush()


def show_value(value: Any, worker: str, label: str = "approved") -> None:
    """Show a released value under its marker (a held cell output is republished)."""
    if isinstance(value, list) and all(isinstance(o, dict) and "msg_type" in o for o in value):
        republish(value, worker, label)
        return
    publish(marker(worker, label))
    from IPython.core.getipython import get_ipython

    if get_ipython() is None:
        print(repr(value))
        return
    from IPython.display import display

    display(value)
