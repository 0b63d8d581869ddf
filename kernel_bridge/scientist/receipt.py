"""Receipts: what a scientist learns from a cell run on a worker."""

from __future__ import annotations

import html
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from ..errors import Interrupted
from ..wire.protocol import Op
from ._session import Handle, Session
from .pointer import Pointer
from .request import Request

#: Status colours of a receipt, and the MOCK marker's.
_STATUS_COLORS = {"ok": "#2e7d32", "error": "#c62828"}
_MOCK_COLOR = "#6a1b9a"


async def run_cell(session: Session, code: str, mock: bool = False,
                   timeout: float | None = None) -> Receipt:
    """Run ``code`` in the session's private (or mock) kernel: its :class:`Receipt`."""
    r = (await session.call(Op.RUN, code=code, mock=mock, timeout=timeout))["receipt"]
    held = [Pointer(session, h) for h in r.get("held") or []]
    return Receipt(session, r, held, code=code)


def run_blocking(session: Session, code: str, mock: bool = False,
                 timeout: float | None = None) -> Receipt:
    """:func:`run_cell`, waited for; Ctrl-C interrupts the remote cell.

    Raises
    ------
    Interrupted
        After a KeyboardInterrupt (the remote kernel was interrupted too).
    """
    try:
        return session.blocking(run_cell(session, code, mock, timeout))
    except KeyboardInterrupt:
        session.blocking(session.call(Op.INTERRUPT, mock=mock))
        raise Interrupted(f"cell on {session.name} interrupted") from None


class Receipt:
    """The gate's account of one cell.

    Attributes
    ----------
    status : str
        ``ok``, ``error``, ``interrupted`` or ``timeout``.
    error_type : str or None
        The exception's type only (never its message or traceback).
    error_line : int or None
        The line of the cell that raised (bounded by the cell's length).
    duration : float
        Seconds the cell ran.
    names : list of dict
        Mock cells: variables the cell created or changed (``name``, ``type``,
        ``change``). Private cells: the names the cell's source assigns
        (``name``, ``change="assigned"``), never whether they exist or their types.
    held : list of Pointer
        Outputs withheld by the gate (requestable with ``.request()``).
    outputs : list of dict
        Full outputs, for mock runs only.
    code : str
        The cell's source, as sent.
    mock_rerun : Receipt or None
        After :meth:`on_mock`: the same cell's run on the mock kernel, whose
        error message (free: mock data) is shown next to this receipt.
    """

    def __init__(self, worker: Handle, data: dict[str, Any], held: list[Pointer],
                 code: str = "") -> None:
        self._session: Session = worker.core
        self.data = data
        self.held = held
        self.code = code
        self.mock_rerun: Receipt | None = None

    @property
    def worker(self) -> Any:
        """The worker handle the cell ran on."""
        return self._session.handle

    @property
    def status(self) -> str:
        """``ok``, ``error``, ``interrupted`` or ``timeout``."""
        return str(self.data["status"])

    @property
    def error_type(self) -> str | None:
        """The exception's type only (never its message or traceback)."""
        v = self.data.get("error_type")
        return None if v is None else str(v)

    @property
    def duration(self) -> float:
        """Seconds the cell ran."""
        return float(self.data["duration"])

    @property
    def names(self) -> list[dict[str, Any]]:
        """The names the cell assigned (mock cells: created or changed, with types)."""
        return list(self.data.get("names") or [])

    @property
    def kernel(self) -> str:
        """The kernel it ran on: ``private`` or ``mock``."""
        return str(self.data["kernel"])

    @property
    def error_line(self) -> int | None:
        """The line of the cell that raised (bounded by the cell's length)."""
        line = self.data.get("error_line")
        return line if isinstance(line, int) and not isinstance(line, bool) else None

    @property
    def ok(self) -> bool:
        """Whether the cell ran without error."""
        return self.status == "ok"

    @property
    def mock(self) -> bool:
        """Whether the cell ran on the mock kernel (its outputs are then shown)."""
        return self.kernel == "mock"

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """A mock cell's outputs (iopub messages); empty for a private cell."""
        return list(self.data.get("outputs") or [])

    def __getitem__(self, name: str) -> Pointer:
        """A pointer to a variable the cell created or changed."""
        if name not in {n["name"] for n in self.names}:
            raise KeyError(f"the cell does not assign {name!r}")
        s = self._session
        reply = s.blocking(s.call(Op.VAR, name=name, mock=self.mock))
        return Pointer(s, reply["pointer"])

    def _summary(self) -> list[str]:
        status = self.status if not self.error_type else f"{self.status}: {self.error_type}"
        if self.error_line is not None:
            status += f" (line {self.error_line})"
        parts = [self._session.name + (" (MOCK)" if self.mock else ""), status,
                 f"{self.duration * 1000:.0f} ms"]
        for change in ("created", "changed", "assigned"):
            items = [_name(n) for n in self.names if n.get("change") == change]
            if items:
                parts.append(f"{change} {', '.join(items)}")
        if self.held:
            parts.append(f"{len(self.held)} output held")
        elif self.mock and self.outputs:
            parts.append(f"{len(self.outputs)} output{'s' if len(self.outputs) > 1 else ''}")
        return parts

    def on_mock(self, timeout: float | None = None) -> Receipt:
        """Run this cell again on the mock kernel, to see what its error says on mock data.

        A private cell's error reports only its type and line; the mock kernel's
        outputs are free, so its message shows what went wrong (when the mock
        data fails the same way). The result is kept as :attr:`mock_rerun` and
        shown next to this receipt, marked MOCK.

        Returns
        -------
        Receipt
            The mock kernel's receipt, with its full outputs.
        """
        if self.mock:
            raise ValueError("this cell ran on the mock kernel already: its outputs are shown")
        if not self.code:
            raise ValueError("this receipt does not know its cell's code")
        self.mock_rerun = run_blocking(self._session, self.code, mock=True, timeout=timeout)
        return self.mock_rerun

    def mock_message(self) -> str | None:
        """What the mock re-run said: its error (``Type: message``), or that it passed."""
        m = self.mock_rerun
        if m is None:
            return None
        if m.ok:
            return ("ok on mock data: the error depends on the private data (or on "
                    "variables only the private kernel has)")
        for o in reversed(m.outputs):
            if isinstance(o, dict) and o.get("msg_type") == "error":
                c = o.get("content") or {}
                line = f" (line {m.error_line})" if m.error_line is not None else ""
                return f"{c.get('ename')}: {c.get('evalue')}{line}"
        return f"{m.status}: {m.error_type or ''}".strip(": ")

    def mock_traceback(self) -> str:
        """The mock re-run's traceback as plain text (no ANSI colours), or ''."""
        for o in reversed(self.mock_rerun.outputs if self.mock_rerun else []):
            if isinstance(o, dict) and o.get("msg_type") == "error":
                tb = (o.get("content") or {}).get("traceback") or []
                return _ANSI.sub("", "\n".join(str(t) for t in tb))
        return ""

    def request(self, reason: str) -> Request:
        """Ask the owner to release this cell's held output; returns the :class:`Request`.

        Once approved, ``request.show()`` displays the output as a notebook output.
        """
        if not self.held:
            raise ValueError("this cell has no held output to request"
                             + (" (mock outputs are shown already)" if self.mock else ""))
        return self.held[0].request(reason=reason)

    def __repr__(self) -> str:
        text = " · ".join(self._summary())
        text += " [request]" if self.held else ""
        msg = self.mock_message()
        if msg is not None:
            text += f"\n  {self._session.name} · MOCK re-run: {msg}"
        return text

    def _repr_html_(self) -> str:
        return receipt_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> dict[str, Any]:
        """For JupyterLab with syftlab's extension: the receipt with a working Request button.

        The button asks for a reason and calls :func:`request_from_ui` in this
        kernel with the receipt's token (elsewhere the HTML receipt shows).
        """
        data = receipt_parts(self)
        if self.held:
            data["token"] = _remember(self)
        return {RECEIPT_MIME: data}


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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
    tb = receipt.mock_traceback()
    details = (f'<details><summary>mock traceback</summary><pre style="margin:0">'
               f'{html.escape(tb)}</pre></details>') if tb else ""
    return (f'<div class="syftlab-mock-rerun" style="color:{_MOCK_COLOR};margin-top:2px">'
            f'<b>{html.escape(receipt._session.name)} · MOCK</b> re-run: {html.escape(msg)}'
            f'{details}</div>')


