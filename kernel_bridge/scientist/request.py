"""Requests: asking a data owner to release one exact value."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import RequestDenied, RequestPending

if TYPE_CHECKING:
    from .worker import Worker


class Request:
    """A request for a snapshot of a private value, bound to its SHA-256.

    A request is tied to the scientist (not the connection), so it survives
    reconnects and worker restarts: ``alice.request_by_id(7)`` finds it again.
    """

    def __init__(self, worker: Worker, info: dict[str, Any]) -> None:
        self._worker = worker
        self._info = info

    @property
    def id(self) -> int:
        return int(self._info["id"])

    @property
    def status(self) -> str:
        """``pending``, ``approved`` or ``denied`` (as last seen; see :meth:`refresh`)."""
        return str(self._info["status"])

    @property
    def reason(self) -> str:
        return str(self._info["reason"])

    @property
    def deny_reason(self) -> str | None:
        return self._info.get("deny_reason")

    @property
    def sha256(self) -> str | None:
        """The released value's SHA-256: known once the value has come back (None before)."""
        v = self._info.get("sha256")
        return str(v) if v else None

    @property
    def size(self) -> int | None:
        """The released value's size in bytes: known once it has come back (None before)."""
        v = self._info.get("size")
        return int(v) if v is not None else None

    def __repr__(self) -> str:
        extra = f" ({self.deny_reason})" if self.deny_reason else ""
        size = f", {self.size} bytes" if self.size is not None else ""
        return (f"<Request #{self.id} on {self._worker.name}: {self.status}{extra}, "
                f"{self._info.get('value_type')}{size}>")

    def refresh(self) -> Request:
        self._info = self._worker._call("request_status", request=self.id)["request"]
        return self

    def wait(self, timeout: float | None = 600.0, poll: float = 30.0) -> Request:
        """Block until the owner decides (or ``timeout`` seconds pass); returns self."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            self._info = self._worker._call("wait_request", request=self.id,
                                            timeout=left)["request"]
            if self.status != "pending":
                return self
            if deadline is not None and time.monotonic() >= deadline:
                return self

    def result(self) -> Any:
        """The released value.

        Raises
        ------
        RequestPending
            The owner has not decided yet.
        RequestDenied
            The owner said no; the exception's message carries their reason.
        """
        try:
            return self._worker._request_result(self)
        except (RequestDenied, RequestPending):
            self.refresh()
            raise

    def show(self, wait: float | None = None) -> Any:
        """Display the released value in the notebook, marked "<worker> · approved".

        A held cell output is republished as the cell's original outputs (text,
        HTML, images). ``wait`` seconds are spent waiting for the owner first.

        Returns
        -------
        object
            The released value (for a held output: its iopub messages).
        """
        from .display import show_value

        if wait:
            self.wait(timeout=wait)
        value = self.result()
        show_value(value, self._worker.name, "approved")
        return value
