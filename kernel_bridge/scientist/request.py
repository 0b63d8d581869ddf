"""Requests: asking a data owner to release one exact value."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..errors import ProtocolError, RequestDenied, RequestPending
from ..wire import codec
from ..wire.protocol import Op
from ._session import Handle, Session, blocking
from .display import show_value


class Request:
    """A request for a snapshot of a private value, bound to its SHA-256.

    A request is tied to the scientist (not the connection), so it survives
    reconnects and worker restarts: ``alice.request_by_id(7)`` finds it again.
    """

    def __init__(self, worker: Handle, info: dict[str, Any]) -> None:
        self._session: Session = worker.core
        self._info = info

    @property
    def worker(self) -> Any:
        """The worker handle the request was made through."""
        return self._session.handle

    @property
    def id(self) -> int:
        """The request's number on its worker (``worker.request_by_id`` finds it)."""
        return int(self._info["id"])

    @property
    def status(self) -> str:
        """``pending``, ``approved`` or ``denied`` (as last seen; see :meth:`refresh`)."""
        return str(self._info["status"])

    @property
    def reason(self) -> str:
        """Why you asked, as the owner reads it."""
        return str(self._info["reason"])

    @property
    def deny_reason(self) -> str | None:
        """The owner's reason, once denied."""
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
        return (f"<Request #{self.id} on {self._session.name}: {self.status}{extra}, "
                f"{self._info.get('value_type')}{size}>")

    async def _arefresh(self) -> Request:
        """Ask the worker for the request's status now; returns self."""
        self._info = (await self._session.call(Op.REQUEST_STATUS, request=self.id))["request"]
        return self

    async def _await(self, timeout: float | None = 600.0, poll: float = 30.0) -> Request:
        """Wait until the owner decides (or ``timeout`` seconds pass); returns self."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            self._info = (await self._session.call(Op.WAIT_REQUEST, request=self.id,
                                                   timeout=left))["request"]
            if self.status != "pending":
                return self
            if deadline is not None and time.monotonic() >= deadline:
                return self

    async def _aresult(self) -> Any:
        """The released value.

        Raises
        ------
        RequestPending
            The owner has not decided yet.
        RequestDenied
            The owner said no; the exception's message carries their reason.
        """
        try:
            reply = await self._session.call_once(Op.REQUEST_RESULT, request=self.id)
            data = await self._session.fetch_frame(reply)
        except (RequestDenied, RequestPending):
            await self._arefresh()
            raise
        # The value must be the one the owner saw: check it against the request's hash.
        # (The request's own hash, when it was shown before release, must agree too.)
        if hashlib.sha256(data).hexdigest() != reply["sha256"] or \
                (self.sha256 is not None and reply["sha256"] != self.sha256):
            raise ProtocolError("released value does not match the approved snapshot")
        self._info.update(sha256=reply["sha256"], size=len(data))
        return codec.loads(data, limit=None)

    refresh = blocking(_arefresh)
    wait = blocking(_await)
    result = blocking(_aresult)

    def show(self, wait: float | None = None) -> Any:
        """Display the released value in the notebook, marked "<worker> · approved".

        A held cell output is republished as the cell's original outputs (text,
        HTML, images). ``wait`` seconds are spent waiting for the owner first.

        Returns
        -------
        object
            The released value (for a held output: its iopub messages).
        """
        if wait:
            self.wait(timeout=wait)
        value = self.result()
        show_value(value, self._session.name, "approved")
        return value