def receipt_parts(receipt: Receipt) -> dict[str, Any]:
    """A receipt as data for a front end to draw as text: summary parts, colour, mock re-run."""
    return {"worker": receipt._session.name, "parts": receipt._summary(),
            "status": receipt.status, "color": _STATUS_COLORS.get(receipt.status, "#ef6c00"),
            "held": len(receipt.held), "mock_rerun": receipt.mock_message(),
            "mock_traceback": receipt.mock_traceback() if receipt.mock_rerun else ""}


def receipts_html(receipts: Iterable[Receipt]) -> str:
    """Several receipts (a multi-worker cell's), one line each."""
    return "".join(receipt_html(r) for r in receipts)


def _name(entry: dict[str, Any]) -> str:
    """``s (Series)`` for a mock cell's variable; just ``s`` when no type is given."""
    kind = entry.get("type")
    name = str(entry.get("name"))
    return f"{name} ({str(kind).rsplit('.', 1)[-1]})" if kind else name


#: The MIME type JupyterLab's syftlab extension renders (a receipt, with a Request button).
RECEIPT_MIME = "application/vnd.syftlab.receipt+json"

#: Receipts with held outputs shown in this kernel, by the token their button sends back.
_SHOWN: OrderedDict[str, Receipt] = OrderedDict()
_SHOWN_MAX = 500


def _remember(receipt: Receipt) -> str:
    for token, r in _SHOWN.items():
        if r is receipt:
            return token
    token = secrets.token_hex(8)
    _SHOWN[token] = receipt
    while len(_SHOWN) > _SHOWN_MAX:
        _SHOWN.popitem(last=False)
    return token


class _Reply(dict):  # type: ignore[type-arg]
    """A dict IPython also formats as ``application/json`` (for ``user_expressions``)."""

    def _repr_json_(self) -> dict[str, Any]:
        return dict(self)


def request_from_ui(token: str, reason: str) -> dict[str, Any]:
    """What the receipt's Request button runs: ask the owner to release the held output.

    Returns
    -------
    dict
        ``{"id", "status", "worker"}`` of the new request, or ``{"error": message}``.
    """
    receipt = _SHOWN.get(str(token))
    if receipt is None:
        return _Reply(error="this receipt is no longer known to the kernel (restarted?): "
                            "use _.request(reason) on it")
    if not str(reason).strip():
        return _Reply(error="a request needs a reason the owner can judge")
    try:
        req = receipt.request(str(reason).strip())
    except Exception as exc:  # noqa: BLE001 - shown in the notebook, never raised there
        return _Reply(error=f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}")
    return _Reply(id=req.id, status=req.status, worker=receipt._session.name)
