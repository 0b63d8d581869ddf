"""Receipts: what a scientist learns from a cell run on a worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pointer import Pointer
    from .request import Request
    from .worker import Worker


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
    """

    def __init__(self, worker: Worker, data: dict[str, Any], held: list[Pointer]) -> None:
        self.worker = worker
        self.data = data
        self.held = held

    status = property(lambda self: str(self.data["status"]))
    error_type = property(lambda self: self.data.get("error_type"))
    duration = property(lambda self: float(self.data["duration"]))
    names = property(lambda self: list(self.data.get("names") or []))
    kernel = property(lambda self: str(self.data["kernel"]))

    @property
    def error_line(self) -> int | None:
        line = self.data.get("error_line")
        return line if isinstance(line, int) and not isinstance(line, bool) else None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def mock(self) -> bool:
        return self.kernel == "mock"

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.data.get("outputs") or [])

    def __getitem__(self, name: str) -> Pointer:
        """A pointer to a variable the cell created or changed."""
        if name not in {n["name"] for n in self.names}:
            raise KeyError(f"the cell does not assign {name!r}")
        return self.worker.mock_vars[name] if self.mock else self.worker.vars[name]

    def _summary(self) -> list[str]:
        status = self.status if not self.error_type else f"{self.status}: {self.error_type}"
        if self.error_line is not None:
            status += f" (line {self.error_line})"
        parts = [self.worker.name + (" (MOCK)" if self.mock else ""), status,
                 f"{self.duration * 1000:.0f} ms"]
        for change in ("created", "changed", "assigned"):
            # Private receipts name what the source assigns, without types (a channel).
            items = [f"{n['name']} ({n['type'].rsplit('.', 1)[-1]})" if n.get("type")
                     else n["name"] for n in self.names if n["change"] == change]
            if items:
                parts.append(f"{change} {', '.join(items)}")
        if self.held:
            parts.append(f"{len(self.held)} output held")
        elif self.mock and self.outputs:
            parts.append(f"{len(self.outputs)} output{'s' if len(self.outputs) > 1 else ''}")
        return parts

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
        return text + (" [request]" if self.held else "")

    def _repr_html_(self) -> str:
        from .display import receipt_html

        return receipt_html(self)
